"""Health and metrics, the same on every service: GET /livez (the process answers), GET /healthz (ready: its
connections are up), GET /metrics (Prometheus text). Each process has its own metrics registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns each dependency's state, e.g. {"broker": True, "database": False}; ready when all are True."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ServiceMetrics:
    """The metrics every mesh service reports, on a registry of its own."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # resident memory, CPU seconds, open fds
        self.tasks = Counter(
            "mesh_tasks",
            "Tasks that reached a final or interrupted state, by state",
            ["service", "state"],
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "mesh_task_duration_seconds",
            "Time from request to final state",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("mesh_tasks_in_flight", "Tasks running now", ["service"], registry=self.registry)
        self.mqtt_reconnects = Gauge(
            "mesh_mqtt_reconnects", "MQTT reconnects since start", ["service"], registry=self.registry
        )
        self.messages = Counter(
            "mesh_mqtt_messages", "MQTT messages handled, by outcome", ["service", "outcome"], registry=self.registry
        )
        self.service = service
        self._tasks_by_state: dict[str, Any] = {}
        self._task_seconds = self.task_seconds.labels(service)

    def task_ended(self, state: str, seconds: float | None) -> None:
        """Count one task reaching `state` (a TaskState name), with its duration when known."""
        counter = self._tasks_by_state.get(state)
        if counter is None:  # looked up once per state: the labelled child is the same every time
            counter = self._tasks_by_state[state] = self.tasks.labels(self.service, state)
        counter.inc()
        if seconds is not None:
            self._task_seconds.observe(seconds)

    def track_in_flight(self, read: Callable[[], float]) -> None:
        """Report in-flight tasks by reading them at scrape time."""
        self.in_flight.labels(self.service).set_function(read)

    def track_reconnects(self, read: Callable[[], float]) -> None:
        """Report MQTT reconnects by reading a counter at scrape time."""
        self.mqtt_reconnects.labels(self.service).set_function(read)

    def message(self, outcome: str) -> None:
        """Count one MQTT message handled (e.g. "ok", "invalid", "duplicate")."""
        self.messages.labels(self.service, outcome).inc()


def health_routes(metrics: ServiceMetrics, ready: ReadinessCheck | None = None) -> list[Route]:
    """The operational endpoints for a Starlette app: /livez and /metrics, and /healthz when `ready` is given
    (services with a richer readiness answer of their own keep it)."""
    from starlette.responses import JSONResponse, Response  # the HTTP side: a2amesh[http]
    from starlette.routing import Route

    async def livez(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def healthz(request: Request) -> JSONResponse:
        assert ready is not None
        checks = dict(await ready())
        ok = all(checks.values())
        body = {
            "status": "ok" if ok else "unavailable",
            **{name: "up" if up else "down" for name, up in checks.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/livez", livez, methods=["GET"]), Route("/metrics", prometheus, methods=["GET"])]
    if ready is not None:
        routes.append(Route("/healthz", healthz, methods=["GET"]))
    return routes
