"""Take your record with you, and who viewed it: /portal/sharing (download, summary, connected
apps), /portal/sharing/download (the FHIR Bundle), /portal/sharing/summary (printable),
POST /portal/sharing/apps/disconnect, and /portal/who-viewed (the accounting of disclosures).
Logic: `garrison.portal.takeout` and `garrison.portal.disclosures`."""

from __future__ import annotations

from datetime import date

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from garrison.errors import BadRequest, Forbidden
from garrison.fhir.repository import Repository
from garrison.portal import disclosures, takeout
from garrison.web.portal.base import PortalPages, Refused
from garrison.web.portal.prescriptions import day_text, moment_text

FHIR_JSON = "application/fhir+json"
_NOTICES = {"disconnected": "The app is disconnected. It can no longer reach your record."}


def routes(pages: PortalPages) -> list[Route]:
    area = SharingPages(pages)
    return [
        Route("/portal/sharing", area.page, methods=["GET"]),
        Route("/portal/sharing/download", area.download, methods=["GET"]),
        Route("/portal/sharing/summary", area.summary, methods=["GET"]),
        Route("/portal/sharing/apps/disconnect", area.disconnect, methods=["POST"]),
        Route("/portal/who-viewed", area.who_viewed, methods=["GET"]),
    ]


class SharingPages:
    def __init__(self, pages: PortalPages) -> None:
        self.pages = pages

    async def page(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            apps = await pages.run(
                request,
                who,
                lambda repo: takeout.connected_apps(repo.connection, who.account_id),
                write=False,
                action="portal:sharing:read",
            )
        except Refused as refused:
            return refused.response
        view = pages.viewed(request)
        names = {c.patient_id: ("you" if c.is_self else c.name) for c in view.choices} if view else {}
        return pages.render(
            request,
            "portal/sharing.html",
            section="sharing",
            apps=apps,
            names=names,
            info=takeout.connection_info(pages.settings),
            notice=_NOTICES.get(request.query_params.get("done", "")),
            moment=moment_text,
        )

    async def download(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            export = await pages.run(
                request, who, takeout.export_record, write=False, action="portal:record:export"
            )
        except Refused as refused:
            return refused.response
        return Response(
            export.body,
            media_type=FHIR_JSON,
            headers={
                # The file name is ASCII letters, digits and hyphens (takeout._filename).
                "Content-Disposition": f'attachment; filename="{export.filename}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def summary(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            summary = await pages.run(
                request, who, takeout.record_summary, write=False, action="portal:record:print"
            )
        except Refused as refused:
            return refused.response
        return pages.render(
            request,
            "portal/summary_print.html",
            section="sharing",
            summary=summary,
            moment=moment_text,
        )

    async def disconnect(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            form = await pages.form(request)
            client_id = pages.text(form, "client_id", 64)
            await pages.run(
                request,
                who,
                lambda repo: takeout.disconnect_app(repo, who.account_id, client_id),
                write=True,
                action="portal:apps:revoke",
            )
        except Refused as refused:
            return refused.response
        return RedirectResponse("/portal/sharing?done=disconnected", status_code=303)

    async def who_viewed(self, request: Request) -> Response:
        pages = self.pages
        query = request.query_params
        values = {"since": query.get("since", "")[:10], "until": query.get("until", "")[:10]}
        page_text = query.get("page", "1")
        page_number = int(page_text) if page_text.isdigit() else 1
        errors: dict[str, str] = {}
        since = _date(values["since"], "since", errors)
        until = _date(values["until"], "until", errors)

        def work(repo: Repository) -> disclosures.DisclosureReport | None:
            view = pages.viewed(request)
            if view is None:
                raise Forbidden("There is no record in view.")
            if not disclosures.may_see_disclosures(view.viewing):
                return None
            try:
                return disclosures.disclosure_report(
                    repo,
                    view.viewing,
                    since=None if errors else since,
                    until=None if errors else until,
                    page=page_number,
                )
            except BadRequest as problem:
                errors["since"] = problem.message
                return disclosures.disclosure_report(repo, view.viewing, page=1)

        try:
            who = await pages.user(request)
            report = await pages.run(request, who, work, write=False, action="portal:disclosures:read")
        except Refused as refused:
            return refused.response
        if report is not None and not values["since"]:
            values = {"since": report.since.isoformat(), "until": report.until.isoformat()}
        return pages.render(
            request,
            "portal/who_viewed.html",
            400 if errors else 200,
            section="who-viewed",
            report=report,
            values=values,
            errors=errors,
            moment=moment_text,
            day=day_text,
        )


def _date(text: str, field: str, errors: dict[str, str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors[field] = "Enter a date like 2026-01-31."
        return None
