"""The coordinator's HTTP guard, in front of every A2A route: credentials (an API key, sent as a Bearer token or in
X-API-Key, or a JWT bearer token: mesh_coordinator.auth), a request-body size limit, and a rate limit per client.
The authenticated caller is set in `current_principal` for the handler. Pure ASGI, so SSE streams pass untouched.
The agent cards (the root's and each agent's), the catalogue of agents and the health/metrics endpoints stay
public (clients discover the security schemes from the card)."""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from mesh_coordinator.audit import AuditTrail
from mesh_coordinator.auth import Authenticator, current_principal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset(
    {
        "/.well-known/agent-card.json",
        "/.well-known/agent.json",  # the card where A2A 0.3 clients look for it
        "/.well-known/jwks.json",  # the key the cards' signatures verify with
        "/agents",
        "/livez",
        "/healthz",
        "/metrics",
    }
)
_AGENT_CARD_PATH = re.compile(r"^/agents/[^/]+/\.well-known/agent(?:-card)?\.json$")


def is_public(path: str) -> bool:
    """Discovery (the root's card, each agent's card, the catalogue of agents) and health need no key."""
    return path in PUBLIC_PATHS or _AGENT_CARD_PATH.match(path) is not None


API_KEY_HEADER = "x-api-key"
MAX_TRACKED_CLIENTS = 10_000


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard enforces."""

    max_body_bytes: int = 1_048_576
    rate_per_second: float = 50.0
    burst: int = 100


class TokenBuckets:
    """One token bucket per client: `rate` requests a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it could."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self._buckets[client] = (tokens - 1 if tokens >= 1 else tokens, now)
        if len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)  # the least recently seen client
        return wait


class RateLimiter(Protocol):
    async def take(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it could."""
        ...


class InMemoryLimiter:
    """This replica's own buckets (one coordinator, or no shared Redis)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.buckets = TokenBuckets(rate, burst)

    async def take(self, client: str) -> float:
        return self.buckets.take(client)


class RequestGuard:
    """ASGI middleware enforcing a GuardPolicy."""

    def __init__(
        self,
        app: ASGIApp,
        policy: GuardPolicy,
        authenticator: Authenticator,
        audit: AuditTrail | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.policy = policy
        self.authenticator = authenticator
        self.audit = audit
        self.limiter = limiter or InMemoryLimiter(policy.rate_per_second, policy.burst)
        """This replica's buckets, or buckets shared by every replica (mesh_coordinator.ratelimit)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        key = self._presented_key(headers)
        principal = await self.authenticator.authenticate(key) if key is not None else None
        if principal is None:
            if self.audit is not None:
                self.audit.record(None, f"{scope['method']} {scope['path']}", "unauthenticated")
            await json_reply(send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b'Bearer realm="a2a-mesh"')])
            return
        wait = await self.limiter.take(principal.id)
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            await json_reply(send, 429, {"error": "rate limit exceeded"}, [(b"retry-after", retry)])
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.policy.max_body_bytes):
            await json_reply(send, 413, {"error": f"request body over {self.policy.max_body_bytes} bytes"})
            return
        token = current_principal.set(principal)
        try:
            await self.app(scope, self._limited(receive, send), send)
        finally:
            current_principal.reset(token)

    @staticmethod
    def _presented_key(headers: dict[str, str]) -> str | None:
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer " and authorization[7:].strip():
            return authorization[7:].strip()
        return headers.get(API_KEY_HEADER) or None

    def _limited(self, receive: Receive, send: Send) -> Receive:
        """A body without Content-Length (chunked) is counted as it arrives and cut off past the limit."""
        received = 0
        limit = self.policy.max_body_bytes

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        return counting


class BodyTooLargeError(Exception):
    """A streamed body went past the limit (the app sees it as a failed read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")


async def json_reply(
    send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A whole JSON response, written straight to ASGI (the guard, body checks and endpoints answer before any app)."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
