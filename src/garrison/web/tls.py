"""The TLS settings `garrison serve` gives uvicorn (checklist C1).

ONC 170.315(d)(9), HIPAA 164.312(e) and the Inferno TLS tests require TLS 1.2 or newer; NIST
SP 800-52r2 §3.3.1 lists the TLS 1.2 suites allowed. We keep only ephemeral ECDHE key exchange with
AES-GCM (forward secrecy, AEAD, FIPS-approved). TLS 1.3 suites are all AEAD and are left to OpenSSL.
HSTS is sent on every answer by garrison.web.security_headers.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uvicorn import Config

# OpenSSL cipher string for TLS 1.2 (it does not affect TLS 1.3 suites).
TLS12_CIPHERS = "ECDHE+AESGCM:!aNULL:!eNULL"


def tls_context_factory(config: Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: its own context (certificate, key, ciphers, ALPN), then
    refuse anything older than TLS 1.2 and let the server's order of suites win.

    Module level so that uvicorn can pickle it for `--workers` > 1.
    """
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    return context
