"""A small `garrison demo` for the portal's end-to-end browser journey, and the checks every page
visited goes through.

`build_demo_site` does what `garrison demo` does, at test size: a fresh migrated SQLite database,
a generated population (fixed seed), the demo accounts with their activation code, the portal's
demo data (`seed_portal_demo`: open slots, conversations, prescriptions with refills, the
record's demo results and care plan), served by `create_app` on 127.0.0.1. The credentials are
read back from `demo-accounts.txt`, as a person trying the demo would.

`PageChecks` runs axe-core (no serious or critical WCAG 2.1 A/AA violation) and the DOM basics on
each page, optionally again at a phone's width (where the page must not scroll sideways), and
saves full-page screenshots named by page into `screenshot_dir()`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from garrison import clock
from garrison.db.engine import make_engine
from garrison.db.migrate import upgrade
from garrison.fhir.definitions import definitions_from
from garrison.identity.demo import CREDENTIALS_FILE, ensure_demo_accounts
from garrison.identity.model import Kind
from tests.browser.support import LiveSite, Person, accessibility_problems, axe_violations
from tests.identity_fixtures import cheap_password_hashing

if TYPE_CHECKING:
    from playwright.sync_api import Page, ViewportSize

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SCREENSHOTS = REPO / "test-artifacts" / "portal-screenshots"
PHONE: ViewportSize = {"width": 390, "height": 844}  # an iPhone 12-15 sized viewport, in CSS pixels
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
_SHOT_NAME = re.compile(r"^(?P<number>\d{2})-[a-z0-9-]+\.png$")


def screenshot_dir() -> Path:
    """Where the journey's screenshots go: $GARRISON_SCREENSHOTS, else test-artifacts/ in the repo."""
    configured = os.environ.get("GARRISON_SCREENSHOTS", "").strip()
    return Path(configured) if configured else DEFAULT_SCREENSHOTS


@dataclass(frozen=True, slots=True)
class Activation:
    """The demo's activation line: what the new user types on /portal/activate."""

    edipi: str
    birth_date: str
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    """demo-accounts.txt, parsed: passwords by username, TOTP secrets, the activation code."""

    passwords: dict[str, str]
    totp_secrets: dict[str, str]
    activation: Activation

    def person(self, username: str, kind: Kind, role: str) -> Person:
        """A demo account as the browser helpers of support.py take it."""
        return Person(
            account_id="",
            username=username,
            password=self.passwords[username],
            display_name=username,
            kind=kind,
            role=role,
            totp_secret=self.totp_secrets.get(username),
        )


_PASSWORD_LINE = re.compile(r"^(?P<user>\S+)\s+password (?P<password>\S+)")
_SECRET_LINE = re.compile(r"^\s+authenticator secret (?P<secret>[A-Z2-7]+)")
_ACTIVATION_LINE = re.compile(
    r"^activation\s.*DoD ID (?P<edipi>\d+), date of birth (?P<birth>\d{4}-\d{2}-\d{2}), "
    r"code (?P<code>[A-Z0-9-]+) \((?P<name>[^;]+);"
)


def read_credentials(path: Path) -> DemoCredentials:
    """Parse the credentials file `garrison demo` writes (see garrison.identity.demo.describe)."""
    passwords: dict[str, str] = {}
    secrets: dict[str, str] = {}
    activation: Activation | None = None
    last_user = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if found := _ACTIVATION_LINE.match(line):
            activation = Activation(found["edipi"], found["birth"], found["code"], found["name"])
        elif found := _PASSWORD_LINE.match(line):
            last_user = found["user"]
            passwords[last_user] = found["password"]
        elif (found := _SECRET_LINE.match(line)) and last_user:
            secrets[last_user] = found["secret"]
    if activation is None:
        raise AssertionError(f"{path} has no activation line:\n{path.read_text(encoding='utf-8')}")
    return DemoCredentials(passwords, secrets, activation)


@dataclass
class DemoSite:
    served: LiveSite
    credentials: DemoCredentials

    @property
    def base(self) -> str:
        return self.served.base

    def url(self, path: str) -> str:
        return self.served.url(path)


def build_demo_site(folder: Path, *, patients: int, seed: int) -> DemoSite:
    """`garrison demo` at test size (not started: call `site.served.start()`)."""
    from garrison.population.generate import PopulationOptions, generate_population
    from garrison.portal.demo import seed_portal_demo

    engine = make_engine(f"sqlite:///{folder / 'garrison.sqlite3'}")
    upgrade(engine)
    served = LiveSite(engine, folder / "data")
    settings = served.settings
    definitions = definitions_from(settings.definitions_dir)
    options = PopulationOptions(patients=patients, seed=seed, as_of=clock.now().date(), duplicates_rate=0.0)
    summary = generate_population(engine, definitions, settings, options, workers=1)
    assert summary.errors == [], summary.errors[:5]
    with cheap_password_hashing():  # the demo's six accounts; sign-in reads the hash's own cost
        accounts = ensure_demo_accounts(engine, definitions, settings)
    assert accounts is not None, "a fresh database has no demo accounts yet"
    seed_portal_demo(engine, definitions, settings)
    credentials = read_credentials(settings.data_dir / CREDENTIALS_FILE)
    return DemoSite(served, credentials)


@dataclass
class Screenshots:
    """Full-page PNGs numbered in the order a journey takes them (`01-activate.png`, ...).

    Each journey numbers within its own block (`first` up to `first + BLOCK - 1`), so the names
    are the same whichever order the tests run in, on one pytest-xdist worker or several; an
    earlier run's shots in the block are removed first."""

    directory: Path
    first: int
    saved: list[Path] = field(default_factory=list)

    BLOCK: ClassVar[int] = 50

    @classmethod
    def into(cls, directory: Path, first: int) -> Screenshots:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            found = _SHOT_NAME.match(old.name)
            if found and first <= int(found["number"]) < first + cls.BLOCK:
                old.unlink()
        return cls(directory, first)

    def take(self, page: Page, name: str) -> Path:
        number = self.first + len(self.saved)
        assert number < min(self.first + self.BLOCK, 100), "more screenshots than the block holds"
        path = self.directory / f"{number:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.saved.append(path)
        return path


@dataclass
class PageChecks:
    """Accessibility and layout checks of every page visited, with screenshots of the main ones.

    Problems are collected (not raised at once) so one run reports every page that fails;
    the tests assert `checks.problems == []` at the end."""

    shots: Screenshots
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def page(self, page: Page, name: str | None = None, *, phone: bool = False) -> None:
        """axe-core and the DOM basics on the current page; a screenshot when `name` is given;
        with `phone`, the same again at a phone's width, where nothing may scroll sideways."""
        self._inspect(page, "desktop")
        if name is not None:
            self.shots.take(page, name)
        if not phone:
            return
        page.set_viewport_size(PHONE)
        try:
            self._inspect(page, "phone")
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            if overflow > 0:
                self.problems.append(f"[phone] {page.url}: the page scrolls sideways by {overflow}px")
            if name is not None:
                self.shots.take(page, f"{name}-phone")
        finally:
            page.set_viewport_size(DESKTOP)

    def _inspect(self, page: Page, width: str) -> None:
        self.checked.append(f"{page.url} ({width})")
        found = [*axe_violations(page), *accessibility_problems(page)]
        self.problems.extend(f"[{width}] {problem}" for problem in found)
