"""Shared helpers for the HTTP-level security tests (no tests here): accounts and tokens for every
kind of caller, forged and expired credentials, the FHIR interaction shapes to probe, the audit
rows a request produced, and a log capture that sees every logger (checklist A1, A4, Z2, U1)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.jwk import RSAKey
from sqlalchemy import Engine, func, select

from garrison.audit.chain import AuditRow, decode_row
from garrison.audit.schema import audit_log
from garrison.audit.verify import VerifyReport, verify_audit
from garrison.beneficiaries.vocabulary import PROXY_ACCOUNT
from garrison.db.engine import read_transaction, snapshot_transaction, write_transaction
from garrison.identity.accounts import create_account
from garrison.identity.model import Account, Kind
from garrison.oauth.clients import register_client
from garrison.oauth.tokens import TokenGrant, issue_access_token
from garrison.settings import Settings
from tests.pg_cluster import free_port

FHIR_JSON = "application/fhir+json"
APP_REDIRECT = "https://app.example.org/callback"
APP_SCOPES = (
    "launch/patient",
    "openid",
    "fhirUser",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "user/*.cruds",
)
# Anything shaped like a compact JWS/JWT: base64url JSON header ("eyJ" is '{"'), payload, signature.
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


# --- callers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """A bearer token and what the audit trail should say about whoever holds it."""

    token: str
    jti: str
    actor: str
    role: str
    patient: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register_app(engine: Engine, scopes: Sequence[str] = APP_SCOPES) -> str:
    """A public SMART app (the client that patient and staff tokens are issued through)."""
    with write_transaction(engine) as conn:
        registered = register_client(
            conn, name="security test app", client_type="public", scopes=scopes, redirect_uris=(APP_REDIRECT,)
        )
    return registered.client.client_id


def new_account(
    engine: Engine,
    username: str,
    *,
    kind: Kind,
    role: str,
    fhir_user: str,
    facility: str | None = None,
    password: str | None = None,
) -> Account:
    with write_transaction(engine) as conn:
        return create_account(
            conn,
            username=username,
            kind=kind,
            role=role,
            display_name=username.title(),
            fhir_user=fhir_user,
            facility=facility,
            password=password,
            actor="system/tests",
            actor_role="system",
        )


def user_caller(
    engine: Engine,
    settings: Settings,
    client_id: str,
    account: Account,
    scopes: Sequence[str],
    *,
    patient: str | None = None,
) -> Caller:
    """A token issued to `account` through `client_id`, as the token endpoint would issue it."""
    with write_transaction(engine) as conn:
        issued = issue_access_token(
            conn,
            settings,
            TokenGrant(
                client_id=client_id,
                scopes=tuple(scopes),
                role=account.role,
                account_id=account.id,
                fhir_user=account.fhir_user,
                patient=patient,
            ),
        )
    own = account.fhir_user.removeprefix("Patient/") if account.fhir_user.startswith("Patient/") else None
    return Caller(issued.token, issued.jti, account.fhir_user, account.role, patient or own)


def backend_caller(engine: Engine, settings: Settings, token: str) -> Caller:
    """The suite's backend-services token (`server.token`) described as a Caller."""
    claims = unverified_claims(token)
    return Caller(token, claims["jti"], f"client/{claims['client_id']}", "system")


def proxy_relationship(
    account: Account, patient_id: str, *, active: bool = True, related_id: str | None = None
) -> dict[str, Any]:
    """The RelatedPerson that makes `account` a proxy for `patient_id` (garrison.callers)."""
    return {
        "resourceType": "RelatedPerson",
        "id": related_id or account.fhir_user.removeprefix("RelatedPerson/"),
        "active": active,
        "identifier": [{"system": PROXY_ACCOUNT, "value": account.id}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "relationship": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PRN"}]}
        ],
        "name": [{"family": "Parent", "given": ["Pat"]}],
    }


# --- forged and broken credentials ----------------------------------------------------------


def _b64url_json(segment: str) -> dict[str, Any]:
    decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(decoded, dict)
    return decoded


def unverified_claims(token: str) -> dict[str, Any]:
    return _b64url_json(token.split(".")[1])


def unverified_header(token: str) -> dict[str, Any]:
    return _b64url_json(token.split(".", maxsplit=1)[0])


def signed_by_another_key(token: str, *, same_kid: bool) -> str:
    """The same header and claims, signed with a key the server never had: under the server's
    own key id (a forger who read the JWKS) or under a key id of its own."""
    header = unverified_header(token)
    kid = header["kid"] if same_kid else f"attacker-{secrets.token_hex(4)}"
    key = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
    forged_header = {"alg": "RS256", "kid": kid, "typ": header.get("typ", "at+jwt")}
    payload = json.dumps(unverified_claims(token), separators=(",", ":"))
    return jws.serialize_compact(forged_header, payload, key, algorithms=["RS256"])


MALFORMED_TOKENS = (
    "not-a-token",
    "a.b.c",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",  # alg none, no signature
    "x" * 5000,
)


# --- FHIR interaction shapes --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """One FHIR interaction as an HTTP request (path relative to the FHIR base)."""

    name: str
    method: str
    path: str
    body: Any = None
    content_type: str = FHIR_JSON
    params: tuple[tuple[str, str], ...] = ()

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        if self.content_type == "application/x-www-form-urlencoded":
            return "&".join(f"{k}={v}" for k, v in self.body).encode()
        return json.dumps(self.body).encode()

    def request_headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type} if self.body is not None else {}


def patient_body(family: str, *, patient_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Sam"]}],
        "gender": "unknown",
        "birthDate": "1990-02-03",
        **extra,
    }
    if patient_id is not None:
        body["id"] = patient_id
    return body


def observation_body(patient_id: str, *, code: str = "8867-4", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        **extra,
    }


def fhir_shapes(patient_id: str, observation_id: str) -> list[Shape]:
    """Every kind of FHIR interaction (https://hl7.org/fhir/R4/http.html), aimed at real data."""
    patch = [{"op": "replace", "path": "/gender", "value": "other"}]
    bundle_entry = {"request": {"method": "GET", "url": f"Patient/{patient_id}"}}
    return [
        Shape("read", "GET", f"Patient/{patient_id}"),
        Shape("read (HEAD)", "HEAD", f"Patient/{patient_id}"),
        Shape("vread", "GET", f"Patient/{patient_id}/_history/1"),
        Shape("search-type", "GET", "Observation", params=(("subject", f"Patient/{patient_id}"),)),
        Shape(
            "search-type (POST)",
            "POST",
            "Observation/_search",
            [("subject", f"Patient/{patient_id}")],
            "application/x-www-form-urlencoded",
        ),
        Shape("search-system", "GET", "", params=(("_type", "Patient"),)),
        Shape(
            "search-system (POST)",
            "POST",
            "_search",
            [("_type", "Patient")],
            "application/x-www-form-urlencoded",
        ),
        Shape("search-compartment", "GET", f"Patient/{patient_id}/Observation"),
        Shape("history-instance", "GET", f"Patient/{patient_id}/_history"),
        Shape("history-type", "GET", "Patient/_history"),
        Shape("history-system", "GET", "_history"),
        Shape("create", "POST", "Observation", observation_body(patient_id)),
        Shape("conditional create", "POST", "Patient", patient_body("Cond")),
        Shape("update", "PUT", f"Patient/{patient_id}", patient_body("Changed", patient_id=patient_id)),
        Shape("conditional update", "PUT", "Patient", patient_body("Changed"), params=(("name", "Alpha"),)),
        Shape("patch", "PATCH", f"Patient/{patient_id}", patch, "application/json-patch+json"),
        Shape("delete", "DELETE", f"Observation/{observation_id}"),
        Shape("conditional delete", "DELETE", "Observation", params=(("subject", f"Patient/{patient_id}"),)),
        Shape("operation $everything", "GET", f"Patient/{patient_id}/$everything"),
        Shape("operation $everything (POST)", "POST", f"Patient/{patient_id}/$everything"),
        Shape("operation $validate", "POST", "Patient/$validate", patient_body("Valid")),
        Shape(
            "operation $match",
            "POST",
            "Patient/$match",
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": patient_body("Alpha")}],
            },
        ),
        Shape("operation $break-the-glass", "POST", f"Patient/{patient_id}/$break-the-glass"),
        Shape("batch", "POST", "", {"resourceType": "Bundle", "type": "batch", "entry": [bundle_entry]}),
        Shape(
            "transaction",
            "POST",
            "",
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": patient_body("Tx"), "request": {"method": "POST", "url": "Patient"}}],
            },
        ),
    ]


def capability_shapes(capability: dict[str, Any], resource_id: str = "probe-1") -> list[Shape]:
    """One request per interaction and operation the CapabilityStatement advertises (checklist A1:
    "enumerate all routes from the ASGI router + CapabilityStatement")."""
    templates = {
        "read": ("GET", "{type}/{id}"),
        "vread": ("GET", "{type}/{id}/_history/1"),
        "update": ("PUT", "{type}/{id}"),
        "patch": ("PATCH", "{type}/{id}"),
        "delete": ("DELETE", "{type}/{id}"),
        "history-instance": ("GET", "{type}/{id}/_history"),
        "history-type": ("GET", "{type}/_history"),
        "create": ("POST", "{type}"),
        "search-type": ("GET", "{type}"),
    }
    shapes: list[Shape] = []
    rest = capability["rest"][0]
    for entry in rest["resource"]:
        kind = entry["type"]
        for interaction in entry.get("interaction", []):
            method, template = templates[interaction["code"]]
            body = {"resourceType": kind, "id": resource_id} if method in ("PUT", "POST") else None
            path = template.format(type=kind, id=resource_id)
            shapes.append(Shape(f"{kind} {interaction['code']}", method, path, body))
        for operation in entry.get("operation", []):
            name = operation["name"]
            shapes.append(
                Shape(f"{kind} {name} (type)", "POST", f"{kind}/{name}", {"resourceType": "Parameters"})
            )
            shapes.append(Shape(f"{kind} {name} (instance)", "GET", f"{kind}/{resource_id}/{name}"))
    system_paths = {
        "transaction": ("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": []}),
        "batch": ("POST", "", {"resourceType": "Bundle", "type": "batch", "entry": []}),
        "search-system": ("GET", "", None),
        "history-system": ("GET", "_history", None),
    }
    for interaction in rest.get("interaction", []):
        method, path, body = system_paths[interaction["code"]]
        shapes.append(Shape(f"system {interaction['code']}", method, path, body))
    for operation in rest.get("operation", []):
        shapes.append(
            Shape(f"system {operation['name']}", "POST", operation["name"], {"resourceType": "Parameters"})
        )
    return shapes


# --- the audit trail ------------------------------------------------------------------------


def audit_tail(engine: Engine) -> int:
    with read_transaction(engine) as conn:
        return int(conn.execute(select(func.coalesce(func.max(audit_log.c.seq), 0))).scalar_one())


def audit_after(engine: Engine, seq: int) -> list[AuditRow]:
    with read_transaction(engine) as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.seq > seq).order_by(audit_log.c.seq))
        return [decode_row(r) for r in rows]


def verify_chain(engine: Engine) -> VerifyReport:
    """`garrison audit verify` without checkpoints or anchors: the hash chain itself."""
    with snapshot_transaction(engine) as conn:
        return verify_audit(conn, Ed25519PrivateKey.generate().public_key(), None)


# --- logs -------------------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Every record of every logger while installed, formatted with its traceback if any."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def capture_all_logs(leave: Sequence[str] = ()) -> Iterator[LogCapture]:
    """Capture every logger at DEBUG: the root and each named logger that exists, with their
    levels lowered (uvicorn's loggers do not propagate), restored afterwards; loggers made during
    the capture go back to inheriting their level. Loggers under the `leave` prefixes keep their
    own level (they are still captured at that level)."""
    capture = LogCapture()
    manager = logging.Logger.manager
    named = [lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    loggers = [logging.getLogger(), *named]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        if not lg.name.startswith(tuple(leave)):
            lg.setLevel(logging.DEBUG)
        if lg is logging.getLogger() or not lg.propagate:
            lg.addHandler(capture)
    try:
        yield capture
    finally:
        for lg, level in saved:
            lg.removeHandler(capture)
            lg.setLevel(level)
        known = {id(lg) for lg in loggers}
        for lg in list(manager.loggerDict.values()):
            if isinstance(lg, logging.Logger) and id(lg) not in known:
                lg.setLevel(logging.NOTSET)  # made during the capture (uvicorn sets some): inherit again


# --- a server with every log switched on --------------------------------------------------------


class VerboseServer:
    """The real application (`create_app`) under uvicorn with DEBUG logs and access logs on, and
    logging left to the test (`log_config=None`): the worst case for what could reach a log."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        from garrison.web.app import create_app

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.fhir = f"{self.base}/fhir"
        self.settings = Settings(
            database_url=engine.url.render_as_string(hide_password=False),
            base_url=self.fhir,
            data_dir=data_dir,
        )
        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="debug",
            access_log=True,
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the verbose test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def backend_token(engine: Engine, settings: Settings, scopes: Sequence[str] = ("system/*.cruds",)) -> str:
    """A backend-services client registered with a run-time key, and a token for it."""
    key = RSAKey.generate_key(2048, parameters={"kid": "security-tests"}, private=True)
    with write_transaction(engine) as conn:
        registered = register_client(
            conn,
            name="security tests backend",
            client_type="backend",
            scopes=scopes,
            jwks={"keys": [key.as_dict(private=False)]},
        )
        issued = issue_access_token(
            conn,
            settings,
            TokenGrant(client_id=registered.client.client_id, scopes=tuple(scopes), role="system"),
        )
    return issued.token


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
