"""Who is calling: API keys (stored hashed, each with an id, scopes and an optional tenant, re-read when their file
changes) and JWT bearer tokens from an OAuth2/OIDC issuer (checked against its JWKS). Either way the caller becomes
a `Principal`, which the guard puts in `current_principal` for the handler to scope every task operation to.

The API keys file, one key a line (blank lines and # comments skipped):

    <id> sha256:<hex digest of the key> [scopes=send,read,cancel,admin] [tenant=<tenant>]
    <plain key>        # legacy: id key-<first 12 hex of its digest>, scopes send,read,cancel, no tenant

`python -m mesh_coordinator.keys` prints a new key and its line. Keys are 192-bit random tokens, so one SHA-256
is enough to store them (no slow hash is needed against guessing)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SCOPES = frozenset({"send", "read", "cancel", "admin"})
LEGACY_SCOPES = frozenset({"send", "read", "cancel"})
"""What a plain (unhashed, id-less) key line may do: everything but administer, i.e. only its own tasks."""
RELOAD_CHECK_SECONDS = 1.0
"""How often, at most, the keys file is checked for a change (one stat call)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: `id` is `key:<key id>` or `jwt:<subject>`; `tenant` is "" when none."""

    id: str
    scopes: frozenset[str]
    tenant: str = ""

    @property
    def is_operator(self) -> bool:
        """An operator (scope admin) sees and may act on every caller's tasks."""
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return scope in self.scopes or self.is_operator


current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
"""The caller of the request being served (set by the guard, read by the handler and the fast path)."""


class KeyFileError(ValueError):
    """A line of the keys file that cannot be read (its text is the reason, never the key)."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    digest: bytes
    scopes: frozenset[str]
    tenant: str = ""


def digest_of(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key_line(line: str, number: int = 0) -> ApiKey | None:
    """One line of the keys file (None for blanks and comments)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    fields = text.split()
    if len(fields) == 1:  # legacy: the key itself
        digest = digest_of(fields[0])
        return ApiKey(f"key-{digest.hex()[:12]}", digest, LEGACY_SCOPES)
    key_id, hashed, *options = fields
    if not hashed.startswith("sha256:"):
        raise KeyFileError(f"line {number}: the second field must be sha256:<hex digest>")
    try:
        digest = bytes.fromhex(hashed.removeprefix("sha256:"))
    except ValueError:
        raise KeyFileError(f"line {number}: the digest is not hex") from None
    if len(digest) != 32:
        raise KeyFileError(f"line {number}: a SHA-256 digest has 64 hex digits")
    scopes, tenant = LEGACY_SCOPES, ""
    for option in options:
        name, _, value = option.partition("=")
        if name == "scopes":
            scopes = frozenset(s for s in value.split(",") if s)
            if unknown := scopes - SCOPES:
                raise KeyFileError(f"line {number}: unknown scopes {sorted(unknown)} (known: {sorted(SCOPES)})")
        elif name == "tenant":
            tenant = value
        else:
            raise KeyFileError(f"line {number}: unknown option {name!r} (scopes=, tenant=)")
    return ApiKey(key_id, digest, scopes, tenant)


class ApiKeys:
    """The known API keys: inline ones (MESH_API_KEYS) and the keys file, re-read whenever the file changes, so a
    key is added, rotated or revoked without a restart. A file that cannot be read keeps the last good keys."""

    def __init__(self, inline: Iterable[str] = (), file: Path | None = None) -> None:
        self.inline = [key for line in inline if (key := parse_key_line(line)) is not None]
        self.file = file
        self._from_file: list[ApiKey] = []
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._reload(force=True)

    @property
    def count(self) -> int:
        return len(self.inline) + len(self._from_file)

    def _reload(self, force: bool = False) -> None:
        if self.file is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        try:
            info = os.stat(self.file)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp == self._stamp:
                return
            keys = [
                key for n, line in enumerate(self.file.read_text().splitlines(), 1) if (key := parse_key_line(line, n))
            ]
        except (OSError, KeyFileError) as error:
            if force and self._stamp is None:
                raise
            log.error("API keys file %s not reloaded, keeping the previous keys: %s", self.file, error)
            return
        self._from_file, self._stamp = keys, stamp
        log.info("API keys loaded: %d from %s", len(keys), self.file)

    def find(self, secret: str) -> ApiKey | None:
        """The key `secret` is, compared in constant time against each known digest."""
        self._reload()
        digest = digest_of(secret)
        found = None
        for key in [*self.inline, *self._from_file]:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


@dataclass(frozen=True)
class JwtPolicy:
    """What a bearer token must be to be accepted."""

    issuer: str
    audience: str
    jwks_url: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_seconds: int = 30
    tenant_claim: str = "tenant"
    required_claims: tuple[str, ...] = field(default=("exp", "iat", "iss", "aud", "sub"))


class TokenRefused(Exception):
    """A bearer token that is not acceptable (bad signature, wrong issuer or audience, expired, JWKS unreachable)."""


class TokenVerifier(Protocol):
    """Checks a bearer JWT (mesh_coordinator.jwtauth.JwtVerifier, loaded only when an issuer is configured)."""

    def verify(self, token: str) -> Principal:
        """The token's caller; TokenRefused when it is not acceptable."""
        ...


def token_scopes(claims: dict[str, object]) -> frozenset[str]:
    """The mesh scopes a token grants: from `scope` (space-separated) or `scp` (a list or a string)."""
    raw = claims.get("scope", claims.get("scp", ""))
    names = raw.split() if isinstance(raw, str) else [str(s) for s in raw] if isinstance(raw, list) else []
    return frozenset(names) & SCOPES


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and credential.startswith("eyJ")


class Authenticator:
    """A presented credential -> its Principal, or None."""

    def __init__(self, keys: ApiKeys, verifier: TokenVerifier | None = None) -> None:
        if keys.count == 0 and verifier is None and keys.file is None:
            raise ValueError("the coordinator needs API keys (MESH_API_KEYS or MESH_API_KEYS_FILE) or a JWT issuer")
        self.keys = keys
        self.verifier = verifier

    async def authenticate(self, credential: str) -> Principal | None:
        if self.verifier is not None and looks_like_jwt(credential):
            try:  # the JWKS fetch is blocking I/O (cached: most calls never leave memory)
                return await asyncio.to_thread(self.verifier.verify, credential)
            except TokenRefused as error:
                log.info("bearer token refused: %s", error)
                return None
        key = self.keys.find(credential)
        return Principal(f"key:{key.id}", key.scopes, key.tenant) if key is not None else None
