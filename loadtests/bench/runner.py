"""`python -m loadtests bench`: every scenario, one after the other, on one broker and one machine; one report."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

from a2amesh.topics import AgentAddress, PoolAddress
from devstack.stack import find_binary
from loadtests.a2a import filler_text
from loadtests.bench import whatif
from loadtests.bench.drivers import binding_client, floor_client, http_client
from loadtests.bench.measure import ClientFactory, Scenario, ScenarioResult, measure_together, wait_quiet
from loadtests.bench.procs import (
    FLOOR_REQUEST_TOPIC,
    ORG,
    POOL,
    POSTGRES,
    SDK_MQTT_AGENT,
    UNIT,
    BenchStack,
    PostgresUnavailable,
    mosquitto_version,
    settle,
)
from loadtests.bench.procstat import rss_of
from loadtests.bench.report import machine_info, twin_key, write_report
from loadtests.bench.settings import BenchSettings

log = logging.getLogger("loadtests.bench")

MQTT_MESSAGES = "1 request + 4 replies + 4 events (no subscriber)"
BACKLOG_SECONDS = 240.0
"""How long the store's first scenario waits, at most, for the coordinator to reconcile the tasks it relayed before
the store ran (the HTTP scenarios' ~8,000). The reconciler republishes them and confirms them again by id, a
thousand a request (mesh_coordinator.reconcile); while it re-read them one by one, 200 a second, this took about
90 s, and a shorter wait measured `record` beside that catch-up. The wait ends as soon as the processes are quiet."""
HOLD_WARNING = 15.0
"""Seconds the coordinator may be held while a store starts before the run says so. Its MQTT keepalive is 30 s
(MqttSettings) and a broker drops a client silent for one and a half keepalives (45 s) after its last packet, which
for a coordinator idle before the hold can be a ping 30 s old: past 15 s it may have been dropped, and its reconnect
would fall in the catch-up. A hold lasts the store's start and settling (its environment is built before it),
some seconds."""
TWIN = "twin"
"""The second stack's folder under the report's, beside the first's `run`."""
TWIN_START_SECONDS = 60.0
"""How long the twin's processes may take, at most, to go quiet after they start."""
STORE = "taskstore"
POSTGRES_STORE = "taskstore-postgres"
"""The task store recording into PostgreSQL (`record-postgres`): the same service and broker identity as STORE,
built and run as deployed with PostgreSQL (its `postgres` extra, psycopg), under a name of its own in the figures."""


class Bench:
    """Runs the scenarios the settings select and collects their figures."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.procs = BenchStack(settings)
        shutil.rmtree(settings.report_dir / TWIN, ignore_errors=True)  # an earlier run's, if this one needs none
        self._twin: BenchStack | None = None
        self.text = filler_text(settings.payload_bytes)
        self.results: list[ScenarioResult] = []
        self.idle_rss: dict[str, float] = {}
        self.not_measured: dict[str, str] = {}
        """Scenarios this machine could not run, and why (no PostgreSQL server)."""

    def _scenario(
        self,
        key: str,
        label: str,
        path: str,
        messages: str,
        names: tuple[str, ...],
        client: ClientFactory,
        *,
        pool: bool = False,
        procs: BenchStack | None = None,
    ) -> Scenario:
        s = self.settings
        return Scenario(
            key,
            label,
            path=path,
            messages=messages,
            pids=(procs or self.procs).pids(*names),
            client=client,
            tasks=s.pool_tasks if pool else s.tasks,
            concurrency=s.pool_concurrency if pool else s.concurrency,
        )

    def _measure(self, *scenarios: Scenario) -> None:
        """Measure scenarios together, their rounds interleaved (see measure_together)."""
        s = self.settings
        for scenario in scenarios:
            log.info("scenario %s: %s", scenario.key, scenario.label)
        results = measure_together(scenarios, max_seconds=s.max_seconds, warmup=s.warmup, rounds=s.rounds)
        for result in results:
            log.info(
                "  %s: %.1f tasks/s, p50 %.1f ms, p99 %.1f ms, %d errors",
                result.key,
                result.tasks_per_s,
                result.p50_ms,
                result.p99_ms,
                result.errors,
            )
        self.results.extend(results)

    def _idle(self, *names: str) -> None:
        settle()
        self.idle_rss.update(rss_of(self.procs.pids(*names)))

    # -- scenarios ----------------------------------------------------------------------------------------------
    def floor(self) -> Scenario:
        settings = self.procs.mqtt
        return self._scenario(
            "floor",
            "floor: raw MQTT 5 request/reply (aiomqtt)",
            "bench -> broker -> raw responder",
            MQTT_MESSAGES,
            ("broker", "floor"),
            lambda: floor_client(settings, FLOOR_REQUEST_TOPIC, self.text),
        )

    def binding(self) -> Scenario:
        topic = AgentAddress(ORG, UNIT, "echo").request_topic
        return self._scenario(
            "binding",
            "binding: MeshRequester -> echo agent",
            "bench (MeshRequester) -> broker -> echo",
            MQTT_MESSAGES,
            ("broker", "echo"),
            self._binding(topic),
        )

    def twin(self) -> BenchStack:
        """A second stack like the first (its own broker, echo agent, registry and coordinator) where no task store
        ever runs: the store's scenarios are measured with their rounds interleaved with the same path on the twin
        (`binding`, `http-face` without the store), so that each target compares the two paths in the same spells
        of a shared machine's speed. The first stack's `binding` and `http-face` ran minutes before the store
        started, and the machine's pace moved that much between them (the binding alone at 672-880 tasks/s from one
        run to the next). Only one of the two stacks has work at a time; the other idles."""
        if self._twin is None:
            self._twin = BenchStack(self.settings, run=TWIN, envs=self.procs.envs)
            self._twin.start_core()
            settle()
            if not wait_quiet(self._twin.all_pids(), TWIN_START_SECONDS):
                log.warning("the twin stack still busy %.0f s after it started", TWIN_START_SECONDS)
        return self._twin

    def twin_binding(self, beside: str) -> Scenario:
        """The binding on the twin, measured beside the store's scenario `beside`."""
        twin = self.twin()
        topic = AgentAddress(ORG, UNIT, "echo").request_topic
        settings = twin.mqtt
        return self._scenario(
            twin_key("binding", beside),
            f"binding on the twin stack (no task store), rounds interleaved with {beside}",
            "bench (MeshRequester) -> twin broker -> twin echo",
            MQTT_MESSAGES,
            ("broker", "echo"),
            lambda: binding_client(settings, topic, self.text),
            procs=twin,
        )

    def sdk_mqtt(self) -> Scenario:
        topic = AgentAddress(ORG, UNIT, SDK_MQTT_AGENT).request_topic
        return self._scenario(
            "sdk-mqtt",
            "peer: a2a-over-mqtt SDK Responder echo",
            "bench (MeshRequester) -> broker -> SDK agent",
            "1 request + 4 replies (the SDK publishes no events)",
            ("broker", "sdk-mqtt-echo"),
            self._binding(topic),
        )

    def http_face(self) -> Scenario:
        url, streaming = self.procs.coordinator_url, self.settings.http_streaming
        key, concurrency = self.procs.stack.api_key, self.settings.concurrency
        return self._scenario(
            "http-face",
            "coordinator HTTP face -> echo agent",
            "bench (HTTP) -> coordinator -> registry lookup -> broker -> echo",
            _http_messages(streaming, True),
            ("coordinator", "echo", "broker", "registry", "redis"),
            lambda: http_client(url, self.text, concurrency, streaming=streaming, api_key=key, skill="echo"),
        )

    def sdk_http(self) -> Scenario:
        url, streaming = self.procs.sdk_http_url, self.settings.http_streaming
        return self._scenario(
            "sdk-http",
            "peer: a2a-sdk HTTP server, echo in-process",
            "bench (HTTP) -> a2a-sdk server",
            _http_messages(streaming, False),
            ("sdk-http-echo",),
            lambda: http_client(url, self.text, self.settings.concurrency, streaming=streaming),
        )

    def pool(self) -> None:
        topic = PoolAddress(ORG, UNIT, POOL).topic
        replicas: list[str] = []
        for count in self.settings.pool_replicas:
            while len(replicas) < count:
                replicas.append(self.procs.start_pool_replica(len(replicas) + 1))
                self._idle(replicas[-1])
            scenario = self._scenario(
                f"pool-{count}",
                f"pool: {count} echo replica(s), work waits {self.settings.pool_delay_ms} ms",
                f"bench (MeshRequester) -> broker -> $share pool of {count}",
                "1 request + 5 replies + 5 events (a delayed echo adds a WORKING note)",
                ("broker", *replicas),
                self._binding(topic, delayMs=self.settings.pool_delay_ms),
                pool=True,
            )
            self._measure(scenario)
        self.procs.stop(*replicas)

    def record(self) -> None:
        self._start_taskstore(STORE)
        self._measure(self._recording("record", "SQLite", STORE), self.twin_binding("record"))

    def record_postgres(self) -> None:
        """`record` with the store recording into a PostgreSQL server the run starts on loopback. The SQLite store
        stops first and this one takes its broker session over (the same identity and client id, as a store
        redeployed on PostgreSQL would): never two stores at once, and none of the events stays queued for a store
        that is gone. Its database starts empty, so, as for the first store, the coordinator republishes the
        outcomes it has not seen confirmed before the scenario starts."""
        try:
            url = self.procs.start_postgres()
        except PostgresUnavailable as error:
            log.warning("record-postgres not measured: %s", error)
            self.not_measured["record-postgres"] = f"no PostgreSQL server could start here ({error})"
            return
        self.procs.stop(STORE)
        self._start_taskstore(POSTGRES_STORE, database_url=url, extras=("postgres",))
        recording = self._recording("record-postgres", "PostgreSQL", POSTGRES_STORE, POSTGRES)
        self._measure(recording, self.twin_binding("record-postgres"))

    def _recording(self, key: str, database: str, *store: str) -> Scenario:
        topic = AgentAddress(ORG, UNIT, "echo").request_topic
        return self._scenario(
            key,
            f"binding -> echo, with the task store recording every event ({database})",
            f"bench (MeshRequester) -> broker -> echo; events -> task store ({database})",
            "1 request + 4 replies + 4 events delivered to the task store",
            ("broker", "echo", *store),
            self._binding(topic),
        )

    def deployed(self) -> None:
        """The path as deployed: the HTTP face with the task store recording every event (and the task's owner, which
        the coordinator publishes to the store in batches) and the registry in the loop; measured beside the same path
        on the twin, where no store runs (the `http-face` scenario is that path on this stack, before the store ran)."""
        self._start_taskstore(STORE)
        url, streaming = self.procs.coordinator_url, self.settings.http_streaming
        key, concurrency = self.procs.stack.api_key, self.settings.concurrency
        self._measure(
            self._scenario(
                "deployed",
                "deployed path: HTTP face -> echo, task store recording, registry lookup",
                "bench (HTTP) -> coordinator (registry, owners batched) -> broker -> echo; events -> task store",
                _http_messages(streaming, True) + " + 4 events delivered to the task store + owners in batches",
                ("coordinator", "echo", "broker", "registry", "redis", STORE),
                lambda: http_client(url, self.text, concurrency, streaming=streaming, api_key=key, skill="echo"),
            ),
            self.twin_http_face("deployed"),
        )

    def twin_http_face(self, beside: str) -> Scenario:
        """The HTTP face on the twin, measured beside the store's scenario `beside`."""
        twin = self.twin()
        url, streaming = twin.coordinator_url, self.settings.http_streaming
        key, concurrency = twin.stack.api_key, self.settings.concurrency
        return self._scenario(
            twin_key("http-face", beside),
            f"coordinator HTTP face -> echo agent on the twin stack (no task store), rounds interleaved with {beside}",
            "bench (HTTP) -> twin coordinator -> twin registry lookup -> twin broker -> twin echo",
            _http_messages(streaming, True),
            ("coordinator", "echo", "broker", "registry", "redis"),
            lambda: http_client(url, self.text, concurrency, streaming=streaming, api_key=key, skill="echo"),
            procs=twin,
        )

    def _start_taskstore(self, name: str, database_url: str | None = None, extras: tuple[str, ...] = ()) -> None:
        """Start the store for `record`, `deployed` or `record-postgres`, and let the coordinator catch up with it:
        the tasks it relayed with no store running (the HTTP scenarios'), or before a store on an empty database
        ran, are missing from it, so the coordinator's reconciler finds the new store without their outcomes and
        republishes each (mesh_coordinator.reconcile). That burst is a recovery, not the path's steady state, and
        would fall on whichever scenario comes next. The coordinator is held (SIGSTOP) while the new store starts
        and its idle footprint is taken: a store that is confirming thousands of outcomes is not idle, and since
        the reconciler confirms a thousand at a time, that burst came within the idle sample."""
        if not self.procs.pids(name):
            self.twin()  # started, and quiet again, before the store is
            self.procs.prepare(name, "mesh_taskstore", extras)  # its environment built before the hold, not in it
            held = time.monotonic()
            with self.procs.held("coordinator"):
                self.procs.start_taskstore(name, database_url, extras)
                self._idle(name, POSTGRES)
            held = time.monotonic() - held
            if held > HOLD_WARNING:  # the broker may have dropped the coordinator (HOLD_WARNING)
                log.warning("the coordinator was held %.0f s while the store started; it may have reconnected", held)
            else:
                log.info("the coordinator was held %.1f s while the store started", held)
            log.info("waiting for the coordinator to reconcile the earlier scenarios' tasks with the store")
            waited = time.monotonic()
            if wait_quiet(self.procs.pids("coordinator", name, POSTGRES, "broker"), BACKLOG_SECONDS):
                log.info("  quiet after %.1f s", time.monotonic() - waited)
            else:
                log.warning("  still busy after %.0f s: the next scenario runs beside the catch-up", BACKLOG_SECONDS)

    def _binding(self, topic: str, **metadata: Any) -> ClientFactory:
        settings = self.procs.mqtt
        return lambda: binding_client(settings, topic, self.text, **metadata)

    def stop_all(self) -> None:
        """Stop every process of the run, the twin's too."""
        try:
            self.procs.stop_all()
        finally:
            if self._twin is not None:
                self._twin.stop_all()

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        whatif.install(self.settings.whatif)
        compared: dict[str, Callable[[], Scenario]] = {  # measured with their rounds interleaved, per group
            "floor": self.floor,
            "binding": self.binding,
            "sdk-mqtt": self.sdk_mqtt,
            "http-face": self.http_face,
            "sdk-http": self.sdk_http,
        }
        others: dict[str, Callable[[], None]] = {
            "pool": self.pool,
            "record": self.record,
            "deployed": self.deployed,
            "record-postgres": self.record_postgres,
        }
        procs = self.procs
        try:
            procs.start_core()
            procs.start_floor()
            procs.start_sdk_mqtt()
            procs.start_sdk_http()
            self._idle(*procs.all_pids())
            for group in _groups(self.settings.scenarios):
                if group[0] in others:
                    others[group[0]]()
                else:
                    self._measure(*(compared[name]() for name in group))
            procs.start_research()
            self._idle("research")
            settle()
            after_rss = rss_of(procs.all_pids())
        finally:
            self.stop_all()
        return {
            "machine": machine_info(mosquitto_version(find_binary("mosquitto"))),
            "settings": _settings_dict(self.settings),
            "seconds": round(time.monotonic() - started, 1),
            "scenarios": [result.to_dict() for result in self.results],
            "not_measured": dict(self.not_measured),
            "idle_rss_mb": {name: round(mb, 1) for name, mb in self.idle_rss.items()},
            "after_load_rss_mb": {name: round(mb, 1) for name, mb in after_rss.items()},
        }


COMPARED_GROUPS = (("floor", "binding", "sdk-mqtt"), ("http-face", "sdk-http"))
"""Scenarios compared with each other, so measured together: the MQTT paths, and the HTTP paths."""


def _groups(names: Sequence[str]) -> list[tuple[str, ...]]:
    """The scenarios in order, those next to each other in the same compared group put together."""
    groups: list[tuple[str, ...]] = []
    for name in names:
        family = next((group for group in COMPARED_GROUPS if name in group), None)
        if groups and family is not None and groups[-1][0] in family:
            groups[-1] = (*groups[-1], name)
        else:
            groups.append((name,))
    return groups


def _http_messages(streaming: bool, mesh: bool) -> str:
    http = "1 HTTP request + 4 SSE events" if streaming else "1 HTTP request + 1 response"
    return f"{http} + 1 registry lookup + {MQTT_MESSAGES}" if mesh else http


def _settings_dict(settings: BenchSettings) -> dict[str, Any]:
    return {
        key: (list(value) if isinstance(value, tuple) else str(value) if key == "report_dir" else value)
        for key, value in vars(settings).items()
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt's per-publish "pending publish calls" warnings
    logging.getLogger("httpx").setLevel(logging.WARNING)  # devstack's readiness polls
    settings = BenchSettings.from_env()
    data = Bench(settings).run()
    markdown, json_path = write_report(data, settings.report_dir)
    print(markdown.read_text())
    log.info("report: %s and %s", markdown, json_path)
    return 0 if all(s["errors"] == 0 for s in data["scenarios"]) else 1
