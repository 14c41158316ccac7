"""Rate limits that hold across coordinator replicas: one token bucket per client kept in Redis (the registry's,
which the mesh already runs), updated atomically by a Lua script, so a client spreading its calls over N replicas
gets the same rate as with one. Without MESH_RATE_LIMIT_REDIS_URL each replica keeps its own buckets in memory
(mesh_coordinator.guard.InMemoryLimiter).

A Redis that does not answer does not take the HTTP face down: the replica falls back to its own in-memory buckets,
asks Redis again only every RETRY_SECONDS (so an outage does not add a timeout to every request), and logs the
outage once.

redis-py is imported only when a URL is configured: a single coordinator does not pay its memory (about 4 MB)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from a2amesh.settings import read_secret
from mesh_coordinator.guard import InMemoryLimiter, RateLimiter

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
"""How long a replica keeps to its own buckets after Redis failed to answer."""

KEY_PREFIX = "a2a:ratelimit:"
"""Redis keys of the buckets: one hash per client (tokens, last refill in ms), expiring once idle and full."""

# KEYS[1] the bucket; ARGV rate (tokens/s), burst, now (ms). Returns the wait in ms (0: admitted, a token taken).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""


class SharedLimiter:
    """Buckets in Redis, shared by every replica pointing at it. The clock is the replicas' wall clock (in ms),
    which agrees across machines closely enough for limits in requests per second."""

    def __init__(self, redis: Redis, rate: float, burst: int) -> None:
        from redis.exceptions import RedisError

        self.failures: tuple[type[BaseException], ...] = (RedisError, OSError)
        self.redis = redis
        self.rate = rate
        self.burst = burst
        self.fallback = InMemoryLimiter(rate, burst)
        self._script = redis.register_script(_TAKE)
        self._degraded = False
        self._retry_at = 0.0

    async def take(self, client: str) -> float:
        if self._degraded and time.monotonic() < self._retry_at:
            return await self.fallback.take(client)
        now_ms = int(time.time() * 1000)
        try:
            wait_ms = await self._script(keys=[KEY_PREFIX + client], args=[self.rate, self.burst, now_ms])
        except self.failures as error:
            if not self._degraded:
                log.warning("rate limits fall back to this replica's own (Redis: %s)", error)
                self._degraded = True
            self._retry_at = time.monotonic() + RETRY_SECONDS
            return await self.fallback.take(client)
        if self._degraded:
            log.info("rate limits shared through Redis again")
            self._degraded = False
        return int(wait_ms) / 1000


def rate_limiter(rate: float, burst: int, redis_url: str | None, password_file: Path | None = None) -> RateLimiter:
    """Shared through Redis when a URL is configured, else this replica's own. The URL names the coordinators' ACL
    user; its password is read from `password_file` (MESH_RATE_LIMIT_REDIS_PASSWORD_FILE; one in the URL wins)."""
    if not redis_url:
        return InMemoryLimiter(rate, burst)
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url, password=read_secret(password_file), socket_connect_timeout=1, socket_timeout=1)
    return SharedLimiter(redis, rate, burst)
