"""The portal's web plumbing, shared by every area (record, messages, appointments, ...).

Every page needs a signed-in patient or proxy account (`/signin?next=...` otherwise; staff get a
403 page). `run` does a page's work in one transaction, through a Repository bound to the user's
own AccessContext with the record in view as its patient, so the access policy decides what is
shown and refused. Writes and their audit records commit together (the audit is the
transaction's last statement); what a read page showed is audited before the page is sent.
Every POST carries the session's CSRF token.

Areas are classes built on `PortalPages` (see `garrison.web.portal.__init__` for the wiring);
their logic lives in domain packages, never here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from garrison.audit.sink import AuditSink
from garrison.callers import ProxyGrant, context_for_session, proxy_grants
from garrison.errors import Forbidden, GarrisonError, Unauthorized
from garrison.fhir.audit_trail import access_records
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.identity.accounts import get_account
from garrison.identity.model import Account
from garrison.portal import viewing
from garrison.portal.viewing import RecordChoice
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
MAX_FORM_BYTES = 16 * 1024
_MESSAGES = {
    400: "The request could not be understood.",
    403: "This is not something you can do in the portal.",
    404: "There is no such item in this record.",
    409: "Something changed in the meantime. Reload the page and try again.",
    413: "What you sent is too large.",
}
_VIEW_KEY = "garrison.portal.view"


class Refused(Exception):
    """Stop handling a request and answer with `response` (a redirect or an error page)."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


@dataclass(frozen=True, slots=True)
class PortalView:
    """Whose record this request looked at, and what else the user could switch to."""

    viewing: RecordChoice
    choices: tuple[RecordChoice, ...]


class PortalPages:
    """Shared plumbing: who is signed in, forms, one audited transaction per page, rendering."""

    def __init__(
        self, settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink | None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.definitions = definitions
        self.audit = audit
        self.templates = page_templates()

    # -- who ---------------------------------------------------------------------------------------

    async def user(self, request: Request, back_to: str | None = None) -> SignedIn:
        """The signed-in patient or proxy, or a refusal: sign in first (303), or staff (403)."""
        who = signed_in(request)
        if who is None:
            target = back_to or request.url.path
            raise Refused(RedirectResponse(f"/signin?next={quote(target, safe='/')}", status_code=303))
        if who.kind not in ("patient", "proxy"):
            raise Refused(
                self.error(
                    request, 403, "The portal is for patients and their families. Staff use the workspace."
                )
            )
        return who

    # -- forms -------------------------------------------------------------------------------------

    async def form(
        self, request: Request, *, max_bytes: int = MAX_FORM_BYTES, max_files: int = 0
    ) -> FormData:
        """The posted form once its size and CSRF token are checked (413 and 403 pages otherwise).
        Areas that accept files pass a larger `max_bytes` and `max_files`."""
        try:
            return await checked_form(request, max_bytes=max_bytes, max_files=max_files, max_fields=60)
        except FormRefused as refused:
            raise Refused(self.error(request, refused.status, refused.message)) from refused

    @staticmethod
    def text(form: FormData, key: str, limit: int = 200) -> str:
        value = form.get(key)
        return value.strip()[:limit] if isinstance(value, str) else ""

    # -- work --------------------------------------------------------------------------------------

    async def run(
        self,
        request: Request,
        who: SignedIn,
        work: Callable[[Repository], T],
        *,
        write: bool,
        action: str,
    ) -> T:
        """Run `work` in one transaction for the record in view, audited. A refusal or failure
        becomes an error page (and is audited too); a proxy relationship that ended sends the user
        back to their own record."""
        source = client_address(request)

        def repository_for(connection: Connection) -> Repository:
            account, grants, view = self._view(connection, who)
            request.scope[_VIEW_KEY] = view
            context = context_for_session(
                connection,
                self.definitions,
                self.settings,
                account_id=who.account_id,
                session_id=who.session_id,
                source=source,
                patient=view.viewing.patient_id,
                account=account,
                grants=grants,
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
            )

        try:
            return await run_in_threadpool(run)
        except Unauthorized as error:
            raise Refused(RedirectResponse("/signin", status_code=303)) from error
        except Forbidden as error:
            view = request.scope.get(_VIEW_KEY)
            message: str | None = (
                f"Your access to {view.viewing.name}'s record does not include this."
                if isinstance(view, PortalView) and not view.viewing.is_self
                else error.message or _MESSAGES[403]
            )
            raise Refused(self.error(request, 403, message)) from error
        except GarrisonError as error:
            status = error.status if error.status in _MESSAGES else 400
            message = error.message if status in (400, 409, 413) else None
            raise Refused(self.error(request, status, message)) from error
        except Exception as error:
            # Safety net: log the cause, answer without internals (nothing was committed).
            log.exception("Unhandled error serving %s %s", request.method, request.url.path)
            raise Refused(self.error(request, 500, "Something went wrong. Nothing was changed.")) from error

    def _view(self, connection: Connection, who: SignedIn) -> tuple[Account, list[ProxyGrant], PortalView]:
        """The account, its proxy grants (read once per request: revoking one takes effect on the
        next) and the record in view."""
        account = get_account(connection, who.account_id)
        if account is None or account.disabled:
            raise Unauthorized("The account is no longer active")
        grants = proxy_grants(connection, self.definitions, self.settings, account.id)
        choices = viewing.record_choices(connection, self.definitions, self.settings, account, grants)
        chosen = viewing.viewed_patient(connection, who.session_id, choices)
        if chosen is None:
            raise Forbidden("This account has no record to show: no one has shared theirs with it.")
        return account, grants, PortalView(chosen, tuple(choices))

    @staticmethod
    def note(repo: Repository, action: str, **detail: Any) -> None:
        """Add an audit record of a portal action that is not itself a FHIR interaction
        (switching records, downloading the record, ...) for the record in view."""
        repo.audit.extend(access_records(repo.context, action, (), detail))

    # -- pages -------------------------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """A portal page: the layout shows the user, the record in view and the record switcher."""
        view = request.scope.get(_VIEW_KEY)
        context.setdefault("signed_in", signed_in(request))
        context.setdefault("csrf_token", csrf_token(request))
        context.setdefault("error", None)
        context.setdefault("notice", None)
        context.setdefault("section", "")
        context.setdefault("view", view if isinstance(view, PortalView) else None)
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def error(self, request: Request, status: int, message: str | None = None) -> Response:
        text = message or _MESSAGES.get(status, "That did not work.")
        return self.render(request, "portal/error.html", status, message=text, code=status)

    @staticmethod
    def viewed(request: Request) -> PortalView | None:
        """The record in view on this request (after `run`)."""
        view = request.scope.get(_VIEW_KEY)
        return view if isinstance(view, PortalView) else None
