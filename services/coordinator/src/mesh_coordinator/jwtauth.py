"""Bearer JWTs from an OAuth2/OIDC issuer, checked with PyJWT against the issuer's JWKS. Imported only when
MESH_JWT_ISSUER is set: PyJWT and the parts of `cryptography` it loads (X.509, RSA, the JWKS client) cost the
coordinator about 4.5 MB of memory, which a mesh that authenticates with API keys alone does not pay."""

from __future__ import annotations

import jwt

from mesh_coordinator.auth import JwtPolicy, Principal, TokenRefused, token_scopes


class JwtVerifier:
    """Checks signature (a key of the issuer's JWKS, cached and refetched on an unknown `kid`), issuer, audience,
    expiry and algorithm (allow-listed: never `none`, never an HMAC with a public key)."""

    def __init__(self, policy: JwtPolicy) -> None:
        if not policy.algorithms or any(a.lower() == "none" or a.startswith("HS") for a in policy.algorithms):
            raise ValueError("JWT algorithms must be asymmetric (RS*, PS*, ES*, EdDSA)")
        self.policy = policy
        self.jwks = jwt.PyJWKClient(policy.jwks_url, cache_keys=True, lifespan=300, timeout=10)

    def verify(self, token: str) -> Principal:
        """The token's caller; TokenRefused when it is not acceptable (PyJWKClientError, JWKS unreachable or an
        unknown kid, is a PyJWTError too)."""
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(self.policy.algorithms),
                audience=self.policy.audience,
                issuer=self.policy.issuer,
                leeway=self.policy.leeway_seconds,
                options={"require": list(self.policy.required_claims)},
            )
        except jwt.PyJWTError as error:
            raise TokenRefused(str(error)) from error
        return Principal(f"jwt:{claims['sub']}", token_scopes(claims), str(claims.get(self.policy.tenant_claim) or ""))
