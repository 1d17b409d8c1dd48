"""The patient portal at /portal: server-rendered pages over the FHIR store, under the patient's
(or proxy's) own access context. `base.py` is the shared plumbing; each area has its module and
its domain package (`garrison.portal`, `garrison.messaging`, `garrison.scheduling`, ...).
"""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.audit.sink import AuditSink
from garrison.errors import BadRequest, Forbidden
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.messaging import threads
from garrison.portal import viewing
from garrison.portal.help import needs_tour
from garrison.scheduling import visits
from garrison.settings import Settings
from garrison.web.portal import appointments, prescriptions, sharing
from garrison.web.portal import family as family_pages
from garrison.web.portal import help as help_pages
from garrison.web.portal import messages as message_pages
from garrison.web.portal import record as record_pages
from garrison.web.portal.account import account_routes
from garrison.web.portal.base import PortalPages, Refused


def portal_routes(
    settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink | None = None
) -> list[BaseRoute]:
    pages = PortalPages(settings, engine, definitions, audit)
    home = _Home(pages)
    return [
        Route("/portal", home.home, methods=["GET"]),
        Route("/portal/switch", home.switch_form, methods=["GET"]),
        Route("/portal/switch", home.switch, methods=["POST"]),
        *record_pages.routes(pages),
        *message_pages.routes(pages),
        *appointments.routes(pages),
        *family_pages.routes(pages),
        *prescriptions.routes(pages),
        *sharing.routes(pages),
        *help_pages.routes(pages),
        *account_routes(settings, engine, definitions),
    ]


def _summary(repo: Repository) -> dict[str, str | None]:
    """The home page's one-line news per area; an area the access in use does not cover says nothing."""
    try:
        unread = threads.unread_count(repo)
    except Forbidden:
        unread = 0
    try:
        appointments_line = visits.home_summary(repo)
    except Forbidden:
        appointments_line = None
    return {
        "appointments": appointments_line,
        "record": record_pages.home_summary(repo),
        "messages": f"{unread} conversation{'s' if unread != 1 else ''} with a new reply."
        if unread
        else None,
    }


class _Home:
    def __init__(self, pages: PortalPages) -> None:
        self.pages = pages

    async def home(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            tour, summary = await pages.run(
                request,
                who,
                lambda repo: (needs_tour(repo.connection, who.account_id), _summary(repo)),
                write=False,
                action="portal:home:read",
            )
        except Refused as refused:
            return refused.response
        finished = request.query_params.get("tour")
        return pages.render(
            request,
            "portal/home.html",
            section="home",
            switched=request.query_params.get("switched"),
            tour=tour,
            summary=summary,
            notice="You can take the tour again from Help." if finished in ("finished", "skipped") else None,
        )

    async def switch_form(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            await pages.run(request, who, lambda repo: None, write=False, action="portal:switch:read")
        except Refused as refused:
            return refused.response
        return pages.render(request, "portal/switch.html", section="switch")

    async def switch(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            form = await pages.form(request)
            wanted = pages.text(form, "patient", 64)

            def put_in_view(repo: Repository) -> None:
                view = pages.viewed(request)
                choices = list(view.choices) if view is not None else []
                try:
                    chosen = viewing.choose(repo.connection, who.session_id, wanted, choices)
                except ValueError:
                    raise BadRequest("That is not a record you can view.") from None
                pages.note(repo, "portal:record:switch", to=f"Patient/{chosen.patient_id}")

            await pages.run(request, who, put_in_view, write=True, action="portal:switch:update")
        except Refused as refused:
            return refused.response
        return RedirectResponse("/portal?switched=1", status_code=303)
