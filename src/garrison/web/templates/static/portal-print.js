// The printable summary's "Print" button: shown only when this script runs (without it the page
// says how to print with the browser's own command). No inline script: the CSP forbids it.
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("print-button");
  if (!button) {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    window.print();
  });
});
