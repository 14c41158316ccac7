"""The registry's HTTP API: health, and agent lookup by skill, tag and status (read-only; cards arrive by MQTT)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a2amesh.observability import ServiceMetrics, health_routes
from a2amesh.topics import AgentAddress, TopicError
from mesh_registry.index import AgentIndex, Status

PING_TIMEOUT = 1.0
"""Seconds /healthz waits for Redis before calling it down."""


class BadRequest(ValueError):
    """A query the API refuses (the message is returned to the caller)."""


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"give {name} at most once")
    if not values[0]:
        raise BadRequest(f"{name} must not be empty")
    return values[0]


def create_app(
    index: AgentIndex, mqtt_connected: Callable[[], bool], metrics: ServiceMetrics | None = None
) -> Starlette:
    """The Starlette app over `index`; `mqtt_connected` tells whether the consumer is connected, for /healthz."""

    async def healthz(request: Request) -> JSONResponse:
        down = [] if mqtt_connected() else ["mqtt"]
        try:
            await asyncio.wait_for(index.redis.ping(), timeout=PING_TIMEOUT)
        except (RedisError, OSError, TimeoutError):
            down.insert(0, "redis")
        if down:
            return JSONResponse({"status": "unavailable", "down": down}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def list_agents(request: Request) -> JSONResponse:
        try:
            skill = _single(request, "skill")
            tag = _single(request, "tag")
            status_text = _single(request, "status")
            status = Status(status_text) if status_text is not None else None
        except BadRequest as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        except ValueError:
            return JSONResponse({"error": f"status must be online or offline, got {status_text!r}"}, status_code=400)
        return JSONResponse({"agents": await index.find(skill=skill, tag=tag, status=status)})

    async def get_agent(request: Request) -> JSONResponse:
        params = request.path_params
        try:
            address = AgentAddress(params["org"], params["unit"], params["agent"])
        except TopicError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        record = await index.get(address)
        if record is None:
            return JSONResponse({"error": "agent not found"}, status_code=404)
        return JSONResponse(record)

    async def redis_down(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"index unavailable: {error}"}, status_code=503)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/agents", list_agents, methods=["GET"]),
        Route("/agents/{org}/{unit}/{agent}", get_agent, methods=["GET"]),
        *health_routes(metrics or ServiceMetrics("registry")),
    ]
    return Starlette(routes=routes, exception_handlers={RedisError: redis_down, ConnectionError: redis_down})
