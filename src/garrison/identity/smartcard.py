"""Smart-card (CAC/PIV) sign-in: check a client certificate and find the DoD ID (EDIPI) in it.

`check_client_certificate` follows RFC 5280 path validation through `cryptography`'s verifier
(signatures, issuer/subject chaining, basic constraints and path length, validity of every
certificate), then adds what DoD PKI asks of an authentication certificate (FIPS 201; DoD PKI
certificate profiles): Extended Key Usage with clientAuth, revocation status from a current CRL
signed by the issuer of each certificate in the path (fail closed: no current CRL, no sign-in),
and an EDIPI in the subject CN (`LAST.FIRST.MIDDLE.1234567890`) or in the SAN otherName UPN
(`1234567890@mil`). Checklist A6.

How a certificate reaches Garrison: a TLS front end (nginx `ssl_verify_client optional_no_ca`)
forwards it URL-escaped in a header (`proxy_set_header X-SSL-Client-Cert
$ssl_client_escaped_cert;` on every request, so a client's own header never passes through),
believed only from `trusted_proxies`; or an ASGI server that implements the ASGI TLS extension
(https://asgi.readthedocs.io/en/latest/specs/tls.html) puts the chain in the scope. Uvicorn
(checked: 0.54) does not expose the peer certificate to the application, so with uvicorn the
front end is the way. Garrison repeats every check itself whatever the front end verified.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from garrison.settings import Settings

# Microsoft's User Principal Name otherName, which DoD puts on CAC authentication certificates.
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
_UPN_EDIPI = re.compile(r"^([0-9]{10})@mil$", re.IGNORECASE)
_CN_EDIPI = re.compile(r"^(?:[^.]+\.){1,4}([0-9]{10})$")


class CertificateRejected(Exception):
    """The certificate cannot sign anyone in; `reason` is a short code for the audit trail."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


def check_client_certificate(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    now: datetime,
) -> str:
    """The EDIPI of a valid, unrevoked client-authentication certificate chained to a trust root.

    Raises CertificateRejected with reason not_yet_valid, expired, wrong_key_usage,
    untrusted_chain, revocation_unknown, revoked, no_edipi, ambiguous_edipi or malformed.
    """
    try:
        return _check(leaf, intermediates, trust_roots, crls, now)
    except ValueError as error:  # extensions are parsed lazily: bad DER shows up here
        raise CertificateRejected("malformed", str(error)[:200]) from None


def _check(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    now: datetime,
) -> str:
    # The leaf's own checks first, so the audit trail says exactly what was wrong with it.
    if now < leaf.not_valid_before_utc:
        raise CertificateRejected("not_yet_valid", f"valid from {leaf.not_valid_before_utc.isoformat()}")
    if now > leaf.not_valid_after_utc:
        raise CertificateRejected("expired", f"expired {leaf.not_valid_after_utc.isoformat()}")
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateRejected("wrong_key_usage", "no extended key usage") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise CertificateRejected("wrong_key_usage", "extended key usage lacks clientAuth")
    if not trust_roots:
        raise CertificateRejected("untrusted_chain", "no trust roots are configured")
    chain = _verified_chain(leaf, intermediates, trust_roots, now)
    _check_revocation(chain, crls, now)
    return edipi_of(leaf)


def _verified_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    now: datetime,
) -> list[x509.Certificate]:
    # Web PKI defaults, except that a SAN is optional: the EDIPI may be in the subject CN alone.
    ee_policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(trust_roots)))
        .time(now)
        .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, list(intermediates))
    except verification.VerificationError as error:
        raise CertificateRejected("untrusted_chain", str(error)[:300]) from None
    return list(verified.chain)


def _check_revocation(
    chain: list[x509.Certificate], crls: Sequence[x509.CertificateRevocationList], now: datetime
) -> None:
    """Every certificate below the trust anchor needs a current CRL from its issuer saying it is
    not revoked (RFC 5280 §6.3). No current CRL is a failure, not a pass."""
    for certificate, issuer in itertools.pairwise(chain):
        crl = _current_crl(issuer, crls, now)
        if crl is None:
            raise CertificateRejected(
                "revocation_unknown", f"no current CRL from {issuer.subject.rfc4514_string()}"
            )
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            raise CertificateRejected("revoked", f"serial {certificate.serial_number:x} is on the CRL")


def _current_crl(
    issuer: x509.Certificate, crls: Sequence[x509.CertificateRevocationList], now: datetime
) -> x509.CertificateRevocationList | None:
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.crl_sign:
            return None
    except x509.ExtensionNotFound:
        pass
    for crl in crls:
        if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            continue
        if crl.last_update_utc > now:
            continue
        if crl.next_update_utc is not None and now > crl.next_update_utc:
            continue
        return crl
    return None


def edipi_of(certificate: x509.Certificate) -> str:
    """The 10-digit DoD ID from the SAN UPN (`1234567890@mil`) or the CN (`LAST.FIRST.M.1234567890`)."""
    found: set[str] = set()
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = x509.SubjectAlternativeName([])
    for other in names.get_values_for_type(x509.OtherName):
        if other.type_id == UPN_OID:
            upn = _der_string(other.value)
            match = _UPN_EDIPI.match(upn or "")
            if match:
                found.add(match.group(1))
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = (
            attribute.value
            if isinstance(attribute.value, str)
            else attribute.value.decode("utf-8", "replace")
        )
        match = _CN_EDIPI.match(value.strip())
        if match:
            found.add(match.group(1))
    if not found:
        raise CertificateRejected("no_edipi", "neither the CN nor a UPN carries a DoD ID number")
    if len(found) > 1:
        raise CertificateRejected("ambiguous_edipi", "the CN and the UPN carry different DoD ID numbers")
    return found.pop()


def _der_string(encoded: bytes) -> str | None:
    """Decode the DER UTF8String or IA5String an otherName UPN holds (tag, length, bytes)."""
    if len(encoded) < 2 or encoded[0] not in (0x0C, 0x16):
        return None
    length, offset = encoded[1], 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 2 or len(encoded) < 2 + size:
            return None
        length, offset = int.from_bytes(encoded[2 : 2 + size], "big"), 2 + size
    value = encoded[offset : offset + length]
    if len(value) != length:
        return None
    return value.decode("utf-8", "replace")


def certificate_from_header(value: str) -> x509.Certificate:
    """A certificate forwarded by a front end: URL-escaped PEM (nginx `$ssl_client_escaped_cert`)."""
    text = unquote(value.strip())
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CertificateRejected("malformed", "the forwarded certificate is not PEM") from None


def certificates_from_pem_chain(pems: Sequence[str]) -> list[x509.Certificate]:
    """The ASGI TLS extension's `client_cert_chain`: PEM strings, leaf first."""
    try:
        return [x509.load_pem_x509_certificate(pem.encode("ascii")) for pem in pems]
    except (ValueError, UnicodeEncodeError):
        raise CertificateRejected("malformed", "the TLS client certificate chain is not PEM") from None


def describe(certificate: x509.Certificate) -> dict[str, Any]:
    """What the audit trail records of a presented certificate (public data only)."""
    return {
        "subject": certificate.subject.rfc4514_string()[:300],
        "issuer": certificate.issuer.rfc4514_string()[:300],
        "serial": f"{certificate.serial_number:x}",
    }


@dataclass(frozen=True, slots=True)
class Trust:
    """The configured DoD roots, intermediates and CRLs."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]


_trust_cache: dict[tuple[Any, ...], Trust] = {}


def load_trust(settings: Settings) -> Trust | None:
    """The trust material named in settings, re-read when a file changes (CRLs are replaced as
    they are published). None when smart-card sign-in is not configured."""
    if settings.smartcard_trust_roots is None:
        return None
    paths = [settings.smartcard_trust_roots, settings.smartcard_intermediates, settings.smartcard_crls]
    key = tuple(_fingerprint(path) for path in paths)
    cached = _trust_cache.get(key)
    if cached is not None:
        return cached
    trust = Trust(
        roots=tuple(_load_certificates(settings.smartcard_trust_roots)),
        intermediates=tuple(_load_certificates(settings.smartcard_intermediates)),
        crls=tuple(_load_crls(settings.smartcard_crls)),
    )
    _trust_cache.clear()
    _trust_cache[key] = trust
    return trust


def _files(path: Path | None) -> list[Path]:
    if path is None or not path.exists():
        return []
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path]


def _fingerprint(path: Path | None) -> tuple[Any, ...]:
    return (str(path), *((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in _files(path)))


def _load_certificates(path: Path | None) -> list[x509.Certificate]:
    found: list[x509.Certificate] = []
    for file in _files(path):
        data = file.read_bytes()
        found.extend(
            x509.load_pem_x509_certificates(data)
            if b"-----BEGIN" in data
            else [x509.load_der_x509_certificate(data)]
        )
    return found


def _load_crls(path: Path | None) -> list[x509.CertificateRevocationList]:
    found: list[x509.CertificateRevocationList] = []
    marker = b"-----BEGIN X509 CRL-----"
    for file in _files(path):
        data = file.read_bytes()
        if marker in data:
            found.extend(x509.load_pem_x509_crl(marker + part) for part in data.split(marker)[1:])
        else:
            found.append(x509.load_der_x509_crl(data))
    return found
