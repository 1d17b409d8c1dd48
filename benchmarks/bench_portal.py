"""Portal pages under load: simulated patients sign in and browse every portal page they can reach,
and book appointments (targets with 10,000 patients loaded and 20 concurrent patients: every page's
server time p95 <= 150 ms; booking end to end p95 <= 300 ms).

    python benchmarks/bench_portal.py --backend sqlite --patients 10000
    python benchmarks/bench_portal.py --database-url sqlite:////path/garrison.sqlite3 --think-ms 0,2000

Each simulated patient is a real portal account linked to a generated patient with a primary care
team; open slots are made at their facilities. A patient first crawls the portal from /portal
(GET links under /portal, same origin, no downloads or sign-out), then, for the timed phase,
keeps requesting pages from what it found, grouped by route (ids replaced by {id}). Server time
is the `Server-Timing: app;dur=` the server reports; the client-side latency is printed beside it.
Booking end to end is the time from posting a booking form to the confirmation page loading.
"""

from __future__ import annotations

import http.client
import random
import re
import secrets
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import urlencode

from common import (
    Databases,
    Server,
    analyze_database,
    backends_of,
    base_parser,
    garrison_env,
    garrison_executable,
    percentile,
    phase,
    print_table,
    write_results,
)

PAGE_TARGET_P95_MS = 150.0
BOOKING_TARGET_P95_MS = 300.0
_LINK = re.compile(r'href="(/portal[^"#]*)"')
_FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)
_ATTR = re.compile(r'(\w[\w-]*)="([^"]*)"')
_INPUT = re.compile(r"<input\b([^>]*)>", re.I)
_TIMING = re.compile(r"app;dur=([0-9.]+)")
_SKIP = re.compile(r"download|export|signout|\.json|/attachments?/|/tour/", re.I)
_ID_SEGMENT = re.compile(r"/(?=[^/]*\d)[A-Za-z0-9\-._%]{6,}(?=/|$)")
PASSWORD = "portal benchmark " + secrets.token_hex(8)  # made fresh each run, never stored


def route_of(path: str) -> str:
    """/portal/record/labs/2345-7 -> /portal/record/labs/{id}: pages grouped by route."""
    bare = path.split("?", 1)[0]
    return _ID_SEGMENT.sub("/{id}", bare) + ("?..." if "?" in path else "")


@dataclass
class Browser:
    """One patient's keep-alive connection with cookies kept by hand (Secure cookies over http)."""

    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str, dict[str, str], float, float]:
        headers = {"Accept": "text/html", "Sec-Fetch-Site": "same-origin"}
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                text = response.read().decode("utf-8", "replace")
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt == 2:
                    raise
        elapsed = (time.perf_counter() - started) * 1000
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in header.lower() or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        timing = _TIMING.search(response.headers.get("Server-Timing", ""))
        server_ms = float(timing.group(1)) if timing else float("nan")
        return response.status, text, dict(response.headers), elapsed, server_ms

    def get(self, path: str) -> tuple[int, str, dict[str, str], float, float]:
        return self.request("GET", path)

    def sign_in(self, username: str) -> None:
        status, page, _, _, _ = self.get("/signin")
        token = _csrf(page)
        status, _, _, _, _ = self.request(
            "POST", "/signin", {"csrf_token": token, "username": username, "password": PASSWORD}
        )
        if status != 303:
            raise RuntimeError(f"sign-in of {username} answered {status}")


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if not found:
        raise RuntimeError("no CSRF token on the page")
    return found.group(1)


def _forms(page: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(form attributes, hidden and pre-filled fields) of each form on a page."""
    found = []
    for attributes, inner in _FORM.findall(page):
        attrs = {k.lower(): unescape(v) for k, v in _ATTR.findall(attributes)}
        fields: dict[str, str] = {}
        for raw in _INPUT.findall(inner):
            field_attrs = {k.lower(): unescape(v) for k, v in _ATTR.findall(raw)}
            kind = field_attrs.get("type", "text").lower()
            name = field_attrs.get("name")
            if not name or kind in ("submit", "file"):
                continue
            if kind in ("radio", "checkbox") and "checked" not in raw:
                if name not in fields:
                    fields[name] = field_attrs.get("value", "")  # first option as a fallback
                continue
            fields[name] = field_attrs.get("value", "")
        found.append((attrs, fields))
    return found


# --------------------------------------------------------------------------------------------
# Setting up the population, accounts and open slots


def _populate(env: dict[str, str], patients: int) -> None:
    subprocess.run(
        [garrison_executable(), "generate", "--patients", str(patients), "--seed", "7"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _prepare(database_url: str, users: int) -> list[str]:
    """Accounts for `users` patients with a primary care team and lab results; slots at their
    facilities (the scheduling package's generator). Returns the usernames."""
    from garrison.db.engine import make_engine, read_transaction, write_transaction
    from garrison.fhir.access import AccessContext
    from garrison.fhir.definitions import definitions_from
    from garrison.fhir.repository import Repository
    from garrison.fhir.search.query import SearchRequest
    from garrison.identity import accounts
    from garrison.settings import Settings

    settings = Settings(database_url=database_url)
    engine = make_engine(database_url)
    definitions = definitions_from(settings.definitions_dir)
    chosen: list[str] = []
    with read_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("portal-benchmark"))
        teams = repo.search(SearchRequest("CareTeam", [("category", "LA28865-6"), ("_count", "400")]))
        candidates = [str(t.parsed()["subject"]["reference"]).removeprefix("Patient/") for t in teams.matches]
        rng = random.Random(5)
        rng.shuffle(candidates)
        for patient_id in candidates:
            labs = repo.search(
                SearchRequest(
                    "Observation", [("patient", patient_id), ("category", "laboratory"), ("_count", "1")]
                )
            )
            if labs.matches:
                chosen.append(patient_id)
            if len(chosen) == users:
                break
    usernames: list[str] = []
    with write_transaction(engine) as connection:
        for patient_id in chosen:
            username = f"bench-{secrets.token_hex(4)}"
            accounts.create_account(
                connection,
                username=username,
                kind="patient",
                role="patient",
                display_name="Benchmark Patient",
                fhir_user=f"Patient/{patient_id}",
                password=PASSWORD,
                actor="system/benchmark",
                actor_role="system",
            )
            usernames.append(username)
    try:
        from garrison.scheduling import demo as scheduling_demo  # the appointments area's slot maker
    except ImportError:
        scheduling_demo = None  # type: ignore[assignment]
    if scheduling_demo is not None and hasattr(scheduling_demo, "seed_patients"):
        scheduling_demo.seed_patients(engine, definitions, settings, chosen)
    engine.dispose()
    return usernames


# --------------------------------------------------------------------------------------------
# The simulated patients


@dataclass
class Figures:
    server_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    client_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    booking_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, server: float, client: float) -> None:
        with self.lock:
            self.server_ms[route].append(server)
            self.client_ms[route].append(client)


def crawl(browser: Browser, limit: int = 80) -> list[str]:
    seen: list[str] = []
    queue = ["/portal"]
    routes: dict[str, int] = defaultdict(int)
    while queue and len(seen) < limit:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.append(path)
        status, page, _, _, _ = browser.get(path)
        if status != 200:
            continue
        for raw_link in _LINK.findall(page):
            link = unescape(raw_link)
            if _SKIP.search(link) or link in seen or link in queue:
                continue
            route = route_of(link)
            if routes[route] >= 3:  # a few examples of each route are enough
                continue
            routes[route] += 1
            queue.append(link)
    return seen


_BOOK_LINK = re.compile(r'href="(/portal/appointments/book\?[^"]+)"')


def book_once(browser: Browser, figures: Figures) -> None:
    """Find open times, open one's confirmation page and book it; booking end to end is the
    time from posting the confirmation form to the appointments page that shows the booking."""
    status, page, _, _, _ = browser.get("/portal/appointments/find")
    links = _BOOK_LINK.findall(page) if status == 200 else []
    if not links:
        return
    status, page, _, _, _ = browser.get(unescape(random.choice(links[:10])))
    forms = [  # the booking form (the page's header also holds the sign-out form)
        (a, f)
        for a, f in _forms(page)
        if a.get("method", "").lower() == "post" and a.get("action", "").startswith("/portal/appointments")
    ]
    if status != 200 or not forms:
        return
    attrs, fields = forms[0]
    started = time.perf_counter()
    status, page, headers, _, _ = browser.request(
        "POST", attrs.get("action") or "/portal/appointments/book", fields
    )
    if status in (302, 303):
        location = headers.get("location") or headers.get("Location") or "/portal/appointments"
        status, page, _, _, _ = browser.get(location)
    elapsed = (time.perf_counter() - started) * 1000
    if status == 200:
        with figures.lock:
            figures.booking_ms.append(elapsed)
    elif status != 409:  # 409: someone else took the time first (a clear message, not an error)
        with figures.lock:
            figures.errors.append(f"booking answered {status}")


def patient_loop(
    server: Server, username: str, stop_at: float, figures: Figures, book_every: int, think_ms: float
) -> None:
    browser = Browser(server.host, server.port)
    browser.sign_in(username)
    pages = crawl(browser)
    rng = random.Random(username)
    count = 0
    while time.monotonic() < stop_at:
        if think_ms:
            time.sleep(rng.expovariate(1000.0 / think_ms))  # reading the page before the next click
        count += 1
        if book_every and count % book_every == 0:
            book_once(browser, figures)
            continue
        path = rng.choice(pages)
        status, _, _, client_ms, server_ms = browser.get(path)
        if status != 200:
            with figures.lock:
                figures.errors.append(f"{path}: {status}")
            continue
        figures.add(route_of(path), server_ms, client_ms)


def run(
    backend: str, database_url: str, patients: int, users: int, seconds: float, workers: int, think_ms: float
) -> dict[str, Any]:
    with phase(f"{backend}: accounts for {users} patients and open slots"):
        usernames = _prepare(database_url, users)
    with Server(database_url, workers=workers) as server:
        figures = Figures()
        with phase(f"{backend}: {users} simulated patients for {seconds:.0f} s"):
            stop_at = time.monotonic() + seconds
            threads = [
                threading.Thread(
                    target=patient_loop, args=(server, u, stop_at, figures, 8, think_ms), daemon=True
                )
                for u in usernames
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=seconds + 300)
    rows: list[dict[str, Any]] = []
    for route in sorted(figures.server_ms):
        server_values = [v for v in figures.server_ms[route] if v == v]
        rows.append(
            {
                "route": route,
                "requests": len(figures.server_ms[route]),
                "server_p50_ms": round(percentile(server_values, 50), 1),
                "server_p95_ms": round(percentile(server_values, 95), 1),
                "client_p95_ms": round(percentile(figures.client_ms[route], 95), 1),
            }
        )
    booking: dict[str, Any] = {
        "bookings": len(figures.booking_ms),
        "p50_ms": round(percentile(figures.booking_ms, 50), 1) if figures.booking_ms else None,
        "p95_ms": round(percentile(figures.booking_ms, 95), 1) if figures.booking_ms else None,
    }
    pause = f"a mean {think_ms:.0f} ms pause between requests" if think_ms else "no pause between requests"
    print(f"\n{backend}, {patients:,} patients, {users} concurrent patients, {pause}:")
    print_table(
        ["route", "requests", "server p50 ms", "server p95 ms", "client p95 ms", "target p95 <= 150"],
        [
            [
                r["route"],
                str(r["requests"]),
                f"{r['server_p50_ms']:.1f}",
                f"{r['server_p95_ms']:.1f}",
                f"{r['client_p95_ms']:.1f}",
                "ok" if r["server_p95_ms"] <= PAGE_TARGET_P95_MS else "MISSED",
            ]
            for r in rows
        ],
    )
    if booking["bookings"]:
        verdict = "ok" if booking["p95_ms"] <= BOOKING_TARGET_P95_MS else "MISSED"
        print(
            f"booking end to end: {booking['bookings']} bookings, p50 {booking['p50_ms']} ms, "
            f"p95 {booking['p95_ms']} ms (target <= 300: {verdict})"
        )
    else:
        print("booking end to end: no booking was made (no open slots offered)")
    if figures.errors:
        print(f"errors: {len(figures.errors)} (first: {figures.errors[:3]})")
    return {
        "backend": backend,
        "patients": patients,
        "users": users,
        "think_ms": think_ms,
        "pages": rows,
        "booking": booking,
        "errors": len(figures.errors),
    }


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=20, help="concurrent simulated patients")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--think-ms",
        default="0",
        help="mean pause between a patient's requests, ms (0: back to back, a stress test); "
        "comma-separated values run one after another on the same database",
    )
    parser.add_argument(
        "--database-url",
        help="an already populated database (SQLite or PostgreSQL URL; not copied): skips generation "
        "and runs on that backend only",
    )
    args = parser.parse_args()
    results = []
    with Databases() as databases:
        backends = backends_of(args.backend)
        if args.database_url:
            backends = ["postgresql" if args.database_url.startswith("postgresql") else "sqlite"]
        for backend in backends:
            if args.database_url:
                url = args.database_url
                subprocess.run(
                    [garrison_executable(), "db", "upgrade"],
                    env=garrison_env(url, databases.scratch),
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            else:
                url = databases.new(backend)
                env = garrison_env(url, databases.scratch)
                subprocess.run(
                    [garrison_executable(), "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL
                )
                with phase(f"{backend}: generating {args.patients:,} patients"):
                    _populate(env, args.patients)
                analyze_database(url)
            for think_ms in (float(v) for v in str(args.think_ms).split(",") if v.strip()):
                results.append(
                    run(backend, url, args.patients, args.users, args.seconds, args.workers, think_ms)
                )
    if args.json:
        print(f"results: {write_results('bench_portal', results)}")


if __name__ == "__main__":
    main()
