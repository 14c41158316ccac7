"""What every card the coordinator serves gets once it is built (the root's, each agent's, the extended ones): the
interfaces of the extra bindings it serves (A2A 0.3 JSON-RPC) and a signature (A2A §8.4: a JWS over the
JCS-canonicalized card, the form the a2a-sdk's verifier checks), whose key clients fetch from the JWKS the
coordinator publishes at JWKS_PATH. Kept in one place so the cards' content (app.py, endpoints.py) and their
finishing stay apart.

The JWS is made here with `cryptography`'s ECDSA (ES256: base64url of the protected header and the payload, the
signature as r || s) rather than through the SDK's signer, which needs PyJWT: PyJWT loads X.509, RSA and its JWKS
client along with the EC code, 4.5 MB of the coordinator's idle memory for one algorithm."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a2a.types import a2a_pb2 as pb
from a2a.utils._jcs import canonicalize
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from google.protobuf.json_format import MessageToDict
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

JWKS_PATH = "/.well-known/jwks.json"
LEGACY_CARD_PATH = "/.well-known/agent.json"
"""Where A2A 0.3 clients look for the card."""

LEGACY_BINDINGS = ("JSONRPC", "HTTP+JSON")
"""The bindings whose routes the SDK's compat mode also serves to A2A 0.3 clients."""

SIGNING_ALGORITHM = "ES256"
P256_BYTES = 32
SIGNED_CACHE_SIZE = 256
"""Signed cards remembered by content: the card routes are public, so an unchanged card is not signed again."""


class CardKey:
    """The coordinator's card-signing key (EC P-256, from `make certs`) and its public half as a JWKS."""

    def __init__(self, key_file: Path, jwks_url: str) -> None:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{key_file}: the card-signing key must be an EC P-256 private key")
        numbers = key.public_key().public_numbers()
        public = {"kty": "EC", "crv": "P-256", "x": b64url(_p256(numbers.x)), "y": b64url(_p256(numbers.y))}
        self.kid = jwk_thumbprint(public)
        self.public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": SIGNING_ALGORITHM}
        self.jwks_url = jwks_url
        self._key = key
        header = {"alg": SIGNING_ALGORITHM, "typ": "JOSE", "kid": self.kid, "jku": jwks_url}
        self._protected = b64url(json.dumps(header, separators=(",", ":")).encode())
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
            signed = self._signed_copy(card)
            self._signed[content] = signed
            if len(self._signed) > SIGNED_CACHE_SIZE:
                self._signed.popitem(last=False)
        else:
            self._signed.move_to_end(content)
        result = pb.AgentCard()
        result.CopyFrom(signed)
        return result

    def _signed_copy(self, card: pb.AgentCard) -> pb.AgentCard:
        """`card` with a JWS (RFC 7515, detached-payload form of A2A §8.4) over its canonical form."""
        payload = b64url(canonical_card(card).encode())
        der = self._key.sign(f"{self._protected}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signed = pb.AgentCard()
        signed.CopyFrom(card)
        signed.signatures.add(protected=self._protected, signature=b64url(_p256(r) + _p256(s)))
        return signed


def canonical_card(card: pb.AgentCard) -> str:
    """The card as A2A §8.4 signs it: its JSON without `signatures` and without empty values, JCS-canonicalized
    (RFC 8785), which is what the a2a-sdk's verifier recomputes."""
    content = MessageToDict(card)
    content.pop("signatures", None)
    return canonicalize(_without_empty(content))


def _without_empty(value: Any) -> Any:
    """`value` without empty strings, lists and objects, at any depth (None when nothing is left)."""
    if isinstance(value, dict):
        kept = {key: inner for key, item in value.items() if (inner := _without_empty(item)) is not None}
        return kept or None
    if isinstance(value, list):
        items = [inner for item in value if (inner := _without_empty(item)) is not None]
        return items or None
    return None if value == "" else value


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _p256(number: int) -> bytes:
    return number.to_bytes(P256_BYTES, "big")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint of an EC public JWK (base64url SHA-256 of its required members): a stable kid."""
    required = json.dumps({name: jwk[name] for name in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return b64url(hashlib.sha256(required.encode()).digest())


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
