"""Health and metrics, the same on every service: GET /livez (the process answers), GET /healthz (ready: its
connections are up), GET /metrics (Prometheus text). Each process has its own metrics registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
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
from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns each dependency's state, e.g. {"broker": True, "database": False}; ready when all are True."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


MAX_LABEL_VALUES = 64
"""Distinct skills (or agents) a service labels its task metrics with; later ones are counted as "other", so a
caller naming made-up skills cannot grow the metrics without bound."""

OTHER = "other"


class _BoundedLabel:
    """The values one label has taken, at most MAX_LABEL_VALUES of them."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        value = value or ""
        if value in self.seen:
            return value
        if len(self.seen) >= MAX_LABEL_VALUES:
            return OTHER
        self.seen.add(value)
        return value


class _ReadCounter:
    """A counter whose value is read at scrape time (MQTT reconnects, which the link counts itself)."""

    def __init__(self, name: str, documentation: str, service: str, read: Callable[[], float]) -> None:
        self.name, self.documentation, self.service, self.read = name, documentation, service, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=["service"])
        family.add_metric([self.service], self.read())
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=["service"])


class ServiceMetrics:
    """The metrics every mesh service reports, on a registry of its own (names as Prometheus asks: base units,
    `_total` on counters; labels of bounded cardinality: service, state, skill, agent, outcome)."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # resident memory, CPU seconds, open fds
        self.tasks = Counter(
            "mesh_tasks",
            "Tasks that reached a final or interrupted state, by state, skill and the agent that ran them",
            ["service", "state", "skill", "agent"],
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "mesh_task_duration_seconds",
            "Time from request to final state, by skill and agent",
            ["service", "skill", "agent"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("mesh_tasks_in_flight", "Tasks running now", ["service"], registry=self.registry)
        self.messages = Counter(
            "mesh_mqtt_messages", "MQTT messages handled, by outcome", ["service", "outcome"], registry=self.registry
        )
        self.service = service
        self._skills = _BoundedLabel()
        self._agents = _BoundedLabel()
        self._reconnects: _ReadCounter | None = None
        self._by_labels: dict[tuple[str, str | None, str | None], tuple[Any, Any]] = {}

    def task_ended(self, state: str, seconds: float | None, skill: Any = None, agent: str | None = None) -> None:
        """Count one task reaching `state` (a TaskState name) on `skill` (as the request named it: anything but a
        string counts as none) at `agent` (the service itself when not given), with its duration when known."""
        if not isinstance(skill, str):
            skill = None
        key = (state, skill, agent)
        children = self._by_labels.get(key)
        if children is None:  # looked up once per label set: the labelled children are the same every time
            labels = (self._skills(skill), self._agents(agent or self.service))
            children = (
                self.tasks.labels(self.service, state, *labels),
                self.task_seconds.labels(self.service, *labels),
            )
            if len(self._by_labels) < 4 * MAX_LABEL_VALUES:
                self._by_labels[key] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def track_in_flight(self, read: Callable[[], float]) -> None:
        """Report in-flight tasks by reading them at scrape time."""
        self.in_flight.labels(self.service).set_function(read)

    def track_reconnects(self, read: Callable[[], float]) -> None:
        """Report MQTT reconnects (`mesh_mqtt_reconnects_total`) by reading the link's counter at scrape time."""
        if self._reconnects is None:
            self._reconnects = _ReadCounter("mesh_mqtt_reconnects", "MQTT reconnects since start", self.service, read)
            self.registry.register(self._reconnects)
        self._reconnects.read = read

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
