"""Staff pages that close the loops the patient portal opens:

- /workspace/results/held: results the portal holds back from patients (the release policy of
  `garrison.portal.release`), and releasing one to the patient now;
- /workspace/refills: the facility's queue of refill and renewal requests
  (`garrison.portal.refill_queue`), one request, and accepting, completing or turning it down;
- POST /workspace/patients/{id}/activation-code: a one-time portal activation code
  (`garrison.identity.activation.issue_code`), shown once on a printable page.

Built on the workspace's plumbing (`garrison.web.workspace`): staff sign-in required, one audited
transaction per page through a Repository bound to the staff member's own AccessContext, CSRF on
every POST, errors as pages. Which roles may use each page is the domain's decision
(`may_release`, `may_handle`, `may_issue_codes`); the repository checks again underneath.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.audit.sink import AuditSink
from garrison.errors import BadRequest
from garrison.fhir.audit_trail import failure_record
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN
from garrison.identity import activation
from garrison.portal import refill_queue, release
from garrison.settings import Settings
from garrison.web.signin import SignedIn

# The workspace's page plumbing (staff check, forms, audited transactions, error pages) is
# reused as it is, as garrison.web.staff_inbox does.
from garrison.web.workspace import _Refused, _Workspace

_ISSUE_ACTION = "workspace:activation:create"


def staff_portal_routes(
    settings: Settings, engine: Engine, definitions: Definitions, audit: AuditSink | None = None
) -> list[BaseRoute]:
    pages = _StaffPortal(settings, engine, definitions, audit)
    return [
        Route("/workspace/results/held", pages.held, methods=["GET"]),
        Route(
            "/workspace/results/{resource_type}/{resource_id}/release", pages.release_one, methods=["POST"]
        ),
        Route("/workspace/refills", pages.refills, methods=["GET"]),
        Route("/workspace/refills/{task_id}", pages.refill, methods=["GET"]),
        Route("/workspace/refills/{task_id}/accept", pages.accept, methods=["POST"]),
        Route("/workspace/refills/{task_id}/complete", pages.complete, methods=["POST"]),
        Route("/workspace/refills/{task_id}/reject", pages.reject, methods=["POST"]),
        Route("/workspace/patients/{patient_id}/activation-code", pages.activation_code, methods=["POST"]),
    ]


class _StaffPortal(_Workspace):
    # -- who may ------------------------------------------------------------------------------

    def _allowed(self, request: Request, back_to: str, check: Any, message: str) -> SignedIn:
        """A signed-in staff member whose role passes `check` (a domain predicate on the role);
        a 403 page that says who may, otherwise."""
        who = self._staff(request, back_to)
        if not check(self.policy.role(who.role)):
            raise _Refused(self._error(request, 403, message))
        return who

    def _clinician(self, request: Request, back_to: str) -> SignedIn:
        return self._allowed(
            request,
            back_to,
            release.may_release,
            "Held results are released by the clinical staff who may act on results.",
        )

    def _pharmacy(self, request: Request, back_to: str) -> SignedIn:
        return self._allowed(
            request,
            back_to,
            refill_queue.may_handle,
            "Prescription requests are handled by a facility's physicians, nurses and pharmacists.",
        )

    def _path_id(self, request: Request, name: str) -> str:
        value = str(request.path_params[name])
        if not ID_PATTERN.match(value):
            raise _Refused(self._error(request, 404))
        return value

    # -- held results -------------------------------------------------------------------------

    async def held(self, request: Request) -> Response:
        try:
            who = self._clinician(request, "/workspace/results/held")
            found = await self._run(
                request, who, release.held_at_reach, write=False, action="workspace:results:search"
            )
        except _Refused as refused:
            return refused.response
        return self._render(
            request,
            "workspace/held_results.html",
            held=found,
            released=request.query_params.get("released"),
            section="held-results",
        )

    async def release_one(self, request: Request) -> Response:
        resource_type = str(request.path_params["resource_type"])
        try:
            who = self._clinician(request, "/workspace/results/held")
            if resource_type not in release.RESULT_TYPES:
                raise _Refused(self._error(request, 404))
            resource_id = self._path_id(request, "resource_id")
            await self._form(request)
            newly = await self._run(
                request,
                who,
                lambda repo: release.release_result(repo, resource_type, resource_id),
                write=True,
                action="workspace:results:update",
            )
        except _Refused as refused:
            return refused.response
        return RedirectResponse(f"/workspace/results/held?released={1 if newly else 0}", status_code=303)

    # -- prescription requests ----------------------------------------------------------------

    async def refills(self, request: Request) -> Response:
        try:
            who = self._pharmacy(request, "/workspace/refills")
            queue = await self._run(
                request, who, refill_queue.refill_queue, write=False, action="workspace:refills:search"
            )
        except _Refused as refused:
            return refused.response
        done = request.query_params.get("done")
        return self._render(
            request,
            "workspace/refills.html",
            queue=queue,
            done=done if done in refill_queue.ACTIONS else None,
            section="refills",
        )

    async def refill(self, request: Request) -> Response:
        try:
            task_id = self._path_id(request, "task_id")
            who = self._pharmacy(request, f"/workspace/refills/{task_id}")
            detail = await self._run(
                request,
                who,
                lambda repo: refill_queue.queue_request(repo, task_id),
                write=False,
                action="workspace:refills:read",
            )
        except _Refused as refused:
            return refused.response
        return self._refill_page(request, detail, errors={}, reason="")

    async def accept(self, request: Request) -> Response:
        return await self._act(request, "accept")

    async def complete(self, request: Request) -> Response:
        return await self._act(request, "complete")

    async def reject(self, request: Request) -> Response:
        return await self._act(request, "reject")

    async def _act(self, request: Request, action: str) -> Response:
        try:
            task_id = self._path_id(request, "task_id")
            who = self._pharmacy(request, f"/workspace/refills/{task_id}")
            form = await self._form(request)
            value = form.get("reason")
            reason = value.strip()[: refill_queue.REASON_LIMIT + 1] if isinstance(value, str) else ""

            def work(repo: Repository) -> tuple[dict[str, str], refill_queue.QueueDetail | None]:
                errors = refill_queue.action_errors(action, reason)
                if errors:  # the page again, with the reason field marked
                    return errors, refill_queue.queue_request(repo, task_id)
                refill_queue.act_on_request(repo, task_id, action, reason)
                return {}, None

            errors, detail = await self._run(
                request, who, work, write=True, action="workspace:refills:update"
            )
        except _Refused as refused:
            return refused.response
        if detail is not None:
            return self._refill_page(request, detail, errors=errors, reason=reason, status=400)
        if action == "accept":
            return RedirectResponse(f"/workspace/refills/{task_id}?accepted=1", status_code=303)
        return RedirectResponse(f"/workspace/refills?done={action}", status_code=303)

    def _refill_page(
        self,
        request: Request,
        detail: refill_queue.QueueDetail,
        *,
        errors: dict[str, str],
        reason: str,
        status: int = 200,
    ) -> Response:
        return self._render(
            request,
            "workspace/refill.html",
            status,
            detail=detail,
            errors=errors,
            reason=reason,
            accepted=request.query_params.get("accepted") == "1",
            reason_limit=refill_queue.REASON_LIMIT,
            section="refills",
        )

    # -- portal activation codes --------------------------------------------------------------

    async def activation_code(self, request: Request) -> Response:
        try:
            patient_id = self._path_id(request, "patient_id")
            who = self._allowed(
                request,
                f"/workspace/patients/{patient_id}",
                activation.may_issue_codes,
                "Portal activation codes are given by the front desk and by physicians and nurses.",
            )
            await self._form(request)
            detail = {"path": request.url.path}

            def work(repo: Repository) -> tuple[activation.IssuedCode | None, str]:
                try:
                    return activation.issue_code(repo, patient_id), ""
                except BadRequest as refused:
                    # The record cannot be activated (a child, no DoD ID, an account already):
                    # the page says why, and the refusal is audited with the transaction.
                    if repo.context.audited:
                        repo.audit.append(
                            failure_record(repo.context, _ISSUE_ACTION, refused, patient_id, detail)
                        )
                    return None, refused.message

            issued, refusal = await self._run(
                request, who, work, write=True, action=_ISSUE_ACTION, patient=patient_id
            )
        except _Refused as refused:
            return refused.response
        return self._render(
            request,
            "workspace/activation_code.html",
            200 if issued is not None else 400,
            issued=issued,
            refusal=refusal,
            patient_id=patient_id,
            activate_at=_site_origin(self.settings) + "/portal/activate",
            section="search",
        )


def _site_origin(settings: Settings) -> str:
    """The public origin (scheme://host:port) of the configured base URL, for printed instructions."""
    parts = urlsplit(settings.base_url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
