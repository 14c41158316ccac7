"""What the coordinator hands an agent that asks for per-request authorization: a token it mints for that agent's
request topic and this caller (a2amesh.tokens), signed with its card-signing key, whose public half it serves at
/.well-known/jwks.json. Never the caller's own key: an agent that collects tokens can replay them nowhere else,
and only for minutes."""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm

from a2amesh.tokens import mint
from mesh_coordinator.auth import Principal
from mesh_coordinator.cards import jwk_thumbprint

log = logging.getLogger(__name__)


class AgentTokens:
    """Mints `Bearer <token>` for one audience and caller; without a signing key, none (such agents refuse)."""

    def __init__(self, key_file: Path | None, issuer: str) -> None:
        self.issuer = issuer.rstrip("/")
        self._key = None
        self.kid = ""
        if key_file is None:
            log.warning("no card-signing key: agents that ask for per-request authorization will refuse requests")
            return
        self._key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        self.kid = jwk_thumbprint(ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True))  # type: ignore[arg-type]

    def bearer(self, audience: str, principal: Principal | None) -> str | None:
        """The token for a request published on `audience` (a request topic) on behalf of `principal`."""
        if self._key is None or principal is None:
            return None
        token = mint(
            self._key,
            self.kid,
            issuer=self.issuer,
            audience=audience,
            subject=principal.id,
            tenant=principal.tenant,
            scopes=principal.scopes,
        )
        return f"Bearer {token}"
