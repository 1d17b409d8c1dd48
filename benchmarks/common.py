"""Shared machinery for the HTTP benchmarks: databases, a server subprocess, a cheap HTTP client,
access tokens, concurrent load drivers, latency statistics, result files and optional py-spy profiling.

Every benchmark starts its own `garrison serve --workers N` on 127.0.0.1 and a free port, against a
fresh SQLite file or a fresh database in a throwaway PostgreSQL 15 cluster (fsync on), and drives it
from this process with a few threads. The client shares the machine's cores with the server, so it
speaks HTTP/1.1 on raw keep-alive sockets (`HttpClient`: a fraction of http.client's CPU per request).

The FHIR API wants a bearer token, so each server gets a SMART backend services client, as a real
backend system would: a key pair generated at run time (never stored), its public JWKS registered
with `garrison clients add`, and tokens from the token endpoint with private_key_jwt, refreshed
before they expire (`TokenSource`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from joserfc import jws
from joserfc.jwk import ECKey

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.pg_cluster import PgCluster, available, start_cluster  # noqa: E402
from tests.pg_cluster import free_port as free_port  # noqa: E402, PLC0414 (an explicit re-export)

BACKENDS = ("sqlite", "postgresql")
FHIR_JSON = "application/fhir+json"


def garrison_executable() -> str:
    """The `garrison` console script of the interpreter running the benchmark (the project venv)."""
    candidate = Path(sys.executable).parent / "garrison"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("garrison")
    if not found:
        raise SystemExit("garrison is not installed: run `pip install -e .` in the project venv")
    return found


# --------------------------------------------------------------------------------------------
# Databases


class Databases:
    """Hands out fresh, empty databases; starts one PostgreSQL cluster lazily and removes it at exit."""

    def __init__(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="garrison-bench-"))
        self._cluster: PgCluster | None = None
        self._count = 0

    def new(self, backend: str) -> str:
        self._count += 1
        if backend == "sqlite":
            return f"sqlite:///{self._tmp / f'bench{self._count}.sqlite3'}"
        if backend == "postgresql":
            if self._cluster is None:
                if not available():
                    raise SystemExit("PostgreSQL 15 binaries are missing (apt-get install postgresql-15)")
                # Benchmarks keep fsync on: the figures should be those of a durable store.
                self._cluster = start_cluster(durable=True)
            return self._cluster.create_database(f"bench{self._count}")
        raise ValueError(f"unknown backend {backend!r}")

    @property
    def scratch(self) -> Path:
        return self._tmp

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def analyze_database(url: str) -> None:
    """Refresh the planner statistics (ANALYZE) of a database, as a maintenance job would."""
    from sqlalchemy import create_engine

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    finally:
        engine.dispose()


def garrison_env(database_url: str, data_dir: Path, base_url: str | None = None) -> dict[str, str]:
    """The environment of a `garrison` command over one benchmark database. The data directory
    (audit and token signing keys) is the benchmark's own, never the checkout's var/."""
    env = dict(os.environ)
    env["GARRISON_DATABASE_URL"] = database_url
    env["GARRISON_DATA_DIR"] = str(data_dir)
    if base_url:
        env["GARRISON_BASE_URL"] = base_url
    return env


# --------------------------------------------------------------------------------------------
# Access tokens: a SMART backend services client (https://hl7.org/fhir/smart-app-launch/backend-services.html)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALG = "ES384"  # one of the two algorithms SMART requires servers to support
BENCH_SCOPE = "system/*.cruds"  # the loaders create, the readers read and search


def new_backend_key() -> tuple[ECKey, dict[str, Any]]:
    """A fresh key pair: the private key (kept in memory only) and the public JWKS to register."""
    kid = secrets.token_hex(8)
    key = ECKey.generate_key("P-384", parameters={"kid": kid, "alg": ASSERTION_ALG, "use": "sig"},
                             private=True)
    public = {**key.as_dict(private=False), "kid": kid, "alg": ASSERTION_ALG, "use": "sig"}
    return key, {"keys": [public]}


def register_backend_client(env: dict[str, str], scratch: Path, name: str = "garrison benchmarks",
                            scope: str = BENCH_SCOPE) -> tuple[str, ECKey]:
    """Register a new backend client with `garrison clients add` (its last line is the client id)."""
    key, jwks = new_backend_key()
    jwks_file = scratch / f"bench-jwks-{secrets.token_hex(4)}.json"
    jwks_file.write_text(json.dumps(jwks))  # the public half only
    try:
        completed = subprocess.run(
            [garrison_executable(), "clients", "add", "--name", name, "--jwks", str(jwks_file),
             "--scope", scope],
            env=env, capture_output=True, text=True, check=False,
        )
    finally:
        jwks_file.unlink(missing_ok=True)
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"garrison clients add failed ({completed.returncode}):\n"
                           f"{completed.stdout}{completed.stderr}")
    return lines[-1].strip(), key


def client_assertion(key: ECKey, client_id: str, token_url: str, lifetime: int = 240) -> str:
    """The private_key_jwt client assertion: iss = sub = client id, aud = the token endpoint,
    a fresh jti, and exp at most 5 minutes ahead (SMART backend services, authentication JWT)."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + lifetime,
              "jti": secrets.token_urlsafe(16)}
    header = {"alg": ASSERTION_ALG, "kid": key.kid, "typ": "JWT"}
    return jws.serialize_compact(header, json.dumps(claims), key, algorithms=[ASSERTION_ALG])


def token_request_form(key: ECKey, client_id: str, token_url: str, scope: str = BENCH_SCOPE) -> bytes:
    return urlencode({
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(key, client_id, token_url),
    }).encode()


class TokenSource:
    """Bearer tokens for one backend client, fetched from the token endpoint and renewed before
    they expire. Thread-safe: any number of load threads call `authorization()`; when a token
    nears its end one thread fetches the next while the others keep using the old, still valid one."""

    def __init__(self, token_url: str, client_id: str, key: ECKey, scope: str = BENCH_SCOPE) -> None:
        self.token_url, self.client_id, self.key, self.scope = token_url, client_id, key, scope
        self._lock = threading.Lock()
        # (Authorization header value, monotonic time to renew at, monotonic time it expires)
        self._current: tuple[str, float, float] | None = None
        self.fetched = 0  # tokens obtained so far (the benchmark reports it)

    @classmethod
    def discover(cls, base_url: str, client_id: str, key: ECKey, scope: str = BENCH_SCOPE) -> TokenSource:
        """Find the token endpoint as a SMART client does: [base]/.well-known/smart-configuration."""
        parts = urlsplit(base_url)
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            connection.request("GET", f"{parts.path.rstrip('/')}/.well-known/smart-configuration",
                               headers={"Accept": "application/json"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"smart-configuration answered {response.status}: {body[:300]!r}")
        return cls(str(json.loads(body)["token_endpoint"]), client_id, key, scope)

    def authorization(self) -> str:
        """The `Authorization` header value to send now."""
        current = self._current
        now = time.monotonic()
        if current is not None and now < current[1]:
            return current[0]
        # Past the renewal point: refresh in one thread; while it does, the others may go on
        # with the old token if it has a few seconds left, and wait for the new one otherwise.
        still_good = current is not None and now < current[2] - 5.0
        if not self._lock.acquire(blocking=not still_good):
            assert current is not None
            return current[0]
        try:
            current = self._current
            if current is None or time.monotonic() >= current[1]:
                current = self._current = self._fetch()
            return current[0]
        finally:
            self._lock.release()

    def invalidate(self, used: str) -> None:
        """The server refused `used` (401): forget it, unless another thread already replaced it."""
        with self._lock:
            if self._current is not None and self._current[0] == used:
                self._current = None

    def _fetch(self) -> tuple[str, float, float]:
        parts = urlsplit(self.token_url)
        started = time.monotonic()
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        form = token_request_form(self.key, self.client_id, self.token_url, self.scope)
        try:
            connection.request(
                "POST", parts.path, body=form,
                headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            )
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"the token endpoint answered {response.status}: {body[:300]!r}")
        reply = json.loads(body)
        if str(reply.get("token_type", "")).lower() != "bearer":
            raise RuntimeError(f"not a bearer token: {reply.get('token_type')!r}")
        lifetime = float(reply.get("expires_in", 300))
        self.fetched += 1
        # Renew with a quarter of the lifetime (at most a minute) to spare: never send a token
        # that could expire in flight, whatever the load threads are doing.
        margin = min(60.0, lifetime / 4)
        return f"Bearer {reply['access_token']}", started + lifetime - margin, started + lifetime


# --------------------------------------------------------------------------------------------
# The server under test


class Server:
    """`garrison serve` in its own process group on 127.0.0.1 and a free port."""

    def __init__(self, database_url: str, workers: int = 2) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.base = f"http://{self.host}:{self.port}/fhir"
        self.workers = workers
        self.database_url = database_url
        self.data_dir = Path(tempfile.mkdtemp(prefix="garrison-bench-data-"))
        self.env = garrison_env(database_url, self.data_dir, self.base)
        self.tokens: TokenSource | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="garrison-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                garrison_executable(),
                "serve",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
            # Registered once the server has migrated the database; the first token is fetched
            # now, so that no timed phase pays for it.
            client_id, key = register_backend_client(self.env, self.data_dir)
            self.tokens = TokenSource.discover(self.base, client_id, key)
            self.tokens.authorization()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                client = HttpClient(self.host, self.port, timeout=5)
                status, _ = client.get("/fhir/metadata")
                client.close()
                if status != 200:
                    print(f"  (warning: GET /fhir/metadata answered {status})", file=sys.stderr)
                if status:
                    # Every worker has to be up, not just the first: warm each with a few requests.
                    warm = [HttpClient(self.host, self.port) for _ in range(self.workers * 2)]
                    for c in warm:
                        c.get("/fhir/metadata")
                        c.close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])
        return ""

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the supervisor), or the server itself."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for pid in (int(p) for p in children.read_text().split()):
                # multiprocessing also starts a resource tracker beside the workers.
                with contextlib.suppress(OSError):
                    if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        pids.append(pid)
        return pids or [self.process.pid]

    def rss_mb(self) -> float:
        total = 0
        for pid in [self.process.pid, *self.worker_pids()]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# A cheap keep-alive HTTP client


class ConnectionLost(Exception):
    """The server closed the keep-alive connection (or reset it) before answering."""


class HttpClient:
    """One keep-alive HTTP/1.1 connection on a raw socket; reconnects once if the server closed it.
    With a `TokenSource` every request carries `Authorization: Bearer`, and a 401 is retried once
    with a new token.

    The load generator shares the two cores with the server, so its cost per request is part of
    every figure: http.client spent about 0.3 ms of CPU per request (most of it parsing headers
    with the email package); this writes the request in one send and reads only the status line
    and the framing headers."""

    def __init__(
        self, host: str, port: int, timeout: float = 120.0, tokens: TokenSource | None = None
    ) -> None:
        self.host, self.port, self.timeout, self.tokens = host, port, timeout, tokens
        self._head = f"Host: {host}:{port}\r\nAccept: {FHIR_JSON}\r\n".encode()
        self._socket: socket.socket | None = None
        self._buffer = b""

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.tokens is None:
            return self._send(method, path, body, None)
        used = self.tokens.authorization()
        status, data = self._send(method, path, body, used)
        if status == 401:
            # Revoked, or expired earlier than announced: one more try with a new token.
            self.tokens.invalidate(used)
            status, data = self._send(method, path, body, self.tokens.authorization())
        return status, data

    def _send(
        self, method: str, path: str, body: bytes | None, authorization: str | None
    ) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1\r\n".encode(), self._head]
        if authorization is not None:
            head.append(f"Authorization: {authorization}\r\n".encode())
        if body is not None:
            head.append(f"Content-Type: {FHIR_JSON}\r\nContent-Length: {len(body)}\r\n".encode())
        head.append(b"\r\n")
        message = b"".join(head) + (body or b"")
        for attempt in (1, 2):
            try:
                if self._socket is None:
                    self._connect()
                assert self._socket is not None
                self._socket.sendall(message)
                return self._response()
            except (ConnectionLost, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _connect(self) -> None:
        self._socket = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def _read_more(self) -> None:
        assert self._socket is not None
        chunk = self._socket.recv(262144)
        if not chunk:
            raise ConnectionLost("the server closed the connection")
        self._buffer += chunk

    def _response(self) -> tuple[int, bytes]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            self._read_more()
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = self._chunked()
        else:
            data = self._exactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._read_more()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            while (end := self._buffer.find(b"\r\n")) < 0:
                self._read_more()
            size = int(self._buffer[:end].split(b";", 1)[0], 16)
            self._buffer = self._buffer[end + 2 :]
            parts.append(self._exactly(size))
            self._exactly(2)  # the CRLF after the chunk (after the last, empty one: no trailers)
            if size == 0:
                return b"".join(parts)

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return self.request("POST", path, body)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._buffer = b""


class Endpoint(Protocol):
    """Where a load generator connects: a `Server`, or any other HTTP server on 127.0.0.1."""

    host: str
    port: int
    tokens: TokenSource | None


def client_for(server: Endpoint) -> HttpClient:
    return HttpClient(server.host, server.port, tokens=server.tokens)


# --------------------------------------------------------------------------------------------
# Load drivers and statistics


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0


Work = Callable[[HttpClient, int], tuple[int, bytes]]
Check = Callable[[int, bytes], str | None]


def status_ok(status: int, body: bytes) -> str | None:
    return None if 200 <= status < 300 else f"HTTP {status}: {body[:300]!r}"


def run_load(
    server: Endpoint,
    work: Work,
    *,
    clients: int,
    max_requests: int,
    max_seconds: float,
    check: Check = status_ok,
) -> LoadResult:
    """Run `work(client, n)` for n = 0, 1, 2, ... from `clients` threads until `max_requests`
    calls were made or `max_seconds` passed. Latency is measured around each call."""
    result = LoadResult()
    lock = threading.Lock()
    counter = iter(range(max_requests))
    started = time.perf_counter()
    deadline = started + max_seconds

    def next_index() -> int | None:
        with lock:
            if time.perf_counter() > deadline:
                return None
            return next(counter, None)

    def worker() -> None:
        client = client_for(server)
        local: list[float] = []
        try:
            while (n := next_index()) is not None:
                t0 = time.perf_counter()
                try:
                    status, body = work(client, n)
                except OSError as exc:
                    status, body = 0, repr(exc).encode()
                local.append((time.perf_counter() - t0) * 1000)
                problem = check(status, body)
                with lock:
                    result.requests += 1
                    result.statuses[status] += 1
                    if problem:
                        result.errors += 1
                        if len(result.error_samples) < 5:
                            result.error_samples.append(problem)
        finally:
            client.close()
            with lock:
                result.latencies_ms.extend(local)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed_s = time.perf_counter() - started
    return result


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): the value below which pct % of samples fall."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50_ms": round(percentile(values, 50), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "mean_ms": round(statistics.fmean(values), 2),
        "max_ms": round(max(values), 2),
    }


def report_errors(name: str, result: LoadResult) -> None:
    if result.errors:
        print(
            f"  !! {name}: {result.errors} of {result.requests} requests failed; "
            f"statuses {dict(result.statuses)}",
            file=sys.stderr,
        )
        for sample in result.error_samples:
            print(f"     {sample[:400]}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Profiling (py-spy) of the server workers while a phase runs


class Profiler:
    """`py-spy record --format raw` against the server while a block runs, then a text summary of
    the hottest functions (self and inclusive). Does nothing when py-spy is not installed."""

    def __init__(self, server: Server, name: str, enabled: bool) -> None:
        self.server, self.name, self.enabled = server, name, enabled
        self.output = RESULTS_DIR / f"profile-{name}.txt"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if not self.enabled:
            return self
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists():
            print("  (py-spy is not installed: pip install py-spy)", file=sys.stderr)
            self.enabled = False
            return self
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                py_spy,
                "record",
                "--format",
                "raw",
                "--rate",
                "200",
                "--subprocesses",
                "--nonblocking",
                "-o",
                str(self.output),
                "--pid",
                str(self.server.process.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # let py-spy attach before the load starts
        return self

    def __exit__(self, *_exc: object) -> None:
        if not self.enabled or self._process is None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            _, err = self._process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            _, err = self._process.communicate()
        if not self.output.exists():
            print(f"  py-spy wrote nothing: {err.decode(errors='replace')[-400:]}", file=sys.stderr)
            return
        print(summarize_collapsed(self.output))


# Leaf frames of processes or threads that wait rather than work (py-spy's own idle detection
# misses waits in C extensions): uvicorn's supervisor and thread-pool threads waiting for work.
_IDLE_LEAVES = ("_recv (multiprocessing/", "select (selectors.py", "wait (threading.py",
                "_worker (concurrent/futures/thread.py", "poll (selectors.py", "get (queue.py")
# Waiting for the database is real request time, but not Python CPU: shown apart.
_DB_WAIT_LEAVES = ("Connection.wait (psycopg/", "wait_c (psycopg", "BasePipeline._communicate_gen (psycopg/")


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Summarise py-spy's collapsed stacks: the hottest functions by self samples, and garrison's
    functions by inclusive samples, as percentages of busy samples (idle waits left out)."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = db_wait = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if f.endswith(")") and " (" in f
                  and not f.startswith("process ")]
        if not frames or any(m in frames[-1] for m in _IDLE_LEAVES):
            continue
        count = int(count_text)
        total += count
        if any(m in frames[-1] for m in _DB_WAIT_LEAVES):
            db_wait += count
        self_counts[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            incl_counts[frame] += count
    if not total:
        return f"profile {path.name}: no busy samples"
    lines = [f"profile {path.name}: {total} busy samples "
             f"({100 * db_wait / total:.1f} % waiting on PostgreSQL round trips)",
             "  self%  function (file)"]
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in self_counts.most_common(top)]
    lines.append("  incl%  function (file) - garrison code only")
    garrison = [(f, c) for f, c in incl_counts.most_common() if "garrison/" in f]
    lines += [f"  {100 * c / total:5.1f}  {f}" for f, c in garrison[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy frames look like "function (path/to/file.py:123)"; keep the path from the package on.
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    where = where.rstrip(")")
    file, _, _line = where.rpartition(":")
    return f"{name} ({file or where})"


# --------------------------------------------------------------------------------------------
# Command line and results


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--load-clients", type=int, default=4, help="client threads loading the population")
    parser.add_argument("--profile", action="store_true", help="profile the server with py-spy")
    parser.add_argument("--analyze", action="store_true",
                        help="run ANALYZE after loading (planner statistics) before the read-side figures")
    parser.add_argument("--load", choices=["api", "ndjson"], default="api",
                        help="how the read-side benchmarks load their population: transaction Bundles "
                             "through the API (default), or `garrison import` of NDJSON before the "
                             "server starts (minutes instead of hours at 10,000 patients)")
    parser.add_argument("--json", action="store_true", help="also write benchmarks/results/<name>.json")
    return parser


def backends_of(choice: str) -> list[str]:
    return list(BACKENDS) if choice == "both" else [choice]


def sizes_of(text: str) -> list[int]:
    return [int(s.replace("_", "").replace(",", "")) for s in text.split(":") if s]


def reference_loop_ms() -> float:
    """The best of five timings of one fixed pure-Python loop (`sum(range(1_000_000))`), in ms.

    This machine's speed drifts by half within an hour; a figure read with this beside it says
    whether it came from a fast or a slow phase (lower is faster)."""
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        sum(range(1_000_000))
        timings.append(time.perf_counter() - started)
    return round(min(timings) * 1000, 1)


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "reference_loop_ms": reference_loop_ms(),
    }


def write_results(name: str, rows: Iterable[Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    data = [asdict(r) if hasattr(r, "__dataclass_fields__") else r for r in rows]
    path.write_text(json.dumps({"environment": environment(), "results": data}, indent=2))
    return path


def print_machine_speed() -> None:
    """Printed under a benchmark's figures (see `reference_loop_ms`)."""
    print(f"machine speed: reference loop {reference_loop_ms()} ms (lower is faster)")


def verdict(value: float, target: float, *, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    return "ok" if met else "MISSED"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


@contextlib.contextmanager
def phase(title: str) -> Iterator[None]:
    print(f"-- {title}", flush=True)
    started = time.perf_counter()
    yield
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)


@dataclass
class LatencyResult:
    """Figures of one request-per-call benchmark phase."""

    name: str
    backend: str
    patients: int
    clients: int
    requests: int
    seconds: float
    requests_per_s: float
    latency: dict[str, float]
    errors: int


def latency_result(name: str, backend: str, patients: int, clients: int, result: LoadResult) -> LatencyResult:
    report_errors(name, result)
    return LatencyResult(
        name=name,
        backend=backend,
        patients=patients,
        clients=clients,
        requests=result.requests,
        seconds=round(result.elapsed_s, 2),
        requests_per_s=round(result.rate, 1),
        latency=latency_summary(result.latencies_ms),
        errors=result.errors,
    )


Target = Callable[[LatencyResult], str]


def print_latency(rows: list[LatencyResult], targets: dict[str, Target] | None = None) -> None:
    def cells(r: LatencyResult) -> list[str]:
        target = (targets or {}).get(r.name)
        return [
            r.name, r.backend, f"{r.patients:,}", str(r.clients), f"{r.requests:,}",
            f"{r.requests_per_s:,.0f}", f"{r.latency.get('p50_ms', float('nan')):.1f}",
            f"{r.latency.get('p95_ms', float('nan')):.1f}", f"{r.latency.get('p99_ms', float('nan')):.1f}",
            str(r.errors), target(r) if target else "",
        ]

    print_table(
        ["benchmark", "backend", "patients", "clients", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms",
         "errors", "target"],
        [cells(r) for r in rows],
    )
    print_machine_speed()
