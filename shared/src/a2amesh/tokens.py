"""Per-agent-audience tokens: what the coordinator puts in `a2a-authorization` for an agent that asks for it, in
place of the caller's own credential. A short-lived JWT (EdDSA, or ES256 with an older P-256 key) signed with the
coordinator's card-signing key, whose audience
is the request topic it was minted for (the agent's own topic, or its pool's), so an agent that collects tokens
holds nothing another agent would take. The agent verifies it against the coordinator's JWKS
(`/.well-known/jwks.json`, public).

The claims are built here for the coordinator, which signs them itself; verifying needs PyJWT (`a2amesh[tokens]`),
imported only by an agent that verifies."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
import uuid
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

ALGORITHMS = {"EdDSA": ("OKP", "Ed25519"), "ES256": ("EC", "P-256")}
"""The signatures accepted, each with the JWK type and curve its key must have."""
TOKEN_SECONDS = 300
"""How long a minted token is good for: a request and its retries, not a session."""
LEEWAY_SECONDS = 30
REFETCH_SECONDS = 30.0
"""At most one JWKS fetch this often (an unknown `kid` triggers one: the coordinator rotated its key)."""
FETCH_TIMEOUT = 5.0


def token_claims(
    *,
    issuer: str,
    audience: str,
    subject: str,
    tenant: str = "",
    scopes: Iterable[str] = (),
    seconds: int = TOKEN_SECONDS,
) -> dict[str, Any]:
    """The claims of a token for one audience (a request topic), naming the caller it acts for."""
    now = int(time.time())
    claims: dict[str, Any] = {
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
    return claims


class TokenVerifier:
    """Checks a presented token: the coordinator's signature (its JWKS, fetched and cached), one of `audiences`,
    the issuer when one is configured, and not expired. Answers why not, without detail, or None."""

    def __init__(self, jwks_url: str, audiences: Iterable[str], issuer: str | None = None) -> None:
        import jwt  # PyJWT, with cryptography: only agents that verify pay for it

        self._jwt = jwt
        self.jwks_url = jwks_url
        self.audiences = list(audiences)
        self.issuer = issuer
        self._keys: dict[str, Any] = {}
        self._fetched_at = -REFETCH_SECONDS
        self._lock = asyncio.Lock()

    async def refusal(self, token: str) -> str | None:
        jwt = self._jwt
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
                algorithms=list(ALGORITHMS),
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
    """The JWKS's signing keys by kid, those of an accepted algorithm only."""
    import jwt

    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
        jwks = json.loads(response.read())
    keys = {}
    for entry in jwks.get("keys", []):
        for algorithm, (kty, curve) in ALGORITHMS.items():
            if (entry.get("kty"), entry.get("crv")) == (kty, curve) and isinstance(entry.get("kid"), str):
                keys[entry["kid"]] = jwt.PyJWK.from_dict({**entry, "alg": algorithm}).key
    return keys
