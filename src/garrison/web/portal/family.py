"""Family access pages: /portal/family (whose records you act for, whom you share yours with),
POST /portal/family/share and POST /portal/family/revoke. Logic: `garrison.portal.family`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from garrison.callers import PROXY_SCOPES
from garrison.fhir.repository import Repository
from garrison.portal import family
from garrison.web.portal.base import PortalPages, Refused

_NOTICES = {
    "shared": "Your record is now shared. It takes effect straight away.",
    "revoked": "Access removed. From their next page they can no longer see your record.",
}


def routes(pages: PortalPages) -> list[Route]:
    area = FamilyPages(pages)
    return [
        Route("/portal/family", area.page, methods=["GET"]),
        Route("/portal/family/share", area.share, methods=["POST"]),
        Route("/portal/family/revoke", area.revoke, methods=["POST"]),
    ]


class FamilyPages:
    def __init__(self, pages: PortalPages) -> None:
        self.pages = pages

    def _overview(self, request: Request, repo: Repository) -> family.FamilyOverview:
        view = self.pages.viewed(request)
        return family.overview(repo, view.choices if view is not None else ())

    async def page(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            overview = await pages.run(
                request,
                who,
                lambda repo: self._overview(request, repo),
                write=False,
                action="portal:family:read",
            )
        except Refused as refused:
            return refused.response
        done = request.query_params.get("done", "")
        return self._render(request, overview, notice=_NOTICES.get(done))

    async def share(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            form = await pages.form(request)
            values = {
                "dod_id": pages.text(form, "dod_id", 20),
                "last_name": pages.text(form, "last_name", 100),
                "scope": pages.text(form, "scope", 20),
                "ends": pages.text(form, "ends", 20),
            }

            def work(repo: Repository) -> tuple[family.FamilyOverview, family.ShareRefused | None]:
                try:
                    family.share(
                        repo,
                        dod_id=values["dod_id"],
                        last_name=values["last_name"],
                        scope=values["scope"],
                        ends=values["ends"] or None,
                    )
                except family.ShareRefused as refused:
                    # Raised before anything is written: show the form again with the problem.
                    return self._overview(request, repo), refused
                return self._overview(request, repo), None

            overview, problem = await pages.run(request, who, work, write=True, action="portal:family:share")
        except Refused as refused:
            return refused.response
        if problem is not None:
            return self._render(
                request, overview, 400, values=values, errors={problem.field: problem.message}
            )
        return RedirectResponse("/portal/family?done=shared", status_code=303)

    async def revoke(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            form = await pages.form(request)
            related = pages.text(form, "related_person", 64)
            await pages.run(
                request,
                who,
                lambda repo: family.revoke(repo, related),
                write=True,
                action="portal:family:revoke",
            )
        except Refused as refused:
            return refused.response
        return RedirectResponse("/portal/family?done=revoked", status_code=303)

    def _render(
        self,
        request: Request,
        overview: family.FamilyOverview,
        status: int = 200,
        *,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        notice: str | None = None,
    ) -> Response:
        return self.pages.render(
            request,
            "portal/family.html",
            status,
            section="family",
            overview=overview,
            scopes=PROXY_SCOPES,
            values=values or {"scope": "full", "ends": overview.default_end},
            errors=errors or {},
            notice=notice,
        )
