"""The ASGI application: sign-in and account pages, Garrison's OAuth 2 / SMART authorization
server, and the FHIR API under /fhir, behind the security-headers and session middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from garrison import empi
from garrison.audit.sink import AuditSink
from garrison.callers import connect_token_revocation, proxy_patients
from garrison.db.engine import make_engine, read_transaction
from garrison.fhir.definitions import Definitions, definitions_from
from garrison.fhir.repository import settle_for_writes
from garrison.notifications.outbox import OUTBOX_FILE, FileSender, LogSender, Sender, deliver_due
from garrison.oauth.model import SignedInUser
from garrison.scheduling.waitlist import sweep_offers
from garrison.settings import Settings
from garrison.web.fhir_api import FhirApi
from garrison.web.oauth import oauth_routes
from garrison.web.portal import portal_routes
from garrison.web.security_headers import SecurityHeadersMiddleware
from garrison.web.server_timing import ServerTimingMiddleware
from garrison.web.signin import SessionMiddleware, signed_in, signin_routes
from garrison.web.staff_inbox import inbox_routes
from garrison.web.staff_portal import staff_portal_routes
from garrison.web.workspace import workspace_routes

log = logging.getLogger(__name__)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]

_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<title>Garrison</title></head>
<body><main><h1>Garrison</h1>
<p><a href="/signin">Sign in</a> to your account. Patients and families:
<a href="/portal">the patient portal</a> (your record, messages, appointments, prescriptions). Staff:
<a href="/workspace">the workspace</a> (find patients and families, register, review duplicates).</p>
<p>The FHIR R4 API is at <a href="/fhir/metadata">/fhir</a> (SMART on FHIR:
<a href="/.well-known/smart-configuration">configuration</a>).</p></main></body></html>
"""


def _oauth_user(
    engine: Engine, definitions: Definitions, settings: Settings
) -> Callable[[Request], SignedInUser | None]:
    """The signed-in user as the authorization server sees it: which records they may launch."""

    def user(request: Request) -> SignedInUser | None:
        who = signed_in(request)
        if who is None:
            return None
        patients: tuple[str, ...] = ()
        if who.kind in ("patient", "proxy"):
            with read_transaction(engine) as connection:
                proxied = proxy_patients(connection, definitions, settings, who.account_id)
            own = [who.fhir_user.removeprefix("Patient/")] if who.fhir_user.startswith("Patient/") else []
            patients = (*own, *sorted(proxied - set(own)))
        return SignedInUser(
            account_id=who.account_id,
            role=who.role,
            fhir_user=who.fhir_user,
            session_id=who.session_id,
            patient_ids=patients,
        )

    return user


def _lifespan(
    settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink, fhir_api: FhirApi
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        delivering = asyncio.create_task(_background(settings, engine, definitions))
        try:
            yield
        finally:
            delivering.cancel()
            await fhir_api.close()
            await audit.close_async()  # flush read audits still waiting to be written
            audit.close()

    return lifespan


async def _background(settings: Settings, engine: Engine, definitions: Definitions) -> None:
    """Every few seconds: offer freed appointment times to the waitlist (lapsed offers pass on),
    then send due notifications (reminders, offers, "you have a message")."""
    sender: Sender = (
        FileSender(settings.data_dir / OUTBOX_FILE) if settings.outbox_sender == "file" else LogSender()
    )
    while True:
        await asyncio.sleep(settings.outbox_interval_seconds)
        try:
            await run_in_threadpool(sweep_offers, engine, definitions, settings)
            await run_in_threadpool(deliver_due, engine, sender)
        except Exception:  # keep going; pending rows stay pending and are retried
            log.exception("background delivery failed")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    engine = make_engine(settings.resolved_database_url(), background_checkpoints=True)
    definitions = definitions_from(settings.definitions_dir)
    empi.register()  # Patient/$match, $merge, $unmerge
    connect_token_revocation()  # sign-out and disabled accounts take their tokens with them
    audit = AuditSink(engine)
    fhir_api = FhirApi(settings, engine, definitions, audit)

    async def landing(_request: Request) -> Response:
        return HTMLResponse(_LANDING)

    app = Starlette(
        routes=[
            # The API first: routes are tried in order, and FHIR clients make most requests.
            # The OAuth routes come before the FHIR catch-all for /fhir/.well-known/smart-configuration.
            *oauth_routes(settings, engine, _oauth_user(engine, definitions, settings)),
            Route("/fhir", fhir_api.__call__, methods=_METHODS),
            Route("/fhir/{path:path}", fhir_api.__call__, methods=_METHODS),
            Route("/", landing, methods=["GET"]),
            *signin_routes(settings, engine, landing_by_kind={"patient": "/portal", "proxy": "/portal"}),
            *workspace_routes(settings, engine, definitions, audit),
            *portal_routes(settings, engine, definitions, audit),
            *inbox_routes(settings, engine, definitions, audit),
            *staff_portal_routes(settings, engine, definitions, audit),
        ],
        middleware=[
            Middleware(ServerTimingMiddleware),
            Middleware(SecurityHeadersMiddleware),
            Middleware(SessionMiddleware, settings=settings, engine=engine),
        ],
        lifespan=_lifespan(settings, engine, definitions, audit, fhir_api),
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.definitions = definitions
    app.state.fhir_api = fhir_api
    return app


def server_app(settings: Settings | None = None) -> Starlette:
    """The application of a `garrison serve` process (one per worker), and of the benchmarks
    that serve in process: settled for its writes (`settle_for_writes`) before the first
    request. Not in `create_app`, which tests call many times in one process."""
    app = create_app(settings)
    settle_for_writes(app.state.definitions)
    return app
