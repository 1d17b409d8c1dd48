// Signed-in pages carry health data. Chromium may keep such a page (even one sent with
// Cache-Control: no-store) in its back/forward cache and show it again on Back after the user
// signed out or the session ended: the sign-out's own cookie change happens before the page is
// cached, so the browser does not evict it. Never show a signed-in page from that cache: empty it
// and ask the server again, which answers with the page or the sign-in form (checklist A7, C5).
window.addEventListener('pageshow', (event) => {
  if (event.persisted) {
    document.body.replaceChildren();
    window.location.reload();
  }
});
