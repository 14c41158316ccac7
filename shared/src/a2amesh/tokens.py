"""Per-agent-audience tokens: what the coordinator puts in `a2a-authorization` for an agent that asks for it, in
place of the caller's own credential. A short-lived JWT (ES256) signed with the coordinator's key, whose audience
is the request topic it was minted for (the agent's own topic, or its pool's), so an agent that collects tokens
holds nothing another agent would take. The agent verifies it against the coordinator's JWKS
(`/.well-known/jwks.json`, public).

Needs PyJWT (`a2amesh[tokens]`); imported only by the processes that mint or verify."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
import uuid
from collections.abc import Iterable
from typing import Any

import jwt

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
TOKEN_SECONDS = 300
"""How long a minted token is good for: a request and its retries, not a session."""
LEEWAY_SECONDS = 30
REFETCH_SECONDS = 30.0
"""At most one JWKS fetch this often (an unknown `kid` triggers one: the coordinator rotated its key)."""
FETCH_TIMEOUT = 5.0


def mint(
    key: Any,
    kid: str,
    *,
    issuer: str,
    audience: str,
    subject: str,
    tenant: str = "",
    scopes: Iterable[str] = (),
    seconds: int = TOKEN_SECONDS,
) -> str:
    """A token for one audience (a request topic), naming the caller it acts for."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "exp": now + seconds,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(sorted(scopes)),
    }
    if tenant:
        claims["tenant"] = tenant
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})


class TokenVerifier:
    """Checks a presented token: the coordinator's signature (its JWKS, fetched and cached), one of `audiences`,
    the issuer when one is configured, and not expired. Answers why not, without detail, or None."""

    def __init__(self, jwks_url: str, audiences: Iterable[str], issuer: str | None = None) -> None:
        self.jwks_url = jwks_url
        self.audiences = list(audiences)
        self.issuer = issuer
        self._keys: dict[str, Any] = {}
        self._fetched_at = -REFETCH_SECONDS
        self._lock = asyncio.Lock()

    async def refusal(self, token: str) -> str | None:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return "authorization refused"
        key = await self._key(kid) if isinstance(kid, str) else None
        if key is None:
            return "authorization refused"
        try:
            jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audiences,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "aud", "sub"], "verify_iss": self.issuer is not None},
            )
        except jwt.PyJWTError as error:
            log.info("refused a per-request token: %s", type(error).__name__)
            return "authorization refused"
        return None

    async def _key(self, kid: str) -> Any | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= REFETCH_SECONDS:
                self._fetched_at = time.monotonic()
                try:
                    self._keys = await asyncio.to_thread(_fetch_keys, self.jwks_url)
                except Exception as error:  # the coordinator away: refuse now, fetch again later
                    log.warning("could not fetch the token keys from %s: %s", self.jwks_url, error)
        return self._keys.get(kid)


def _fetch_keys(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
        jwks = json.loads(response.read())
    keys = {}
    for entry in jwks.get("keys", []):
        if entry.get("kty") == "EC" and entry.get("crv") == "P-256" and isinstance(entry.get("kid"), str):
            keys[entry["kid"]] = jwt.PyJWK.from_dict({**entry, "alg": ALGORITHM}).key
    return keys
