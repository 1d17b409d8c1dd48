"""Portal pages for appointments: upcoming and past visits, finding open times, booking with a
confirmation step, cancelling, moving a visit, and the waitlist with its offers.

Thin on purpose: `garrison.scheduling` does the work through the user's Repository. Everything
works without JavaScript: searching is a GET form (clinic, dates and time of day are not
personal), each open time is a link to a confirmation page, and every change is a POST with the
session's CSRF token. When someone else takes a time first, the confirmation page comes back
with "That time was just taken; here are other times" and the nearest other times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN
from garrison.scheduling import booking, waitlist
from garrison.scheduling.eligibility import load_facts
from garrison.scheduling.errors import TAKEN, BookingRefused, SlotTaken
from garrison.scheduling.pages import ConfirmPage, FindForm, confirm_page, find_page, waitlist_page
from garrison.scheduling.rules import APPOINTMENT_TYPES, CANCEL_REASONS, DEFAULT_WINDOW
from garrison.scheduling.slots import DaySlots, OpenSlot, SlotSearch, alternatives
from garrison.scheduling.visits import Visit, get_visit, list_visits
from garrison.web.portal.base import PortalPages, Refused

_MAX_REASON = 500


def routes(pages: PortalPages) -> list[Route]:
    area = _Appointments(pages)
    return [
        Route("/portal/appointments", area.listing, methods=["GET"]),
        Route("/portal/appointments/find", area.find, methods=["GET"]),
        Route("/portal/appointments/book", area.confirm, methods=["GET"]),
        Route("/portal/appointments/book", area.book, methods=["POST"]),
        Route("/portal/appointments/waitlist", area.waitlist, methods=["GET"]),
        Route("/portal/appointments/waitlist", area.join, methods=["POST"]),
        Route("/portal/appointments/waitlist/{entry_id}/{verb}", area.offer, methods=["POST"]),
        Route("/portal/appointments/{appointment_id}/cancel", area.cancel_form, methods=["GET"]),
        Route("/portal/appointments/{appointment_id}/cancel", area.cancel, methods=["POST"]),
    ]


# -- how times read on the pages (the facility's local time, as the slots carry it) -------------


def day_label(day: date) -> str:
    return f"{day.strftime('%A')} {day.day} {day.strftime('%B %Y')}"


def time_label(moment: datetime) -> str:
    return f"{moment.strftime('%I').lstrip('0')}:{moment.strftime('%M %p')}"


def when_label(moment: datetime) -> str:
    return f"{day_label(moment.date())} at {time_label(moment)} ({moment.tzname()})"


FORMATS: dict[str, Callable[..., str]] = {
    "day_label": day_label,
    "time_label": time_label,
    "when_label": when_label,
}


@dataclass
class ProviderTimes:
    provider: str
    slots: list[OpenSlot]


@dataclass
class DayView:
    day: date
    providers: list[ProviderTimes] = field(default_factory=list)


def by_provider(days: list[DaySlots]) -> list[DayView]:
    """Each day's times grouped by clinician, in the order they first appear."""
    found: list[DayView] = []
    for day in days:
        view = DayView(day.day)
        groups: dict[str, list[OpenSlot]] = {}
        for slot in day.slots:
            groups.setdefault(slot.schedule.provider_name or "Any clinician", []).append(slot)
        view.providers = [ProviderTimes(name, slots) for name, slots in groups.items()]
        found.append(view)
    return found


def _id(value: str | None) -> str | None:
    return value if value and ID_PATTERN.match(value) else None


T = TypeVar("T")


def attempt(repo: Repository, step: Callable[[], T]) -> tuple[T | None, BookingRefused | SlotTaken | None]:
    """Run a booking step to a savepoint: when a rule refuses it or someone else was faster, it
    is undone (with the audit records of what it had written), so the page can explain in the
    same transaction and nothing half-done commits."""
    mark = len(repo.audit)
    savepoint = repo.connection.begin_nested()
    try:
        result = step()
    except (BookingRefused, SlotTaken) as failed:
        savepoint.rollback()
        del repo.audit[mark:]
        return None, failed
    savepoint.commit()
    return result, None


_DONE = {
    "joined": "You are on the waitlist. We will tell you if an earlier time opens.",
    "left": "You have left that waitlist.",
    "declined": "You turned the offer down; you are still on the waitlist.",
}


@dataclass
class _Booking:
    booked: booking.Booked | None = None
    taken: SlotSearch | None = None
    refused: str | None = None
    page: ConfirmPage | None = None


class _Appointments:
    def __init__(self, pages: PortalPages) -> None:
        self.pages = pages

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return self.pages.render(request, name, status, section="appointments", **FORMATS, **context)

    # -- lists -----------------------------------------------------------------------------------

    async def listing(self, request: Request) -> Response:
        pages = self.pages

        def work(repo: Repository) -> tuple[Any, list[waitlist.WaitlistView]]:
            return list_visits(repo), waitlist.waitlist_view(repo)

        try:
            who = await pages.user(request)
            found, entries = await pages.run(
                request, who, work, write=False, action="portal:appointments:search"
            )
        except Refused as refused:
            return refused.response
        notice = None
        params = request.query_params
        if params.get("booked"):
            made = next((v for v in found.upcoming if v.id == params["booked"]), None)
            if made is not None:
                moved = "moved to" if params.get("moved") else "booked for"
                notice = f"Your visit is {moved} {when_label(made.start)} at {made.place}."
        elif params.get("cancelled"):
            notice = "Your visit is cancelled."
        offers = [e for e in entries if e.offer is not None]
        return self._render(
            request, "portal/appointments.html", visits=found, offers=offers, entries=entries, notice=notice
        )

    # -- finding and booking ---------------------------------------------------------------------

    async def find(self, request: Request) -> Response:
        pages = self.pages
        params = request.query_params
        form = FindForm(
            facility=params.get("facility", "")[:64],
            service=params.get("service", "")[:32],
            kind=params.get("type", "")[:32],
            provider=_id(params.get("provider")) or "",
            first=params.get("from", "")[:10],
            last=params.get("to", "")[:10],
            time=params.get("time", "any")[:16],
            reschedule=_id(params.get("reschedule")) or "",
        )
        try:
            who = await pages.user(request)
            page = await pages.run(
                request,
                who,
                lambda repo: find_page(repo, form),
                write=False,
                action="portal:appointments:find",
            )
        except Refused as refused:
            return refused.response
        days = by_provider(page.search.days) if page.search else []
        status = 400 if page.errors else 200
        return self._render(request, "portal/appointments_find.html", status, page=page, days=days)

    async def confirm(self, request: Request) -> Response:
        pages = self.pages
        params = request.query_params
        slot_id = _id(params.get("slot"))
        reschedule = _id(params.get("reschedule"))
        try:
            who = await pages.user(request)  # who first: nothing is checked for a stranger
        except Refused as refused:
            return refused.response
        if slot_id is None:
            return pages.error(request, 400, "Choose a time first.")

        def work(repo: Repository) -> tuple[ConfirmPage, SlotSearch | None]:
            page = confirm_page(repo, slot_id, params.get("type", ""), reschedule)
            other = (
                None
                if page.available
                else alternatives(repo, page.slot, page.kind, load_facts(repo), replacing=reschedule)
            )
            return page, other

        try:
            page, other = await pages.run(request, who, work, write=False, action="portal:appointments:read")
        except Refused as refused:
            return refused.response
        if other is not None:
            return self._taken(request, page, other, status=200)
        return self._render(request, "portal/appointments_book.html", page=page, reasons=CANCEL_REASONS)

    def _taken(
        self, request: Request, page: ConfirmPage | None, other: SlotSearch, status: int = 409
    ) -> Response:
        return self._render(
            request,
            "portal/appointments_taken.html",
            status,
            page=page,
            other=other,
            days=by_provider(other.days),
            error=TAKEN,
        )

    async def book(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            form = await pages.form(request)
            slot_id = _id(pages.text(form, "slot", 64))
            kind = pages.text(form, "type", 32)
            reschedule = _id(pages.text(form, "reschedule", 64))
            reason = pages.text(form, "reason", _MAX_REASON)
            if slot_id is None:
                return pages.error(request, 400, "Choose a time first.")

            def work(repo: Repository) -> _Booking:
                def step() -> booking.Booked:
                    if reschedule:
                        return booking.reschedule(repo, reschedule, slot_id)
                    return booking.book(repo, slot_id, kind, reason=reason)

                made, failed = attempt(repo, step)
                if failed is None:
                    return _Booking(booked=made)
                pages.note(repo, "portal:appointments:refused", slot=f"Slot/{slot_id}", reason=failed.message)
                page = confirm_page(repo, slot_id, kind, reschedule)
                if isinstance(failed, SlotTaken):
                    return _Booking(
                        taken=alternatives(
                            repo, page.slot, page.kind, load_facts(repo), replacing=reschedule
                        ),
                        page=page,
                    )
                return _Booking(refused=failed.message, page=page)

            outcome = await pages.run(request, who, work, write=True, action="portal:appointments:create")
        except Refused as refused:
            return refused.response
        if outcome.taken is not None:
            return self._taken(request, outcome.page, outcome.taken)
        if outcome.refused is not None:
            return self._render(
                request,
                "portal/appointments_book.html",
                400,
                page=outcome.page,
                error=outcome.refused,
                reason=reason,
            )
        assert outcome.booked is not None
        query = {"booked": outcome.booked.appointment_id}
        if outcome.booked.replaced:
            query["moved"] = "1"
        return RedirectResponse(f"/portal/appointments?{urlencode(query)}", status_code=303)

    # -- cancelling ------------------------------------------------------------------------------

    async def cancel_form(self, request: Request) -> Response:
        pages = self.pages
        appointment_id = _id(request.path_params["appointment_id"])
        try:
            who = await pages.user(request)  # who first: nothing is checked for a stranger
        except Refused as refused:
            return refused.response
        if appointment_id is None:
            return pages.error(request, 404)
        try:
            visit = await pages.run(
                request,
                who,
                lambda repo: get_visit(repo, appointment_id),
                write=False,
                action="portal:appointments:read",
            )
        except Refused as refused:
            return refused.response
        return self._render(request, "portal/appointments_cancel.html", visit=visit, reasons=CANCEL_REASONS)

    async def cancel(self, request: Request) -> Response:
        pages = self.pages
        appointment_id = _id(request.path_params["appointment_id"])
        try:
            who = await pages.user(request)  # who first: nothing is checked for a stranger
        except Refused as refused:
            return refused.response
        if appointment_id is None:
            return pages.error(request, 404)
        try:
            form = await pages.form(request)
            reason = pages.text(form, "reason", 16)
            if reason not in CANCEL_REASONS:
                reason = "pat"

            def work(repo: Repository) -> tuple[str | None, Visit | None]:
                _, failed = attempt(repo, lambda: booking.cancel(repo, appointment_id, reason))
                if failed is not None:
                    return failed.message, get_visit(repo, appointment_id)
                return None, None

            refusal, visit = await pages.run(
                request, who, work, write=True, action="portal:appointments:update"
            )
        except Refused as refused:
            return refused.response
        if refusal is not None:
            return self._render(
                request,
                "portal/appointments_cancel.html",
                400,
                visit=visit,
                reasons=CANCEL_REASONS,
                error=refusal,
            )
        return RedirectResponse("/portal/appointments?cancelled=1", status_code=303)

    # -- the waitlist ----------------------------------------------------------------------------

    async def waitlist(self, request: Request) -> Response:
        pages = self.pages
        appointment_id = _id(request.query_params.get("appointment"))
        try:
            who = await pages.user(request)
            page = await pages.run(
                request,
                who,
                lambda repo: waitlist_page(repo, appointment_id),
                write=False,
                action="portal:appointments:waitlist-read",
            )
        except Refused as refused:
            return refused.response
        params = request.query_params
        values = {
            "clinic": params.get("clinic", "")[:64],
            "type": params.get("type", "")[:32],
            "before": params.get("before", "")[:10],
        }
        notice = _DONE.get(params.get("done", ""))
        return self._render(
            request, "portal/appointments_waitlist.html", page=page, values=values, notice=notice
        )

    async def join(self, request: Request) -> Response:
        pages = self.pages
        try:
            who = await pages.user(request)
            form = await pages.form(request)
            clinic = _id(pages.text(form, "clinic", 64)) or ""
            kind = APPOINTMENT_TYPES.get(pages.text(form, "type", 32))
            before_text = pages.text(form, "before", 10)
            appointment_id = _id(pages.text(form, "appointment", 64))
            values = {"clinic": clinic, "type": kind.key if kind else "", "before": before_text}

            def work(repo: Repository) -> tuple[str | None, Any]:
                try:
                    before = date.fromisoformat(before_text) if before_text else None
                except ValueError:
                    return "Enter the date as year-month-day, for example 2025-06-30.", waitlist_page(repo)
                if appointment_id is not None:
                    visit = get_visit(repo, appointment_id)
                    chosen = visit.clinic_id or ""
                    wanted = visit.kind
                else:
                    chosen, wanted = clinic, kind or APPOINTMENT_TYPES["primary-care"]
                _, failed = attempt(
                    repo,
                    lambda: waitlist.join(
                        repo,
                        chosen,
                        wanted,
                        before_day=before,
                        appointment_id=appointment_id,
                        window=DEFAULT_WINDOW,
                    ),
                )
                if failed is not None:
                    return failed.message, waitlist_page(repo, appointment_id)
                return None, None

            refusal, page = await pages.run(
                request, who, work, write=True, action="portal:appointments:waitlist-create"
            )
        except Refused as refused:
            return refused.response
        if refusal is not None:
            return self._render(
                request, "portal/appointments_waitlist.html", 400, page=page, values=values, error=refusal
            )
        return RedirectResponse("/portal/appointments/waitlist?done=joined", status_code=303)

    async def offer(self, request: Request) -> Response:
        pages = self.pages
        entry_id = request.path_params["entry_id"]
        verb = request.path_params["verb"]
        try:
            who = await pages.user(request)  # who first: nothing is checked for a stranger
        except Refused as refused:
            return refused.response
        if verb not in ("accept", "decline", "leave") or not entry_id.isalnum() or len(entry_id) > 32:
            return pages.error(request, 404)
        try:
            await pages.form(request)

            def work(repo: Repository) -> tuple[booking.Booked | None, str | None]:
                def step() -> booking.Booked | None:
                    if verb == "accept":
                        return booking.accept_offer(repo, entry_id)
                    if verb == "decline":
                        waitlist.decline(repo, entry_id)
                    else:
                        waitlist.leave(repo, entry_id)
                    return None

                made, failed = attempt(repo, step)
                return made, failed.message if failed is not None else None

            made, refusal = await pages.run(
                request, who, work, write=True, action=f"portal:appointments:waitlist-{verb}"
            )
        except Refused as refused:
            return refused.response
        if refusal is not None:
            return pages.error(request, 409, refusal)
        if made is not None:
            query = {"booked": made.appointment_id, **({"moved": "1"} if made.replaced else {})}
            return RedirectResponse(f"/portal/appointments?{urlencode(query)}", status_code=303)
        done = "declined" if verb == "decline" else "left"
        return RedirectResponse(f"/portal/appointments/waitlist?done={done}", status_code=303)
