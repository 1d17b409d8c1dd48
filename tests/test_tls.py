"""`garrison serve --tls-cert --tls-key`, run for real: TLS 1.2+ only, strong suites, HSTS.

Checklist C1 (170.315(d)(9), 164.312(e), Inferno TLS tests): 0 successful TLS < 1.2 handshakes,
HSTS present. The certificate is made at run time with `cryptography`. A permissive local TLS
server (TLS 1.0 and weak suites allowed) is the control: the same client contexts that the
Garrison server refuses complete a handshake with it, so the refusal provably comes from the
server, not from the client's OpenSSL defaults.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import uvicorn
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from garrison.cli.main import main
from garrison.web.security_headers import STRICT_TRANSPORT_SECURITY
from garrison.web.tls import TLS12_CIPHERS, tls_context_factory
from tests.pg_cluster import free_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Endpoint:
    port: int
    ca: Path  # the self-signed certificate, trusted by the test's clients


def make_certificate(directory: Path) -> Certificate:
    """A self-signed RSA-2048 / SHA-256 server certificate for 127.0.0.1 (SAN IP address)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "garrison-test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_path, key_path)


def legacy_client(maximum: ssl.TLSVersion, ciphers: str = "DEFAULT:@SECLEVEL=0") -> ssl.SSLContext:
    """A client that offers only old protocol versions, with OpenSSL's security level at 0 so
    that it really offers them (level 1+ refuses TLS 1.0/1.1 client-side in OpenSSL 3)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # TLSVersion.TLSv1/TLSv1_1 are deprecated: that's the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    context.set_ciphers(ciphers)
    return context


def verifying_client(ca: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A normal client pinned to exactly one TLS version, verifying the server's certificate."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = version
    context.maximum_version = version
    return context


def handshake(context: ssl.SSLContext, port: int) -> tuple[str, str]:
    """(protocol version, cipher) of a completed handshake; raises ssl.SSLError if refused."""
    with (
        socket.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        version, cipher = tls.version(), tls.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0]


def wait_for_tls(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    context = legacy_client(ssl.TLSVersion.TLSv1_3, ciphers="DEFAULT")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"garrison serve exited with {process.returncode}")
        try:
            handshake(context, port)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("garrison serve did not accept TLS connections in time")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@contextmanager
def garrison_serve(
    certificate: Certificate, data_dir: Path, *, via_settings: bool = False
) -> Iterator[Endpoint]:
    """`garrison serve` in a subprocess over a fresh SQLite database, with the certificate given
    as --tls-cert/--tls-key or (via_settings) as GARRISON_TLS_CERT_FILE/GARRISON_TLS_KEY_FILE."""
    port = free_port()
    env = {
        **os.environ,
        "GARRISON_DATABASE_URL": f"sqlite:///{data_dir / 'garrison.sqlite3'}",
        "GARRISON_DATA_DIR": str(data_dir),
    }
    for name in ("GARRISON_BASE_URL", "GARRISON_TLS_CERT_FILE", "GARRISON_TLS_KEY_FILE"):
        env.pop(name, None)
    args: list[str | Path] = ["--host", HOST, "--port", str(port)]
    if via_settings:
        env["GARRISON_TLS_CERT_FILE"], env["GARRISON_TLS_KEY_FILE"] = (
            str(certificate.cert),
            str(certificate.key),
        )
    else:
        args += ["--tls-cert", certificate.cert, "--tls-key", certificate.key]
    process = subprocess.Popen(
        [sys.executable, "-m", "garrison.cli.main", "serve", *map(str, args)],
        env=env,
        cwd=data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_tls(port, process)
        yield Endpoint(port, certificate.cert)
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        assert b"Traceback" not in stderr, stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def garrison_https(certificate: Certificate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """`garrison serve --tls-cert --tls-key`, shared by the module's tests."""
    with garrison_serve(certificate, tmp_path_factory.mktemp("tls-data")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def permissive_server(certificate: Certificate) -> Iterator[int]:
    """The control: a TLS server that accepts TLS 1.0 and any suite OpenSSL still has."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(certificate.cert, certificate.key)
    listener = socket.create_server((HOST, 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(5)
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(timeout=5)
    listener.close()


def get(endpoint: Endpoint, path: str) -> http.client.HTTPResponse:
    context = ssl.create_default_context(cafile=str(endpoint.ca))
    connection = http.client.HTTPSConnection(HOST, endpoint.port, context=context, timeout=30)
    connection.request("GET", path, headers={"Accept": "application/fhir+json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["1.2", "1.3"])
def test_tls_1_2_and_1_3_handshakes_succeed_with_a_verified_certificate(
    garrison_https: Endpoint, version: ssl.TLSVersion
) -> None:  # checklist C1
    negotiated, cipher = handshake(verifying_client(garrison_https.ca, version), garrison_https.port)
    assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    if version is ssl.TLSVersion.TLSv1_2:
        # Forward-secret AEAD only (NIST SP 800-52r2 §3.3.1).
        assert cipher.startswith("ECDHE-") and "GCM" in cipher, cipher


def test_a_default_client_negotiates_tls_1_3(garrison_https: Endpoint) -> None:  # checklist C1
    context = ssl.create_default_context(cafile=str(garrison_https.ca))
    assert handshake(context, garrison_https.port)[0] == "TLSv1.3"


LEGACY = {
    "TLSv1.0": lambda: legacy_client(ssl.TLSVersion.TLSv1),
    "TLSv1.1": lambda: legacy_client(ssl.TLSVersion.TLSv1_1),
}


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_tls_1_0_and_1_1_are_refused_by_the_server(
    garrison_https: Endpoint, permissive_server: int, name: str
) -> None:  # checklist C1: 0 successful TLS < 1.2 handshakes
    context: ssl.SSLContext = LEGACY[name]()
    # Control: this client really offers the old version and completes it with a server that allows it.
    assert handshake(context, permissive_server)[0] == name.replace("1.0", "1")
    with pytest.raises(ssl.SSLError) as refused:
        handshake(context, garrison_https.port)
    # OpenSSL on the server side refuses at the ClientHello: a protocol_version alert (RFC 5246
    # §7.2.2) or, as asyncio closes the transport at once, the connection closed mid-handshake.
    reason = str(refused.value).upper()
    assert "PROTOCOL_VERSION" in reason or isinstance(refused.value, ssl.SSLEOFError), reason
    # ... and the server is alive and well for a TLS 1.2 client right after.
    assert handshake(verifying_client(garrison_https.ca, ssl.TLSVersion.TLSv1_2), garrison_https.port)


WEAK_SUITES = {
    "static RSA key exchange": "AES128-SHA:AES256-SHA:AES128-GCM-SHA256",
    "CBC with SHA-1": "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA",
    "anonymous (no certificate)": "AECDH-AES128-SHA:AECDH-AES256-SHA",
    "not FIPS-approved": "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-CAMELLIA128-SHA256:ECDHE-ARIA128-GCM-SHA256",
}


@pytest.mark.parametrize("name", sorted(WEAK_SUITES))
def test_weak_tls_1_2_suites_are_refused(
    garrison_https: Endpoint, permissive_server: int, name: str
) -> None:  # checklist C1: strong suites only
    make: Callable[[], ssl.SSLContext] = lambda: legacy_client(  # noqa: E731
        ssl.TLSVersion.TLSv1_2, WEAK_SUITES[name] + ":@SECLEVEL=0"
    )
    version, cipher = handshake(make(), permissive_server)  # control
    assert version == "TLSv1.2" and cipher in WEAK_SUITES[name].split(":")
    with pytest.raises(ssl.SSLError):
        handshake(make(), garrison_https.port)


def test_uvicorns_context_has_a_tls_1_2_floor_and_only_ecdhe_aead_suites(
    certificate: Certificate,
) -> None:  # checklist C1
    """Defence in depth, checked on the very context uvicorn builds: even if the cipher string
    were widened one day (old CBC suites work in TLS 1.0), the protocol floor stays TLS 1.2."""

    async def app(scope: object, receive: object, send: object) -> None:  # never called
        raise AssertionError

    config = uvicorn.Config(
        app,
        ssl_certfile=certificate.cert,
        ssl_keyfile=certificate.key,
        ssl_ciphers=TLS12_CIPHERS,
        ssl_context_factory=tls_context_factory,
    )
    config.load()
    assert config.ssl is not None
    assert config.ssl.minimum_version is ssl.TLSVersion.TLSv1_2
    assert config.ssl.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = [c for c in config.ssl.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(c["kea"] == "kx-ecdhe" and c["aead"] for c in tls12), tls12


def test_metadata_over_https_carries_hsts(garrison_https: Endpoint) -> None:  # checklist C1
    response = get(garrison_https, "/fhir/metadata")
    assert response.status == 200
    assert response.getheader("Strict-Transport-Security") == STRICT_TRANSPORT_SECURITY
    max_age = int(STRICT_TRANSPORT_SECURITY.split("max-age=")[1].split(";")[0])
    assert max_age >= 31_536_000  # one year


def test_the_server_advertises_its_https_base(garrison_https: Endpoint) -> None:
    context = ssl.create_default_context(cafile=str(garrison_https.ca))
    connection = http.client.HTTPSConnection(HOST, garrison_https.port, context=context, timeout=30)
    connection.request("GET", "/fhir/metadata", headers={"Accept": "application/fhir+json"})
    body = orjson.loads(connection.getresponse().read())
    connection.close()
    assert body["implementation"]["url"] == f"https://{HOST}:{garrison_https.port}/fhir"


def test_the_certificate_can_come_from_settings(
    certificate: Certificate, permissive_server: int, tmp_path: Path
) -> None:  # checklist C1: the same floor when configured through GARRISON_TLS_* settings
    with garrison_serve(certificate, tmp_path, via_settings=True) as endpoint:
        assert handshake(verifying_client(endpoint.ca, ssl.TLSVersion.TLSv1_2), endpoint.port)[0] == "TLSv1.2"
        legacy = legacy_client(ssl.TLSVersion.TLSv1_1)
        assert handshake(legacy, permissive_server)[0] == "TLSv1.1"
        with pytest.raises(ssl.SSLError):
            handshake(legacy, endpoint.port)
        assert get(endpoint, "/fhir/metadata").getheader("Strict-Transport-Security")


def test_a_key_without_a_certificate_is_a_usage_error(certificate: Certificate) -> None:
    result = CliRunner().invoke(main, ["serve", "--tls-key", str(certificate.key)])
    assert result.exit_code == 2
    assert "--tls-key needs --tls-cert" in result.output
