"""Shared helpers for the identity tests: accounts, a small app with the sign-in routes served by
uvicorn on 127.0.0.1, a browser that keeps cookies by hand (so Secure cookies work over plain
HTTP, and old cookies can be replayed), and the audit rows written."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from argon2 import PasswordHasher, Type
from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from garrison.audit.chain import AuditRow, decode_row
from garrison.audit.schema import audit_log
from garrison.db.engine import read_transaction, write_transaction
from garrison.identity import accounts, passwords
from garrison.identity.model import Account, Kind
from garrison.settings import Settings
from garrison.web.security_headers import SecurityHeadersMiddleware
from garrison.web.signin import SessionMiddleware, signed_in, signin_routes
from tests.pg_cluster import free_port

PASSWORD = "correct horse battery staple"  # test-only; accounts are created at run time


@contextmanager
def cheap_password_hashing() -> Iterator[None]:
    """argon2id with tiny parameters, for tests about sign-in flows rather than hashing (the
    production parameters cost ~0.2 s a hash here). test_identity_accounts checks the real ones."""
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
    dummy = cheap.hash("dummy")
    real_hasher, real_dummy = passwords.hasher, passwords._dummy_hash
    passwords.hasher = lambda: cheap  # type: ignore[assignment]
    passwords._dummy_hash = lambda: dummy  # type: ignore[assignment]
    try:
        yield
    finally:
        passwords.hasher, passwords._dummy_hash = real_hasher, real_dummy


def make_account(
    engine: Engine,
    username: str,
    *,
    kind: Kind = "staff",
    role: str | None = None,
    password: str | None = PASSWORD,
    totp: bool | None = None,
    edipi: str | None = None,
    fhir_user: str | None = None,
    facility: str | None = None,
) -> tuple[Account, str | None]:
    """Create an account; returns it and its TOTP secret (staff get one unless totp=False).
    By default it stands for `Practitioner|Patient|RelatedPerson/<username>`, and staff work at
    org-1."""
    role = role or ("physician" if kind == "staff" else kind)
    reference = {"staff": "Practitioner", "patient": "Patient", "proxy": "RelatedPerson"}[kind]
    with write_transaction(engine) as conn:
        created = accounts.create_account(
            conn,
            username=username,
            kind=kind,
            role=role,
            display_name=username.replace(".", " ").title(),
            fhir_user=fhir_user or f"{reference}/{username}",
            facility=facility or ("org-1" if kind == "staff" else None),
            edipi=edipi,
            password=password,
            actor="system/tests",
            actor_role="system",
        )
        secret = None
        if totp if totp is not None else kind == "staff":
            secret = accounts.enable_totp(conn, created.id).secret
    return created, secret


def audit_rows(engine: Engine, action: str | None = None) -> list[AuditRow]:
    with read_transaction(engine) as conn:
        query = select(audit_log).order_by(audit_log.c.seq)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        return [decode_row(row) for row in conn.execute(query)]


async def whoami(request: Request) -> Response:
    """A protected endpoint: 401 unless signed in (what portal pages will do)."""
    who = signed_in(request)
    if who is None:
        return JSONResponse({"signed_in": False}, status_code=401)
    return JSONResponse(
        {
            "account_id": who.account_id,
            "username": who.username,
            "role": who.role,
            "kind": who.kind,
            "fhir_user": who.fhir_user,
            "session_id": who.session_id,
            "mfa": who.mfa,
            "method": who.method,
            "previous_sign_in_at": None
            if who.previous_sign_in_at is None
            else who.previous_sign_in_at.isoformat(),
        }
    )


def identity_app(settings: Settings, engine: Engine, *, outer: type[Any] | None = None) -> ASGIApp:
    app: ASGIApp = Starlette(
        routes=[*signin_routes(settings, engine), Route("/whoami", whoami)],
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(SessionMiddleware, settings=settings, engine=engine),
        ],
    )
    return app if outer is None else outer(app)


class Served:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread."""

    def __init__(self, app: ASGIApp) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", proxy_headers=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serve(settings: Settings, engine: Engine, **options: Any) -> Iterator[Served]:
    served = Served(identity_app(settings, engine, **options))
    served.start()
    try:
        yield served
    finally:
        served.stop()


def identity_settings(engine: Engine, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": engine.url.render_as_string(hide_password=False),
        # Generous limits: the rate-limit test sets its own.
        "signin_rate_per_address": 100_000,
        "signin_rate_per_username": 100_000,
    }
    values.update(overrides)
    return Settings(**values)


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A client that keeps cookies itself: Secure cookies are sent over http://127.0.0.1 (as
    Chromium does for localhost) and tests can look at, keep and replay any of them."""

    def __init__(self, base: str, **headers: str) -> None:
        self.http = httpx.Client(base_url=base, follow_redirects=False, timeout=30, headers=headers)
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        headers = dict(options.pop("headers", {}) or {})
        if self.cookies and "cookie" not in {k.lower() for k in headers}:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = self.http.request(method, url, headers=headers, **options)
        self.http.cookies.clear()
        for header in response.headers.get_list("set-cookie"):
            self.set_cookie_headers.append(header)
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if "max-age=0" in header.lower() or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, data: dict[str, str] | None = None, **options: Any) -> httpx.Response:
        return self.request("POST", url, data=data or {}, **options)

    def csrf(self, page: str = "/signin") -> str:
        response = self.get(page)
        found = _CSRF.search(response.text)
        assert found, f"no CSRF token on {page}: {response.status_code}"
        return found.group(1)

    def sign_in(
        self, username: str, password: str = PASSWORD, *, next_path: str | None = None
    ) -> httpx.Response:
        data = {"csrf_token": self.csrf(), "username": username, "password": password}
        if next_path:
            data["next"] = next_path
        return self.post("/signin", data)

    def submit_code(self, code: str) -> httpx.Response:
        return self.post("/signin/totp", {"csrf_token": self.csrf("/signin/totp"), "code": code})

    def sign_out(self) -> httpx.Response:
        return self.post("/signout", {"csrf_token": self.csrf("/account/security")})

    def whoami(self) -> httpx.Response:
        return self.get("/whoami")


def csrf_from(page: str) -> str:
    """The CSRF token of a page's form."""
    found = _CSRF.search(page)
    assert found, "no CSRF token on the page"
    return found.group(1)
