"""The authorization server over HTTP: discovery documents, JWKS, the authorization endpoint
with its consent page, and the token, revocation and introspection endpoints.

Logic lives in garrison.oauth; this module adapts HTTP and owns the transactions. The
application adds `oauth_routes(...)` BEFORE the `/fhir/{path}` catch-all, so that
`{base}/.well-known/smart-configuration` reaches it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from jinja2 import Environment, select_autoescape
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.db.engine import read_transaction, write_transaction
from garrison.oauth.authorize import (
    AuthorizationPageError,
    AuthorizationRedirectError,
    PendingConsent,
    begin_consent,
    check_authorization_request,
    decide_consent,
)
from garrison.oauth.discovery import openid_configuration, smart_configuration
from garrison.oauth.errors import OAuthError, invalid_request
from garrison.oauth.grants import (
    EndpointResponse,
    handle_introspection,
    handle_revocation,
    handle_token_request,
)
from garrison.oauth.keys import published_jwks, signing_key
from garrison.oauth.model import SignedInUser
from garrison.oauth.scopes import parse_resource_scope
from garrison.settings import Settings
from garrison.web.security_headers import RateLimiter

log = logging.getLogger(__name__)

SignedInFunction = Callable[[Request], SignedInUser | None]
_MAX_FORM_BYTES = 64 * 1024
_FORM_TYPE = "application/x-www-form-urlencoded"
_PUBLIC_CORS = {"Access-Control-Allow-Origin": "*"}  # discovery, keys and token endpoints (no cookies)

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_CONSENT = _env.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Allow {{ client_name }} to use your record? – Garrison</title>
<style nonce="{{ nonce }}">
body{font-family:system-ui,sans-serif;margin:0;padding:1rem;line-height:1.5;color:#111;background:#fff}
main{max-width:40rem;margin:auto}
fieldset{border:1px solid #555;padding:.5rem 1rem;margin:1rem 0}
label{margin-left:.25rem}
input[type=text]{font-size:1rem;padding:.4rem;border:1px solid #333}
.actions{display:flex;gap:1rem;flex-wrap:wrap;margin-top:1.5rem}
button{font-size:1rem;padding:.6rem 1.4rem;border:2px solid #0b3d91;border-radius:4px;cursor:pointer}
.allow{background:#0b3d91;color:#fff}.deny{background:#fff;color:#0b3d91}
button:focus-visible,input:focus-visible{outline:3px solid #b35c00;outline-offset:2px}
</style></head>
<body><main>
<h1>Allow “{{ client_name }}” to use your Garrison record?</h1>
<form method="post" action="{{ action }}">
<input type="hidden" name="consent_id" value="{{ consent_id }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<h2 id="asks">This application asks to</h2>
<ul aria-labelledby="asks">
{% for line in descriptions %}<li>{{ line }}</li>
{% endfor %}</ul>
{% if needs_patient %}
{% if choose_any %}
<p><label for="patient">Patient ID of the record the application may use</label><br>
<input type="text" id="patient" name="patient" required autocomplete="off"
 pattern="[A-Za-z0-9.\\-]{1,64}" aria-describedby="patient-help">
<span id="patient-help">The Garrison patient ID, for example as shown in the patient banner.</span></p>
{% else %}
<fieldset><legend>Whose record may the application use?</legend>
{% for patient in choices %}<div><input type="radio" id="patient-{{ loop.index }}" name="patient"
 value="{{ patient }}" required{% if loop.length == 1 %} checked{% endif %}>
<label for="patient-{{ loop.index }}">Patient/{{ patient }}</label></div>
{% endfor %}</fieldset>
{% endif %}
{% endif %}
<p>You can withdraw this permission at any time; the application then loses access at once.</p>
<div class="actions">
<button type="submit" class="allow" name="decision" value="approve">Allow</button>
<button type="submit" class="deny" name="decision" value="deny">Deny</button>
</div>
</form>
</main></body></html>
"""
)
_ERROR = _env.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Authorization problem – Garrison</title></head>
<body><main><h1>The application's request cannot be completed</h1>
<p role="alert">{{ message }}</p>
<p>Return to the application and try again, or contact the application's publisher.</p>
</main></body></html>
"""
)

_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_PLAIN_SCOPES = {
    "openid": "confirm who you are",
    "fhirUser": "know your Garrison identity (your user record)",
    "launch": "open with the record you are working on in Garrison",
    "launch/patient": "know which patient's record you chose",
    "offline_access": "keep access after you sign out, until you withdraw it",
    "online_access": "keep access while you are signed in",
}


def describe_scope(scope: str) -> str:
    """A scope in words, for the consent page."""
    if scope in _PLAIN_SCOPES:
        return _PLAIN_SCOPES[scope]
    parsed = parse_resource_scope(scope)
    if parsed is None:
        return scope
    verbs = [_VERBS[letter] for letter in "cruds" if letter in parsed.permissions]
    what = "all kinds of records" if parsed.resource_type == "*" else f"{parsed.resource_type} records"
    whose = {
        "patient": "of the chosen patient",
        "user": "that you may see",
        "system": "across the system",
    }[parsed.context]
    text = f"{', '.join(verbs)} {what} {whose}"
    if parsed.parameters:
        text += " (only " + ", ".join(f"{k} {v}" for k, v in parsed.parameters) + ")"
    return text


async def _read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (RFC 6749 §3.2: the token endpoint takes only
    this); a repeated parameter is an invalid request (RFC 6749 §3.1)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM_TYPE:
        raise invalid_request(f"the body must be {_FORM_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > _MAX_FORM_BYTES:
            raise invalid_request("the request body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as error:
        raise invalid_request("the body is not UTF-8") from error
    return _unique(pairs)


def _unique(pairs: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            raise invalid_request(f"parameter {name} is repeated")
        values[name] = value
    return values


def _json(status: int, body: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None) -> Response:
    merged = {**_PUBLIC_CORS, **(headers or {})}
    if body is None:
        return Response(status_code=status, headers=merged)
    return JSONResponse(dict(body), status_code=status, headers=merged)


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _page_headers(nonce: str | None = None, form_target: str | None = None) -> dict[str, str]:
    """Pages of the authorization server: never cached, never framed (clickjacking a consent page
    would grant access), no script at all."""
    style = f"'nonce-{nonce}'" if nonce else "'none'"
    policy = f"default-src 'none'; style-src {style}; base-uri 'none'; frame-ancestors 'none'"
    if form_target:
        # The consent form posts here, then the browser follows our redirect to the app.
        policy += f"; form-action 'self' {form_target}"
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }


def _error_page(error: AuthorizationPageError) -> Response:
    html = _ERROR.render(message=error.message)
    return HTMLResponse(html, status_code=error.status, headers=_page_headers())


def _origin_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def oauth_routes(settings: Settings, engine: Engine, signed_in: SignedInFunction) -> list[BaseRoute]:
    """The authorization server's routes. `signed_in(request)` says who is signed in to Garrison
    (None when nobody is); it is called from a worker thread and may use the database."""
    limiter = RateLimiter(settings.oauth_rate_per_address, timedelta(minutes=1))
    base_path = urlsplit(settings.base_url).path.rstrip("/")

    def limited(request: Request) -> Response | None:
        retry = limiter.hit(_address(request) or "unknown")
        if retry is None:
            return None
        return _json(
            429,
            {"error": "temporarily_unavailable", "error_description": "too many requests"},
            {"Retry-After": str(max(1, int(retry + 0.999)))},
        )

    async def smart_config(_request: Request) -> Response:
        return _json(200, smart_configuration(settings), {"Cache-Control": "public, max-age=300"})

    async def openid_config(_request: Request) -> Response:
        return _json(200, openid_configuration(settings), {"Cache-Control": "public, max-age=300"})

    def load_jwks() -> dict[str, Any]:
        with read_transaction(engine) as conn:
            jwks = published_jwks(conn, settings)
        if jwks["keys"]:
            return jwks
        with write_transaction(engine) as conn:  # first use: make the first key
            signing_key(conn, settings)
            return published_jwks(conn, settings)

    async def jwks(_request: Request) -> Response:
        body = await run_in_threadpool(load_jwks)
        return _json(200, body, {"Cache-Control": f"public, max-age={settings.oauth_jwks_max_age}"})

    def check(params: Mapping[str, str]) -> None:
        with read_transaction(engine) as conn:
            check_authorization_request(conn, settings, params)

    def begin(params: Mapping[str, str], user: SignedInUser) -> PendingConsent:
        with write_transaction(engine) as conn:
            request = check_authorization_request(conn, settings, params)
            return begin_consent(conn, settings, request, user)

    async def authorize(request: Request) -> Response:
        try:
            params = _unique(list(request.query_params.multi_items()))
        except OAuthError as error:
            return _error_page(AuthorizationPageError(error.description))
        try:
            await run_in_threadpool(check, params)
            user = await run_in_threadpool(signed_in, request)
            if user is None:
                target = request.url.path + ("?" + request.url.query if request.url.query else "")
                return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
            pending = await run_in_threadpool(begin, params, user)
        except AuthorizationPageError as error:
            return _error_page(error)
        except AuthorizationRedirectError as error:
            return RedirectResponse(error.location(), status_code=302, headers={"Cache-Control": "no-store"})
        nonce = secrets.token_urlsafe(16)
        html = _CONSENT.render(
            nonce=nonce,
            action=request.url.path,
            client_name=pending.request.client.name,
            consent_id=pending.consent_id,
            csrf_token=pending.csrf_token,
            descriptions=[describe_scope(s) for s in pending.request.scopes],
            needs_patient=pending.needs_patient,
            choose_any=pending.choose_any_patient,
            choices=pending.patient_choices,
        )
        headers = _page_headers(nonce, _origin_of(pending.request.redirect_uri))
        return HTMLResponse(html, headers=headers)

    async def decide(request: Request) -> Response:
        if request.headers.get("sec-fetch-site") == "cross-site":
            return _error_page(AuthorizationPageError("This form must come from Garrison's own page.", 403))
        try:
            form = await _read_form(request)
        except OAuthError as error:
            return _error_page(AuthorizationPageError(error.description))
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            return _error_page(AuthorizationPageError("Choose Allow or Deny."))
        user = await run_in_threadpool(signed_in, request)
        if user is None:
            return _error_page(AuthorizationPageError("Your session has ended. Please start again.", 401))

        def run() -> str:
            with write_transaction(engine) as conn:
                return decide_consent(
                    conn,
                    settings,
                    consent_id=form.get("consent_id", ""),
                    csrf_token=form.get("csrf_token", ""),
                    user=user,
                    approve=decision == "approve",
                    patient=form.get("patient"),
                    source=_address(request),
                )

        try:
            location = await run_in_threadpool(run)
        except AuthorizationPageError as error:
            return _error_page(error)
        return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})

    def endpoint(
        handler: Callable[..., EndpointResponse], *, audited: bool = True
    ) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            refused = limited(request)
            if refused is not None:
                return refused
            try:
                form = await _read_form(request)
            except OAuthError as error:
                return _json(error.status, error.body(), {"Cache-Control": "no-store"})
            authorization = request.headers.get("authorization")
            source = _address(request)

            def run() -> EndpointResponse:
                with write_transaction(engine) as conn:
                    if audited:
                        return handler(conn, settings, form, authorization, source=source)
                    return handler(conn, settings, form, authorization)

            try:
                result = await run_in_threadpool(run)
            except Exception:
                log.exception("Unhandled error at %s", request.url.path)
                return _json(500, {"error": "server_error"}, {"Cache-Control": "no-store"})
            return _json(result.status, result.body, result.headers)

        return serve

    routes: list[BaseRoute] = [
        Route("/.well-known/smart-configuration", smart_config, methods=["GET"]),
        Route("/.well-known/openid-configuration", openid_config, methods=["GET"]),
        Route("/oauth/jwks", jwks, methods=["GET"]),
        Route("/oauth/authorize", authorize, methods=["GET"]),
        Route("/oauth/authorize", decide, methods=["POST"]),
        Route("/oauth/token", endpoint(handle_token_request), methods=["POST"]),
        Route("/oauth/revoke", endpoint(handle_revocation), methods=["POST"]),
        Route("/oauth/introspect", endpoint(handle_introspection, audited=False), methods=["POST"]),
    ]
    if base_path:
        routes += [
            Route(f"{base_path}/.well-known/smart-configuration", smart_config, methods=["GET"]),
            Route(f"{base_path}/.well-known/openid-configuration", openid_config, methods=["GET"]),
        ]
    return routes
