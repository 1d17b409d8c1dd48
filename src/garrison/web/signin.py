"""Sign-in pages and web sessions: /signin (password, then TOTP), /signin/card (CAC/PIV),
/signout and /account/security; the middleware that recognises a session on every request;
`signed_in(request)` and CSRF helpers for the other web modules (portal, OAuth consent).

The application mounts `SessionMiddleware` (and `SecurityHeadersMiddleware`) and adds
`signin_routes(settings, engine)`. Logic lives in `garrison.identity`; this module adapts HTTP.

Cookies (checklist A8; ASVS 3.3): HttpOnly, Secure (setting `cookie_secure`), SameSite=Lax for
the session (the OAuth authorize page is reached by cross-site navigation) and Strict for the
second-factor challenge; the session cookie has no Max-Age, so it ends with the browser, while
the server enforces idle and absolute limits (checklist A9). Every POST needs a CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, Headers, MutableHeaders
from starlette.requests import Request, cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison import clock
from garrison.db.engine import read_transaction, write_transaction
from garrison.identity import accounts, csrf, keys, proxies, sessions, smartcard
from garrison.identity import signin as flow
from garrison.identity.model import Session
from garrison.settings import Settings
from garrison.web.security_headers import RateLimiter, too_many_requests

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = TEMPLATES_DIR / "static"
SESSION_COOKIE = "garrison_session"
PRESESSION_COOKIE = "garrison_pre"
CHALLENGE_COOKIE = "garrison_mfa"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_SCOPE_KEY = "garrison.identity"
_PRESESSION_KEY_NAME = "csrf-presession"
_MAX_FORM_BYTES = 64 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who is signed in on this request (None from `signed_in` when nobody is)."""

    account_id: str
    username: str
    display_name: str
    kind: str  # staff | patient | proxy
    role: str
    fhir_user: str  # Practitioner/1, Patient/2, RelatedPerson/3
    facility: str | None
    session_id: str  # public id: audit, listeners (never the cookie value)
    mfa: bool  # a second factor (TOTP or smart card) was used
    method: str  # password | password+totp | smartcard
    previous_sign_in_at: datetime | None  # the sign-in before the latest one (checklist A7)
    previous_sign_in_from: str | None


@dataclass(frozen=True, slots=True)
class _RequestIdentity:
    signed_in: SignedIn | None
    expected_csrf: tuple[str, ...]  # any of these is accepted
    client: str | None  # the client's address (through trusted proxies)


def _identity(request: Request) -> _RequestIdentity:
    found = request.scope.get(_SCOPE_KEY)
    if not isinstance(found, _RequestIdentity):
        raise RuntimeError("garrison.web.signin.SessionMiddleware is not mounted for this path")
    return found


def signed_in(request: Request) -> SignedIn | None:
    """The signed-in user of this request, from the session cookie, checked this request."""
    return _identity(request).signed_in


def csrf_token(request: Request) -> str:
    """The token a form on this page must send back in the `csrf_token` field (or the
    X-CSRF-Token header): session-bound when signed in, signed double-submit before."""
    expected = _identity(request).expected_csrf
    return expected[0] if expected else ""


def client_address(request: Request) -> str | None:
    """The client's address, taking X-Forwarded-For only from `trusted_proxies`."""
    return _identity(request).client


def verify_csrf(request: Request, submitted: str | None) -> bool:
    """True when a state-changing request carries this session's CSRF token and does not come
    from another site (Fetch Metadata, where the browser sends it)."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    submitted = submitted or request.headers.get(CSRF_HEADER)
    return any(csrf.tokens_match(expected, submitted) for expected in _identity(request).expected_csrf)


class FormRefused(Exception):
    """A posted form that is not read: too large (413) or without this session's CSRF token (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


FORM_TOO_LARGE = "The form is too large."
FORM_FORGED = "This form has expired or did not come from Garrison. Reload the page and try again."


async def checked_form(
    request: Request, *, max_bytes: int = _MAX_FORM_BYTES, max_files: int = 0, max_fields: int = 20
) -> FormData:
    """The posted form once its size and CSRF token are checked; FormRefused otherwise. Every
    page that takes a POST reads its form here (sign-in, workspace, inbox, portal)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FormRefused(413, FORM_TOO_LARGE)
    # Read with a cap (a chunked body has no length to check up front), then parse that.
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > max_bytes:
            raise FormRefused(413, FORM_TOO_LARGE)

    async def replay() -> Message:
        return {"type": "http.request", "body": bytes(raw), "more_body": False}

    form = await Request(request.scope, replay).form(
        max_files=max_files, max_fields=max_fields, max_part_size=max_bytes
    )
    token = form.get(CSRF_FIELD)
    if not verify_csrf(request, token if isinstance(token, str) else None):
        raise FormRefused(403, FORM_FORGED)
    return form


def _signed_in_from(session: Session) -> SignedIn:
    holder = session.account
    return SignedIn(
        account_id=holder.id,
        username=holder.username,
        display_name=holder.display_name,
        kind=holder.kind,
        role=holder.role,
        fhir_user=holder.fhir_user,
        facility=holder.facility,
        session_id=session.id,
        mfa=session.mfa,
        method=session.method,
        previous_sign_in_at=holder.previous_sign_in_at,
        previous_sign_in_from=holder.previous_sign_in_from,
    )


def _cookie_headers(build: Callable[[Response], None]) -> list[tuple[bytes, bytes]]:
    """Set-Cookie headers made by Starlette's own cookie code (one formatting everywhere)."""
    response = Response()
    build(response)
    return [(k, v) for k, v in response.raw_headers if k == b"set-cookie"]


def _set_cookie(response: Response, settings: Settings, name: str, value: str, **options: Any) -> None:
    response.set_cookie(name, value, secure=settings.cookie_secure, httponly=True, **options)


def _delete_cookie(response: Response, settings: Settings, name: str, path: str = "/") -> None:
    response.delete_cookie(name, path=path, secure=settings.cookie_secure, httponly=True)


class SessionMiddleware:
    """Recognise the session cookie on each request (idle and absolute limits are checked and
    the request counts as activity), give every page a CSRF token, and clear a dead cookie.

    Paths under `skip_prefixes` (the bearer-token FHIR API, static files) are left alone:
    `signed_in` there reports nobody.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        engine: Engine,
        skip_prefixes: Iterable[str] = ("/fhir", "/static/"),
    ) -> None:
        self.app = app
        self.settings = settings
        self.engine = engine
        self.skip_prefixes = tuple(skip_prefixes)
        self._presession_key: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        peer = scope["client"][0] if scope.get("client") else None
        client = proxies.client_address(peer, headers.get("x-forwarded-for"), self.settings.trusted_proxies)
        if str(scope.get("path", "")).startswith(self.skip_prefixes):
            scope[_SCOPE_KEY] = _RequestIdentity(None, (), client)
            await self.app(scope, receive, send)
            return
        cookies = cookie_parser(headers.get("cookie", ""))
        token = cookies.get(SESSION_COOKIE) or None
        session = await run_in_threadpool(self._load, token) if token else None
        nonce = cookies.get(PRESESSION_COOKIE)
        new_nonce = None
        if not csrf.valid_nonce(nonce):
            nonce = None
        if session is None and nonce is None:
            nonce = new_nonce = sessions.new_token()
        expected: list[str] = []
        if session is not None and token:
            expected.append(csrf.session_token(token))
        if nonce is not None:
            expected.append(csrf.presession_token(await self._key(), nonce))
        scope[_SCOPE_KEY] = _RequestIdentity(
            signed_in=None if session is None else _signed_in_from(session),
            expected_csrf=tuple(expected),
            client=client,
        )
        extra: list[tuple[bytes, bytes]] = []
        if token and session is None:
            extra += _cookie_headers(lambda r: _delete_cookie(r, self.settings, SESSION_COOKIE))
        if new_nonce is not None:
            extra += _cookie_headers(
                lambda r: _set_cookie(r, self.settings, PRESESSION_COOKIE, new_nonce, samesite="lax")
            )

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                out = MutableHeaders(scope=message)
                already = " ".join(out.getlist("set-cookie"))
                for name, value in extra:
                    cookie_name = value.split(b"=", 1)[0].decode("latin-1")
                    if f"{cookie_name}=" not in already:  # the route's own cookie wins
                        out.append(name.decode("latin-1"), value.decode("latin-1"))
            await send(message)

        await self.app(scope, receive, send_with_cookies)

    def _load(self, token: str) -> Session | None:
        # Read first: only a session that ends now or whose activity is due takes the write lock.
        with read_transaction(self.engine) as conn:
            session, must_write = sessions.read_session(conn, token)
        if not must_write:
            return session
        with write_transaction(self.engine) as conn:
            return sessions.load_session(conn, token)

    async def _key(self) -> bytes:
        if self._presession_key is None:

            def load() -> bytes:
                with write_transaction(self.engine) as conn:
                    return keys.server_secret(conn, _PRESESSION_KEY_NAME)

            self._presession_key = await run_in_threadpool(load)
        return self._presession_key


def page_templates(extra_dirs: Sequence[Path] = ()) -> Jinja2Templates:
    """The Jinja2 environment of Garrison's pages (autoescaped). `base.html` is the layout other
    pages extend (skip link, landmarks, lang, viewport, the signed-in header and last sign-in);
    `extra_dirs` are searched first, so another web module can add its own templates."""
    loader = FileSystemLoader([*extra_dirs, TEMPLATES_DIR])
    # Templates ship with the package and do not change while the server runs: no mtime check per render.
    env = Environment(loader=loader, autoescape=select_autoescape(["html"]), auto_reload=False)
    env.filters["when"] = _format_time
    return Jinja2Templates(env=env)


def _format_time(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def safe_next(value: str | None) -> str | None:
    """A local path to return to after sign-in; anything else (other hosts, schemes,
    protocol-relative or backslash tricks) is dropped, so sign-in is not an open redirect."""
    if not value or len(value) > 2048 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in value):
        return None
    return value


def signin_routes(
    settings: Settings,
    engine: Engine,
    *,
    landing: str = "/account/security",
    landing_by_kind: Mapping[str, str] | None = None,
) -> list[BaseRoute]:
    """The sign-in, sign-out and account-security routes, and /static for their stylesheet.
    After signing in, users go to `landing_by_kind[kind]` (patients: the portal), else `landing`."""
    pages = _Pages(settings, engine, landing, dict(landing_by_kind or {}))
    return [
        Route("/signin", pages.signin_form, methods=["GET"]),
        Route("/signin", pages.signin_submit, methods=["POST"]),
        Route("/signin/totp", pages.totp_form, methods=["GET"]),
        Route("/signin/totp", pages.totp_submit, methods=["POST"]),
        Route("/signin/card", pages.card_form, methods=["GET"]),
        Route("/signin/card", pages.card_submit, methods=["POST"]),
        Route("/signout", pages.signout, methods=["POST"]),
        Route("/account/security", pages.security, methods=["GET"]),
        Route("/account/sessions/{session_id}/end", pages.end_session, methods=["POST"]),
        Route("/account/totp", pages.totp_begin, methods=["POST"]),
        Route("/account/totp/confirm", pages.totp_confirm, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


class _Pages:
    def __init__(
        self, settings: Settings, engine: Engine, landing: str, landing_by_kind: dict[str, str]
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.default_landing = landing
        self.landing_by_kind = landing_by_kind
        self.templates = page_templates()
        window = timedelta(seconds=settings.signin_rate_window_seconds)
        self.per_address = RateLimiter(settings.signin_rate_per_address, window)
        self.per_username = RateLimiter(settings.signin_rate_per_username, window)

    # -- helpers -------------------------------------------------------------------------------

    def _landing(self, who: SignedIn) -> str:
        return self.landing_by_kind.get(who.kind, self.default_landing)

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("signed_in", signed_in(request))
        context.setdefault("csrf_token", csrf_token(request))
        context.setdefault("error", None)
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def _refuse(self, request: Request, status: int, message: str) -> Response:
        return self._render(request, "error.html", status, message=message)

    async def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with write_transaction(self.engine) as conn:
                return work(conn)

        return await run_in_threadpool(run)

    async def _checked_form(self, request: Request) -> FormData | Response:
        """The posted form, or the response refusing it (too big, no valid CSRF token)."""
        try:
            return await checked_form(request)
        except FormRefused as refused:
            return self._refuse(request, refused.status, refused.message)

    def _limited(self, request: Request, username: str | None = None) -> Response | None:
        wait = self.per_address.hit(f"address:{client_address(request)}")
        if wait is None and username:
            wait = self.per_username.hit(f"username:{accounts.normalize_username(username)[:64]}")
        return None if wait is None else too_many_requests(wait)

    def _user_agent(self, request: Request) -> str | None:
        return request.headers.get("user-agent")

    def _signed_in_response(
        self, request: Request, new: flow.SignInSucceeded, next_path: str | None
    ) -> Response:
        landing = self.landing_by_kind.get(new.new_session.session.account.kind, self.default_landing)
        response = RedirectResponse(next_path or landing, status_code=303)
        # A fresh token every sign-in; whatever cookie came before is replaced (checklist A7).
        _set_cookie(response, self.settings, SESSION_COOKIE, new.new_session.token, samesite="lax")
        _delete_cookie(response, self.settings, PRESESSION_COOKIE)
        _delete_cookie(response, self.settings, CHALLENGE_COOKIE, path="/signin")
        return response

    def _replace_old(self, request: Request) -> Callable[[Connection, flow.SignInResult], None]:
        """End the session this browser had before signing in again (no two live sessions for
        one cookie jar, and never the old id carried over)."""
        old = signed_in(request)

        def replace(conn: Connection, result: flow.SignInResult) -> None:
            if old is not None and isinstance(result, flow.SignInSucceeded):
                sessions.end_session(conn, old.session_id, reason="replaced", source=client_address(request))

        return replace

    # -- password and TOTP -----------------------------------------------------------------------

    async def signin_form(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        who = signed_in(request)
        if who is not None:
            return RedirectResponse(next_path or self._landing(who), status_code=303)
        return self._render(
            request,
            "signin.html",
            next=next_path,
            username="",
            signed_out=request.query_params.get("signed_out") == "1",
            card_available=self.settings.smartcard_trust_roots is not None,
        )

    async def signin_submit(self, request: Request) -> Response:
        form = await self._checked_form(request)
        if isinstance(form, Response):
            return form
        username = str(form.get("username") or "")[:256]
        password = str(form.get("password") or "")[:2048]
        next_path = safe_next(str(form.get("next") or ""))
        limited = self._limited(request, username)
        if limited is not None:
            return limited
        replace = self._replace_old(request)

        def work(conn: Connection) -> flow.SignInResult:
            result = flow.sign_in_with_password(
                conn,
                self.settings,
                username,
                password,
                source=client_address(request),
                user_agent=self._user_agent(request),
            )
            replace(conn, result)
            return result

        result = await self._in_transaction(work)
        if isinstance(result, flow.SignInSucceeded):
            return self._signed_in_response(request, result, next_path)
        if isinstance(result, flow.SecondFactorRequired):
            target = "/signin/totp" + (f"?next={_quote(next_path)}" if next_path else "")
            response = RedirectResponse(target, status_code=303)
            _set_cookie(
                response,
                self.settings,
                CHALLENGE_COOKIE,
                result.challenge_token,
                max_age=int(flow.CHALLENGE_LIFETIME.total_seconds()),
                path="/signin",
                samesite="strict",
            )
            return response
        return self._render(
            request,
            "signin.html",
            400,
            error=result.message,
            next=next_path,
            username=username,
            signed_out=False,
            card_available=self.settings.smartcard_trust_roots is not None,
        )

    async def totp_form(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        if not request.cookies.get(CHALLENGE_COOKIE):
            return RedirectResponse("/signin" + (f"?next={_quote(next_path)}" if next_path else ""), 303)
        return self._render(request, "totp.html", next=next_path)

    async def totp_submit(self, request: Request) -> Response:
        form = await self._checked_form(request)
        if isinstance(form, Response):
            return form
        next_path = safe_next(str(form.get("next") or ""))
        challenge = request.cookies.get(CHALLENGE_COOKIE, "")
        code = str(form.get("code") or "")[:32]
        limited = self._limited(request)
        if limited is not None:
            return limited
        replace = self._replace_old(request)

        def work(conn: Connection) -> flow.SignInResult:
            result = flow.sign_in_with_totp(
                conn,
                self.settings,
                challenge,
                code,
                source=client_address(request),
                user_agent=self._user_agent(request),
            )
            replace(conn, result)
            return result

        result = await self._in_transaction(work)
        if isinstance(result, flow.SignInSucceeded):
            return self._signed_in_response(request, result, next_path)
        assert isinstance(result, flow.SignInFailed)
        if result.reason == "bad_totp":
            return self._render(request, "totp.html", 400, error=result.message, next=next_path)
        # The challenge is gone (expired, locked, disabled): start again from the password.
        response = self._render(
            request,
            "signin.html",
            400,
            error=result.message,
            next=next_path,
            username="",
            signed_out=False,
            card_available=self.settings.smartcard_trust_roots is not None,
        )
        _delete_cookie(response, self.settings, CHALLENGE_COOKIE, path="/signin")
        return response

    # -- smart card ------------------------------------------------------------------------------

    async def card_form(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        who = signed_in(request)
        if who is not None:
            return RedirectResponse(next_path or self._landing(who), status_code=303)
        return self._render(
            request,
            "card.html",
            next=next_path,
            card_available=self.settings.smartcard_trust_roots is not None,
        )

    async def card_submit(self, request: Request) -> Response:
        form = await self._checked_form(request)
        if isinstance(form, Response):
            return form
        next_path = safe_next(str(form.get("next") or ""))
        limited = self._limited(request)
        if limited is not None:
            return limited
        source = client_address(request)
        replace = self._replace_old(request)

        def work(conn: Connection) -> flow.SignInResult:
            described: dict[str, Any] = {}
            try:
                chain = self._presented_chain(request)
                described = smartcard.describe(chain[0])
                trust = smartcard.load_trust(self.settings)
                if trust is None:
                    raise smartcard.CertificateRejected("not_configured")
                edipi = smartcard.check_client_certificate(
                    chain[0], [*chain[1:], *trust.intermediates], trust.roots, trust.crls, clock.now()
                )
            except smartcard.CertificateRejected as rejected:
                flow.card_failure(conn, rejected.reason, source=source, certificate=described)
                return flow.SignInFailed(flow.CARD_FAILURE, rejected.reason)
            result = flow.sign_in_with_edipi(
                conn,
                self.settings,
                edipi,
                source=source,
                user_agent=self._user_agent(request),
                certificate=described,
            )
            replace(conn, result)
            return result

        result = await self._in_transaction(work)
        if isinstance(result, flow.SignInSucceeded):
            return self._signed_in_response(request, result, next_path)
        assert isinstance(result, flow.SignInFailed)
        return self._render(
            request,
            "card.html",
            400,
            error=result.message,
            next=next_path,
            card_available=self.settings.smartcard_trust_roots is not None,
        )

    def _presented_chain(self, request: Request) -> list[Any]:
        """The client's certificate chain, leaf first: from the ASGI TLS extension when the
        server terminates mutual TLS, else from the front end's header, believed only from a
        trusted proxy (checklist A6: a spoofed header is refused and audited)."""
        tls = (request.scope.get("extensions") or {}).get("tls") or {}
        pems = tls.get("client_cert_chain")
        if pems:
            return smartcard.certificates_from_pem_chain(list(pems))
        forwarded = request.headers.get(self.settings.client_cert_header, "").strip()
        if forwarded:
            peer = request.client.host if request.client else None
            if not proxies.is_trusted(peer, self.settings.trusted_proxies):
                raise smartcard.CertificateRejected("untrusted_certificate_header", f"from {peer}")
            return [smartcard.certificate_from_header(forwarded)]
        raise smartcard.CertificateRejected("no_certificate")

    # -- sign-out and the account's security page --------------------------------------------------

    async def signout(self, request: Request) -> Response:
        form = await self._checked_form(request)
        if isinstance(form, Response):
            return form
        who = signed_in(request)
        if who is not None:
            await self._in_transaction(
                lambda conn: flow.sign_out(conn, who.session_id, source=client_address(request))
            )
        response = RedirectResponse("/signin?signed_out=1", status_code=303)
        _delete_cookie(response, self.settings, SESSION_COOKIE)
        # Ask the browser to drop anything it kept from the signed-in pages (checklist C5).
        response.headers["Clear-Site-Data"] = '"cache", "storage"'
        return response

    async def security(self, request: Request) -> Response:
        who = signed_in(request)
        if who is None:
            return RedirectResponse(f"/signin?next={_quote('/account/security')}", status_code=303)
        return await self._security_page(request, who)

    async def _security_page(
        self, request: Request, who: SignedIn, status: int = 200, **extra: Any
    ) -> Response:
        def load(conn: Connection) -> tuple[Any, list[Session]]:
            return accounts.get_account(conn, who.account_id), sessions.active_sessions(conn, who.account_id)

        holder, live = await self._in_transaction(load)
        return self._render(
            request,
            "account_security.html",
            status,
            account=holder,
            sessions=live,
            current_session=who.session_id,
            enrolled=request.query_params.get("totp") == "enrolled",
            **extra,
        )

    async def end_session(self, request: Request) -> Response:
        form = await self._checked_form(request)
        if isinstance(form, Response):
            return form
        who = signed_in(request)
        if who is None:
            return RedirectResponse("/signin", status_code=303)
        target = request.path_params["session_id"]

        def work(conn: Connection) -> bool:
            session = sessions.get_session(conn, target)
            if session is None or session.account.id != who.account_id:
                return False  # not theirs, or already over: nothing to say about it
            return sessions.end_session(conn, target, reason="ended_by_user", source=client_address(request))

        await self._in_transaction(work)
        if target == who.session_id:
            response = RedirectResponse("/signin?signed_out=1", status_code=303)
            _delete_cookie(response, self.settings, SESSION_COOKIE)
            return response
        return RedirectResponse("/account/security", status_code=303)

    async def totp_begin(self, request: Request) -> Response:
        form = await self._checked_form(request)
        if isinstance(form, Response):
            return form
        who = signed_in(request)
        if who is None:
            return RedirectResponse("/signin", status_code=303)
        password = str(form.get("password") or "")[:2048]
        source = client_address(request)

        def work(conn: Connection) -> Any:
            # Changing the second factor asks for the password again (ASVS 6.4.3 re-authentication).
            if not flow.reauthenticate(conn, self.settings, who.account_id, password, source=source):
                return None
            return accounts.begin_totp_enrolment(conn, who.account_id)

        enrolment = await self._in_transaction(work)
        if enrolment is None:
            return await self._security_page(request, who, 400, error="The password is not correct.")
        return await self._security_page(request, who, enrolment=enrolment)

    async def totp_confirm(self, request: Request) -> Response:
        form = await self._checked_form(request)
        if isinstance(form, Response):
            return form
        who = signed_in(request)
        if who is None:
            return RedirectResponse("/signin", status_code=303)
        code = str(form.get("code") or "")[:32]
        confirmed = await self._in_transaction(
            lambda conn: accounts.confirm_totp_enrolment(conn, who.account_id, code)
        )
        if not confirmed:
            return await self._security_page(
                request, who, 400, error="That code did not match. Start the enrolment again."
            )
        return RedirectResponse("/account/security?totp=enrolled", status_code=303)


def _quote(path: str) -> str:
    return quote(path, safe="")
