"""Smart-card (CAC/PIV) sign-in with certificates made here (checklist A6): valid, expired,
not yet valid, revoked, wrong key usage, unknown CA, valid for an unknown EDIPI, and a spoofed
certificate header from an untrusted peer. Only the valid, mapped certificate signs in; every
failure is audited."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from garrison import clock
from garrison.identity.smartcard import UPN_OID, CertificateRejected, check_client_certificate, edipi_of
from garrison.settings import Settings
from tests.identity_fixtures import (
    Browser,
    Served,
    audit_rows,
    cheap_password_hashing,
    identity_settings,
    make_account,
    serve,
)


@pytest.fixture(autouse=True)
def _cheap_hashing() -> Iterator[None]:
    with cheap_password_hashing():
        yield


EDIPI = "1234567890"
UNKNOWN_EDIPI = "9999999999"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "U.S. Government"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "DoD"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _upn(value: str) -> x509.OtherName:
    encoded = value.encode("utf-8")
    return x509.OtherName(UPN_OID, bytes([0x0C, len(encoded)]) + encoded)  # DER UTF8String


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    revoked: list[int] = field(default_factory=list)

    def crl(
        self, now: datetime, *, next_update: timedelta = timedelta(days=7)
    ) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - timedelta(hours=1))
            .next_update(now + next_update)
        )
        for serial in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - timedelta(minutes=5))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256())


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Authority | None,
    *,
    ca: bool,
    path_length: int | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    san: list[x509.GeneralName] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    now = clock.now()
    signer_key = key if issuer is None else issuer.key
    issuer_name = subject if issuer is None else issuer.cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def _authority(common_name: str, parent: Authority | None, path_length: int | None) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    return Authority(key, _certificate(_name(common_name), key, parent, ca=True, path_length=path_length))


@dataclass
class Pki:
    root: Authority
    issuing: Authority
    other_root: Authority
    other_issuing: Authority
    leaves: dict[str, x509.Certificate]

    def crls(self) -> list[x509.CertificateRevocationList]:
        now = clock.now()
        return [
            self.root.crl(now),
            self.issuing.crl(now),
            self.other_root.crl(now),
            self.other_issuing.crl(now),
        ]


def _leaf(
    issuer: Authority,
    edipi: str = EDIPI,
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    upn: bool = True,
    cn: bool = True,
    **options: Any,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = f"DOE.JOHN.QUINCY.{edipi}" if cn else "DOE.JOHN.QUINCY"
    san: list[x509.GeneralName] = [x509.RFC822Name("john.q.doe.mil@mail.mil")]
    if upn:
        san.insert(0, _upn(f"{edipi}@mil"))
    return _certificate(
        _name(common_name),
        key,
        issuer,
        ca=False,
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SMARTCARD_LOGON] if eku is None else eku,
        san=san,
        **options,
    )


@pytest.fixture(scope="module")
def pki() -> Pki:
    now = clock.now()
    root = _authority("DoD Test Root CA 3", None, 1)
    issuing = _authority("DOD TEST ID CA-59", root, 0)
    other_root = _authority("Not DoD Root", None, 1)
    other_issuing = _authority("NOT DOD ID CA-1", other_root, 0)
    leaves = {
        "valid": _leaf(issuing),
        "expired": _leaf(issuing, not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)),
        "not_yet_valid": _leaf(
            issuing, not_before=now + timedelta(days=1), not_after=now + timedelta(days=400)
        ),
        "revoked": _leaf(issuing),
        "wrong_eku": _leaf(issuing, eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION]),
        "unknown_ca": _leaf(other_issuing),
        "unknown_edipi": _leaf(issuing, UNKNOWN_EDIPI),
    }
    issuing.revoked.append(leaves["revoked"].serial_number)
    return Pki(root, issuing, other_root, other_issuing, leaves)


def _check(pki: Pki, leaf: x509.Certificate, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "intermediates": [pki.issuing.cert, pki.other_issuing.cert],
        "trust_roots": [pki.root.cert],
        "crls": pki.crls(),
        "now": clock.now(),
    }
    arguments.update(overrides)
    return check_client_certificate(leaf, **arguments)


def _reason(call: Callable[[], object]) -> str:
    with pytest.raises(CertificateRejected) as caught:
        call()
    return caught.value.reason


EXPECTED_REASONS = {
    "expired": "expired",
    "not_yet_valid": "not_yet_valid",
    "revoked": "revoked",
    "wrong_eku": "wrong_key_usage",
    "unknown_ca": "untrusted_chain",
}


def test_certificate_checks(pki: Pki) -> None:
    assert _check(pki, pki.leaves["valid"]) == EDIPI
    assert _check(pki, pki.leaves["unknown_edipi"]) == UNKNOWN_EDIPI  # valid; the account lookup refuses it
    for name, reason in EXPECTED_REASONS.items():
        assert _reason(lambda name=name: _check(pki, pki.leaves[name])) == reason, name  # type: ignore[misc]


def test_revocation_fails_closed(pki: Pki) -> None:
    valid = pki.leaves["valid"]
    now = clock.now()
    # No CRL from the issuing CA, a stale one, or one signed by someone else: no sign-in.
    assert _reason(lambda: _check(pki, valid, crls=[pki.root.crl(now)])) == "revocation_unknown"
    stale = pki.issuing.crl(now - timedelta(days=30), next_update=timedelta(days=7))
    assert _reason(lambda: _check(pki, valid, crls=[pki.root.crl(now), stale])) == "revocation_unknown"
    impostor = Authority(pki.other_issuing.key, pki.issuing.cert)  # right name, wrong key
    assert (
        _reason(lambda: _check(pki, valid, crls=[pki.root.crl(now), impostor.crl(now)]))
        == "revocation_unknown"
    )
    # A revoked issuing CA takes its certificates with it.
    pki.root.revoked.append(pki.issuing.cert.serial_number)
    try:
        assert _reason(lambda: _check(pki, valid)) == "revoked"
    finally:
        pki.root.revoked.clear()


def test_chain_rules(pki: Pki) -> None:
    valid = pki.leaves["valid"]
    assert _reason(lambda: _check(pki, valid, intermediates=[])) == "untrusted_chain"  # no path
    assert _reason(lambda: _check(pki, valid, trust_roots=[pki.other_root.cert])) == "untrusted_chain"
    assert _reason(lambda: _check(pki, valid, trust_roots=[])) == "untrusted_chain"
    # Path length: the issuing CA (pathLen 0) may not create another CA.
    rogue_ca = _authority("ROGUE SUB CA", pki.issuing, None)
    rogue_leaf = _leaf(rogue_ca)
    assert (
        _reason(
            lambda: _check(
                pki,
                rogue_leaf,
                intermediates=[pki.issuing.cert, rogue_ca.cert],
                crls=[*pki.crls(), rogue_ca.crl(clock.now())],
            )
        )
        == "untrusted_chain"
    )
    # An end-entity certificate cannot act as a CA (basic constraints).
    end_entity_key = ec.generate_private_key(ec.SECP256R1())
    end_entity = Authority(
        end_entity_key,
        _certificate(
            _name("NOT.A.CA.1111111111"),
            end_entity_key,
            pki.issuing,
            ca=False,
            eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
        ),
    )
    child = _leaf(end_entity)
    assert (
        _reason(
            lambda: _check(
                pki,
                child,
                intermediates=[pki.issuing.cert, end_entity.cert],
                crls=[*pki.crls(), end_entity.crl(clock.now())],
            )
        )
        == "untrusted_chain"
    )
    # Time moves: the same certificate expires.
    assert _reason(lambda: _check(pki, valid, now=clock.now() + timedelta(days=366))) == "expired"


def test_edipi_sources(pki: Pki) -> None:
    assert edipi_of(_leaf(pki.issuing, upn=False)) == EDIPI  # CN only
    assert edipi_of(_leaf(pki.issuing, cn=False)) == EDIPI  # SAN UPN only
    assert _reason(lambda: edipi_of(_leaf(pki.issuing, upn=False, cn=False))) == "no_edipi"
    key = ec.generate_private_key(ec.SECP256R1())
    mixed = _certificate(
        _name(f"DOE.JOHN.Q.{EDIPI}"),
        key,
        pki.issuing,
        ca=False,
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
        san=[_upn(f"{UNKNOWN_EDIPI}@mil")],
    )
    assert _reason(lambda: edipi_of(mixed)) == "ambiguous_edipi"
    key = ec.generate_private_key(ec.SECP256R1())
    no_eku = _certificate(_name(f"DOE.JOHN.Q.{EDIPI}"), key, pki.issuing, ca=False, eku=None)
    assert _reason(lambda: _check(pki, no_eku)) == "wrong_key_usage"
    empty_eku = _leaf(pki.issuing, eku=[])  # an empty SEQUENCE is not valid DER for this extension
    assert _reason(lambda: _check(pki, empty_eku)) == "malformed"


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _write_trust(pki: Pki, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "roots.pem").write_text(_pem(pki.root.cert))
    (directory / "intermediates.pem").write_text(_pem(pki.issuing.cert) + _pem(pki.other_issuing.cert))
    crls = directory / "crls"
    crls.mkdir(exist_ok=True)
    for i, crl in enumerate(pki.crls()):
        (crls / f"{i}.crl").write_bytes(
            crl.public_bytes(serialization.Encoding.DER if i % 2 else serialization.Encoding.PEM)
        )
    return {
        "smartcard_trust_roots": directory / "roots.pem",
        "smartcard_intermediates": directory / "intermediates.pem",
        "smartcard_crls": crls,
    }


@pytest.fixture(scope="module")
def trust_files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _write_trust(pki, tmp_path_factory.mktemp("trust"))


@pytest.fixture(scope="module")
def behind_proxy(backend_engine: Engine, trust_files: dict[str, Path]) -> Iterator[Served]:
    """Garrison behind a TLS front end at 127.0.0.1 that forwards the client certificate."""
    settings = identity_settings(backend_engine, trusted_proxies=["127.0.0.1"], **trust_files)
    with serve(settings, backend_engine) as served:
        yield served


@pytest.fixture(scope="module")
def exposed(backend_engine: Engine, trust_files: dict[str, Path]) -> Iterator[Served]:
    """Garrison reached directly: 127.0.0.1 is not a trusted proxy, so the header is a spoof."""
    settings = identity_settings(backend_engine, trusted_proxies=["10.255.255.1"], **trust_files)
    with serve(settings, backend_engine) as served:
        yield served


def _card_sign_in(served: Served, certificate: x509.Certificate | None) -> Browser:
    browser = Browser(served.base)
    token = browser.csrf("/signin/card")
    headers = {} if certificate is None else {"X-SSL-Client-Cert": quote(_pem(certificate))}
    response = browser.post("/signin/card", {"csrf_token": token}, headers=headers)
    assert response.status_code in (303, 400), response.text
    return browser


def test_only_the_valid_mapped_card_signs_in(
    pki: Pki, behind_proxy: Served, exposed: Served, engine: Engine
) -> None:
    """checklist A6: 1 of 8 attempts authenticates; the 7 failures are audited with their reason."""
    holder, _ = make_account(engine, "dr.cac", edipi=EDIPI, password=None, totp=False)
    attempts = [(behind_proxy, name) for name in pki.leaves] + [(exposed, "valid")]
    outcomes = {}
    for served, name in attempts:
        browser = _card_sign_in(served, pki.leaves[name])
        response = browser.whoami()
        label = name if served is behind_proxy else "spoofed_header"
        outcomes[label] = response.json() if response.status_code == 200 else None
    signed_in = {label: me for label, me in outcomes.items() if me is not None}
    assert list(signed_in) == ["valid"]
    me = signed_in["valid"]
    assert me["account_id"] == holder.id and me["method"] == "smartcard" and me["mfa"] is True

    failures = audit_rows(engine, "user:session:login_failed")
    reasons = sorted(f.detail["reason"] for f in failures)
    assert reasons == sorted([*EXPECTED_REASONS.values(), "unknown_edipi", "untrusted_certificate_header"])
    assert all(f.outcome == "failed" and f.source == "127.0.0.1" for f in failures)
    by_reason = {f.detail["reason"]: f for f in failures}
    assert EDIPI in by_reason["expired"].detail["subject"]  # which card was tried is on record
    assert by_reason["untrusted_certificate_header"].detail == {
        "reason": "untrusted_certificate_header",
        "method": "smartcard",
    }
    logins = audit_rows(engine, "user:session:login")
    assert (
        len(logins) == 1 and logins[0].detail["method"] == "smartcard" and logins[0].actor == holder.fhir_user
    )


def test_no_certificate_and_malformed_header(behind_proxy: Served, engine: Engine) -> None:
    browser = _card_sign_in(behind_proxy, None)
    assert browser.whoami().status_code == 401
    garbage = Browser(behind_proxy.base)
    token = garbage.csrf("/signin/card")
    response = garbage.post(
        "/signin/card", {"csrf_token": token}, headers={"X-SSL-Client-Cert": "not%20a%20cert"}
    )
    assert response.status_code == 400 and garbage.whoami().status_code == 401
    reasons = [f.detail["reason"] for f in audit_rows(engine, "user:session:login_failed")]
    assert reasons == ["no_certificate", "malformed"]


def test_a_disabled_or_locked_account_cannot_use_its_card(
    pki: Pki, behind_proxy: Served, engine: Engine
) -> None:
    from garrison.db.engine import write_transaction
    from garrison.identity import accounts

    holder, _ = make_account(engine, "dr.cac.off", edipi=EDIPI, password=None, totp=False)
    with write_transaction(engine) as conn:
        accounts.disable_account(conn, holder.id, actor="system/tests", actor_role="system")
    assert _card_sign_in(behind_proxy, pki.leaves["valid"]).whoami().status_code == 401
    assert audit_rows(engine, "user:session:login_failed")[-1].detail["reason"] == "disabled"


class _TlsExtension:
    """Stands in for an ASGI server that implements the TLS extension
    (https://asgi.readthedocs.io/en/latest/specs/tls.html): puts the chain in the scope."""

    chain: ClassVar[list[str]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.chain:
            scope["extensions"] = {
                **(scope.get("extensions") or {}),
                "tls": {"client_cert_chain": self.chain},
            }
        await self.app(scope, receive, send)


def test_certificate_from_the_asgi_tls_extension(
    pki: Pki, backend_engine: Engine, engine: Engine, tmp_path: Path
) -> None:
    settings: Settings = identity_settings(backend_engine, **_write_trust(pki, tmp_path))
    make_account(engine, "dr.direct", edipi=EDIPI, password=None, totp=False)
    with serve(settings, backend_engine, outer=_TlsExtension) as served:
        _TlsExtension.chain = [_pem(pki.leaves["revoked"]), _pem(pki.issuing.cert)]
        assert _card_sign_in(served, None).whoami().status_code == 401
        _TlsExtension.chain = [_pem(pki.leaves["valid"]), _pem(pki.issuing.cert)]
        assert _card_sign_in(served, None).whoami().status_code == 200
        _TlsExtension.chain = []
    reasons = [f.detail["reason"] for f in audit_rows(engine, "user:session:login_failed")]
    assert reasons == ["revoked"]
