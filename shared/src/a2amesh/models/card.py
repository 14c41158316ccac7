"""The Agent Card: who an agent is, where it listens, what it can do and how to authenticate to it."""

from __future__ import annotations

from pydantic import Field, model_validator

from a2amesh.models.base import A2AModel, JsonObject


class AgentInterface(A2AModel):
    """One way to reach the agent: a URL and the protocol binding spoken there."""

    url: str
    protocol_binding: str
    tenant: str | None = None
    protocol_version: str = "1.0"


class AgentProvider(A2AModel):
    """The organisation behind the agent."""

    url: str
    organization: str


class AgentExtension(A2AModel):
    """A protocol extension the agent supports. `uri` identifies it, but the spec does not mark it REQUIRED."""

    uri: str = ""
    description: str | None = None
    required: bool | None = None
    params: JsonObject | None = None


class AgentCapabilities(A2AModel):
    """Optional protocol features the agent supports."""

    streaming: bool | None = None
    push_notifications: bool | None = None
    extensions: list[AgentExtension] | None = None
    extended_agent_card: bool | None = None


class StringList(A2AModel):
    """A list of strings (the scopes a security requirement needs)."""

    items: list[str] = Field(default_factory=list, alias="list")


class SecurityRequirement(A2AModel):
    """Schemes that must all be satisfied together, each with the scopes it needs."""

    schemes: dict[str, StringList] = Field(default_factory=dict)


class APIKeySecurityScheme(A2AModel):
    """An API key sent in a header, query parameter or cookie."""

    description: str | None = None
    location: str
    name: str


class HTTPAuthSecurityScheme(A2AModel):
    """HTTP authentication such as Bearer."""

    description: str | None = None
    scheme: str
    bearer_format: str | None = None


class OAuthFlow(A2AModel):
    """Any OAuth 2.0 flow's endpoints and scopes (the union of the five flow shapes)."""

    authorization_url: str | None = None
    device_authorization_url: str | None = None
    token_url: str | None = None
    refresh_url: str | None = None
    scopes: dict[str, str] = Field(default_factory=dict)
    pkce_required: bool | None = None


class OAuthFlows(A2AModel):
    """One OAuth 2.0 flow (a proto `oneof`: two flows cannot be written, none is allowed)."""

    authorization_code: OAuthFlow | None = None
    client_credentials: OAuthFlow | None = None
    implicit: OAuthFlow | None = None
    password: OAuthFlow | None = None
    device_code: OAuthFlow | None = None

    @model_validator(mode="after")
    def _at_most_one_flow(self) -> OAuthFlows:
        present = [name for name, value in self if value is not None]
        if len(present) > 1:
            raise ValueError(f"OAuthFlows carries one flow (got {present})")
        return self


class OAuth2SecurityScheme(A2AModel):
    """OAuth 2.0."""

    description: str | None = None
    flows: OAuthFlows
    oauth2_metadata_url: str | None = None


class OpenIdConnectSecurityScheme(A2AModel):
    """OpenID Connect discovery."""

    description: str | None = None
    open_id_connect_url: str


class MutualTlsSecurityScheme(A2AModel):
    """Mutual TLS client certificates."""

    description: str | None = None


class SecurityScheme(A2AModel):
    """Exactly one of the supported security schemes."""

    api_key_security_scheme: APIKeySecurityScheme | None = None
    http_auth_security_scheme: HTTPAuthSecurityScheme | None = None
    oauth2_security_scheme: OAuth2SecurityScheme | None = None
    open_id_connect_security_scheme: OpenIdConnectSecurityScheme | None = None
    mtls_security_scheme: MutualTlsSecurityScheme | None = None

    @model_validator(mode="after")
    def _exactly_one_scheme(self) -> SecurityScheme:
        present = [name for name, value in self if value is not None]
        if len(present) != 1:
            raise ValueError(f"a SecurityScheme carries exactly one scheme (got {present or 'none'})")
        return self


class AgentSkill(A2AModel):
    """Something the agent can do. `tags` is REQUIRED by the spec; cards that omit it are read as having none."""

    id: str
    name: str
    description: str
    tags: list[str] = Field(default_factory=list)
    examples: list[str] | None = None
    input_modes: list[str] | None = None
    output_modes: list[str] | None = None
    security_requirements: list[SecurityRequirement] | None = None


class AgentCardSignature(A2AModel):
    """A JWS signature over the card."""

    protected: str
    signature: str
    header: JsonObject | None = None


class AgentCard(A2AModel):
    """The self-description an agent publishes (retained on MQTT, served at /.well-known on HTTP)."""

    name: str = Field(min_length=1)
    description: str
    supported_interfaces: list[AgentInterface] = Field(min_length=1)
    provider: AgentProvider | None = None
    version: str
    documentation_url: str | None = None
    capabilities: AgentCapabilities = Field(default_factory=AgentCapabilities)
    security_schemes: dict[str, SecurityScheme] | None = None
    security_requirements: list[SecurityRequirement] | None = None
    default_input_modes: list[str] = Field(default_factory=list)
    default_output_modes: list[str] = Field(default_factory=list)
    skills: list[AgentSkill] = Field(default_factory=list)
    signatures: list[AgentCardSignature] | None = None
    icon_url: str | None = None

    def skill_ids(self) -> list[str]:
        """The ids of every skill on the card."""
        return [skill.id for skill in self.skills]

    def tags(self) -> list[str]:
        """Every tag of every skill, once each, in order of first appearance."""
        return list(dict.fromkeys(tag for skill in self.skills for tag in skill.tags))
