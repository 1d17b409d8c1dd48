"""Web safety of the sign-in pages: CSRF on every POST, security headers, cookie flags, rate
limits, escaping, accessible markup. Checklist A8, C5, L2 (ASVS 3.3-3.5, 14.4)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import Engine

from garrison import clock
from garrison.identity import proxies, totp
from garrison.web.security_headers import RateLimiter
from garrison.web.signin import safe_next
from tests.identity_fixtures import (
    PASSWORD,
    Browser,
    Served,
    cheap_password_hashing,
    identity_settings,
    make_account,
    serve,
)


@pytest.fixture(autouse=True)
def _cheap_hashing() -> Iterator[None]:
    with cheap_password_hashing():
        yield


@pytest.fixture(scope="module")
def site(backend_engine: Engine) -> Iterator[Served]:
    with serve(identity_settings(backend_engine), backend_engine) as served:
        yield served


_POSTS = (
    "/signin",
    "/signin/totp",
    "/signin/card",
    "/signout",
    "/account/totp",
    "/account/totp/confirm",
    "/account/sessions/abc/end",
)


def test_every_post_needs_a_csrf_token(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.csrf", kind="patient")
    browser = Browser(site.base)
    browser.sign_in("pat.csrf")
    assert browser.whoami().status_code == 200
    for path in _POSTS:
        missing = browser.post(path, {"username": "pat.csrf", "password": PASSWORD})
        wrong = browser.post(path, {"csrf_token": "A" * 43})
        assert (missing.status_code, wrong.status_code) == (403, 403), path
    assert browser.whoami().status_code == 200  # the forged sign-out did nothing


def test_a_pre_sign_in_token_is_bound_to_its_cookie(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.double", kind="patient")
    attacker, victim = Browser(site.base), Browser(site.base)
    token = attacker.csrf()
    victim.get("/signin")  # the victim has a pre-sign-in cookie of their own
    forged = victim.post("/signin", {"csrf_token": token, "username": "pat.double", "password": PASSWORD})
    assert forged.status_code == 403 and "garrison_session" not in victim.cookies
    no_cookie = Browser(site.base)
    response = no_cookie.post(
        "/signin",
        {"csrf_token": token, "username": "pat.double", "password": PASSWORD},
        headers={"cookie": ""},
    )
    assert response.status_code == 403
    assert (
        attacker.post(
            "/signin", {"csrf_token": token, "username": "pat.double", "password": PASSWORD}
        ).status_code
        == 303
    )


def test_a_session_token_only_works_in_its_session(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.alpha", kind="patient")
    make_account(engine, "pat.beta", kind="patient")
    alpha, beta = Browser(site.base), Browser(site.base)
    alpha.sign_in("pat.alpha")
    beta.sign_in("pat.beta")
    alpha_token = alpha.csrf("/account/security")
    assert beta.post("/signout", {"csrf_token": alpha_token}).status_code == 403
    assert beta.whoami().status_code == 200
    assert alpha.post("/signout", {"csrf_token": alpha_token}).status_code == 303
    # A new sign-in gets a new token: the old one is dead with its session.
    alpha.sign_in("pat.alpha")
    assert alpha.csrf("/account/security") != alpha_token
    assert alpha.post("/signout", {"csrf_token": alpha_token}).status_code == 403


def test_cross_site_requests_are_refused_even_with_a_token(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.fetch", kind="patient")
    browser = Browser(site.base)
    token = browser.csrf()
    data = {"csrf_token": token, "username": "pat.fetch", "password": PASSWORD}
    for site_value in ("cross-site", "same-site"):
        assert browser.post("/signin", data, headers={"sec-fetch-site": site_value}).status_code == 403
    assert browser.post("/signin", data, headers={"sec-fetch-site": "same-origin"}).status_code == 303


_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
}


def test_security_headers_on_every_response(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.headers", kind="patient")
    browser = Browser(site.base)
    responses = [
        browser.get("/signin"),
        browser.get("/signin/card"),
        browser.get("/no/such/page"),
        browser.post("/signin", {}),  # 403
        browser.sign_in("pat.headers"),  # 303
        browser.get("/account/security"),
        browser.whoami(),
        browser.sign_out(),
    ]
    for response in responses:
        for name, value in _HEADERS.items():
            assert response.headers.get(name) == value, (response.url, name)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "camera=()" in response.headers["permissions-policy"]
        assert response.headers["cache-control"] == "no-store", response.url
    static = browser.get("/static/garrison.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")
    assert static.headers["x-content-type-options"] == "nosniff"
    assert "Clear-Site-Data".lower() in {k.lower() for k in responses[-1].headers}


def test_every_cookie_is_secure_httponly_and_samesite(site: Served, engine: Engine) -> None:
    """checklist A8: 100% of cookies flagged."""
    _, secret = make_account(engine, "dr.cookies")
    assert secret is not None
    browser = Browser(site.base)
    browser.sign_in("dr.cookies")
    browser.submit_code(totp.code_at(secret, clock.now()))
    browser.get("/account/security")
    browser.sign_out()
    stale = Browser(site.base)
    stale.get("/whoami", headers={"cookie": "garrison_session=" + "x" * 43})  # cleared: a Set-Cookie too
    headers = browser.set_cookie_headers + stale.set_cookie_headers
    names = {h.split("=", 1)[0] for h in headers}
    assert names == {"garrison_pre", "garrison_mfa", "garrison_session"}
    for header in headers:
        flags = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
        assert {"httponly", "secure", "samesite"} <= flags, header
        assert "domain" not in flags  # host-only cookies
    session_cookie = next(
        h for h in headers if h.startswith("garrison_session=") and "max-age=0" not in h.lower()
    )
    assert (
        "max-age" not in session_cookie.lower() and "expires" not in session_cookie.lower()
    )  # browser-session only
    assert "samesite=strict" in next(h for h in headers if h.startswith("garrison_mfa=")).lower()


def test_sign_in_attempts_are_rate_limited(engine: Engine) -> None:
    """Per client address and per username: 429 with Retry-After; allowed again after waiting."""
    settings = identity_settings(
        engine,
        signin_rate_per_address=5,
        signin_rate_per_username=3,
        signin_rate_window_seconds=60,
        trusted_proxies=["127.0.0.1"],
    )
    make_account(engine, "pat.rate", kind="patient")
    with serve(settings, engine) as served:
        browser = Browser(served.base)
        token = browser.csrf()
        statuses = []
        for i in range(6):
            data = {"csrf_token": token, "username": f"nobody{i}", "password": "x" * 12}
            statuses.append(browser.post("/signin", data, headers={"x-forwarded-for": "203.0.113.7"}))
        assert [r.status_code for r in statuses] == [400] * 5 + [429]
        assert 1 <= int(statuses[-1].headers["retry-after"]) <= 60
        # Another client address is not affected; the same username from many addresses is.
        per_user = []
        for i in range(4):
            data = {"csrf_token": token, "username": "pat.rate", "password": "wrong password 1"}
            per_user.append(
                browser.post("/signin", data, headers={"x-forwarded-for": f"198.51.100.{i}"}).status_code
            )
        assert per_user == [400, 400, 400, 429]
        with clock.travel(timedelta(seconds=61)):
            data = {"csrf_token": token, "username": "someone", "password": "x" * 12}
            assert (
                browser.post("/signin", data, headers={"x-forwarded-for": "203.0.113.7"}).status_code == 400
            )


def test_rate_limiter() -> None:
    limiter = RateLimiter(3, timedelta(seconds=10), max_keys=50)
    with clock.travel():
        assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
        wait = limiter.hit("a")
        # Ten seconds after the first hit, less however long a slow machine took since then.
        assert wait is not None and 5 < wait <= 10
        assert limiter.hit("b") is None
        clock.advance(timedelta(seconds=5))
        assert limiter.hit("a") is not None  # refused attempts do not extend the wait
        clock.advance(timedelta(seconds=5, milliseconds=1))
        assert limiter.hit("a") is None
        for i in range(500):  # memory stays bounded under a flood of new keys
            limiter.hit(f"flood-{i}")
        assert len(limiter._hits) <= 50
    with pytest.raises(ValueError):
        RateLimiter(0, timedelta(seconds=1))


def test_forwarded_addresses_are_believed_only_from_trusted_proxies() -> None:
    trusted = ["10.0.0.0/8", "::1"]
    assert proxies.client_address("203.0.113.5", "1.2.3.4", trusted) == "203.0.113.5"
    assert proxies.client_address("10.1.1.1", "1.2.3.4, 198.51.100.9", trusted) == "198.51.100.9"
    assert proxies.client_address("10.1.1.1", "198.51.100.9, 10.2.2.2", trusted) == "198.51.100.9"
    assert proxies.client_address("10.1.1.1", "not-an-address", trusted) == "10.1.1.1"
    assert proxies.client_address("::1", "2001:db8::1", trusted) == "2001:db8::1"
    assert not proxies.is_trusted("testclient", trusted) and not proxies.is_trusted(None, trusted)


def test_next_paths_are_local_only() -> None:
    assert safe_next("/oauth/authorize?client_id=a&state=b") == "/oauth/authorize?client_id=a&state=b"
    for bad in (
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "/a\nb",
        "",
        None,
    ):
        assert safe_next(bad) is None


def test_user_input_is_escaped(site: Served) -> None:
    browser = Browser(site.base)
    token = browser.csrf()
    payload = '"><script>alert(1)</script>'
    page = browser.post("/signin", {"csrf_token": token, "username": payload, "password": "x" * 12}).text
    assert "<script>" not in page and "&#34;&gt;&lt;script&gt;" in page
    page = browser.get("/signin?next=%22%3E%3Cscript%3Ealert(1)%3C/script%3E").text
    assert "<script>" not in page


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_pages_are_accessible_and_fit_a_phone(site: Served, engine: Engine) -> None:
    make_account(engine, "pat.a11y", kind="patient")
    browser = Browser(site.base)
    pages = [browser.get("/signin").text, browser.get("/signin/card").text]
    browser.sign_in("pat.a11y")
    pages.append(browser.get("/account/security").text)
    for page in pages:
        markup = _Markup()
        markup.feed(page)
        tags = markup.tags
        assert ("html", {"lang": "en"}) in tags
        assert any(
            t == "meta" and a.get("name") == "viewport" and "width=device-width" in (a.get("content") or "")
            for t, a in tags
        )
        assert any(t == "a" and a.get("href") == "#main" for t, a in tags)  # skip link
        assert any(t == "main" and a.get("id") == "main" for t, a in tags)
        # CSP-compatible: no inline script or style; scripts only from our /static.
        assert not any(t == "script" and not (a.get("src") or "").startswith("/static/") for t, a in tags)
        assert " style=" not in page
        labelled = {a.get("for") for t, a in tags if t == "label"}
        for tag, attrs in tags:
            if tag == "input" and attrs.get("type") != "hidden" and "hidden" not in attrs:
                assert attrs.get("id") in labelled, attrs
    assert re.search(r"<h1>Sign in</h1>", pages[0])


def test_oversized_forms_are_refused(site: Served) -> None:
    browser = Browser(site.base)
    token = browser.csrf()
    response = browser.post("/signin", {"csrf_token": token, "username": "a", "password": "p" * 70_000})
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while reading
        yield f"csrf_token={token}&username=a&password=".encode()
        for _ in range(100):
            yield b"p" * 1000

    chunked = browser.request(
        "POST", "/signin", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert chunked.status_code == 413 and "content-length" not in chunked.request.headers
