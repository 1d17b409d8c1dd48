"""The help center and the first sign-in tour: /portal/help, /portal/help/{topic},
/portal/tour/{step} (1-5) and POST /portal/tour (finish or skip). Content and the per-account
tour state: `garrison.portal.help`. The home page offers the tour while `needs_tour` is true
(template `portal/tour_prompt.html`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from garrison.fhir.repository import Repository
from garrison.portal import help as guides
from garrison.web.portal.base import PortalPages, Refused


def routes(pages: PortalPages) -> list[Route]:
    area = HelpPages(pages)
    return [
        Route("/portal/help", area.index, methods=["GET"]),
        Route("/portal/help/{topic}", area.topic, methods=["GET"]),
        Route("/portal/tour", area.finish, methods=["POST"]),
        Route("/portal/tour/{step:int}", area.step, methods=["GET"]),
    ]


class HelpPages:
    def __init__(self, pages: PortalPages) -> None:
        self.pages = pages

    async def _signed_in_page(self, request: Request, action: str) -> Refused | None:
        """Sign-in and the record banner like every portal page (help reads no record data)."""
        try:
            who = await self.pages.user(request)
            await self.pages.run(request, who, lambda repo: None, write=False, action=action)
        except Refused as refused:
            return refused
        return None

    async def index(self, request: Request) -> Response:
        refused = await self._signed_in_page(request, "portal:help:read")
        if refused is not None:
            return refused.response
        return self.pages.render(request, "portal/help.html", section="help", topics=guides.TOPICS)

    async def topic(self, request: Request) -> Response:
        refused = await self._signed_in_page(request, "portal:help:read")
        if refused is not None:
            return refused.response
        found = guides.TOPIC_BY_SLUG.get(str(request.path_params.get("topic", "")))
        if found is None:
            return self.pages.error(request, 404, "There is no help page with that name.")
        return self.pages.render(
            request, "portal/help_topic.html", section="help", topic=found, topics=guides.TOPICS
        )

    async def step(self, request: Request) -> Response:
        refused = await self._signed_in_page(request, "portal:tour:read")
        if refused is not None:
            return refused.response
        number = int(request.path_params.get("step", 0))
        found = guides.tour_step(number)
        if found is None:
            return self.pages.error(request, 404, "The tour has no such step.")
        return self.pages.render(
            request, "portal/tour.html", section="help", step=found, total=len(guides.TOUR)
        )

    async def finish(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            form = await pages.form(request)
            outcome: guides.Outcome = (
                "finished" if pages.text(form, "outcome", 16) == "finished" else "skipped"
            )
            step_text = pages.text(form, "step", 4)
            step = int(step_text) if step_text.isdigit() else 0

            def remember(repo: Repository) -> None:
                guides.finish_tour(repo.connection, who.account_id, outcome, step)

            await pages.run(request, who, remember, write=True, action="portal:tour:update")
        except Refused as refused:
            return refused.response
        return RedirectResponse(f"/portal?tour={outcome}", status_code=303)
