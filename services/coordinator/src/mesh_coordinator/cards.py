"""What every card the coordinator serves gets once it is built (the root's, each agent's, the extended ones): the
interfaces of the extra bindings it serves (A2A 0.3 JSON-RPC) and a signature (A2A §8.4: a JWS over the
JCS-canonicalized card, made with the a2a-sdk's signer), whose key clients fetch from the JWKS the coordinator
publishes at JWKS_PATH. Kept in one place so the cards' content (app.py, endpoints.py) and their finishing stay
apart."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a2a.types import a2a_pb2 as pb
from a2a.utils.signing import create_agent_card_signer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

JWKS_PATH = "/.well-known/jwks.json"
LEGACY_CARD_PATH = "/.well-known/agent.json"
"""Where A2A 0.3 clients look for the card."""

LEGACY_BINDINGS = ("JSONRPC", "HTTP+JSON")
"""The bindings whose routes the SDK's compat mode also serves to A2A 0.3 clients."""

SIGNING_ALGORITHM = "ES256"
SIGNED_CACHE_SIZE = 256
"""Signed cards remembered by content: the card routes are public, so an unchanged card is not signed again."""


class CardKey:
    """The coordinator's card-signing key (EC P-256, from `make certs`) and its public half as a JWKS."""

    def __init__(self, key_file: Path, jwks_url: str) -> None:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{key_file}: the card-signing key must be an EC P-256 private key")
        public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.kid = jwk_thumbprint(public)
        self.public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": SIGNING_ALGORITHM}
        self.jwks_url = jwks_url
        self._sign = create_agent_card_signer(
            key,  # type: ignore[arg-type]  # PyJWT takes a cryptography key object too
            {"alg": SIGNING_ALGORITHM, "typ": "JOSE", "kid": self.kid, "jku": jwks_url},
        )
        self._signed: OrderedDict[bytes, pb.AgentCard] = OrderedDict()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def sign(self, card: pb.AgentCard) -> pb.AgentCard:
        """`card` with its earlier signatures replaced by the coordinator's (a card rewritten here is vouched for
        by the coordinator, not by the agent that first signed it)."""
        del card.signatures[:]
        content = card.SerializeToString(deterministic=True)
        signed = self._signed.get(content)
        if signed is None:
            signed = self._sign(card)
            self._signed[content] = signed
            if len(self._signed) > SIGNED_CACHE_SIZE:
                self._signed.popitem(last=False)
        else:
            self._signed.move_to_end(content)
        result = pb.AgentCard()
        result.CopyFrom(signed)
        return result


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint of an EC public JWK (base64url SHA-256 of its required members): a stable kid."""
    required = json.dumps({name: jwk[name] for name in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    digest = hashlib.sha256(required.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class CardFinisher:
    """Adds what the coordinator's serving adds to a card: the 0.3 interfaces, then the signature (last, so it
    covers everything)."""

    key: CardKey | None
    grpc_url: str | None = None
    """host:port of the gRPC binding, listed in every card (an agent's with its name as `tenant`)."""
    extended_card: bool = False
    """Whether GetExtendedAgentCard is served (mesh_coordinator.extended): the cards then say so."""
    legacy_interfaces: bool = False
    """Whether the JSON-RPC and HTTP+JSON routes also serve A2A 0.3 (the SDK's compat mode): each 1.0 interface of
    those bindings then gets a 0.3 twin at the same URL, which the SDK turns into the 0.3 card's `url`,
    `preferredTransport` and `additionalInterfaces` (served at /.well-known/agent.json too)."""

    def finish(self, card: pb.AgentCard, tenant: str = "") -> pb.AgentCard:
        """`card` finished; `tenant` is the agent endpoint's name (the gRPC requests' tenant), "" at the root."""
        finished = pb.AgentCard()
        finished.CopyFrom(card)
        if self.grpc_url is not None:
            finished.supported_interfaces.add(
                url=self.grpc_url, protocol_binding="GRPC", protocol_version="1.0", tenant=tenant
            )
        finished.capabilities.extended_agent_card = self.extended_card
        for interface in list(card.supported_interfaces) if self.legacy_interfaces else []:
            if interface.protocol_binding in LEGACY_BINDINGS and interface.protocol_version == "1.0":
                finished.supported_interfaces.add(
                    url=interface.url,
                    protocol_binding=interface.protocol_binding,
                    protocol_version="0.3",
                    tenant=interface.tenant,
                )
        return self.key.sign(finished) if self.key is not None else finished

    def routes(self) -> list[Route]:
        """`GET /.well-known/jwks.json`: the public key the signatures verify with (empty without a key)."""

        async def jwks(_request: Request) -> JSONResponse:
            keys = self.key.jwks() if self.key is not None else {"keys": []}
            return JSONResponse(keys, headers={"Cache-Control": "public, max-age=300"})

        return [Route(JWKS_PATH, jwks, methods=["GET"])]
