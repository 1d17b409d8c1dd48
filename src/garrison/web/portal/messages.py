"""Portal pages for secure messages: the conversations list, writing a new message, a
conversation with its delivery and read state and a reply form (or, once it is closed, a
follow-up form that starts a new conversation linked to it), and attachment downloads.

Thin on purpose: `garrison.messaging.threads` does the work through the user's Repository.
Opening a conversation marks it read by the patient side, so that page runs in a write
transaction. Downloads are always `Content-Disposition: attachment` with the type the contents
were checked to be (never one the uploader claimed), and are not cached.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN
from garrison.messaging import threads
from garrison.messaging.attachments import ACCEPTED_KINDS, EXTENSIONS, MAX_FILE_BYTES, MAX_FILES, Upload
from garrison.messaging.model import EMERGENCY_NOTICE, MAX_BODY, MAX_SUBJECT, REPLY_EXPECTATION
from garrison.web.portal.base import PortalPages, Refused

# The body may carry MAX_FILES files of MAX_FILE_BYTES and the text fields; a little more is
# accepted so that a file just over the limit gets its own clear message rather than a 413.
MAX_POST_BYTES = MAX_FILES * MAX_FILE_BYTES + MAX_FILE_BYTES // 2 + 64 * 1024
# Starlette stops parsing beyond this many files; the domain explains the real limit (MAX_FILES).
_MAX_FORM_FILES = MAX_FILES + 5
ACCEPT = ",".join(ext for extensions in EXTENSIONS.values() for ext in extensions)
LIMITS: dict[str, Any] = {
    "max_files": MAX_FILES,
    "max_megabytes": MAX_FILE_BYTES // (1024 * 1024),
    "kinds": ACCEPTED_KINDS,
    "accept": ACCEPT,
    "max_subject": MAX_SUBJECT,
    "max_body": MAX_BODY,
    "emergency": EMERGENCY_NOTICE,
    "expectation": REPLY_EXPECTATION,
}


def routes(pages: PortalPages) -> list[Route]:
    area = _Messages(pages)
    return [
        Route("/portal/messages", area.listing, methods=["GET"]),
        Route("/portal/messages/new", area.compose, methods=["GET"]),
        Route("/portal/messages/new", area.send, methods=["POST"]),
        Route("/portal/messages/{thread_id}", area.thread, methods=["GET"]),
        Route("/portal/messages/{thread_id}/reply", area.reply, methods=["POST"]),
        Route("/portal/messages/{thread_id}/follow-up", area.follow_up, methods=["POST"]),
        Route("/portal/messages/{thread_id}/files/{message_id}/{index:int}", area.download, methods=["GET"]),
    ]


async def uploads_in(form: FormData, field: str = "attachments") -> list[Upload]:
    """The files posted in `field`; an empty file input (no file chosen) is no file."""
    found: list[Upload] = []
    for item in form.getlist(field):
        if not isinstance(item, UploadFile):
            continue
        data = await item.read()
        if not item.filename and not data:
            continue
        found.append(Upload(item.filename or "attachment", data))
    return found


def download_response(title: str, content_type: str, data: bytes) -> Response:
    """An attachment as a download: never shown inline, never sniffed, never cached."""
    media_type = "text/plain; charset=utf-8" if content_type == "text/plain" else content_type
    # RFC 6266: a plain ASCII name (already sanitised) plus the RFC 5987 form.
    disposition = f"attachment; filename=\"{title}\"; filename*=UTF-8''{quote(title, safe='')}"
    return Response(
        data,
        media_type=media_type,
        headers={
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


class _Messages:
    def __init__(self, pages: PortalPages) -> None:
        self.pages = pages

    async def listing(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            found = await pages.run(
                request, who, threads.patient_threads, write=False, action="portal:messages:search"
            )
        except Refused as refused:
            return refused.response
        return pages.render(request, "portal/messages.html", section="messages", threads=found, **LIMITS)

    async def compose(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            choices = await pages.run(
                request, who, threads.compose_choices, write=False, action="portal:messages:read"
            )
        except Refused as refused:
            return refused.response
        preset = request.query_params.get("to", "")
        return self._compose_page(request, choices, {"to": preset, "subject": "", "body": ""}, {})

    async def send(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            form = await pages.form(request, max_bytes=MAX_POST_BYTES, max_files=_MAX_FORM_FILES)
            values = {
                "to": pages.text(form, "to", 200),
                "subject": pages.text(form, "subject", MAX_SUBJECT * 2),
                "body": _long_text(form, "body"),
            }
            uploads = await uploads_in(form)

            def work(repo: Repository) -> tuple[str | None, dict[str, str], list[Any]]:
                errors = threads.check_new_message(repo, uploads=uploads, **values)
                if errors:
                    return None, errors, threads.compose_choices(repo)
                sent = threads.start_thread(repo, uploads=uploads, **values)
                return sent.thread_id, {}, []

            thread_id, errors, choices = await pages.run(
                request, who, work, write=True, action="portal:messages:create"
            )
        except Refused as refused:
            return refused.response
        if thread_id is None:
            return self._compose_page(request, choices, values, errors, status=400)
        return RedirectResponse(f"/portal/messages/{thread_id}?sent=1", status_code=303)

    async def thread(self, request: Request) -> Response:
        pages = self.pages
        thread_id = str(request.path_params["thread_id"])
        try:
            who = await pages.user(request)
            _check_id(pages, request, thread_id)
            view = await pages.run(
                request,
                who,
                lambda repo: threads.open_thread(repo, thread_id),
                write=True,  # opening it records that the patient side has read it
                action="portal:messages:read",
            )
        except Refused as refused:
            return refused.response
        return self._thread_page(request, view, {}, "")

    async def follow_up(self, request: Request) -> Response:
        pages = self.pages
        thread_id = str(request.path_params["thread_id"])
        try:
            who = await pages.user(request)
            _check_id(pages, request, thread_id)
            form = await pages.form(request, max_bytes=MAX_POST_BYTES, max_files=_MAX_FORM_FILES)
            subject = pages.text(form, "subject", MAX_SUBJECT * 2)
            body = _long_text(form, "body")
            uploads = await uploads_in(form)

            def work(repo: Repository) -> tuple[str | None, dict[str, str], Any]:
                errors = threads.check_follow_up(subject, body, uploads)
                if errors:
                    return None, errors, threads.open_thread(repo, thread_id)
                sent = threads.follow_up(repo, thread_id, subject=subject, body=body, uploads=uploads)
                return sent.thread_id, {}, None

            new_thread, errors, view = await pages.run(
                request, who, work, write=True, action="portal:messages:create"
            )
        except Refused as refused:
            return refused.response
        if new_thread is None:
            return self._thread_page(request, view, errors, body, status=400, subject=subject)
        return RedirectResponse(f"/portal/messages/{new_thread}?sent=1", status_code=303)

    async def reply(self, request: Request) -> Response:
        pages = self.pages
        thread_id = str(request.path_params["thread_id"])
        try:
            who = await pages.user(request)
            _check_id(pages, request, thread_id)
            form = await pages.form(request, max_bytes=MAX_POST_BYTES, max_files=_MAX_FORM_FILES)
            body = _long_text(form, "body")
            uploads = await uploads_in(form)

            def work(repo: Repository) -> tuple[dict[str, str], Any]:
                errors = threads.check_reply(body, uploads)
                if errors:
                    return errors, threads.open_thread(repo, thread_id)
                threads.reply(repo, thread_id, body=body, uploads=uploads)
                return {}, None

            errors, view = await pages.run(request, who, work, write=True, action="portal:messages:create")
        except Refused as refused:
            return refused.response
        if errors:
            return self._thread_page(request, view, errors, body, status=400)
        return RedirectResponse(f"/portal/messages/{thread_id}?replied=1#reply", status_code=303)

    async def download(self, request: Request) -> Response:
        pages = self.pages
        thread_id = str(request.path_params["thread_id"])
        message_id = str(request.path_params["message_id"])
        index = int(request.path_params["index"])
        try:
            who = await pages.user(request)
            _check_id(pages, request, thread_id)
            _check_id(pages, request, message_id)
            file = await pages.run(
                request,
                who,
                lambda repo: threads.attachment(repo, thread_id, message_id, index),
                write=False,
                action="portal:messages:read",
            )
        except Refused as refused:
            return refused.response
        return download_response(file.title, file.content_type, file.data)

    # -- pages -------------------------------------------------------------------------------

    def _compose_page(
        self,
        request: Request,
        choices: list[Any],
        values: dict[str, str],
        errors: dict[str, str],
        status: int = 200,
    ) -> Response:
        return self.pages.render(
            request,
            "portal/messages_new.html",
            status,
            section="messages",
            choices=choices,
            values=values,
            errors=errors,
            **LIMITS,
        )

    def _thread_page(
        self,
        request: Request,
        view: Any,
        errors: dict[str, str],
        body: str,
        status: int = 200,
        *,
        subject: str | None = None,
    ) -> Response:
        return self.pages.render(
            request,
            "portal/messages_thread.html",
            status,
            section="messages",
            thread=view,
            errors=errors,
            body=body,
            subject=threads.default_follow_up_subject(view.subject) if subject is None else subject,
            sent=request.query_params.get("sent") == "1",
            replied=request.query_params.get("replied") == "1",
            **LIMITS,
        )


def _long_text(form: FormData, key: str) -> str:
    value = form.get(key)
    # One character over the limit is enough for the domain to say the text is too long.
    return value[: MAX_BODY + 1] if isinstance(value, str) else ""


def _check_id(pages: PortalPages, request: Request, value: str) -> None:
    if not ID_PATTERN.match(value):
        raise Refused(pages.error(request, 404))
