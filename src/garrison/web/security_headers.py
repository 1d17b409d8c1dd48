"""Response headers every Garrison page and API answer carries, and a rate limiter.

Headers (OWASP Secure Headers; ASVS 3.4, 14.4; checklist C1, C5):
- Content-Security-Policy: only our own origin, no inline script, no framing, no plugins.
  `form-action` is left out on purpose: after the OAuth consent form, the browser follows a
  redirect to the registered app, which `form-action 'self'` would block in Chromium.
- X-Content-Type-Options, Referrer-Policy, X-Frame-Options (older browsers), HSTS,
  Permissions-Policy.
- `Cache-Control: no-store` unless the response set its own (public data such as a JWKS may say
  how long to cache) and except for /static: pages and API answers carry health data and must not
  stay in browser or proxy caches (checklist C5).

`RateLimiter` is a sliding-window counter in memory, per process; sign-in uses it per client
address and per username, the token endpoint per client (answer 429 with Retry-After: ASVS 2.2.1,
checklist L2).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import timedelta

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison import clock

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), usb=()"
)
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"


class SecurityHeadersMiddleware:
    """Pure ASGI middleware; headers a response already set are left as they are."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        content_security_policy: str = CONTENT_SECURITY_POLICY,
        cacheable_prefixes: Iterable[str] = ("/static/",),
    ) -> None:
        self.app = app
        self.headers: Mapping[str, str] = {
            "Content-Security-Policy": content_security_policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Strict-Transport-Security": STRICT_TRANSPORT_SECURITY,
            "Permissions-Policy": PERMISSIONS_POLICY,
        }
        self.cacheable_prefixes = tuple(cacheable_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith(self.cacheable_prefixes)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
                if not cacheable and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RateLimiter:
    """At most `limit` hits per key in any `window` (sliding log), in this process's memory.

    Memory is bounded: each key keeps at most `limit` timestamps, and beyond `max_keys` keys the
    idle ones, then the oldest, are forgotten. Time comes from garrison.clock, so tests can move it.
    """

    def __init__(self, limit: int, window: timedelta, *, max_keys: int = 100_000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window.total_seconds()
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Count one attempt. None when allowed; otherwise the seconds until one is allowed
        again (refused attempts are not counted, so waiting that long always works)."""
        now = clock.now().timestamp()
        with self._lock:
            log = self._hits.get(key)
            if log is None:
                if len(self._hits) >= self.max_keys:
                    self._forget(now)
                log = self._hits[key] = deque()
            while log and log[0] <= now - self.window:
                log.popleft()
            if len(log) >= self.limit:
                return max(log[0] + self.window - now, 0.001)
            log.append(now)
            return None

    def reset(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)

    def _forget(self, now: float) -> None:
        for key in [k for k, log in self._hits.items() if not log or log[-1] <= now - self.window]:
            del self._hits[key]
        while len(self._hits) >= self.max_keys:
            del self._hits[next(iter(self._hits))]


def too_many_requests(
    retry_after: float, message: str = "Too many attempts. Please wait and try again."
) -> Response:
    """429 with Retry-After in whole seconds (RFC 9110 §10.2.3; RFC 6585 §4)."""
    return PlainTextResponse(
        message, status_code=429, headers={"Retry-After": str(max(1, math.ceil(retry_after)))}
    )
