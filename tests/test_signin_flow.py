"""Signing in over HTTP (uvicorn on 127.0.0.1): password + TOTP for staff, lockout, sessions,
sign-out, the last sign-in shown. Checklist A2, A5, A7, A9, A10."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from garrison import clock
from garrison.db.engine import read_transaction, write_transaction
from garrison.identity import accounts, sessions, totp
from tests.identity_fixtures import (
    PASSWORD,
    Browser,
    Served,
    audit_rows,
    cheap_password_hashing,
    identity_settings,
    make_account,
    serve,
)


@pytest.fixture(autouse=True)
def _cheap_hashing() -> Iterator[None]:
    with cheap_password_hashing():
        yield


GENERIC = "Sign-in failed. Check your username and password and try again."


@pytest.fixture(scope="module")
def site(backend_engine: Engine) -> Iterator[Served]:
    with serve(identity_settings(backend_engine), backend_engine) as served:
        yield served


@pytest.fixture
def browser(site: Served, engine: Engine) -> Iterator[Browser]:
    client = Browser(site.base)
    yield client
    client.close()


def _now_code(secret: str | None) -> str:
    assert secret is not None
    return totp.code_at(secret, clock.now())


def _staff_sign_in(browser: Browser, username: str, secret: str | None) -> None:
    first = browser.sign_in(username)
    assert first.status_code == 303 and first.headers["location"] == "/signin/totp"
    second = browser.submit_code(_now_code(secret))
    assert second.status_code == 303, second.text
    assert browser.whoami().status_code == 200


def test_staff_sign_in_needs_password_and_code(browser: Browser, engine: Engine) -> None:
    created, secret = make_account(engine, "dr.house")
    _staff_sign_in(browser, "DR.House", secret)  # usernames are case-insensitive
    me = browser.whoami().json()
    assert me["account_id"] == created.id and me["mfa"] is True and me["method"] == "password+totp"
    assert me["fhir_user"] == "Practitioner/dr.house" and me["role"] == "physician"
    logins = audit_rows(engine, "user:session:login")
    assert len(logins) == 1 and logins[0].actor == "Practitioner/dr.house" and logins[0].source == "127.0.0.1"
    assert logins[0].session == me["session_id"]


def test_a_password_alone_gives_staff_no_session(browser: Browser, engine: Engine) -> None:
    """checklist A5: single-factor staff sign-in reaches nothing."""
    make_account(engine, "dr.single")
    response = browser.sign_in("dr.single")
    assert response.status_code == 303 and "garrison_session" not in browser.cookies
    assert "garrison_mfa" in browser.cookies  # only a challenge, scoped to /signin
    assert browser.whoami().status_code == 401
    assert browser.get("/account/security").status_code == 303
    assert audit_rows(engine, "user:session:login") == []


def test_staff_without_an_authenticator_cannot_sign_in(browser: Browser, engine: Engine) -> None:
    make_account(engine, "dr.unenrolled", totp=False)
    response = browser.sign_in("dr.unenrolled")
    assert response.status_code == 400 and "second factor" in response.text
    assert "garrison_session" not in browser.cookies and browser.whoami().status_code == 401
    assert audit_rows(engine, "user:session:login_failed")[-1].detail["reason"] == "mfa_not_enrolled"


def test_codes_are_single_use_and_short_lived(site: Served, engine: Engine) -> None:
    """checklist A5: a reused code and a code from 60 s ago are refused."""
    _, secret = make_account(engine, "dr.otp")
    assert secret is not None
    first = Browser(site.base)
    code = _now_code(secret)
    assert first.sign_in("dr.otp").status_code == 303
    assert first.submit_code(code).status_code == 303
    assert first.whoami().status_code == 200

    replay = Browser(site.base)
    assert replay.sign_in("dr.otp").status_code == 303
    refused = replay.submit_code(code)
    assert refused.status_code == 400 and "not valid" in refused.text
    assert replay.whoami().status_code == 401

    _, fresh_secret = make_account(engine, "dr.stale")
    assert fresh_secret is not None
    stale = Browser(site.base)
    assert stale.sign_in("dr.stale").status_code == 303
    old_code = totp.code_at(fresh_secret, clock.now() - timedelta(seconds=60))
    if old_code != _now_code(fresh_secret):  # (a one-in-a-million coincidence would prove nothing)
        assert stale.submit_code(old_code).status_code == 400
        assert stale.whoami().status_code == 401
    # One step of drift (a code from 30 s ago) is still accepted. Work in the middle of a 30 s
    # step, so the server's clock cannot cross into the next step meanwhile.
    with clock.travel(timedelta(seconds=15 - clock.now().timestamp() % 30)):
        drifted = totp.code_at(fresh_secret, clock.now() - timedelta(seconds=30))
        assert stale.submit_code(drifted).status_code == 303
    assert stale.whoami().status_code == 200
    reasons = [r.detail["reason"] for r in audit_rows(engine, "user:session:login_failed")]
    assert reasons.count("bad_totp") >= 1


def test_wrong_codes_count_towards_lockout(browser: Browser, engine: Engine) -> None:
    _, secret = make_account(engine, "dr.guess")
    assert browser.sign_in("dr.guess").status_code == 303
    for _ in range(2):
        assert browser.submit_code("000000" if _now_code(secret) != "000000" else "111111").status_code == 400
    # A correct password does not reset the count: otherwise it would buy endless code guesses.
    assert browser.sign_in("dr.guess").status_code == 303
    locked = browser.submit_code("000000" if _now_code(secret) != "000000" else "111111")
    assert locked.status_code == 400
    assert len(audit_rows(engine, "user:account:locked")) == 1
    refused = browser.sign_in("dr.guess")
    assert refused.status_code == 400 and GENERIC in refused.text


def test_lockout_after_three_failures(browser: Browser, engine: Engine) -> None:
    """checklist A2: 3 failures in 15 minutes lock the account; the 4th try with the right
    password is refused; the lock lifts after 15 minutes."""
    make_account(engine, "pat.lock", kind="patient")
    bodies = []
    for _ in range(3):
        before = clock.now()  # in the end: just before the third failure
        response = browser.sign_in("pat.lock", "wrong password 123")
        assert response.status_code == 400
        bodies.append(_error(response.text))
    after = clock.now()
    fourth = browser.sign_in("pat.lock")
    assert fourth.status_code == 400 and "garrison_session" not in browser.cookies
    assert _error(fourth.text) == bodies[0] == bodies[2]
    with read_transaction(engine) as conn:
        holder = accounts.find_account(conn, "pat.lock")
    assert holder is not None and holder.locked_until is not None
    # Measured from the stored end of the lock, not from when the test acted, so a slow machine
    # between the third failure and the check cannot let the lock run out before the first check.
    until = holder.locked_until
    assert before + timedelta(minutes=15) <= until <= after + timedelta(minutes=15)  # from the third failure
    with clock.travel(until - timedelta(seconds=1) - clock.now()):  # 14:59 after the third failure
        assert browser.sign_in("pat.lock").status_code == 400
    with clock.travel(until + timedelta(seconds=1) - clock.now()):  # 15:01
        assert browser.sign_in("pat.lock").status_code == 303
        assert browser.whoami().status_code == 200
    reasons = [r.detail["reason"] for r in audit_rows(engine, "user:session:login_failed")]
    assert reasons == ["bad_password", "bad_password", "bad_password", "locked", "locked"]
    locked = audit_rows(engine, "user:account:locked")
    assert len(locked) == 1 and locked[0].actor == "Patient/pat.lock" and locked[0].detail["failures"] == 3


def test_concurrent_guesses_still_lock_after_three(site: Served, engine: Engine) -> None:
    """checklist A2 under concurrency: the failure count is updated under a row lock, so 12
    simultaneous wrong guesses give exactly 3 counted failures and one lockout."""
    make_account(engine, "pat.race", kind="patient")
    browsers = [Browser(site.base) for _ in range(12)]
    tokens = [b.csrf() for b in browsers]

    def guess(i: int) -> int:
        data = {"csrf_token": tokens[i], "username": "pat.race", "password": f"wrong password {i:03}"}
        return browsers[i].post("/signin", data).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(guess, range(12)))
    assert statuses == [400] * 12
    reasons = Counter(r.detail["reason"] for r in audit_rows(engine, "user:session:login_failed"))
    assert reasons == {"bad_password": 3, "locked": 9}
    assert len(audit_rows(engine, "user:account:locked")) == 1
    assert browsers[0].sign_in("pat.race").status_code == 400


def test_unlock_lifts_a_lockout_and_is_audited(browser: Browser, engine: Engine) -> None:
    created, _ = make_account(engine, "pat.unlock", kind="patient")
    for _ in range(3):
        browser.sign_in("pat.unlock", "wrong password 123")
    assert browser.sign_in("pat.unlock").status_code == 400
    with write_transaction(engine) as conn:
        accounts.unlock_account(conn, created.id, actor="Practitioner/admin", actor_role="administrator")
    assert browser.sign_in("pat.unlock").status_code == 303
    unlocked = audit_rows(engine, "user:account:unlocked")
    assert len(unlocked) == 1 and unlocked[0].actor == "Practitioner/admin"


def test_failures_spread_beyond_the_window_do_not_lock(browser: Browser, engine: Engine) -> None:
    make_account(engine, "pat.slow", kind="patient")
    browser.sign_in("pat.slow", "wrong password 123")
    browser.sign_in("pat.slow", "wrong password 123")
    with clock.travel(timedelta(minutes=15, seconds=1)):
        browser.sign_in("pat.slow", "wrong password 123")
        assert browser.sign_in("pat.slow").status_code == 303
    assert audit_rows(engine, "user:account:locked") == []


def test_password_guesses_cannot_lock_a_card_only_account(browser: Browser, engine: Engine) -> None:
    """ASVS 6.1.1: no password can match, so guessing one must not lock the card holder out."""
    created, _ = make_account(engine, "dr.card.only", password=None, totp=False, edipi="1234567890")
    for _ in range(5):
        response = browser.sign_in("dr.card.only", "any password at all")
        assert response.status_code == 400 and GENERIC in response.text
    with read_transaction(engine) as conn:
        assert accounts.get_account(conn, created.id).locked_until is None  # type: ignore[union-attr]
    assert audit_rows(engine, "user:account:locked") == []
    assert {r.detail["reason"] for r in audit_rows(engine, "user:session:login_failed")} == {"no_password"}


def test_failures_do_not_reveal_whether_a_username_exists(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.known", kind="patient")
    answers = []
    for username, password in (("nobody.here", PASSWORD), ("pat.known", "wrong password 123")):
        client = Browser(site.base)
        response = client.sign_in(username, password)
        answers.append((response.status_code, _error(response.text)))
    assert answers[0] == answers[1] and answers[0][0] == 400
    unknown = audit_rows(engine, "user:session:login_failed")[0]
    assert unknown.actor == "anonymous" and unknown.detail["reason"] == "unknown_user"
    assert "nobody.here" not in str(unknown.detail)  # a digest, in case it was a password


def test_session_id_changes_at_sign_in(site: Served, engine: Engine) -> None:
    """checklist A7: a new session at sign-in; any earlier cookie is discarded and its session ended."""
    make_account(engine, "pat.first", kind="patient")
    make_account(engine, "pat.second", kind="patient")
    browser = Browser(site.base)
    browser.get("/signin")
    pre = dict(browser.cookies)
    assert browser.sign_in("pat.first").status_code == 303
    first_cookie = browser.cookies["garrison_session"]
    first_id = browser.whoami().json()["session_id"]
    assert first_cookie not in pre.values() and "garrison_pre" not in browser.cookies
    # The same browser signs in again as someone else: a new session, and the old one is over.
    # (The sign-in page redirects a signed-in browser, so post from the account page's token.)
    token = browser.csrf("/account/security")
    again = browser.post("/signin", {"csrf_token": token, "username": "pat.second", "password": PASSWORD})
    assert again.status_code == 303
    assert browser.cookies["garrison_session"] != first_cookie
    assert browser.whoami().json()["session_id"] != first_id
    old = Browser(site.base)
    old.cookies["garrison_session"] = first_cookie
    assert old.whoami().status_code == 401
    assert [r.detail["reason"] for r in audit_rows(engine, "user:session:logout")] == ["replaced"]


def test_a_signed_out_cookie_never_works_again(site: Served, engine: Engine) -> None:
    """checklist A7: 100 replays of the cookie after sign-out → 0 successes."""
    _, secret = make_account(engine, "dr.replay")
    browser = Browser(site.base)
    _staff_sign_in(browser, "dr.replay", secret)
    stolen = browser.cookies["garrison_session"]
    response = browser.sign_out()
    assert response.status_code == 303 and response.headers["location"] == "/signin?signed_out=1"
    assert "garrison_session" not in browser.cookies
    replay = Browser(site.base)
    successes = 0
    for i in range(100):
        path = "/whoami" if i % 2 else "/account/security"
        answer = replay.get(path, headers={"cookie": f"garrison_session={stolen}"})
        successes += answer.status_code == 200
    assert successes == 0
    logouts = audit_rows(engine, "user:session:logout")
    assert [r.detail["reason"] for r in logouts] == ["signed_out"]


def test_the_previous_sign_in_is_shown(site: Served, engine: Engine) -> None:
    """checklist A7: after signing in, the page shows the previous successful sign-in."""
    make_account(engine, "pat.history", kind="patient")
    first = Browser(site.base)
    first.sign_in("pat.history")
    page = first.get("/account/security").text
    assert "This is your first sign-in." in page
    with read_transaction(engine) as conn:
        holder = accounts.find_account(conn, "pat.history")
    assert holder is not None and holder.last_sign_in_at is not None
    with clock.travel(timedelta(hours=2)):
        second = Browser(site.base)
        second.sign_in("pat.history")
        me = second.whoami().json()
        page = second.get("/account/security").text
    assert me["previous_sign_in_at"] == holder.last_sign_in_at.isoformat()
    shown = holder.last_sign_in_at.strftime("%Y-%m-%d %H:%M UTC")
    assert f"Your previous sign-in: {shown} from 127.0.0.1" in page


def test_idle_and_disabled_sessions_end_over_http(site: Served, engine: Engine) -> None:
    """checklist A9 (14:59 → 200, 15:01 → 401) and A10 (disable → next request 401)."""
    _, secret = make_account(engine, "dr.idle.http")
    browser = Browser(site.base)
    _staff_sign_in(browser, "dr.idle.http", secret)
    session_id = browser.whoami().json()["session_id"]

    def after_last_seen(delta: timedelta) -> timedelta:
        # Measured from the session's stored last activity, not from when the test acted, so a
        # slow machine cannot push the 14:59 request past the idle time-out.
        with read_transaction(engine) as conn:
            session = sessions.get_session(conn, session_id)
        assert session is not None
        return session.last_seen + delta - clock.now()

    with clock.travel(after_last_seen(timedelta(minutes=14, seconds=59))):
        assert browser.whoami().status_code == 200  # activity at 14:59 restarts the idle clock
        with clock.travel(after_last_seen(timedelta(minutes=15, seconds=1))):
            assert browser.whoami().status_code == 401
            assert "garrison_session" not in browser.cookies  # the dead cookie is cleared
    patient, _ = make_account(engine, "pat.disable", kind="patient")
    victim = Browser(site.base)
    victim.sign_in("pat.disable")
    assert victim.whoami().status_code == 200
    with write_transaction(engine) as conn:
        accounts.disable_account(conn, patient.id, actor="Practitioner/admin", actor_role="administrator")
    assert victim.whoami().status_code == 401


def test_sign_in_returns_only_to_local_pages(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.next", kind="patient")
    for target, expected in (
        ("/whoami?x=1", "/whoami?x=1"),
        ("https://evil.example/", "/account/security"),
        ("//evil.example/", "/account/security"),
        ("/\\evil.example", "/account/security"),
    ):
        client = Browser(site.base)
        response = client.sign_in("pat.next", next_path=target)
        assert response.headers["location"] == expected


def test_ending_another_session_from_the_security_page(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.two.devices", kind="patient")
    phone, laptop = Browser(site.base), Browser(site.base)
    phone.sign_in("pat.two.devices")
    laptop.sign_in("pat.two.devices")
    laptop_session = laptop.whoami().json()["session_id"]
    page = phone.get("/account/security").text
    assert page.count("End this session") == 2
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    ended = phone.post(f"/account/sessions/{laptop_session}/end", {"csrf_token": token})
    assert ended.status_code == 303 and ended.headers["location"] == "/account/security"
    assert laptop.whoami().status_code == 401 and phone.whoami().status_code == 200
    # Someone else's session id is not theirs to end.
    other, _ = make_account(engine, "pat.bystander", kind="patient")
    bystander = Browser(site.base)
    bystander.sign_in("pat.bystander")
    phone_session = phone.whoami().json()["session_id"]
    forged = bystander.post(
        f"/account/sessions/{phone_session}/end", {"csrf_token": bystander.csrf("/account/security")}
    )
    assert forged.status_code == 303 and phone.whoami().status_code == 200
    assert other.id


def test_self_service_authenticator_enrolment(site: Served, engine: Engine) -> None:
    """Patients may add TOTP (issue: "offered to patients"); afterwards sign-in needs a code."""
    make_account(engine, "pat.enrol", kind="patient")
    browser = Browser(site.base)
    browser.sign_in("pat.enrol")
    token = browser.csrf("/account/security")
    wrong = browser.post("/account/totp", {"csrf_token": token, "password": "not my password"})
    assert wrong.status_code == 400 and "otpauth://" not in wrong.text
    page = browser.post("/account/totp", {"csrf_token": token, "password": PASSWORD})
    assert page.status_code == 200
    secret = re.search(r'<code class="secret">([A-Z2-7]{32})</code>', page.text).group(1)  # type: ignore[union-attr]
    assert "otpauth://totp/Garrison:pat.enrol?secret=" in page.text
    assert browser.post("/account/totp/confirm", {"csrf_token": token, "code": "12345x"}).status_code == 400
    page = browser.post("/account/totp", {"csrf_token": token, "password": PASSWORD})
    secret = re.search(r'<code class="secret">([A-Z2-7]{32})</code>', page.text).group(1)  # type: ignore[union-attr]
    confirmed = browser.post(
        "/account/totp/confirm", {"csrf_token": token, "code": totp.code_at(secret, clock.now())}
    )
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/account/security?totp=enrolled"
    later = Browser(site.base)
    assert later.sign_in("pat.enrol").headers["location"] == "/signin/totp"
    assert later.whoami().status_code == 401
    with clock.travel(timedelta(seconds=30)):
        assert later.submit_code(totp.code_at(secret, clock.now())).status_code == 303
        assert later.whoami().json()["mfa"] is True


def _error(page: str) -> str:
    found = re.search(r'<div class="error-summary"[^>]*>\s*<p>(.*?)</p>', page, re.S)
    assert found, "no error message on the page"
    return found.group(1)
