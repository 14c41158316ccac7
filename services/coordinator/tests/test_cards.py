"""Card signatures made without PyJWT verify with the a2a-sdk's verifier: the Ed25519 key `make certs` issues
(EdDSA) and an EC P-256 key from before (ES256); a changed card or another key does not verify."""

from __future__ import annotations

from pathlib import Path

import pytest
from a2a.types import a2a_pb2 as pb
from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt import PyJWK

from mesh_coordinator.cards import CardKey

JWKS_URL = "https://mesh.example/.well-known/jwks.json"
KEYS = {
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
}


def card() -> pb.AgentCard:
    card = pb.AgentCard(name="Mesh", description="dé-jà vu: non-ASCII must survive canonicalization", version="1")
    card.supported_interfaces.add(url="https://mesh.example/", protocol_binding="JSONRPC", protocol_version="1.0")
    card.skills.add(id="echo", name="Echo", description="", tags=["test"])  # an empty string is left out
    return card


def write_key(path: Path, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path


def published(kid: str, jwk: dict[str, str]):
    """The verifier's key lookup: the published key whatever kid a signature names (as a forger would hope)."""

    def key_for(_kid: str | None, jku: str | None) -> PyJWK:
        assert jku == JWKS_URL
        return PyJWK({**jwk, "kid": kid})

    return key_for


@pytest.mark.parametrize("algorithm", KEYS)
def test_signed_cards_verify_with_the_sdk_and_changes_do_not(tmp_path: Path, algorithm: str) -> None:
    key = CardKey(write_key(tmp_path / "card.key", KEYS[algorithm]()), JWKS_URL)
    (jwk,) = key.jwks()["keys"]
    assert jwk["alg"] == algorithm and "d" not in jwk
    verify = create_signature_verifier(
        lambda kid, jku: PyJWK(jwk) if (kid, jku) == (key.kid, JWKS_URL) else None, [algorithm]
    )
    signed = key.sign(card())
    verify(signed)
    again = key.sign(signed)  # signing a signed card replaces its signature, never stacks them
    assert len(again.signatures) == 1
    verify(again)
    changed = pb.AgentCard()
    changed.CopyFrom(signed)
    changed.skills[0].tags.append("admin")
    with pytest.raises(InvalidSignaturesError):
        verify(changed)
    stranger = CardKey(write_key(tmp_path / "other.key", KEYS[algorithm]()), JWKS_URL).jwks()["keys"][0]
    with pytest.raises(InvalidSignaturesError):  # the published key swapped for another one under the same kid
        create_signature_verifier(published(key.kid, stranger), [algorithm])(signed)


def test_a_key_of_another_kind_is_refused(tmp_path: Path) -> None:
    rsa_pem = tmp_path / "rsa.key"
    from cryptography.hazmat.primitives.asymmetric import rsa

    write_key(rsa_pem, rsa.generate_private_key(public_exponent=65537, key_size=2048))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Ed25519 or EC P-256"):
        CardKey(rsa_pem, JWKS_URL)
    (tmp_path / "junk.key").write_text("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not a PEM"):
        CardKey(tmp_path / "junk.key", JWKS_URL)
