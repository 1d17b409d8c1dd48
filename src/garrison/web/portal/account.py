"""Portal pages for people who are not signed in: first-time activation and password reset.

    /portal/activate            DoD ID + date of birth + activation code (step 1); the same
                                address takes step 2 (username and password, with the ticket
                                step 1 gave), so there is one public activation route
    /portal/reset               ask for a reset link (the answer never says whether one went)
    /portal/reset/{token}       choose a new password with the link's token

The logic is in `garrison.identity.activation` and `garrison.identity.reset`; this module adapts
HTTP. Forms carry the pre-sign-in CSRF token (`garrison.web.signin`: signed double-submit) and
are rate limited per client address and per person asked about, like sign-in (ASVS 2.2.1).
Both flows end on the sign-in page, so the new password is used once straight away.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.db.engine import write_transaction
from garrison.fhir.definitions import Definitions
from garrison.identity import activation, reset
from garrison.identity.accounts import AccountError
from garrison.identity.passwords import MIN_LENGTH, PasswordRejected
from garrison.settings import Settings
from garrison.web.security_headers import RateLimiter, too_many_requests
from garrison.web.signin import (
    FormRefused,
    checked_form,
    client_address,
    csrf_token,
    page_templates,
    signed_in,
)

T = TypeVar("T")
_MAX_FORM_BYTES = 16 * 1024
_MISMATCH = "The two passwords are not the same. Type the same password in both boxes."


def account_routes(settings: Settings, engine: Engine, definitions: Definitions) -> list[BaseRoute]:
    pages = AccountPages(settings, engine, definitions)
    return [
        Route("/portal/activate", pages.activate_form, methods=["GET"]),
        Route("/portal/activate", pages.activate_submit, methods=["POST"]),
        Route("/portal/reset", pages.reset_form, methods=["GET"]),
        Route("/portal/reset", pages.reset_request, methods=["POST"]),
        Route("/portal/reset/{token}", pages.reset_password_form, methods=["GET"]),
        Route("/portal/reset/{token}", pages.reset_password, methods=["POST"]),
    ]


class AccountPages:
    def __init__(self, settings: Settings, engine: Engine, definitions: Definitions) -> None:
        self.settings = settings
        self.engine = engine
        self.definitions = definitions
        self.templates = page_templates()
        window = timedelta(seconds=settings.signin_rate_window_seconds)
        self.per_address = RateLimiter(settings.signin_rate_per_address, window)
        self.per_subject = RateLimiter(settings.signin_rate_per_username, window)

    # -- activation ------------------------------------------------------------------------------

    async def activate_form(self, request: Request) -> Response:
        if signed_in(request) is not None:
            return RedirectResponse("/portal", status_code=303)
        return self._render(request, "portal/activate.html", values={})

    async def activate_submit(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        if "ticket" in form:
            return await self._activate_account(request, form)
        return await self._activate_check(request, form)

    async def _activate_check(self, request: Request, form: FormData) -> Response:
        values = {key: _text(form, key, 64) for key in ("edipi", "birth_date", "code")}
        limited = self._limited(request, "activate:" + values["edipi"])
        if limited is not None:
            return limited
        source = client_address(request)

        def work(connection: Connection) -> activation.Verified | activation.NotVerified:
            return activation.verify_identity(
                connection,
                self.definitions,
                self.settings,
                edipi=values["edipi"],
                birth_date=values["birth_date"],
                code=values["code"],
                source=source,
            )

        result = await self._write(work)
        if isinstance(result, activation.NotVerified):
            kept = {"edipi": values["edipi"], "birth_date": values["birth_date"]}  # never the code
            return self._render(
                request, "portal/activate.html", 400, values=kept, errors={"edipi": result.message}
            )
        return self._render(
            request,
            "portal/activate_account.html",
            ticket=result.ticket,
            first_name=result.first_name,
            values={},
        )

    async def _activate_account(self, request: Request, form: FormData) -> Response:
        ticket = _text(form, "ticket", 128)
        username = _text(form, "username", 64)
        password = _raw(form, "password")
        limited = self._limited(request)
        if limited is not None:
            return limited

        def again(errors: dict[str, str]) -> Response:
            return self._render(
                request,
                "portal/activate_account.html",
                400,
                ticket=ticket,
                first_name="",
                values={"username": username},
                errors=errors,
            )

        if password != _raw(form, "password_again"):
            return again({"password": _MISMATCH})
        source = client_address(request)

        def work(connection: Connection) -> None:
            activation.create_portal_account(
                connection,
                self.definitions,
                self.settings,
                ticket=ticket,
                username=username,
                password=password,
                source=source,
            )

        try:
            await self._write(work)
        except activation.ActivationError as error:
            return self._render(request, "portal/activate.html", 400, values={}, errors={"edipi": str(error)})
        except AccountError as error:
            return again({"username": str(error)})
        except PasswordRejected as error:
            return again({"password": str(error)})
        return RedirectResponse("/signin?activated=1&next=/portal", status_code=303)

    # -- password reset --------------------------------------------------------------------------

    async def reset_form(self, request: Request) -> Response:
        return self._render(request, "portal/reset.html", values={})

    async def reset_request(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        who = _text(form, "who", 256)
        if not who:
            return self._render(
                request,
                "portal/reset.html",
                400,
                values={},
                errors={"who": "Enter your username or your DoD ID."},
            )
        limited = self._limited(request, "reset:" + who.casefold())
        if limited is not None:
            return limited
        source = client_address(request)
        await self._write(
            lambda connection: reset.request_reset(
                connection, self.definitions, self.settings, who, source=source
            )
        )
        # The same answer whatever happened (no account enumeration).
        return self._render(request, "portal/reset_sent.html", answer=reset.ANSWER)

    async def reset_password_form(self, request: Request) -> Response:
        token = str(request.path_params["token"])[:128]
        holder = await self._write(lambda connection: reset.check_link(connection, token))
        if holder is None:
            return self._render(request, "portal/reset_password.html", 404, gone=True, token="")
        return self._render(
            request, "portal/reset_password.html", gone=False, token=token, username=holder.username
        )

    async def reset_password(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        token = str(request.path_params["token"])[:128]
        password = _raw(form, "password")
        limited = self._limited(request)
        if limited is not None:
            return limited

        def again(message: str) -> Response:
            return self._render(
                request,
                "portal/reset_password.html",
                400,
                gone=False,
                token=token,
                username=_text(form, "username", 64),
                errors={"password": message},
            )

        if password != _raw(form, "password_again"):
            return again(_MISMATCH)
        source = client_address(request)
        try:
            await self._write(
                lambda connection: reset.complete_reset(connection, token, password, source=source)
            )
        except reset.ResetError:
            return self._render(request, "portal/reset_password.html", 400, gone=True, token="")
        except PasswordRejected as error:
            return again(str(error))
        return RedirectResponse("/signin?reset=1&next=/portal", status_code=303)

    # -- helpers ---------------------------------------------------------------------------------

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("signed_in", signed_in(request))
        context.setdefault("csrf_token", csrf_token(request))
        context.setdefault("errors", {})
        context.setdefault("min_length", MIN_LENGTH)
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    async def _write(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with write_transaction(self.engine) as connection:
                return work(connection)

        return await run_in_threadpool(run)

    async def _form(self, request: Request) -> FormData | Response:
        """The posted form once its size and CSRF token are checked, or the refusal."""
        try:
            return await checked_form(request, max_bytes=_MAX_FORM_BYTES)
        except FormRefused as refused:
            return self._render(request, "error.html", refused.status, message=refused.message)

    def _limited(self, request: Request, subject: str | None = None) -> Response | None:
        wait = self.per_address.hit(f"address:{client_address(request)}")
        if wait is None and subject:
            wait = self.per_subject.hit(subject[:300])
        return None if wait is None else too_many_requests(wait)


def _text(form: FormData, key: str, limit: int) -> str:
    value = form.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _raw(form: FormData, key: str) -> str:
    """A password as typed (spaces count), capped like sign-in caps it."""
    value = form.get(key)
    return value[:2048] if isinstance(value, str) else ""
