"""What every card the coordinator serves gets once it is built (the root's, each agent's, the extended ones): the
interfaces of the extra bindings it serves (A2A 0.3 JSON-RPC) and a signature (A2A §8.4: a JWS over the
JCS-canonicalized card, the form the a2a-sdk's verifier checks), whose key clients fetch from the JWKS the
coordinator publishes at JWKS_PATH. Kept in one place so the cards' content (app.py, endpoints.py) and their
finishing stay apart.

The JWS (RFC 7515: base64url of the protected header and of the payload, signed) is made here rather than through
the SDK's signer, which needs PyJWT and `cryptography`: the key `make certs` issues is Ed25519 (JWS `EdDSA`, RFC
8037), signed with PyNaCl (libsodium), which costs the coordinator 0.9 MB of memory where `cryptography` costs 6.7
MB and PyJWT 4.5 MB more. An EC P-256 key (ES256) from before still works: `cryptography` is then loaded for it."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from a2a.types import a2a_pb2 as pb
from a2a.utils._jcs import canonicalize
from google.protobuf.json_format import MessageToDict
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from nacl.signing import SigningKey

JWKS_PATH = "/.well-known/jwks.json"
LEGACY_CARD_PATH = "/.well-known/agent.json"
"""Where A2A 0.3 clients look for the card."""

LEGACY_BINDINGS = ("JSONRPC", "HTTP+JSON")
"""The bindings whose routes the SDK's compat mode also serves to A2A 0.3 clients."""

ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
"""DER of a PKCS #8 Ed25519 private key (RFC 8410) before its 32-byte seed: the whole key is this plus the seed."""
P256_BYTES = 32
SIGNED_CACHE_SIZE = 256
"""Signed cards remembered by content: the card routes are public, so an unchanged card is not signed again."""


class Signer(Protocol):
    """A card-signing key: its JWS algorithm, its public JWK, and signing."""

    algorithm: str

    @property
    def public_jwk(self) -> dict[str, str]: ...

    def sign(self, data: bytes) -> bytes: ...


class Ed25519Signer:
    """EdDSA over Ed25519 with PyNaCl (the key `make certs` issues). PyNaCl is loaded on the first signature or
    public key wanted, not at start: an idle coordinator has signed nothing yet (1.1 MB of its idle memory; any
    32-byte seed is a valid key, so nothing is left unchecked at start)."""

    algorithm = "EdDSA"

    def __init__(self, seed: bytes) -> None:
        self._seed = seed

    @cached_property
    def _key(self) -> SigningKey:
        from nacl.signing import SigningKey

        return SigningKey(self._seed)

    @cached_property
    def public_jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(self._key.verify_key))}

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data).signature


class P256Signer:
    """ES256 with `cryptography`, for an EC P-256 key made before the Ed25519 one (loaded only then)."""

    algorithm = "ES256"

    def __init__(self, pem: bytes, key_file: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"{key_file}: the card-signing key must be an Ed25519 or EC P-256 private key")
        self._key = key
        numbers = key.public_key().public_numbers()
        self.public_jwk = {"kty": "EC", "crv": "P-256", "x": b64url(_p256(numbers.x)), "y": b64url(_p256(numbers.y))}

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return _p256(r) + _p256(s)  # JWS wants r || s, not DER


def load_signer(key_file: Path) -> Signer:
    """The signer of a PEM private key file: PKCS #8 Ed25519, or (older) an EC P-256 key."""
    pem = key_file.read_bytes()
    body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
    try:
        der = base64.b64decode(body, validate=True)
    except ValueError:
        raise ValueError(f"{key_file}: not a PEM private key") from None
    if len(der) == len(ED25519_PKCS8_PREFIX) + 32 and der.startswith(ED25519_PKCS8_PREFIX):
        return Ed25519Signer(der[len(ED25519_PKCS8_PREFIX) :])
    return P256Signer(pem, key_file)


class CardKey:
    """The coordinator's card-signing key (from `make certs`) and its public half as a JWKS."""

    def __init__(self, key_file: Path, jwks_url: str) -> None:
        self._signer = load_signer(key_file)
        self.jwks_url = jwks_url
        self._signed: OrderedDict[bytes, pb.AgentCard] = OrderedDict()

    # The public half, its kid and the JWS header are derived on first use: the Ed25519 signer's public key needs
    # PyNaCl, which an idle coordinator does not load (Ed25519Signer).
    @cached_property
    def kid(self) -> str:
        return jwk_thumbprint(self._signer.public_jwk)

    @cached_property
    def public_jwk(self) -> dict[str, str]:
        return {**self._signer.public_jwk, "kid": self.kid, "use": "sig", "alg": self._signer.algorithm}

    @cached_property
    def _protected(self) -> str:
        header = {"alg": self._signer.algorithm, "typ": "JOSE", "kid": self.kid, "jku": self.jwks_url}
        return b64url(json.dumps(header, separators=(",", ":")).encode())

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def sign(self, card: pb.AgentCard) -> pb.AgentCard:
        """`card` with its earlier signatures replaced by the coordinator's (a card rewritten here is vouched for
        by the coordinator, not by the agent that first signed it)."""
        unsigned = pb.AgentCard()
        unsigned.CopyFrom(card)
        del unsigned.signatures[:]
        content = unsigned.SerializeToString(deterministic=True)
        signed = self._signed.get(content)
        if signed is None:
            signed = self._signed_copy(unsigned)
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
        signature = self._signer.sign(f"{self._protected}.{payload}".encode())
        signed = pb.AgentCard()
        signed.CopyFrom(card)
        signed.signatures.add(protected=self._protected, signature=b64url(signature))
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
    """The RFC 7638 thumbprint of a public JWK (base64url SHA-256 of its required members, in order): a stable
    kid. EC keys require crv, kty, x, y; OKP keys (RFC 8037) crv, kty, x."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    required = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
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
