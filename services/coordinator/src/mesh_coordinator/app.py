"""The coordinator's HTTP face: a2a-sdk's routes (agent card, JSON-RPC, HTTP+JSON with SSE) plus health."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.types import a2a_pb2 as pb
from a2a.utils import errors as sdk_errors
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from a2amesh.models import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    OpenIdConnectSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2amesh.observability import health_routes
from a2amesh.sdk import to_proto
from a2amesh.settings import CoordinatorSettings
from mesh_coordinator.auth import ApiKeys, Authenticator, JwtPolicy, TokenVerifier, current_principal
from mesh_coordinator.bodies import JSONRPC_PATH, StrictJsonBodies
from mesh_coordinator.cards import JWKS_PATH, LEGACY_CARD_PATH, CardFinisher, CardKey
from mesh_coordinator.directory import DependencyError, RegistryClient
from mesh_coordinator.endpoints import AgentEndpoints, EndpointContextBuilder, agent_card, current_endpoint
from mesh_coordinator.extended import ExtendedCards
from mesh_coordinator.fastpath import FastSendPath
from mesh_coordinator.guard import GuardPolicy, RequestGuard
from mesh_coordinator.handler import MeshRequestHandler
from mesh_coordinator.ratelimit import rate_limiter
from mesh_coordinator.router import Endpoint

log = logging.getLogger(__name__)

DEAD_LETTERS_PATH = "/push/dead-letters"
"""Push deliveries given up on (mesh_coordinator.push), readable by their tasks' owners."""

CARD_SKILLS_TTL = 5.0
"""Seconds the skills listed on the coordinator's card (the mesh's live skills) are cached."""

SSE_SHUTDOWN_GRACE = 2.0
"""Seconds an open event stream of the a2a-sdk routes may go on once the server begins to stop."""


def security_of(settings: CoordinatorSettings | None) -> tuple[dict[str, SecurityScheme], list[SecurityRequirement]]:
    """The schemes the guard accepts, as the card declares them: a bearer credential (a JWT of the configured issuer
    when there is one, else an API key), the API key in X-API-Key, and the issuer's OpenID Connect discovery when
    it is configured. Each requirement is an alternative."""
    jwt_issuer = settings.jwt_issuer if settings else None
    bearer = "an API key of the mesh" + (f", or a JWT access token from {jwt_issuer}" if jwt_issuer else "")
    schemes = {
        "bearer": SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="Bearer", bearer_format="JWT" if jwt_issuer else None, description=bearer
            )
        ),
        "apiKey": SecurityScheme(
            api_key_security_scheme=APIKeySecurityScheme(
                location="header", name="X-API-Key", description="the same API key, in a header"
            )
        ),
    }
    if settings is not None and settings.jwt_openid_config_url:
        schemes["oidc"] = SecurityScheme(
            open_id_connect_security_scheme=OpenIdConnectSecurityScheme(
                open_id_connect_url=settings.jwt_openid_config_url,
                description="scopes: send, read, cancel, admin",
            )
        )
    return schemes, [SecurityRequirement(schemes={name: StringList()}) for name in schemes]


def coordinator_card(
    public_url: str, org: str, skills: list[AgentSkill], settings: CoordinatorSettings | None = None
) -> AgentCard:
    """The card of the whole mesh as one A2A agent: its skills are those of the agents online behind it."""
    base = public_url.rstrip("/")
    schemes, requirements = security_of(settings)
    return AgentCard(
        name="A2A Mesh Coordinator",
        description="Front door of an A2A mesh over MQTT: delegates each task to a live specialist agent by skill "
        "(metadata.skill names one; without it the skill whose card text best matches the message is chosen, and "
        "metadata.routing says why). Every agent also has its own endpoint: GET /agents lists them.",
        supported_interfaces=[
            AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=base, protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        provider=AgentProvider(organization=org, url=base),
        version="0.1.0",
        capabilities=AgentCapabilities(streaming=True, push_notifications=True, extended_agent_card=False),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        skills=skills,
        security_schemes=schemes,
        security_requirements=requirements,
    )


class MeshSkills:
    """The skills of the agents online right now, cached briefly, for the coordinator's card."""

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry
        self._skills: list[AgentSkill] = []
        self._fetched = 0.0

    async def current(self) -> list[AgentSkill]:
        if time.monotonic() - self._fetched > CARD_SKILLS_TTL:
            try:
                records = await self.registry.agents(status="online")
            except DependencyError as error:
                log.warning("card skills not refreshed: %s", error)
                return self._skills
            by_id: dict[str, AgentSkill] = {}
            for record in records:
                for skill in AgentCard.from_wire(record["card"]).skills:
                    by_id.setdefault(skill.id, skill)
            self._skills = sorted(by_id.values(), key=lambda skill: skill.id)
            self._fetched = time.monotonic()
        return self._skills


def card_finisher(settings: CoordinatorSettings, public_url: str) -> CardFinisher:
    """Signs with the configured key (cards go unsigned without one), its JWKS published at JWKS_PATH."""
    key_file = settings.card_signing_key_file
    key = CardKey(key_file, f"{public_url.rstrip('/')}{JWKS_PATH}") if key_file is not None else None
    return CardFinisher(key, grpc_url(settings, public_url), extended_card=True, legacy_interfaces=True)


def grpc_url(settings: CoordinatorSettings, public_url: str) -> str | None:
    """Where clients reach the gRPC binding: MESH_GRPC_PUBLIC_URL, else the public URL's host on MESH_GRPC_PORT."""
    if settings.grpc_port is None:
        return None
    if settings.grpc_public_url:
        return settings.grpc_public_url
    host = urlsplit(public_url).hostname or settings.http_host
    return f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"


def build_app(handler: MeshRequestHandler, registry: RegistryClient, public_url: str) -> RequestGuard:
    """The Starlette app serving A2A v1.0 for the whole mesh."""
    settings = handler.settings
    base_card = coordinator_card(public_url, settings.org, [], settings)
    skills = MeshSkills(registry)
    finisher = card_finisher(settings, public_url)

    async def built_card(endpoint: Endpoint | None) -> pb.AgentCard:
        """The root's card with the live skills, or an endpoint's card, before finishing."""
        if endpoint is not None:
            return to_proto(agent_card(endpoint, public_url, base_card), pb.AgentCard)
        return to_proto(coordinator_card(public_url, settings.org, await skills.current(), settings), pb.AgentCard)

    async def card_with_live_skills(_card: pb.AgentCard) -> pb.AgentCard:
        return finisher.finish(await built_card(None))

    handler.extended_cards = ExtendedCards(handler.router, built_card, finisher, handler.hub.in_flight_to).card

    async def ready() -> dict[str, bool]:
        return {"broker": handler.requester.link.connected.is_set()}

    async def audit(request: Request) -> JSONResponse:
        """The audit trail, newest first, for operators only (principal=, taskId=, method=, limit=)."""
        principal = current_principal.get()
        if principal is None or not principal.is_operator:
            return JSONResponse({"error": "the audit trail needs the admin scope"}, status_code=403)
        query = request.query_params
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else 100
        records = handler.audit.query(query.get("principal"), query.get("taskId"), query.get("method"), limit)
        handler.audit.record(principal, "ReadAudit", "ok")
        return JSONResponse({"records": records})

    async def dead_letters(_request: Request) -> JSONResponse:
        """Push deliveries that ran out of retries, for the caller's own tasks (an operator: everyone's)."""
        principal = current_principal.get()
        if principal is None or not principal.may("read"):
            return JSONResponse({"error": "reading dead letters needs the read scope"}, status_code=403)
        try:
            letters = await handler.push.dead_letters(principal)
        except sdk_errors.A2AError as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        return JSONResponse({"deadLetters": letters})

    routes = [
        *health_routes(handler.metrics, ready),
        Route("/audit", audit, methods=["GET"]),
        Route(DEAD_LETTERS_PATH, dead_letters, methods=["GET"]),
        agent_mount(handler, public_url, base_card, finisher),
        *finisher.routes(),
        *[
            route
            for path in (AGENT_CARD_WELL_KNOWN_PATH, LEGACY_CARD_PATH)
            for route in create_agent_card_routes(
                to_proto(base_card, pb.AgentCard),
                card_modifier=card_with_live_skills,
                card_url=path,
                cache_control="public, max-age=5",
            )
        ],
        *create_jsonrpc_routes(
            handler, rpc_url=JSONRPC_PATH, enable_v0_3_compat=True, shutdown_grace_period=SSE_SHUTDOWN_GRACE
        ),
        *create_rest_routes(handler, enable_v0_3_compat=True, shutdown_grace_period=SSE_SHUTDOWN_GRACE),
    ]
    policy = GuardPolicy(settings.max_body_bytes, settings.rate_limit, settings.rate_burst)
    app = AgentEndpoints(FastSendPath(Starlette(routes=routes), handler), handler.router, public_url)
    limiter = rate_limiter(
        settings.rate_limit,
        settings.rate_burst,
        settings.rate_limit_redis_url,
        settings.rate_limit_redis_password_file,
    )
    return RequestGuard(StrictJsonBodies(app), policy, authenticator(settings, public_url), handler.audit, limiter)


def authenticator(settings: CoordinatorSettings, public_url: str) -> Authenticator:
    """API keys from MESH_API_KEYS and MESH_API_KEYS_FILE, and JWTs when an issuer is configured."""
    verifier: TokenVerifier | None = None
    if settings.jwt_issuer:
        from mesh_coordinator.jwtauth import JwtVerifier  # PyJWT: only for a mesh that accepts JWTs

        issuer = settings.jwt_issuer.rstrip("/")
        policy = JwtPolicy(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience or public_url,
            jwks_url=settings.jwt_jwks_url or f"{issuer}/.well-known/jwks.json",
            algorithms=tuple(settings.jwt_algorithms),
            tenant_claim=settings.jwt_tenant_claim,
        )
        verifier = JwtVerifier(policy)
    return Authenticator(ApiKeys(settings.api_keys, settings.api_keys_file), verifier)


def agent_mount(
    handler: MeshRequestHandler, public_url: str, root_card: AgentCard, finisher: CardFinisher
) -> BaseRoute:
    """`/agents/{agent}`: the a2a-sdk's card, JSON-RPC and HTTP+JSON routes once more, pinned to one agent
    (mesh_coordinator.endpoints resolves it in front of them). Mounted before the root's HTTP+JSON routes, whose
    `/{tenant}` mount would otherwise take these paths."""

    async def card_of_agent(_card: pb.AgentCard) -> pb.AgentCard:
        endpoint = current_endpoint.get()
        if endpoint is None:
            raise HTTPException(404, "no such agent")
        card = to_proto(agent_card(endpoint, public_url, root_card), pb.AgentCard)
        return finisher.finish(card, endpoint.name)

    context = EndpointContextBuilder()
    return Mount(
        "/agents/{agent}",
        routes=[
            *[
                route
                for path in (AGENT_CARD_WELL_KNOWN_PATH, LEGACY_CARD_PATH)
                for route in create_agent_card_routes(
                    to_proto(root_card, pb.AgentCard),
                    card_modifier=card_of_agent,
                    card_url=path,
                    cache_control="no-cache",
                )
            ],
            *create_jsonrpc_routes(
                handler,
                rpc_url="/",
                context_builder=context,
                enable_v0_3_compat=True,
                shutdown_grace_period=SSE_SHUTDOWN_GRACE,
            ),
            *create_rest_routes(
                handler, context_builder=context, enable_v0_3_compat=True, shutdown_grace_period=SSE_SHUTDOWN_GRACE
            ),
        ],
    )
