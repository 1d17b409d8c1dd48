"""Fixtures for the real-browser tests: Debian's Chromium (never Playwright's own download)
driven by Playwright, against `create_app(settings)` served by uvicorn on 127.0.0.1 over a
migrated SQLite database (one per test session and xdist worker).

- `chromium` (session): the browser; the tests FAIL with a clear message when it is missing.
- `site` (session): the live app; `site.url(path)`, `site.engine`, `site.settings`.
- `tab` (per test): a fresh browser context (own cookies and storage) with one page, recording
  console errors, page errors and CSP violations (`tab.problems`).
- `people` (per test): accounts made directly in the database (staff with TOTP, patients,
  proxies), each with a unique username, so tests need not empty the database.

The steps a user takes (`sign_in`, `sign_out`, `enter_password`, `enter_code`, `submit`) and the
DOM checks (`accessibility_problems`, `Tab.storage`, `Tab.cookies`) are in support.py.

Password hashing is made cheap for each test (`cheap_password_hashing`): the server runs in this
process, so the patch covers it too; test_identity_accounts checks the production parameters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from garrison.db.engine import make_engine
from garrison.db.migrate import upgrade
from tests.browser.support import LiveSite, People, Tab
from tests.identity_fixtures import cheap_password_hashing

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = Path(os.environ.get("GARRISON_CHROMIUM", "/usr/bin/chromium"))
# Headless, no sandbox (CI runs as root), and no calls home while the tests run.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Playwright turns the back/forward cache off by default; a user's browser has it on, and the
# back button after sign-out must not bring a signed-in page back from it (checklist A7).
IGNORED_DEFAULT_ARGS = ["--disable-back-forward-cache"]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSite]:
    folder = tmp_path_factory.mktemp("browser-site")
    engine = make_engine(f"sqlite:///{folder / 'garrison.sqlite3'}")
    upgrade(engine)
    served = LiveSite(engine, folder / "data")
    served.start()
    yield served
    served.stop()
    engine.dispose()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the browser tests drive Debian's chromium "
            "package. scripts/test.sh installs it when run as root; otherwise run "
            "`sudo apt-get install chromium`, or set GARRISON_CHROMIUM to a Chromium binary. "
            "(Playwright's own browser download is not used.)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError as missing:
        pytest.fail(f"Playwright is not installed ({missing}): pip install -e '.[test]'", pytrace=False)
    driver: Playwright = sync_playwright().start()
    try:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=LAUNCH_ARGS,
            ignore_default_args=IGNORED_DEFAULT_ARGS,
        )
    except Exception as failed:
        driver.stop()
        pytest.fail(f"Chromium at {CHROMIUM} did not start under Playwright: {failed}", pytrace=False)
    yield browser
    browser.close()
    driver.stop()


@pytest.fixture(autouse=True)
def _cheap_hashing() -> Iterator[None]:
    with cheap_password_hashing():
        yield


@pytest.fixture
def tab(chromium: Browser, site: LiveSite) -> Iterator[Tab]:
    opened = Tab.open(chromium, site.base)
    yield opened
    opened.close()


@pytest.fixture
def people(site: LiveSite) -> People:
    return People(site.engine)
