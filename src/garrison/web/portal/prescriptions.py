"""Prescription pages: /portal/prescriptions (active prescriptions and requests), the request form
/portal/prescriptions/{id}/request, and a request's status page /portal/prescriptions/requests/{id}.
Logic: `garrison.portal.refills`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from garrison.errors import Conflict, NotFound
from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN
from garrison.portal import refills
from garrison.web.portal.base import PortalPages, Refused

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def routes(pages: PortalPages) -> list[Route]:
    area = PrescriptionPages(pages)
    return [
        Route("/portal/prescriptions", area.page, methods=["GET"]),
        Route("/portal/prescriptions/{medication_id}/request", area.request_form, methods=["GET"]),
        Route("/portal/prescriptions/{medication_id}/request", area.send, methods=["POST"]),
        Route("/portal/prescriptions/requests/{task_id}", area.status, methods=["GET"]),
    ]


def day_text(value: date | None) -> str:
    """ "3 May 2026"."""
    return "" if value is None else f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def moment_text(value: datetime | None) -> str:
    """ "3 May 2026, 14:05 UTC"."""
    if value is None:
        return ""
    value = value.astimezone(UTC)
    return f"{day_text(value.date())}, {value:%H:%M} UTC"


class PrescriptionPages:
    def __init__(self, pages: PortalPages) -> None:
        self.pages = pages

    async def page(self, request: Request) -> Response:
        pages = self.pages

        def work(repo: Repository) -> tuple[list[refills.Medication], list[refills.PrescriptionRequest]]:
            requests = refills.prescription_requests(repo)
            return refills.active_medications(repo, requests), requests

        try:
            who = await pages.user(request)
            medications, requests = await pages.run(
                request, who, work, write=False, action="portal:prescriptions:read"
            )
        except Refused as refused:
            return refused.response
        return pages.render(
            request,
            "portal/prescriptions.html",
            section="prescriptions",
            medications=medications,
            requests=requests,
            day=day_text,
            moment=moment_text,
        )

    async def request_form(self, request: Request) -> Response:
        pages = self.pages
        medication_id = _path_id(request, "medication_id")

        def work(repo: Repository) -> tuple[refills.Medication, list[refills.Pharmacy]]:
            _require_id(medication_id)
            return refills.medication_for_request(repo, medication_id), refills.pharmacies(repo)

        try:
            who = await pages.user(request)
            medication, choices = await pages.run(
                request, who, work, write=False, action="portal:prescriptions:read"
            )
        except Refused as refused:
            return refused.response
        values = {"kind": medication.offered, "pharmacy": choices[0].key if choices else "", "note": ""}
        return self._form(request, medication, choices, values)

    async def send(self, request: Request) -> Response:
        pages = self.pages
        medication_id = _path_id(request, "medication_id")
        try:
            who = await pages.user(request)
            form = await pages.form(request)
            values = {
                "kind": pages.text(form, "kind", 20),
                "pharmacy": pages.text(form, "pharmacy", 120),
                # Longer than the limit is kept so the form can say it is too long.
                "note": pages.text(form, "note", refills.NOTE_LIMIT * 2),
            }

            def work(repo: Repository) -> str | _Refusal:
                _require_id(medication_id)
                try:
                    return refills.request_prescription(
                        repo,
                        medication_id,
                        kind=values["kind"],
                        pharmacy=values["pharmacy"],
                        note=values["note"],
                    )
                except (refills.RequestProblem, Conflict) as problem:
                    # Refused before anything was written: show the form again with the reason.
                    field = problem.field if isinstance(problem, refills.RequestProblem) else ""
                    return _Refusal(
                        refills.medication_for_request(repo, medication_id),
                        refills.pharmacies(repo),
                        {field or "form": problem.message},
                        problem.status,
                    )

            outcome = await pages.run(request, who, work, write=True, action="portal:prescriptions:create")
        except Refused as refused:
            return refused.response
        if isinstance(outcome, _Refusal):
            return self._form(
                request,
                outcome.medication,
                outcome.pharmacies,
                values,
                errors=outcome.errors,
                status=outcome.status,
            )
        task_id = outcome
        return RedirectResponse(f"/portal/prescriptions/requests/{task_id}?sent=1", status_code=303)

    async def status(self, request: Request) -> Response:
        pages = self.pages
        task_id = _path_id(request, "task_id")
        try:
            who = await pages.user(request)

            def work(repo: Repository) -> refills.PrescriptionRequest:
                _require_id(task_id)
                return refills.prescription_request(repo, task_id)

            found = await pages.run(
                request,
                who,
                work,
                write=False,
                action="portal:prescriptions:read",
            )
        except Refused as refused:
            return refused.response
        notice = (
            "Your request was sent. You will get an email or text message when its status changes."
            if request.query_params.get("sent")
            else None
        )
        return pages.render(
            request,
            "portal/prescriptions_status.html",
            section="prescriptions",
            item=found,
            notice=notice,
            moment=moment_text,
        )

    def _form(
        self,
        request: Request,
        medication: refills.Medication,
        choices: list[refills.Pharmacy],
        values: dict[str, str],
        *,
        errors: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        return self.pages.render(
            request,
            "portal/prescriptions_request.html",
            status,
            section="prescriptions",
            medication=medication,
            pharmacies=choices,
            values=values,
            errors=errors or {},
            note_limit=refills.NOTE_LIMIT,
            day=day_text,
            moment=moment_text,
        )


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A request the domain refused before writing: the form is shown again."""

    medication: refills.Medication
    pharmacies: list[refills.Pharmacy]
    errors: dict[str, str]
    status: int


def _path_id(request: Request, name: str) -> str:
    """A resource id from the path; anything else is simply not found (checked inside `run`)."""
    value = str(request.path_params.get(name, ""))
    return value if ID_PATTERN.match(value) else ""


def _require_id(value: str) -> None:
    if not value:
        raise NotFound("There is no such item in this record.")
