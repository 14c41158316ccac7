"""One standard A2A endpoint per agent, served by the coordinator under `/agents/{name}` (an agent id, or a pool
name standing for its members), and the catalogue of them at `GET /agents`.

Each endpoint is the a2a-sdk's own routes (agent card, JSON-RPC at `/agents/{name}/`, HTTP+JSON under
`/agents/{name}`) mounted with a path parameter; `AgentEndpoints`, in front of them and of the fast path, resolves
the name once per request: an unknown name is 404, an agent that is offline (or a registry that cannot say) is
503 with Retry-After, so a client never waits on an agent that is not there. The resolved endpoint rides in the
ASGI scope's state, where the handler (through `endpoint_context`) and the fast path read it, and pins every
method to that agent: sends go only to its instances, and get, list, cancel and subscribe see only its tasks."""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.routes.common import DefaultServerCallContextBuilder
from starlette.requests import Request

from a2amesh.binding.wire import POOL_EXTENSION, TASK_EVENTS_EXTENSION
from a2amesh.models import AgentCapabilities, AgentCard, AgentInterface
from mesh_coordinator.bodies import ASGIApp, Receive, Scope, Send, is_jsonrpc_path
from mesh_coordinator.directory import DependencyError
from mesh_coordinator.guard import json_reply
from mesh_coordinator.router import AgentOfflineError, Endpoint, MeshRouter, UnknownAgentError

CATALOGUE_PATH = "/agents"
AGENT_PATH = re.compile(r"^/agents/(?P<name>[^/]+)(?:/.*)?$")
RETRY_AFTER_SECONDS = 5
"""What an offline agent's endpoint tells clients to wait before trying again."""

ENDPOINT_STATE_KEY = "mesh_endpoint"
"""Where in the ASGI scope's state the endpoint a request is pinned to is kept."""

current_endpoint: ContextVar[Endpoint | None] = ContextVar("current_endpoint", default=None)
"""The endpoint of the request being served, for the SDK's card route (its card_modifier gets no request)."""

_MQTT_ONLY_EXTENSIONS = frozenset({POOL_EXTENSION, TASK_EVENTS_EXTENSION})


def agent_base_url(public_url: str, name: str) -> str:
    """The public URL of an agent's endpoint, without a trailing slash."""
    return f"{public_url.rstrip('/')}/agents/{name}"


def agent_card(endpoint: Endpoint, public_url: str, root: AgentCard) -> AgentCard:
    """The agent's own card (its name, description, skills, modes) as reached through the coordinator: the
    coordinator's URLs for it on every binding the coordinator serves, the coordinator's security schemes and
    capabilities (streaming yes, push notifications no), and none of the MQTT-only extensions or signatures."""
    card = endpoint.card
    base = agent_base_url(public_url, endpoint.name)
    extensions = [e for e in card.capabilities.extensions or [] if e.uri not in _MQTT_ONLY_EXTENSIONS]
    return card.model_copy(
        update={
            "supported_interfaces": [
                AgentInterface(url=f"{base}/", protocol_binding="JSONRPC", protocol_version="1.0"),
                AgentInterface(url=base, protocol_binding="HTTP+JSON", protocol_version="1.0"),
            ],
            "provider": card.provider or root.provider,
            "capabilities": AgentCapabilities(
                streaming=True, push_notifications=True, extended_agent_card=False, extensions=extensions or None
            ),
            "security_schemes": root.security_schemes,
            "security_requirements": root.security_requirements,
            "signatures": None,
        }
    )


def catalogue(endpoints: dict[str, Endpoint], public_url: str) -> dict[str, Any]:
    """`GET /agents`: every online endpoint with its card URL, for a client or an orchestrator to pick from."""
    entries = []
    for name, endpoint in endpoints.items():
        card = endpoint.card
        base = agent_base_url(public_url, name)
        entries.append(
            {
                "name": name,
                "title": card.name,
                "description": card.description,
                "url": f"{base}/",
                "cardUrl": f"{base}/.well-known/agent-card.json",
                "skills": [skill.id for skill in card.skills],
                "instances": len(endpoint.records),
            }
        )
    return {"agents": entries}


def endpoint_of(context: ServerCallContext) -> Endpoint | None:
    """The endpoint a call of the a2a-sdk routes is pinned to (None at the root)."""
    endpoint = context.state.get("endpoint")
    return endpoint if isinstance(endpoint, Endpoint) else None


def scope_endpoint(scope: Scope) -> Endpoint | None:
    """The endpoint the gate resolved for this request (None at the root)."""
    return (scope.get("state") or {}).get(ENDPOINT_STATE_KEY)


class EndpointContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, plus the endpoint the request is pinned to."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["endpoint"] = scope_endpoint(request.scope)
        return context


class AgentEndpoints:
    """ASGI middleware: serves the catalogue, and resolves `/agents/{name}/...` before `app` sees the request."""

    def __init__(self, app: ASGIApp, router: MeshRouter, public_url: str) -> None:
        self.app = app
        self.router = router
        self.public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.rstrip("/") == CATALOGUE_PATH and scope["method"] == "GET":
            await self._catalogue(scope, send)
            return
        match = AGENT_PATH.match(path)
        if match is None:
            await self.app(scope, receive, send)
            return
        try:
            endpoint = await self.router.endpoint(match["name"])
        except UnknownAgentError as error:
            await _refuse(scope, send, 404, str(error))
            return
        except (AgentOfflineError, DependencyError) as error:
            await _refuse(scope, send, 503, str(error), retry_after=RETRY_AFTER_SECONDS)
            return
        scope.setdefault("state", {})[ENDPOINT_STATE_KEY] = endpoint
        token = current_endpoint.set(endpoint)
        try:
            await self.app(scope, receive, send)
        finally:
            current_endpoint.reset(token)

    async def _catalogue(self, scope: Scope, send: Send) -> None:
        try:
            endpoints = await self.router.endpoints()
        except DependencyError as error:
            await _refuse(scope, send, 503, str(error), retry_after=RETRY_AFTER_SECONDS)
            return
        await json_reply(send, 200, catalogue(endpoints, self.public_url), [(b"cache-control", b"no-cache")])


async def _refuse(scope: Scope, send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    """A clear error in the format of the route asked for: JSON-RPC's envelope at the JSON-RPC URL (with the HTTP
    status too, so a client that only looks at that still sees it), else HTTP+JSON's error object."""
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
    if scope["method"] == "POST" and is_jsonrpc_path(scope["path"]):
        code = -32602 if status == 404 else -32603
        data = {"retryable": retry_after is not None}
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message, "data": data}}
    else:
        state = "NOT_FOUND" if status == 404 else "UNAVAILABLE"
        body = {"error": {"code": status, "status": state, "message": message}}
    await json_reply(send, status, body, headers)
