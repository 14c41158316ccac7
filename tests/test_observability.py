"""The observability profile's artifacts hold together: the Grafana dashboard asks only for metrics (and labels) the
running services export, Prometheus scrapes exactly the mesh's Compose services on their ports, spans go where the
profile receives them, and the profile's containers are optional, pinned by .env and hardened like the
rest."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from a2amesh.brokerstats import STATISTICS
from a2amesh.mqtt import make_client as mqtt_client
from devstack.stack import Stack
from tests.conftest import collect, eventually, send_request, user_message
from tests.test_deploy_artifacts import (
    REPO,
    compose_services,
    compose_with_postgres,
    dotenv,
    load_yaml,
    objects,
    rendered,
)
from tests.test_operations import http_base, metric

OBSERVABILITY = REPO / "infra" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "mesh.json"
PROFILE = "observability"
COLLECTOR = "otel-collector"

PROMQL_WORDS = {"sum", "rate", "increase", "histogram_quantile", "count", "by", "without", "max", "min", "avg"}
PROMETHEUS_OWN = {"up"}
"""Series Prometheus writes itself about each target."""
TARGET_LABELS = {"job", "instance", "mesh_service", "le"}
"""Labels Prometheus adds to every scraped series (the static_configs' too), and the histogram buckets' label."""


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metrics_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The metric names a PromQL expression reads, and the label names it selects or groups by."""
    labels = {name for selector in re.findall(r"\{([^}]*)\}", expr) for name in re.findall(r"(\w+)\s*=~?", selector)}
    labels |= {name.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for name in group.split(",")}
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\bby \([^)]*\)|\$\w+", " ", expr)
    names = {word for word in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", bare)} - PROMQL_WORDS
    return names, labels


def exported(text: str) -> dict[str, set[str]]:
    """Each sample name in Prometheus text with the label names it carries."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        name = name.split(" ")[0]
        found.setdefault(name, set()).update(re.findall(r'(\w+)="', rest.split("}")[0]) if rest else ())
    return found


BROKER_STATISTICS_WITHIN = 45.0
"""Seconds until the registry has a broker statistic: Mosquitto publishes them every sys_interval (10 s)."""
QUEUE_SLACK = 50
"""Messages the whole broker's stored count may lose elsewhere (in flight to other clients, delivered meanwhile)
while a test's queue is counted: far below the queue it measures, far above what leaves it between two ticks."""


async def registry_metrics(mesh: Stack, http: httpx.AsyncClient) -> str:
    return (await http.get(f"{http_base(mesh, 'registry')}/metrics")).text


async def broker_statistic(mesh: Stack, http: httpx.AsyncClient, name: str) -> float | None:
    """A broker statistic as the registry exports it now (None while it has none)."""
    text = await registry_metrics(mesh, http)
    return metric(text, name) if name in exported(text) else None


async def test_every_dashboard_panel_reads_metrics_the_services_export(
    mesh: Stack, http: httpx.AsyncClient, make_client
) -> None:
    [event] = await collect(make_client(), send_request(user_message("for the dashboard"), skill="echo"))
    assert event.task.status.state == 3  # a task has ended, so the task metrics have their labelled series

    async def every_broker_statistic() -> bool:
        found = exported(await registry_metrics(mesh, http))
        return all(statistic.metric + ("_total" if statistic.counter else "") in found for statistic in STATISTICS)

    await eventually(every_broker_statistic, BROKER_STATISTICS_WITHIN, "the broker's statistics on the registry")
    samples: dict[str, set[str]] = {}
    for service in ("coordinator", "registry", "taskstore", "echo"):
        text = (await http.get(f"{http_base(mesh, service)}/metrics")).text
        for name, labels in exported(text).items():
            samples.setdefault(name, set()).update(labels)
    queries = dashboard_queries()
    assert queries
    for expr in queries:
        names, labels = metrics_and_labels(expr)
        assert names, f"no metric in {expr!r}"
        for name in names - PROMETHEUS_OWN:
            assert name in samples, f"the dashboard asks for {name}, which no service exports ({expr})"
            unknown = labels - samples[name] - TARGET_LABELS
            assert not unknown, f"{name} has no label(s) {sorted(unknown)} ({expr})"


async def test_the_registry_exports_the_brokers_connections_and_queue_depth(
    mesh: Stack, http: httpx.AsyncClient
) -> None:
    """The broker panels' metrics follow the broker: the mesh's own connections are counted, and messages published
    to a persistent session that is away wait in the broker's store (its queue) until that session is gone.

    The stored count is the whole broker's, so it is read with a margin (`QUEUE_SLACK`): a message in flight to
    another client when the baseline was published may have left the store since (right after the load test, the
    count once rose by 499 for 500 queued). And the registry learns a new count only at the broker's next `$SYS`
    tick, so after a session is discarded the next baseline waits for that tick to show its queue gone."""

    async def connected() -> float | None:
        value = await broker_statistic(mesh, http, "mesh_broker_clients_connected")
        return value if value is not None and value >= 3 else None  # at least the registry, task store, coordinator

    async def stored() -> float:
        value = await broker_statistic(mesh, http, "mesh_broker_stored_messages")
        if value is None:  # pytest.fail, not assert: the retries below suppress AssertionError, and this is no miss
            pytest.fail("the registry lost the broker's stored count")
        return value

    await eventually(connected, BROKER_STATISTICS_WITHIN, "the mesh's connections counted")
    queued = 500
    counted = queued - QUEUE_SLACK
    topic = f"observability/queue/{uuid.uuid4().hex[:8]}"
    grown: float | None = None
    for _attempt in range(3):  # a burst of another session's messages leaving the store can still offset one attempt
        before = await stored()
        highest = before
        away = f"mesh-tester-away-{uuid.uuid4().hex[:8]}"
        async with mqtt_client(mesh.tester_settings(), away, persistent=True) as subscriber:
            await subscriber.subscribe(topic, qos=1)
        try:
            async with mqtt_client(mesh.tester_settings(), f"mesh-tester-pub-{uuid.uuid4().hex[:8]}") as publisher:
                for number in range(queued):
                    await publisher.publish(topic, f"queued {number}".encode(), qos=1)

            async def queue_grown(baseline: float = before) -> float | None:
                nonlocal highest
                value = await stored()
                highest = max(highest, value)
                away_sessions = await broker_statistic(mesh, http, "mesh_broker_clients_disconnected")
                return value if value >= baseline + counted and away_sessions else None

            with contextlib.suppress(AssertionError):
                grown = await eventually(queue_grown, BROKER_STATISTICS_WITHIN / 3, "queued messages counted")
        finally:
            async with mqtt_client(mesh.tester_settings(), away):  # a clean start discards the session and its queue
                pass

        async def drained(peak: float = highest) -> bool:
            return await stored() <= peak - counted

        if grown is not None:
            await eventually(drained, BROKER_STATISTICS_WITHIN, "the queue gone with its session")
            break
        with contextlib.suppress(AssertionError):  # the next baseline must not still hold this queue
            await eventually(drained, BROKER_STATISTICS_WITHIN / 3, "the missed attempt's queue gone")
    assert grown is not None, f"{queued} queued messages never showed in the broker's store count"


def test_the_dashboard_is_valid_grafana_json_with_unique_panels_on_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    sources = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/datasources/mesh.yaml").read_text())
    uids = {source["uid"] for source in sources["datasources"] if source["type"] == "prometheus"}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
    providers = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/dashboards/mesh.yaml").read_text())
    [provider] = providers["providers"]
    grafana = compose_services(PROFILE)["grafana"].resolved
    mounted = {volume["target"]: volume["source"] for volume in grafana["volumes"] if isinstance(volume, dict)}
    assert Path(REPO / mounted[provider["options"]["path"]]).resolve() == DASHBOARD.parent


def test_prometheus_scrapes_every_mesh_service_on_its_port() -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    [collector] = jobs.pop(COLLECTOR)["static_configs"]
    telemetry = collector_config()["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert collector["targets"] == [f"{COLLECTOR}:{telemetry['port']}"], "the collector's own metrics"
    assert str(telemetry["port"]) in compose_services(PROFILE)[COLLECTOR].resolved["expose"]
    targets = {
        target: group["labels"]["mesh_service"]
        for job in jobs.values()
        for group in job["static_configs"]
        for target in group["targets"]
    }
    expected = {}
    for name, service in compose_with_postgres().items():  # every service either Compose file may run
        port = service.env.get("MESH_HTTP_PORT")
        if port is not None:
            expected[f"{name}:{port}"] = name
    assert targets == expected


def collector_config() -> dict[str, Any]:
    return yaml.safe_load((OBSERVABILITY / "otel-collector.yaml").read_text())


def test_traces_go_through_the_collector_to_jaeger() -> None:
    """The services export to the profile's collector, whose config (mounted where its command reads it) receives
    OTLP/HTTP on the port the services send to and exports every pipeline to a port Jaeger listens on."""
    endpoint = dotenv()["OTEL_EXPORTER_OTLP_ENDPOINT"]
    host, port = endpoint.removeprefix("http://").split(":")
    assert host == COLLECTOR, "the services send their spans to the collector"
    collector = compose_services(PROFILE)[COLLECTOR].resolved
    assert port in collector["expose"]
    mounted = {volume["target"]: volume["source"] for volume in collector["volumes"]}
    [config_uri] = [arg for arg in collector["command"] if arg.startswith("--config=")]
    config_path = config_uri.removeprefix("--config=").removeprefix("file:")
    assert (REPO / mounted[config_path]).resolve() == OBSERVABILITY / "otel-collector.yaml"
    config = collector_config()
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == f"0.0.0.0:{port}"
    [pipeline] = config["service"]["pipelines"].values()
    assert pipeline["receivers"] == ["otlp"] and pipeline["processors"][0] == "memory_limiter"
    for name in pipeline["exporters"]:
        backend, backend_port = config["exporters"][name]["endpoint"].split(":")
        assert backend == "jaeger" and backend_port in compose_services(PROFILE)[backend].resolved["expose"], name
    assert collector["depends_on"] == {"jaeger": {"condition": "service_healthy"}}


def test_the_collector_health_check_asks_the_collector_itself_without_a_shell() -> None:
    """The distroless collector is checked in exec form by its own binary: `validate` with the mounted config and,
    as a second config source, the health_check extension's endpoint, whose healthy answer must merge as an empty
    map (anything else would make validate fail on a healthy collector) and whose other answers are not 200."""
    collector = compose_services(PROFILE)[COLLECTOR].resolved
    check = collector["healthcheck"]
    assert check["test"][0] == "CMD", "exec form: the image has no shell"
    binary, subcommand, *sources = check["test"][1:]
    assert binary == "/otelcol" and subcommand == "validate"
    assert sources[0] in collector["command"], "the check validates the config the collector runs"
    health = collector_config()["extensions"]["health_check"]
    assert "health_check" in collector_config()["service"]["extensions"]
    health_port = health["endpoint"].rsplit(":", 1)[1]
    assert sources[1:] == [f"--config=http://127.0.0.1:{health_port}{health.get('path', '/')}"]
    assert yaml.safe_load(health["response_body"]["healthy"]) == {}
    assert check["timeout"] and check["interval"] and check["retries"]


def test_tracing_is_off_by_default_and_the_overlay_turns_it_on() -> None:
    endpoint = dotenv()["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert dotenv()["OTEL_TRACES_EXPORTER"] == "none", "tracing is off unless a deployment turns it on"
    for name, service in compose_services().items():
        if "MESH_MQTT__HOST" in service.env:  # on the broker: its hops are traced
            assert service.env["OTEL_TRACES_EXPORTER"] == "none", name
            assert service.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint, name
    overlay = yaml.safe_load((REPO / "k8s/overlays/observability/kustomization.yaml").read_text())
    [generator] = [gen for gen in overlay["configMapGenerator"] if gen["name"] == "mesh-config"]
    literals = dict(item.split("=", 1) for item in generator.get("literals", []))
    assert literals["OTEL_TRACES_EXPORTER"] == "otlp", "the overlay turns tracing on"


def test_the_kubernetes_overlay_runs_the_same_collector_and_backend_and_the_services_reach_them() -> None:
    """k8s/overlays/observability deploys the collector (its config a checked copy of Compose's) and Jaeger at the
    images .env pins, the services' OTLP endpoint names the collector's Service port, and network policies open
    exactly the span flows: the services to the collector, the collector to Jaeger."""
    overlay = REPO / "k8s" / "overlays" / "observability"
    assert (overlay / "otel-collector.yaml").read_text() == (OBSERVABILITY / "otel-collector.yaml").read_text(), (
        "k8s/overlays/observability/otel-collector.yaml is a copy of infra/observability/otel-collector.yaml"
    )
    docs = rendered("observability")
    env = dotenv()
    deployments, services = objects(docs, "Deployment"), objects(docs, "Service")
    images = {
        COLLECTOR: f"{env['IMAGE_OTEL_COLLECTOR']}:{env['IMAGE_OTEL_COLLECTOR_TAG']}",
        "jaeger": f"{env['IMAGE_JAEGER']}:{env['IMAGE_JAEGER_TAG']}",
    }
    for name, image in images.items():
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image, f"{name}: the image and tag .env pins for Compose"
    [config_map] = [doc for doc in objects(docs, "ConfigMap").values() if doc["metadata"]["name"].startswith("mesh-")]
    endpoint = urlsplit(config_map["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert config_map["data"]["OTEL_TRACES_EXPORTER"] == "otlp"
    assert endpoint.hostname == COLLECTOR and endpoint.port in {p["port"] for p in services[COLLECTOR]["spec"]["ports"]}
    backend = urlsplit("//" + collector_config()["exporters"]["otlp_grpc/jaeger"]["endpoint"])
    assert backend.port in {p["port"] for p in services[backend.hostname]["spec"]["ports"]}

    def allowed(source: dict[str, str], target: str, port: int) -> bool:
        """Whether pods labelled `source` may reach app=`target` on `port`, both ways round (egress and ingress)."""
        out = into = False
        for policy in objects(docs, "NetworkPolicy").values():
            selected = policy["spec"]["podSelector"].get("matchLabels", {})
            for rule in policy["spec"].get("egress", []):
                peers = [peer.get("podSelector", {}).get("matchLabels") for peer in rule.get("to", [])]
                ports = {p["port"] for p in rule.get("ports", [])}
                out |= selected.items() <= source.items() and {"app": target} in peers and port in ports
            for rule in policy["spec"].get("ingress", []):
                peers = [peer.get("podSelector", {}).get("matchLabels") for peer in rule.get("from", [])]
                ports = {p["port"] for p in rule.get("ports", [])}
                into |= selected == {"app": target} and source in peers and port in ports
        return out and into

    assert allowed({"a2a-mesh.dev/mqtt": "client"}, COLLECTOR, endpoint.port)
    assert allowed({"app": COLLECTOR}, "jaeger", backend.port)
    assert not allowed({"a2a-mesh.dev/mqtt": "client"}, "jaeger", backend.port), "spans go through the collector"


def test_the_profile_is_optional_pinned_and_hardened() -> None:
    profile = compose_services(PROFILE)
    assert set(profile) == {"jaeger", "prometheus", "grafana", COLLECTOR}
    raw = load_yaml(REPO / "compose.yaml")["services"]
    env = dotenv()
    for name, service in profile.items():
        spec: dict[str, Any] = service.resolved
        assert "build" not in raw[name], f"{name}: a third-party image"
        image, tag = re.fullmatch(r"\$\{(IMAGE_\w+)\}:\$\{(IMAGE_\w+_TAG)\}", raw[name]["image"]).groups()  # type: ignore[union-attr]
        assert env[tag] and env[tag] != "latest", f"{name}: pinned by .env's {tag}"
        assert spec["image"] == f"{env[image]}:{env[tag]}"
        assert spec["read_only"] and spec["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in spec["security_opt"], name
        assert spec["deploy"]["resources"]["limits"]["memory"], name
        assert spec["healthcheck"]["test"], f"{name}: health-checked"
        for port in spec.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: published on loopback only"
