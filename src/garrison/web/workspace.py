"""The staff workspace: find a patient, see the family and one record across facilities, register
with the patient index's duplicate warning, and (health-information managers) review duplicates,
merge and unmerge. Server-rendered pages, no JavaScript; logic lives in `garrison.registration`.

Every page needs a signed-in staff account (`/signin?next=...` otherwise). Each request builds
the user's AccessContext from the session (`garrison.callers.context_for_session`) and works
through a Repository bound to it, so the access policy decides what is shown and refused.
Writes and their audit records commit together (the audit is the transaction's last
statement); what a read page showed is audited before the page is sent. Every POST carries the
session's CSRF token. Searches are POSTed so that names, dates of birth and DoD IDs stay out of
URLs (server logs, browser history).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.audit.sink import AuditSink
from garrison.callers import context_for_session
from garrison.errors import GarrisonError, NotFound, Unauthorized
from garrison.fhir.authz.policy import policy_from
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN
from garrison.identity import activation
from garrison.portal import refill_queue, release
from garrison.registration import lookup, registering, review
from garrison.settings import Settings
from garrison.web.audited import run_audited
from garrison.web.signin import (
    FormRefused,
    SignedIn,
    checked_form,
    client_address,
    csrf_token,
    page_templates,
    signed_in,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
_MAX_FORM_BYTES = 16 * 1024
_MESSAGES = {
    400: "The request could not be understood.",
    403: "Your role does not allow this.",
    404: "There is no such record, or it is not one you may open.",
    409: "Someone changed this in the meantime. Reload the page and try again.",
}


class _Refused(Exception):
    """Stop handling a request and answer with `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


def workspace_routes(
    settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink | None = None
) -> list[BaseRoute]:
    """The workspace's routes. `audit` is the application's read-audit sink; without one, the
    records of read pages are written in a short transaction of their own."""
    pages = _Workspace(settings, engine, definitions, audit)
    return [
        Route("/workspace", pages.search_form, methods=["GET"]),
        Route("/workspace", pages.search, methods=["POST"]),
        Route("/workspace/patients/{patient_id}", pages.patient, methods=["GET"]),
        Route("/workspace/register", pages.register_form, methods=["GET"]),
        Route("/workspace/register", pages.register, methods=["POST"]),
        Route("/workspace/duplicates", pages.duplicates, methods=["GET"]),
        Route("/workspace/duplicates/find", pages.find_duplicates, methods=["POST"]),
        Route("/workspace/duplicates/{task_id}/merge", pages.merge, methods=["POST"]),
        Route("/workspace/duplicates/{task_id}/dismiss", pages.dismiss, methods=["POST"]),
        Route("/workspace/merges", pages.merges, methods=["GET"]),
        Route("/workspace/merges/{merge_id}/unmerge", pages.unmerge, methods=["POST"]),
    ]


class _Workspace:
    def __init__(
        self, settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink | None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.definitions = definitions
        self.audit = audit
        self.policy = policy_from(definitions)
        self.templates = page_templates()

    # -- plumbing --------------------------------------------------------------------------------

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        who = signed_in(request)
        role = self.policy.role(who.role) if who is not None else None
        context.setdefault("signed_in", who)
        context.setdefault("csrf_token", csrf_token(request))
        context.setdefault("error", None)
        context.setdefault("may_register", role is not None and role.allows("create", "Patient"))
        context.setdefault("may_review", role is not None and role.allows_operation("merge"))
        # The message inbox (garrison.web.staff_inbox) is for roles that read and write messages.
        context.setdefault(
            "may_message",
            role is not None
            and role.allows("search", "Communication")
            and role.allows("create", "Communication"),
        )
        # The pages of garrison.web.staff_portal (the loops the patient portal opens); the
        # domain decides which roles may use them.
        context.setdefault("may_release", release.may_release(role))
        context.setdefault("may_handle_refills", refill_queue.may_handle(role))
        context.setdefault("may_issue_codes", activation.may_issue_codes(role))
        context.setdefault("section", "")
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def _error(self, request: Request, status: int, message: str | None = None) -> Response:
        text = message or _MESSAGES.get(status, "That did not work.")
        return self._render(request, "workspace/error.html", status, message=text, code=status)

    def _staff(self, request: Request, back_to: str) -> SignedIn:
        """The signed-in staff member, or a refusal: sign in first (303), or not staff (403)."""
        who = signed_in(request)
        if who is None:
            raise _Refused(RedirectResponse(f"/signin?next={quote(back_to, safe='')}", status_code=303))
        if who.kind != "staff":
            raise _Refused(self._error(request, 403, "The workspace is for staff accounts."))
        return who

    async def _form(self, request: Request) -> FormData:
        """The posted form, once its size and CSRF token are checked (413, 403 otherwise)."""
        try:
            return await checked_form(request, max_bytes=_MAX_FORM_BYTES, max_fields=40)
        except FormRefused as refused:
            raise _Refused(self._error(request, refused.status, refused.message)) from refused

    async def _run(
        self,
        request: Request,
        who: SignedIn,
        work: Callable[[Repository], T],
        *,
        write: bool,
        action: str,
        patient: str | None = None,
    ) -> T:
        """Run `work` for the signed-in user in one transaction, audited; a refusal or failure
        becomes the error page (and is audited too)."""
        source = client_address(request)

        def repository_for(connection: Connection) -> Repository:
            context = context_for_session(
                connection,
                self.definitions,
                self.settings,
                account_id=who.account_id,
                session_id=who.session_id,
                source=source,
            )
            return Repository(connection, self.definitions, self.settings, context)

        def run() -> T:
            return run_audited(
                self.engine,
                self.audit,
                repository_for,
                work,
                write=write,
                action=action,
                detail={"path": request.url.path},
                patient=patient,
            )

        try:
            return await run_in_threadpool(run)
        except Unauthorized as error:
            raise _Refused(RedirectResponse("/signin", status_code=303)) from error
        except GarrisonError as error:
            status = error.status if error.status in _MESSAGES else 400
            message = error.message if status in (400, 409) else None
            raise _Refused(self._error(request, status, message)) from error
        except Exception as error:
            # Safety net: log the cause, answer without internals (nothing was committed).
            log.exception("Unhandled error serving %s %s", request.method, request.url.path)
            raise _Refused(self._error(request, 500, "Something went wrong. Nothing was changed.")) from error

    @staticmethod
    def _text(form: FormData, key: str) -> str:
        value = form.get(key)
        return value.strip()[:200] if isinstance(value, str) else ""

    # -- search ----------------------------------------------------------------------------------

    async def search_form(self, request: Request) -> Response:
        try:
            self._staff(request, "/workspace")
        except _Refused as refused:
            return refused.response
        return self._render(
            request,
            "workspace/search.html",
            criteria=lookup.SearchCriteria(),
            result=None,
            errors={},
            section="search",
        )

    async def search(self, request: Request) -> Response:
        try:
            who = self._staff(request, "/workspace")
            form = await self._form(request)
            criteria = lookup.SearchCriteria.from_form(
                {k: self._text(form, k) for k in ("name", "birth_date", "edipi", "mrn")}
            )
            errors = criteria.errors()
            if errors:
                return self._render(
                    request,
                    "workspace/search.html",
                    400,
                    criteria=criteria,
                    result=None,
                    errors=errors,
                    error="Check the search: " + " ".join(errors.values()),
                    section="search",
                )
            result = await self._run(
                request,
                who,
                lambda repo: lookup.search_patients(repo, criteria),
                write=False,
                action="workspace:patient:search",
            )
        except _Refused as refused:
            return refused.response
        return self._render(
            request, "workspace/search.html", criteria=criteria, result=result, errors={}, section="search"
        )

    # -- the patient -----------------------------------------------------------------------------

    async def patient(self, request: Request) -> Response:
        patient_id = str(request.path_params["patient_id"])
        try:
            who = self._staff(request, f"/workspace/patients/{patient_id}")
            if not ID_PATTERN.match(patient_id):
                raise NotFound("no such id")
            page = await self._run(
                request,
                who,
                lambda repo: lookup.patient_page(repo, patient_id),
                write=False,
                action="workspace:patient:read",
                patient=patient_id,
            )
        except NotFound:
            return self._error(request, 404)
        except _Refused as refused:
            return refused.response
        return self._render(
            request,
            "workspace/patient.html",
            page=page,
            section="search",
            registered=request.query_params.get("registered") == "1",
        )

    # -- registration ----------------------------------------------------------------------------

    async def register_form(self, request: Request) -> Response:
        try:
            self._staff(request, "/workspace/register")
        except _Refused as refused:
            return refused.response
        return self._render(
            request,
            "workspace/register.html",
            form=registering.RegistrationForm(),
            errors={},
            sexes=registering.SEXES,
            section="register",
        )

    async def register(self, request: Request) -> Response:
        try:
            who = self._staff(request, "/workspace/register")
            posted = await self._form(request)
            form = registering.RegistrationForm.from_form(
                {k: self._text(posted, k) for k in registering.RegistrationForm.__dataclass_fields__}
            )
            decision = self._text(posted, "decision")
            errors = form.errors()
            if errors or decision == "edit":
                return self._render(
                    request,
                    "workspace/register.html",
                    400 if errors else 200,
                    form=form,
                    errors=errors,
                    sexes=registering.SEXES,
                    section="register",
                    error=("Check the form: " + " ".join(errors.values())) if errors else None,
                )
            confirm = decision == "register-anyway"
            result = await self._run(
                request,
                who,
                lambda repo: registering.register(repo, form, confirm_new=confirm),
                write=True,
                action="workspace:patient:create",
            )
        except _Refused as refused:
            return refused.response
        if result.created is not None:
            return RedirectResponse(f"/workspace/patients/{result.created.id}?registered=1", status_code=303)
        return self._render(
            request, "workspace/register_check.html", form=form, result=result, section="register"
        )

    # -- duplicates and merges (health-information management) ----------------------------------

    async def duplicates(self, request: Request) -> Response:
        try:
            who = self._staff(request, "/workspace/duplicates")
            pairs = await self._run(
                request, who, review.duplicate_queue, write=False, action="workspace:duplicates:search"
            )
        except _Refused as refused:
            return refused.response
        found = request.query_params.get("found")
        return self._render(
            request,
            "workspace/duplicates.html",
            pairs=pairs,
            section="duplicates",
            found=int(found) if found and found.isdigit() else None,
            dismissed=request.query_params.get("dismissed") == "1",
        )

    async def find_duplicates(self, request: Request) -> Response:
        try:
            who = self._staff(request, "/workspace/duplicates")
            await self._form(request)
            run = await self._run(
                request, who, review.find_new_duplicates, write=True, action="workspace:duplicates:create"
            )
        except _Refused as refused:
            return refused.response
        return RedirectResponse(f"/workspace/duplicates?found={len(run.created)}", status_code=303)

    async def merge(self, request: Request) -> Response:
        task_id = str(request.path_params["task_id"])
        try:
            who = self._staff(request, "/workspace/duplicates")
            form = await self._form(request)
            survivor = self._text(form, "survivor")
            record = await self._run(
                request,
                who,
                lambda repo: review.merge_pair(repo, task_id, survivor),
                write=True,
                action="workspace:patient:merge",
                patient=survivor or None,
            )
        except _Refused as refused:
            return refused.response
        return RedirectResponse(f"/workspace/merges?merged={quote(record.merge_id)}", status_code=303)

    async def dismiss(self, request: Request) -> Response:
        task_id = str(request.path_params["task_id"])
        try:
            who = self._staff(request, "/workspace/duplicates")
            await self._form(request)
            await self._run(
                request,
                who,
                lambda repo: review.dismiss_pair(repo, task_id),
                write=True,
                action="workspace:duplicates:update",
            )
        except _Refused as refused:
            return refused.response
        return RedirectResponse("/workspace/duplicates?dismissed=1", status_code=303)

    async def merges(self, request: Request) -> Response:
        try:
            who = self._staff(request, "/workspace/merges")
            history = await self._run(
                request, who, review.merge_history, write=False, action="workspace:merges:search"
            )
        except _Refused as refused:
            return refused.response
        return self._render(
            request,
            "workspace/merges.html",
            merges=history,
            section="merges",
            merged=request.query_params.get("merged"),
            unmerged=request.query_params.get("unmerged"),
        )

    async def unmerge(self, request: Request) -> Response:
        merge_id = str(request.path_params["merge_id"])
        try:
            who = self._staff(request, "/workspace/merges")
            await self._form(request)
            record = await self._run(
                request,
                who,
                lambda repo: review.undo_merge(repo, merge_id),
                write=True,
                action="workspace:patient:unmerge",
            )
        except _Refused as refused:
            return refused.response
        return RedirectResponse(f"/workspace/merges?unmerged={quote(record.merge_id)}", status_code=303)
