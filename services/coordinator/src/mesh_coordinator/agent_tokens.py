"""What the coordinator hands an agent that asks for per-request authorization: a token it mints for that agent's
request topic and this caller (claims from a2amesh.tokens), signed with its card-signing key, whose public half it
serves at /.well-known/jwks.json. Never the caller's own key: an agent that collects tokens can replay them nowhere
else, and only for minutes.

Signed with the card signer (mesh_coordinator.cards), not a JOSE library: a compact JWS is three base64url parts,
and the coordinator then loads no second crypto stack (docs/benchmarks.md, memory)."""

from __future__ import annotations

import json
import logging
from functools import cached_property
from pathlib import Path

from a2amesh.tokens import TOKEN_SECONDS, token_claims
from mesh_coordinator.auth import Principal
from mesh_coordinator.cards import Signer, b64url, jwk_thumbprint, load_signer

log = logging.getLogger(__name__)


class AgentTokens:
    """Mints `Bearer <token>` for one audience and caller; without a signing key, none (such agents refuse)."""

    def __init__(self, key_file: Path | None, issuer: str) -> None:
        self.issuer = issuer.rstrip("/")
        if key_file is None:
            log.warning("no card-signing key: agents that ask for per-request authorization will refuse requests")
            self.signer: Signer | None = None
            self.kid = ""
            return
        self.use(load_signer(key_file))

    def use(self, signer: Signer, kid: str | None = None) -> None:
        """Sign with `signer`, named `kid` (default: its RFC 7638 thumbprint, as the JWKS names it)."""
        self.signer = signer
        self.__dict__.pop("_header", None)
        if kid:
            self.kid = kid
        else:
            self.__dict__.pop("kid", None)

    # Derived on the first token, not at start: the thumbprint needs the public key, and an Ed25519 signer loads
    # PyNaCl for it (mesh_coordinator.cards.Ed25519Signer), which an idle coordinator does without.
    @cached_property
    def kid(self) -> str:
        return jwk_thumbprint(self.signer.public_jwk) if self.signer is not None else ""

    @cached_property
    def _header(self) -> str:
        return _part({"alg": self.signer.algorithm if self.signer else "", "kid": self.kid, "typ": "JWT"})

    def bearer(self, audience: str, principal: Principal | None, seconds: int = TOKEN_SECONDS) -> str | None:
        """The token for a request published on `audience` (a request topic) on behalf of `principal`."""
        if self.signer is None or principal is None:
            return None
        claims = token_claims(
            issuer=self.issuer,
            audience=audience,
            subject=principal.id,
            tenant=principal.tenant,
            scopes=principal.scopes,
            seconds=seconds,
        )
        signing_input = f"{self._header}.{_part(claims)}"
        return f"Bearer {signing_input}.{b64url(self.signer.sign(signing_input.encode()))}"


def _part(content: dict[str, object]) -> str:
    return b64url(json.dumps(content, separators=(",", ":")).encode())
