"""The portal's health record pages under /portal/record: summary, problems, medicines,
allergies, immunizations, results and their trends, vital signs, visits with their after-visit
summaries, documents (view and download) and care plans with goals.

Thin by design: each page runs one domain call (`garrison.portal.*`) through `PortalPages.run`
under the user's own access context and renders it. Pages that open results (a test's trend, a
document) mark what they showed as seen in a second, short write transaction, only when
something was new, so reading the record stays a read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from garrison.fhir.repository import Repository
from garrison.portal import care_plans, documents, immunizations, labs, record, record_lists, visits, vitals
from garrison.portal.record_seen import mark_seen
from garrison.portal.record_text import first_when
from garrison.web.portal.base import PortalPages, Refused

ACTION = "portal:record:read"
Handler = Callable[[Request], Awaitable[Response]]
# Sub-pages of the record, in the order of its navigation: (path, label).
SECTIONS = (
    ("", "Summary"),
    ("/labs", "Test results"),
    ("/vitals", "Vital signs"),
    ("/problems", "Health problems"),
    ("/medications", "Medicines"),
    ("/allergies", "Allergies"),
    ("/immunizations", "Immunizations"),
    ("/visits", "Visits"),
    ("/documents", "Documents and notes"),
    ("/care-plans", "Care plans and goals"),
)


def routes(pages: PortalPages) -> list[Route]:
    view = RecordPages(pages)
    return [
        Route("/portal/record", view.summary, methods=["GET"]),
        Route("/portal/record/problems", view.problems, methods=["GET"]),
        Route("/portal/record/medications", view.medications, methods=["GET"]),
        Route("/portal/record/allergies", view.allergies, methods=["GET"]),
        Route("/portal/record/immunizations", view.immunizations, methods=["GET"]),
        Route("/portal/record/labs", view.labs, methods=["GET"]),
        Route("/portal/record/labs/{code}", view.lab_trend, methods=["GET"]),
        Route("/portal/record/vitals", view.vitals, methods=["GET"]),
        Route("/portal/record/visits", view.visits, methods=["GET"]),
        Route("/portal/record/visits/{visit_id}", view.visit, methods=["GET"]),
        Route("/portal/record/documents", view.documents, methods=["GET"]),
        Route("/portal/record/documents/{document_id}", view.document, methods=["GET"]),
        Route(
            "/portal/record/documents/{document_id}/files/{index:int}", view.document_file, methods=["GET"]
        ),
        Route("/portal/record/care-plans", view.care_plans, methods=["GET"]),
    ]


def home_summary(repo: Repository) -> str | None:
    """One line for the portal's home page ("2 new results."), or None when the access in use
    does not include results. Call it inside the home page's `run`."""
    highlights = record.record_highlights(repo)
    return highlights.text if highlights is not None else None


class RecordPages:
    def __init__(self, pages: PortalPages) -> None:
        self.pages = pages

    async def _show(
        self,
        request: Request,
        work: Callable[[Repository], Any],
        template: str,
        current: str,
        title: str,
    ) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            result = await pages.run(request, who, work, write=False, action=ACTION)
            unseen = getattr(result, "unseen", None)
            if unseen:
                await pages.run(
                    request,
                    who,
                    lambda repo: mark_seen(repo, unseen),
                    write=True,
                    action="portal:record:update",
                )
        except Refused as refused:
            return refused.response
        return pages.render(
            request,
            template,
            section="record",
            sections=SECTIONS,
            current=current,
            page_title=title,
            data=result,
        )

    async def summary(self, request: Request) -> Response:
        return await self._show(request, record.record_summary, "portal/record.html", "", "Health record")

    async def problems(self, request: Request) -> Response:
        return await self._show(
            request, record_lists.problems, "portal/record_problems.html", "/problems", "Health problems"
        )

    async def medications(self, request: Request) -> Response:
        return await self._show(
            request, record_lists.medications, "portal/record_medications.html", "/medications", "Medicines"
        )

    async def allergies(self, request: Request) -> Response:
        return await self._show(
            request, record_lists.allergies, "portal/record_allergies.html", "/allergies", "Allergies"
        )

    async def immunizations(self, request: Request) -> Response:
        def work(repo: Repository) -> immunizations.ImmunizationRecord:
            patient = repo.read("Patient", labs.record_patient(repo)).parsed()
            born = first_when(patient.get("birthDate"))
            birth = born.day if born is not None and born.precision in ("day", "time") else None
            return immunizations.immunizations(repo, birth_date=birth)

        return await self._show(
            request, work, "portal/record_immunizations.html", "/immunizations", "Immunizations"
        )

    async def labs(self, request: Request) -> Response:
        return await self._show(request, labs.lab_results, "portal/record_labs.html", "/labs", "Test results")

    async def lab_trend(self, request: Request) -> Response:
        code = str(request.path_params["code"])
        return await self._show(
            request,
            lambda repo: labs.lab_trend(repo, code),
            "portal/record_lab.html",
            "/labs",
            "Test result",
        )

    async def vitals(self, request: Request) -> Response:
        return await self._show(
            request, vitals.vital_signs, "portal/record_vitals.html", "/vitals", "Vital signs"
        )

    async def visits(self, request: Request) -> Response:
        cursor = request.query_params.get("older") or None
        if cursor is not None and len(cursor) > 2000:
            return self.pages.error(request, 400, "That link to older visits is not valid.")
        return await self._show(
            request,
            lambda repo: visits.visits(repo, cursor),
            "portal/record_visits.html",
            "/visits",
            "Visits",
        )

    async def visit(self, request: Request) -> Response:
        visit_id = str(request.path_params["visit_id"])
        return await self._show(
            request,
            lambda repo: visits.visit_summary(repo, visit_id),
            "portal/record_visit.html",
            "/visits",
            "Visit summary",
        )

    async def documents(self, request: Request) -> Response:
        return await self._show(
            request, documents.documents, "portal/record_documents.html", "/documents", "Documents and notes"
        )

    async def document(self, request: Request) -> Response:
        document_id = str(request.path_params["document_id"])
        kind = request.query_params.get("kind", "document")
        return await self._show(
            request,
            lambda repo: documents.document(repo, document_id, kind),
            "portal/record_document.html",
            "/documents",
            "Document",
        )

    async def document_file(self, request: Request) -> Response:
        pages = self.pages
        document_id = str(request.path_params["document_id"])
        index = int(request.path_params["index"])
        kind = request.query_params.get("kind", "document")
        try:
            who = await pages.user(request)
            found = await pages.run(
                request,
                who,
                lambda repo: documents.document_file(repo, document_id, index, kind),
                write=False,
                action=ACTION,
            )
        except Refused as refused:
            return refused.response
        return Response(found.data, media_type=found.content_type, headers=download_headers(found.filename))

    async def care_plans(self, request: Request) -> Response:
        return await self._show(
            request,
            care_plans.care_plans,
            "portal/record_care_plans.html",
            "/care-plans",
            "Care plans and goals",
        )


def download_headers(filename: str) -> dict[str, str]:
    """Headers that make a stored file a download, never a page of the portal: an attachment
    with a safe name (RFC 6266), no type sniffing, a sandbox CSP and no caching (it is PHI)."""
    return {
        "Content-Disposition": f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "no-store",
    }
