"""The staff message inbox at /workspace/inbox: the care-team pools of the staff member's facility
and the enterprise-wide unrouted queue; open a conversation, take it, reply, move it to another
team or clinic, close it, reopen it.

Built on the workspace's plumbing (`garrison.web.workspace`): staff sign-in required, one audited
transaction per page through a Repository bound to the staff member's own AccessContext, CSRF
on every POST. The logic is `garrison.messaging.inbox`. Opening a conversation records that the
care team has read it, so that page runs in a write transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.audit.sink import AuditSink
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN
from garrison.messaging import inbox
from garrison.messaging.attachments import MAX_FILES
from garrison.messaging.model import MAX_BODY
from garrison.messaging.threads import check_reply
from garrison.settings import Settings
from garrison.web.portal.messages import LIMITS, MAX_POST_BYTES, download_response, uploads_in
from garrison.web.signin import FormRefused, SignedIn, checked_form

# The workspace's page plumbing (staff check, forms, audited transactions, error pages) is
# reused as it is rather than copied; this module adds only the inbox's pages.
from garrison.web.workspace import _Refused, _Workspace

_MAX_FORM_FILES = MAX_FILES + 5  # beyond this Starlette stops parsing; the domain explains the limit


def inbox_routes(
    settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink | None = None
) -> list[BaseRoute]:
    pages = _Inbox(settings, engine, definitions, audit)
    return [
        Route("/workspace/inbox", pages.listing, methods=["GET"]),
        Route("/workspace/inbox/{thread_id}", pages.thread, methods=["GET"]),
        Route("/workspace/inbox/{thread_id}/assign", pages.assign, methods=["POST"]),
        Route("/workspace/inbox/{thread_id}/reply", pages.reply, methods=["POST"]),
        Route("/workspace/inbox/{thread_id}/close", pages.close, methods=["POST"]),
        Route("/workspace/inbox/{thread_id}/reopen", pages.reopen, methods=["POST"]),
        Route("/workspace/inbox/{thread_id}/move", pages.move, methods=["POST"]),
        Route("/workspace/inbox/{thread_id}/files/{message_id}/{index:int}", pages.download, methods=["GET"]),
    ]


class _Inbox(_Workspace):
    async def _files_form(self, request: Request) -> FormData:
        """A form that may carry attachments: a larger size limit, CSRF checked as always."""
        try:
            return await checked_form(request, max_bytes=MAX_POST_BYTES, max_files=_MAX_FORM_FILES)
        except FormRefused as refused:
            raise _Refused(self._error(request, refused.status, refused.message)) from refused

    def _messenger(self, request: Request, back_to: str) -> SignedIn:
        """A signed-in staff member whose role answers patient messages (a 403 page says why
        otherwise; the domain checks again through the repository)."""
        who = self._staff(request, back_to)
        role = self.policy.role(who.role)
        if role is None or not (
            role.allows("search", "Communication") and role.allows("create", "Communication")
        ):
            raise _Refused(
                self._error(
                    request, 403, "The message inbox is for clinical staff who answer patient messages."
                )
            )
        return who

    def _thread_id(self, request: Request) -> str:
        thread_id = str(request.path_params["thread_id"])
        if not ID_PATTERN.match(thread_id):
            raise _Refused(self._error(request, 404))
        return thread_id

    # -- pages -------------------------------------------------------------------------------

    async def listing(self, request: Request) -> Response:
        wanted = request.query_params.get("view", "open")
        view: inbox.View = wanted if wanted in inbox.VIEWS else "open"
        try:
            who = self._messenger(request, "/workspace/inbox")
            found = await self._run(
                request,
                who,
                lambda repo: inbox.inbox(repo, view),
                write=False,
                action="workspace:messages:search",
            )
        except _Refused as refused:
            return refused.response
        return self._render(
            request,
            "workspace/inbox.html",
            inbox=found,
            views=inbox.VIEWS,
            section="inbox",
            closed=request.query_params.get("closed") == "1",
            moved_away=request.query_params.get("moved") == "1",
        )

    async def thread(self, request: Request) -> Response:
        try:
            thread_id = self._thread_id(request)
            who = self._messenger(request, f"/workspace/inbox/{thread_id}")
            view = await self._run(
                request,
                who,
                lambda repo: inbox.open_thread(repo, thread_id, staff_name=who.display_name),
                write=True,  # opening it records that the care team has read it
                action="workspace:messages:read",
            )
        except _Refused as refused:
            return refused.response
        return self._thread_page(request, who, view, errors={}, body="")

    async def assign(self, request: Request) -> Response:
        return await self._change(request, "assigned", inbox.assign_to_me)

    async def close(self, request: Request) -> Response:
        return await self._change(request, "closed", inbox.close_thread)

    async def reopen(self, request: Request) -> Response:
        return await self._change(request, "reopened", inbox.reopen_thread)

    async def move(self, request: Request) -> Response:
        try:
            thread_id = self._thread_id(request)
            who = self._messenger(request, f"/workspace/inbox/{thread_id}")
            form = await self._form(request)
            to = self._text(form, "to")
            expected = self._text(form, "from") or None
            moved = await self._run(
                request,
                who,
                lambda repo: inbox.move_thread(
                    repo, thread_id, to=to, expected=expected, staff_name=who.display_name
                ),
                write=True,
                action="workspace:messages:update",
            )
        except _Refused as refused:
            return refused.response
        if moved.still_mine:
            return RedirectResponse(f"/workspace/inbox/{thread_id}?moved=1", status_code=303)
        # Another facility's pool: the mover can no longer open it.
        return RedirectResponse("/workspace/inbox?moved=1", status_code=303)

    async def _change(self, request: Request, done: str, change: Any) -> Response:
        try:
            thread_id = self._thread_id(request)
            who = self._messenger(request, f"/workspace/inbox/{thread_id}")
            await self._form(request)
            await self._run(
                request,
                who,
                lambda repo: change(repo, thread_id, staff_name=who.display_name),
                write=True,
                action="workspace:messages:update",
            )
        except _Refused as refused:
            return refused.response
        if done == "closed":
            return RedirectResponse("/workspace/inbox?closed=1", status_code=303)
        return RedirectResponse(f"/workspace/inbox/{thread_id}?{done}=1", status_code=303)

    async def reply(self, request: Request) -> Response:
        try:
            thread_id = self._thread_id(request)
            who = self._messenger(request, f"/workspace/inbox/{thread_id}")
            form = await self._files_form(request)
            value = form.get("body")
            body = value[: MAX_BODY + 1] if isinstance(value, str) else ""
            uploads = await uploads_in(form)

            def work(repo: Repository) -> tuple[dict[str, str], Any]:
                errors = check_reply(body, uploads)
                if errors:
                    return errors, inbox.open_thread(repo, thread_id, staff_name=who.display_name)
                inbox.reply(repo, thread_id, body=body, uploads=uploads, staff_name=who.display_name)
                return {}, None

            errors, view = await self._run(request, who, work, write=True, action="workspace:messages:create")
        except _Refused as refused:
            return refused.response
        if errors:
            return self._thread_page(request, who, view, errors=errors, body=body, status=400)
        return RedirectResponse(f"/workspace/inbox/{thread_id}?replied=1", status_code=303)

    async def download(self, request: Request) -> Response:
        message_id = str(request.path_params["message_id"])
        index = int(request.path_params["index"])
        try:
            thread_id = self._thread_id(request)
            who = self._messenger(request, f"/workspace/inbox/{thread_id}")
            if not ID_PATTERN.match(message_id):
                raise _Refused(self._error(request, 404))
            file = await self._run(
                request,
                who,
                lambda repo: inbox.attachment(repo, thread_id, message_id, index),
                write=False,
                action="workspace:messages:read",
            )
        except _Refused as refused:
            return refused.response
        return download_response(file.title, file.content_type, file.data)

    def _thread_page(
        self,
        request: Request,
        who: SignedIn,
        view: Any,
        *,
        errors: dict[str, str],
        body: str,
        status: int = 200,
    ) -> Response:
        return self._render(
            request,
            "workspace/inbox_thread.html",
            status,
            thread=view,
            errors=errors,
            body=body,
            me=who,
            section="inbox",
            replied=request.query_params.get("replied") == "1",
            assigned=request.query_params.get("assigned") == "1",
            moved=request.query_params.get("moved") == "1",
            reopened=request.query_params.get("reopened") == "1",
            **LIMITS,
        )
