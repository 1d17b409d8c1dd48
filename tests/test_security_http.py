"""Security of the whole application over HTTP (uvicorn on 127.0.0.1, in this process, so the
tests can move `garrison.clock`).

- Checklist A1: every route of the Starlette app and every FHIR interaction the
  CapabilityStatement advertises refuses a request with no, a malformed, an expired or a forged
  token (401 + OperationOutcome + WWW-Authenticate: Bearer; pages redirect to /signin). The
  allow-list of public routes is explicit, reviewed here, and small.
- Checklist Z1/Z2/Z6/Z10/A10: a patient token reaches its own record only, within its scopes, and
  stops at once when revoked; a proxy token works only while its RelatedPerson is active.
- Checklist Z4: no mass assignment: security labels, ids, versionId/lastUpdated and another
  patient's compartment cannot be set by a patient.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from garrison import clock
from garrison.db.engine import read_transaction, write_transaction
from garrison.db.schema import resource
from garrison.identity import accounts, sessions
from garrison.identity.model import Account
from garrison.oauth.tokens import revoke_access_token, revoke_tokens_for_account
from garrison.web import fhir_api
from tests.conftest import LiveServer
from tests.identity_fixtures import PASSWORD, Browser, cheap_password_hashing
from tests.security_support import (
    APP_REDIRECT,
    FHIR_JSON,
    MALFORMED_TOKENS,
    Caller,
    Shape,
    backend_caller,
    capability_shapes,
    fhir_shapes,
    new_account,
    observation_body,
    patient_body,
    proxy_relationship,
    register_app,
    signed_by_another_key,
    user_caller,
)

PATIENT_A, PATIENT_B, CHILD = "sec-a", "sec-b", "sec-child"
FACILITY = "facility-sec"
R_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}

# checklist A1: the reviewed allow-list. Paths served without any credentials, and why.
ALLOW_LIST: dict[str, str] = {
    "/": "landing page: two links, no data",
    "/signin": "sign-in form (password)",
    "/signin/totp": "sign-in, second step (needs the challenge cookie from the first)",
    "/signin/card": "sign-in with a CAC/PIV card",
    "/static": "the pages' stylesheet",
    "/.well-known/smart-configuration": "SMART discovery (SMART App Launch 2.0 §2.1)",
    "/.well-known/openid-configuration": "OpenID discovery",
    "/fhir/.well-known/smart-configuration": "SMART discovery under the FHIR base",
    "/fhir/.well-known/openid-configuration": "OpenID discovery under the FHIR base",
    "/oauth/jwks": "public keys to verify our tokens",
    "/oauth/token": "authenticates clients itself (PKCE, client secret or private_key_jwt)",
    "/oauth/revoke": "authenticates clients itself (RFC 7009)",
    "/oauth/introspect": "authenticates clients itself (RFC 7662)",
    "/fhir/metadata": "the CapabilityStatement (FHIR http.html#capabilities)",
    # The portal's signed-out pages (issue 5), reviewed: each answers the same whatever is
    # entered, is rate limited, and reveals nothing about whether a person or account exists.
    "/portal/activate": "first-time activation: DoD ID, birth date, one-time code (one generic failure)",
    "/portal/reset": "ask for a reset link (the same answer whatever is entered)",
    "/portal/reset/{token}": "set a new password with a single-use 30-minute link",
}
ALLOW_LIST_CEILING = 17  # raising this needs a security review of the new public route
# Route families whose every route is probed the same way (no session: redirect to /signin),
# with path parameters filled in by `_generic_probe`.
PROBED_FAMILIES = ("/portal", "/workspace/inbox")


@dataclass
class World:
    server: LiveServer
    system: Caller
    app_client: str
    patient_account: Account
    proxy_account: Account
    observations: dict[str, str]  # patient id -> one Observation id

    @property
    def fhir(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.fhir, timeout=30)


@pytest.fixture
def world(server: LiveServer, engine: Engine) -> World:
    """Patients A (registered at the staff facility), B and a child C with a parent proxy, one
    Observation each; a SMART app; a patient account for A and a proxy account for C."""
    system = backend_caller(engine, server.settings, server.token)
    observations: dict[str, str] = {}
    with httpx.Client(base_url=server.fhir, timeout=30, headers=system.headers) as fhir:
        for patient_id, family in ((PATIENT_A, "Alpha"), (PATIENT_B, "Bravo"), (CHILD, "Charlie")):
            extra: dict[str, Any] = {"managingOrganization": {"reference": f"Organization/{FACILITY}"}}
            if patient_id == CHILD:
                # A parent acts for a child under 13 (a guardianship gives nothing at 18).
                extra["birthDate"] = (clock.now() - timedelta(days=365 * 9)).date().isoformat()
            created = fhir.put(
                f"/Patient/{patient_id}", json=patient_body(family, patient_id=patient_id, **extra)
            )
            assert created.status_code == 201, created.text
            observation = fhir.post("/Observation", json=observation_body(patient_id))
            assert observation.status_code == 201, observation.text
            observations[patient_id] = observation.json()["id"]
    patient = new_account(
        engine, "sec.alpha", kind="patient", role="patient", fhir_user=f"Patient/{PATIENT_A}"
    )
    proxy = new_account(
        engine, "sec.parent", kind="proxy", role="proxy", fhir_user="RelatedPerson/sec-parent"
    )
    with httpx.Client(base_url=server.fhir, timeout=30, headers=system.headers) as fhir:
        related = fhir.put("/RelatedPerson/sec-parent", json=proxy_relationship(proxy, CHILD))
        assert related.status_code == 201, related.text
    return World(server, system, register_app(engine), patient, proxy, observations)


def _assert_unauthorized(response: httpx.Response, what: str) -> None:
    """checklist A1: 401, WWW-Authenticate: Bearer (RFC 6750 §3), an OperationOutcome body."""
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers.get("www-authenticate", "").startswith("Bearer"), what
    if response.request.method != "HEAD":
        body = response.json()
        assert body["resourceType"] == "OperationOutcome", what
        assert body["issue"][0]["code"] == "security", what


def _send(client: httpx.Client, shape: Shape, headers: dict[str, str]) -> httpx.Response:
    return client.request(
        shape.method,
        f"/{shape.path}" if shape.path else "/",
        params=list(shape.params),
        content=shape.content(),
        headers={**shape.request_headers(), **headers},
    )


def _resource_counts(engine: Engine) -> list[tuple[str, int, int]]:
    with read_transaction(engine) as conn:
        rows = conn.execute(
            select(resource.c.resource_type, func.count(), func.sum(resource.c.version_id))
            .group_by(resource.c.resource_type)
            .order_by(resource.c.resource_type)
        )
        return [(t, int(n), int(v)) for t, n, v in rows]


# --- A1: routes ---------------------------------------------------------------------------------


def _app(server: LiveServer) -> Starlette:
    app = server._server.config.app  # the application object uvicorn is serving
    assert isinstance(app, Starlette)
    return app


def _route_table(routes: list[BaseRoute]) -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Route):
            table.setdefault(route.path, set()).update(route.methods or ())
        elif isinstance(route, Mount):
            table.setdefault(route.path, set()).add("GET")
        else:
            raise AssertionError(f"an unexpected kind of route: {route!r}")
    return table


@dataclass(frozen=True)
class PageProbe:
    """How to call a protected, non-FHIR route, and what refusing looks like."""

    method: str
    path: str  # with path parameters filled in
    form: dict[str, str] | None = None  # POSTs also get a valid pre-sign-in CSRF token
    refusal: str = "redirect"  # "redirect" (to /signin) or "401"


def _page_probes(server: LiveServer, client_id: str) -> dict[tuple[str, str], PageProbe]:
    """Keyed by (method, route path) as the router declares them."""
    authorize = (
        f"/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={APP_REDIRECT}"
        f"&scope=launch/patient+patient/*.rs&state=s1&aud={server.fhir}"
        "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    )
    return {
        ("GET", "/account/security"): PageProbe("GET", "/account/security"),
        ("POST", "/signout"): PageProbe("POST", "/signout", {}),
        ("POST", "/account/sessions/{session_id}/end"): PageProbe(
            "POST", "/account/sessions/0123abcd/end", {}
        ),
        ("POST", "/account/totp"): PageProbe("POST", "/account/totp", {"password": PASSWORD}),
        ("POST", "/account/totp/confirm"): PageProbe("POST", "/account/totp/confirm", {"code": "123456"}),
        ("GET", "/oauth/authorize"): PageProbe("GET", authorize),
        ("POST", "/oauth/authorize"): PageProbe(
            "POST", "/oauth/authorize", {"decision": "approve", "consent_id": "x"}, refusal="401"
        ),
        # The staff workspace (issue 4).
        ("GET", "/workspace"): PageProbe("GET", "/workspace"),
        ("POST", "/workspace"): PageProbe("POST", "/workspace", {"name": "Alpha"}),
        ("GET", "/workspace/patients/{patient_id}"): PageProbe("GET", f"/workspace/patients/{PATIENT_A}"),
        ("GET", "/workspace/register"): PageProbe("GET", "/workspace/register"),
        ("POST", "/workspace/register"): PageProbe("POST", "/workspace/register", {"family": "Alpha"}),
        ("GET", "/workspace/duplicates"): PageProbe("GET", "/workspace/duplicates"),
        ("POST", "/workspace/duplicates/find"): PageProbe("POST", "/workspace/duplicates/find", {}),
        ("POST", "/workspace/duplicates/{task_id}/merge"): PageProbe(
            "POST", "/workspace/duplicates/task-1/merge", {"survivor": PATIENT_A}
        ),
        ("POST", "/workspace/duplicates/{task_id}/dismiss"): PageProbe(
            "POST", "/workspace/duplicates/task-1/dismiss", {}
        ),
        ("GET", "/workspace/merges"): PageProbe("GET", "/workspace/merges"),
        ("POST", "/workspace/merges/{merge_id}/unmerge"): PageProbe(
            "POST", "/workspace/merges/merge-1/unmerge", {}
        ),
        # Staff pages that close the portal's loops (issue 5): held results, prescription
        # requests, portal activation codes.
        ("GET", "/workspace/results/held"): PageProbe("GET", "/workspace/results/held"),
        ("POST", "/workspace/results/{resource_type}/{resource_id}/release"): PageProbe(
            "POST", "/workspace/results/DiagnosticReport/report-1/release", {}
        ),
        ("GET", "/workspace/refills"): PageProbe("GET", "/workspace/refills"),
        ("GET", "/workspace/refills/{task_id}"): PageProbe("GET", "/workspace/refills/task-1"),
        ("POST", "/workspace/refills/{task_id}/accept"): PageProbe(
            "POST", "/workspace/refills/task-1/accept", {}
        ),
        ("POST", "/workspace/refills/{task_id}/complete"): PageProbe(
            "POST", "/workspace/refills/task-1/complete", {}
        ),
        ("POST", "/workspace/refills/{task_id}/reject"): PageProbe(
            "POST", "/workspace/refills/task-1/reject", {"reason": "No"}
        ),
        ("POST", "/workspace/patients/{patient_id}/activation-code"): PageProbe(
            "POST", f"/workspace/patients/{PATIENT_A}/activation-code", {}
        ),
    }


_PATH_PARAMETER = re.compile(r"\{(\w+)(:int)?\}")


def _generic_probe(method: str, path: str) -> PageProbe | None:
    """The probe of a route in PROBED_FAMILIES: parameters filled in, an empty form for POSTs."""
    if path in ALLOW_LIST or not any(path == f or path.startswith(f + "/") for f in PROBED_FAMILIES):
        return None
    filled = _PATH_PARAMETER.sub(lambda m: "1" if m.group(2) else "x1", path)
    return PageProbe(method, filled, {} if method == "POST" else None)


def _all_page_probes(world: World) -> dict[tuple[str, str], PageProbe]:
    """The declared probes, and the generic probe of every route of the probed families."""
    probes = _page_probes(world.server, world.app_client)
    for path, methods in _route_table(_app(world.server).routes).items():
        for method in methods - {"HEAD"}:
            probe = _generic_probe(method, path)
            if probe is not None and (method, path) not in probes:
                probes[(method, path)] = probe
    return probes


def test_every_route_is_either_allow_listed_or_protected(world: World) -> None:
    """checklist A1: the router's routes, walked; a route nobody declared fails this test."""
    assert len(ALLOW_LIST) <= ALLOW_LIST_CEILING
    # The public FHIR paths the API itself serves without a token are exactly the reviewed ones.
    assert {f"/fhir/{p}" for p in fhir_api.PUBLIC_PATHS} <= ALLOW_LIST.keys()
    assert len(fhir_api.PUBLIC_PATHS) == 2
    table = _route_table(_app(world.server).routes)
    probes = _page_probes(world.server, world.app_client)
    fhir_routes = {"/fhir", "/fhir/{path:path}"}
    undeclared = []
    for path, methods in table.items():
        if path in fhir_routes:
            continue  # every FHIR interaction is probed below
        for method in methods - {"HEAD"}:
            if (
                path not in ALLOW_LIST
                and (method, path) not in probes
                and _generic_probe(method, path) is None
            ):
                undeclared.append(f"{method} {path}")
    assert not undeclared, f"routes neither allow-listed nor probed: {undeclared}"
    assert fhir_routes <= table.keys()
    # The allow-list names only routes that exist (a stale entry would hide a rename).
    served = set(table) | {"/fhir/metadata"}
    assert set(ALLOW_LIST) <= served


def test_allow_listed_routes_answer_without_credentials_and_hold_no_patient_data(world: World) -> None:
    """checklist A1: the public routes are public on purpose and carry nothing about patients;
    the token, revocation and introspection endpoints refuse unauthenticated clients."""
    with httpx.Client(base_url=world.server.base, timeout=30, follow_redirects=False) as web:
        for path in ALLOW_LIST:
            if path.startswith("/oauth/") and path != "/oauth/jwks":
                continue
            url = "/static/garrison.css" if path == "/static" else path
            if path == "/signin/totp":
                assert web.get(url).headers["location"].startswith("/signin")  # no challenge yet
                continue
            if path == "/portal/reset/{token}":
                assert web.get("/portal/reset/not-a-token").status_code == 404  # no such link
                continue
            response = web.get(url)
            assert response.status_code == 200, (path, response.status_code)
            for name in ("Alpha", "Bravo", "Charlie", PATIENT_A, "sec.alpha"):
                assert name not in response.text, (path, name)
        for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
            refused = web.post(path, data={"token": world.system.token, "grant_type": "client_credentials"})
            assert refused.status_code == 401, (path, refused.text)
            assert refused.json()["error"] == "invalid_client"
            assert "active" not in refused.json()


def _presession(web: httpx.Client) -> tuple[str, str]:
    """A pre-sign-in cookie and the CSRF token bound to it (so POST probes get past CSRF and
    meet the authentication check itself)."""
    page = web.get("/signin")
    cookie = page.cookies.get("garrison_pre")
    assert cookie, page.headers
    marker = 'name="csrf_token" value="'
    start = page.text.index(marker) + len(marker)
    return cookie, page.text[start : page.text.index('"', start)]


def _probe_page(
    web: httpx.Client,
    probe: PageProbe,
    presession: tuple[str, str],
    cookies: dict[str, str],
    headers: dict[str, str],
) -> httpx.Response:
    jar = {"garrison_pre": presession[0], **cookies}
    cookie_header = "; ".join(f"{k}={v}" for k, v in jar.items())
    if probe.method == "GET":
        return web.get(probe.path, headers={"cookie": cookie_header, **headers})
    form = {"csrf_token": presession[1], **(probe.form or {})}
    return web.post(probe.path, data=form, headers={"cookie": cookie_header, **headers})


def _assert_page_refused(response: httpx.Response, probe: PageProbe, what: str) -> None:
    if probe.refusal == "401":
        assert response.status_code == 401, (what, response.status_code, response.text[:200])
        return
    assert response.status_code in (302, 303), (what, response.status_code, response.text[:200])
    assert response.headers["location"].startswith("/signin"), (what, response.headers["location"])


@pytest.fixture
def _cheap_hashing() -> Iterator[None]:
    with cheap_password_hashing():
        yield


@pytest.mark.usefixtures("_cheap_hashing")
def test_pages_need_a_live_session(world: World, engine: Engine) -> None:
    """checklist A1, A9: every protected page refuses no session, a malformed or unknown
    session cookie, an expired session and a bearer token (which is for the FHIR API only)."""
    server = world.server
    holder = new_account(
        engine,
        "sec.pages",
        kind="patient",
        role="patient",
        fhir_user=f"Patient/{PATIENT_A}",
        password=PASSWORD,
    )
    browser = Browser(server.base)
    signed = browser.sign_in(holder.username)
    assert signed.status_code == 303, signed.text
    live = browser.cookies["garrison_session"]
    probes = _all_page_probes(world)
    with httpx.Client(base_url=server.base, timeout=30, follow_redirects=False) as web:
        presession = _presession(web)
        # Positive control: the same probes with the live session are let in.
        for name in (("GET", "/account/security"), ("GET", "/oauth/authorize")):
            allowed = _probe_page(web, probes[name], presession, {"garrison_session": live}, {})
            assert allowed.status_code == 200, (name, allowed.status_code, allowed.headers.get("location"))
        variants: dict[str, tuple[dict[str, str], dict[str, str]]] = {
            "no session": ({}, {}),
            "malformed cookie": ({"garrison_session": "%%not-a-token%%"}, {}),
            "unknown session": ({"garrison_session": sessions.new_token()}, {}),
            "bearer token": ({}, world.system.headers),
        }
        for variant, (cookies, headers) in variants.items():
            for name, probe in probes.items():
                _assert_page_refused(
                    _probe_page(web, probe, presession, cookies, headers), probe, f"{name}, {variant}"
                )
        # The patient portal's absolute limit is 4 hours (settings.session_lifetime_hours_patient).
        with clock.travel(timedelta(hours=4, minutes=1)):
            expired_presession = _presession(web)
            for name, probe in probes.items():
                response = _probe_page(web, probe, expired_presession, {"garrison_session": live}, {})
                _assert_page_refused(response, probe, f"{name}, expired session")


# --- A1: the FHIR API -----------------------------------------------------------------------------


def _bad_credentials(world: World) -> dict[str, dict[str, str]]:
    token = world.system.token
    variants: dict[str, dict[str, str]] = {
        "no token": {},
        "another scheme": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        "empty bearer": {"Authorization": "Bearer"},
        "token without scheme": {"Authorization": token},
        "signed by another key, our kid": {
            "Authorization": f"Bearer {signed_by_another_key(token, same_kid=True)}"
        },
        "signed by another key": {"Authorization": f"Bearer {signed_by_another_key(token, same_kid=False)}"},
        "truncated signature": {"Authorization": f"Bearer {token[:-6]}"},
    }
    for i, malformed in enumerate(MALFORMED_TOKENS):
        variants[f"malformed {i}"] = {"Authorization": f"Bearer {malformed}"}
    return variants


def test_every_fhir_interaction_refuses_bad_tokens(world: World, engine: Engine) -> None:
    """checklist A1, Z8: read, vread, search (type, system, compartment, POST), history, create,
    conditional create/update/delete, update, patch, delete, operations, batch and transaction."""
    shapes = fhir_shapes(PATIENT_A, world.observations[PATIENT_A])
    before = _resource_counts(engine)
    with world.fhir as fhir:
        # Positive control: the genuine token is accepted on a read.
        assert fhir.get(f"/Patient/{PATIENT_A}", headers=world.system.headers).status_code == 200
        for variant, headers in _bad_credentials(world).items():
            for shape in shapes:
                _assert_unauthorized(_send(fhir, shape, headers), f"{shape.name}, {variant}")
        revoked = user_caller(
            engine, world.server.settings, world.app_client, world.patient_account, ["patient/*.rs"]
        )
        assert fhir.get(f"/Patient/{PATIENT_A}", headers=revoked.headers).status_code == 200
        with write_transaction(engine) as conn:
            revoke_access_token(conn, revoked.jti)
        expiring = user_caller(
            engine, world.server.settings, world.app_client, world.patient_account, ["patient/*.rs"]
        )
        settings = world.server.settings
        lifetime = timedelta(seconds=settings.oauth_access_token_ttl + settings.oauth_clock_leeway + 1)
        for shape in shapes:
            _assert_unauthorized(_send(fhir, shape, revoked.headers), f"{shape.name}, revoked token")
        with clock.travel(lifetime):
            for shape in shapes:
                _assert_unauthorized(_send(fhir, shape, expiring.headers), f"{shape.name}, expired token")
    assert _resource_counts(engine) == before  # nothing was written by any refused request


def test_every_advertised_interaction_needs_a_token(world: World) -> None:
    """checklist A1: generated from our own CapabilityStatement (every type x interaction, every
    operation, the system interactions), each called with no token."""
    with world.fhir as fhir:
        capability = fhir.get("/metadata")
        assert capability.status_code == 200  # public, as allow-listed
        shapes = capability_shapes(capability.json())
    assert len(shapes) > 1000  # 146 types x 9 interactions, their operations, the system level

    def call_all(part: list[Shape]) -> None:
        with world.fhir as fhir:
            for shape in part:
                _assert_unauthorized(_send(fhir, shape, {}), shape.name)

    # Four connections at once: each refusal is audited, and the audit sink commits them in groups.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(call_all, [shapes[i::4] for i in range(4)]))


def test_unauthenticated_requests_are_refused_before_their_body_is_looked_at(world: World) -> None:
    """checklist A1: a client without a token learns nothing, not even how its body or Accept
    header would have been judged (and the server parses nothing it sent)."""
    cases = [
        ("POST", "/Patient", b"{not json", {"Content-Type": FHIR_JSON}),
        ("POST", "/Patient", b"<Patient/>", {"Content-Type": "application/fhir+xml"}),
        ("GET", "/Patient", None, {"Accept": "application/fhir+xml"}),
        ("GET", "/Patient?_format=xml", None, {}),
        ("POST", "/Patient", b"{}", {"Content-Type": "text/plain"}),
    ]
    with world.fhir as fhir:
        for method, path, body, headers in cases:
            _assert_unauthorized(
                fhir.request(method, path, content=body, headers=headers), f"{method} {path} {headers}"
            )


# --- Z1/Z2/Z6: a patient's token ----------------------------------------------------------------


def test_a_patient_token_reaches_only_its_own_record_and_scopes(world: World, engine: Engine) -> None:
    """checklist Z1, Z2, P8: own data 200; another patient's 404 exactly like a missing id; a type
    outside the token's scopes 403 with an OperationOutcome."""
    settings = world.server.settings
    token = user_caller(
        engine,
        settings,
        world.app_client,
        world.patient_account,
        ["patient/Patient.rs", "patient/Observation.rs"],
    )
    with world.fhir as fhir:
        assert fhir.get(f"/Patient/{PATIENT_A}", headers=token.headers).json()["id"] == PATIENT_A
        own = fhir.get(f"/Observation/{world.observations[PATIENT_A]}", headers=token.headers)
        assert own.status_code == 200
        found = fhir.get("/Observation", headers=token.headers).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [world.observations[PATIENT_A]]
        for path in (f"/Patient/{PATIENT_B}", f"/Observation/{world.observations[PATIENT_B]}"):
            other = fhir.get(path, headers=token.headers)
            missing = fhir.get(path.rsplit("/", 1)[0] + "/sec-no-such-id", headers=token.headers)
            assert other.status_code == missing.status_code == 404
            assert other.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"] == "not-found"
        for method, path in (("GET", "/Condition"), ("GET", f"/Patient/{PATIENT_A}/Condition")):
            refused = fhir.request(method, path, headers=token.headers)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["resourceType"] == "OperationOutcome"
            assert refused.json()["issue"][0]["code"] == "forbidden"
        write = fhir.post(
            "/Communication",
            json={
                "resourceType": "Communication",
                "status": "completed",
                "subject": {"reference": f"Patient/{PATIENT_A}"},
            },
            headers=token.headers,
        )
        assert write.status_code == 403  # .rs grants no create


def test_revoking_a_patient_token_takes_effect_on_the_next_request(world: World, engine: Engine) -> None:
    """checklist Z6, A10: revoking one token, then every token of the account; disabling it."""
    settings = world.server.settings
    account = world.patient_account
    first = user_caller(engine, settings, world.app_client, account, ["patient/*.rs"])
    second = user_caller(engine, settings, world.app_client, account, ["patient/*.rs"])
    path = f"/Patient/{PATIENT_A}"
    with world.fhir as fhir:
        assert fhir.get(path, headers=first.headers).status_code == 200
        with write_transaction(engine) as conn:
            assert revoke_access_token(conn, first.jti) == 1
        _assert_unauthorized(fhir.get(path, headers=first.headers), "revoked token")
        assert fhir.get(path, headers=second.headers).status_code == 200  # only that one
        with write_transaction(engine) as conn:
            assert revoke_tokens_for_account(conn, account.id) >= 1
        _assert_unauthorized(fhir.get(path, headers=second.headers), "account's tokens revoked")
        third = user_caller(engine, settings, world.app_client, account, ["patient/*.rs"])
        assert fhir.get(path, headers=third.headers).status_code == 200
        with write_transaction(engine) as conn:
            accounts.disable_account(conn, account.id, actor="system/tests", actor_role="system")
        _assert_unauthorized(fhir.get(path, headers=third.headers), "account disabled")


def test_a_proxy_token_lasts_as_long_as_the_relationship(world: World, engine: Engine) -> None:
    """checklist Z6, Z10: a parent's token reads the child's record while the RelatedPerson is
    active; the next request after it is set inactive is 401."""
    token = user_caller(
        engine, world.server.settings, world.app_client, world.proxy_account, ["patient/*.rs"], patient=CHILD
    )
    with world.fhir as fhir:
        assert fhir.get(f"/Patient/{CHILD}", headers=token.headers).status_code == 200
        child_obs = fhir.get(f"/Observation/{world.observations[CHILD]}", headers=token.headers)
        assert child_obs.status_code == 200
        assert fhir.get(f"/Patient/{PATIENT_B}", headers=token.headers).status_code == 404
        # A token naming a patient the proxy does not act for is refused outright.
        stray = user_caller(
            engine,
            world.server.settings,
            world.app_client,
            world.proxy_account,
            ["patient/*.rs"],
            patient=PATIENT_B,
        )
        _assert_unauthorized(fhir.get(f"/Patient/{PATIENT_B}", headers=stray.headers), "proxy for a stranger")
        ended = proxy_relationship(world.proxy_account, CHILD, active=False)
        assert (
            fhir.put("/RelatedPerson/sec-parent", json=ended, headers=world.system.headers).status_code == 200
        )
        _assert_unauthorized(fhir.get(f"/Patient/{CHILD}", headers=token.headers), "relationship ended")
        _assert_unauthorized(
            fhir.get(f"/Observation/{world.observations[CHILD]}", headers=token.headers), "relationship ended"
        )


# --- Z4: mass assignment --------------------------------------------------------------------------


def _communication(patient_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient_id}"},
        "payload": [{"contentString": "Question about my results"}],
        **extra,
    }


def test_a_patient_cannot_set_server_owned_or_protected_fields(world: World, engine: Engine) -> None:
    """checklist Z4: meta.security → 403; a client id on create is replaced; versionId and
    lastUpdated are the server's; another patient's compartment → 403 (create and update)."""
    token = user_caller(
        engine, world.server.settings, world.app_client, world.patient_account, ["patient/*.cruds"]
    )
    before = _resource_counts(engine)
    with world.fhir as fhir:
        labelled = fhir.post(
            "/Communication",
            json=_communication(PATIENT_A, meta={"security": [R_LABEL]}),
            headers=token.headers,
        )
        assert labelled.status_code == 403, labelled.text
        assert labelled.json()["issue"][0]["code"] == "forbidden"
        foreign = fhir.post("/Communication", json=_communication(PATIENT_B), headers=token.headers)
        assert foreign.status_code == 403, foreign.text
        assert _resource_counts(engine) == before  # neither was stored

        started = clock.now()
        forged_meta = {"versionId": "41", "lastUpdated": "2001-01-01T00:00:00Z"}
        created = fhir.post(
            "/Communication",
            json=_communication(PATIENT_A, id="chosen-by-client", meta=forged_meta),
            headers=token.headers,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["id"] != "chosen-by-client"
        assert body["meta"]["versionId"] == "1"
        assert body["meta"]["lastUpdated"] >= started.isoformat(timespec="seconds")
        assert created.headers["location"].endswith(f"/Communication/{body['id']}/_history/1")
        assert fhir.get("/Communication/chosen-by-client", headers=world.system.headers).status_code == 404

        body["meta"] = {"versionId": "99", "lastUpdated": "2001-01-01T00:00:00Z"}
        body["payload"] = [{"contentString": "A follow-up"}]
        updated = fhir.put(f"/Communication/{body['id']}", json=body, headers=token.headers)
        assert updated.status_code == 200, updated.text
        assert updated.json()["meta"]["versionId"] == "2"
        assert updated.json()["meta"]["lastUpdated"] >= started.isoformat(timespec="seconds")

        moved = {**updated.json(), "subject": {"reference": f"Patient/{PATIENT_B}"}}
        assert fhir.put(f"/Communication/{body['id']}", json=moved, headers=token.headers).status_code == 403
        relabel = {**updated.json(), "meta": {"security": [R_LABEL]}}
        assert (
            fhir.put(f"/Communication/{body['id']}", json=relabel, headers=token.headers).status_code == 403
        )
        current = fhir.get(f"/Communication/{body['id']}", headers=world.system.headers).json()
        assert current["subject"]["reference"] == f"Patient/{PATIENT_A}"
        assert current["meta"]["versionId"] == "2" and "security" not in current["meta"]
