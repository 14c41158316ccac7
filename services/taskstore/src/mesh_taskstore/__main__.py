"""`python -m mesh_taskstore`: the task store service. Consumes every agent's task events over MQTT into the
database and serves them over HTTP; SIGTERM stops both and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.engine import URL, Engine

from a2amesh.internal import IdentityGate, Rule, rule, tls_server_options
from a2amesh.runtime import http_server, run, serve_until, setup_logging
from a2amesh.settings import TaskStoreSettings
from a2amesh.zmqtt_compat import coalesce_reads
from mesh_taskstore.api import build_app
from mesh_taskstore.consumer import RETRY_DELAYS, EventConsumer
from mesh_taskstore.db import DatabaseSettingsError, create_tables, database_url, make_engine
from mesh_taskstore.partition import Partition
from mesh_taskstore.push import sweep_finished
from mesh_taskstore.store import TaskStore

log = logging.getLogger("mesh_taskstore")


async def _prepare_database(engine: Engine, stop: asyncio.Event) -> bool:
    """Create the tables, waiting for the database if it is not up yet (containers start in any order).
    False when stopped before the database answered."""
    attempt = 0
    while not stop.is_set():
        try:
            await asyncio.to_thread(create_tables, engine)
            return True
        except Exception as error:
            delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
            attempt += 1
            log.warning("database not ready (%s); retrying in %.1fs", error, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
    return False


async def serve(stop: asyncio.Event, settings: TaskStoreSettings, database: URL) -> None:
    """Run the service on `database` (settings.database_url with its password file) until `stop` is set."""
    engine = make_engine(database)
    try:
        if not await _prepare_database(engine, stop):
            return
        store = TaskStore(engine)
        coalesce_reads(settings.read_pause)  # the consumer is this process's only MQTT connection
        consumer = EventConsumer(
            store,
            settings.mqtt,
            settings.service_address("taskstore").client_id,
            batch_max_events=settings.batch_max_events,
            batch_max_wait=settings.batch_max_wait,
            trusted_recorders=frozenset(settings.trusted_recorders),
            partition=Partition(settings.partition, settings.partitions),
        )
        app, options = guarded(build_app(store, consumer.is_connected), settings)
        server = http_server(app, settings.http_host, settings.http_port, **options)
        log.info(
            "task store %s (partition %s) on %s://%s:%d, database %s",
            settings.service_address("taskstore"),
            consumer.partition,
            "https" if options else "http",
            settings.http_host,
            settings.http_port,
            database.render_as_string(hide_password=True),
        )
        try:
            await serve_until(stop, server, consumer.run(stop), sweep_finished(store, settings.push_retention, stop))
        finally:
            await asyncio.to_thread(store.close)  # waits for a write still in its thread
    finally:
        engine.dispose()
        log.info("task store stopped")


def guarded(app: Any, settings: TaskStoreSettings) -> tuple[Any, dict[str, Any]]:
    """With internal TLS on: the API behind mutual TLS, read-only, for the readers (coordinator, meshctl; their
    POST /task-states is a read too); the console only reads a task's event log (for a task the coordinator already
    showed its user). Owners are not written here: they come over MQTT from the coordinators
    (mesh_taskstore.consumer)."""
    if not settings.internal.enabled:
        return app, {}
    readers = settings.internal.readers
    events = rule("GET", r"/tasks/[^/]+/events", *readers, *settings.internal.browsers)
    tasks = rule("GET", r"/tasks(/[^/]+)?", *readers)
    rules = [events, tasks, rule("POST", r"/task-states", *readers), *push_rules(readers)]
    return IdentityGate(app, settings, rules), tls_server_options(settings.internal)


def push_rules(readers: list[str]) -> list[Rule]:
    """Push configs: readers list them and their dead letters; only coordinators (which checked the caller owns the
    task) write configs, claim what is pending, move a delivery cursor, release their leases and record dead letters."""
    config = r"/tasks/[^/]+/push-configs/[^/]+"
    return [
        rule("GET", r"/tasks/[^/]+/push-configs", *readers),
        rule("GET", r"/push/dead-letters", *readers),
        rule("PUT", config, "coordinator"),
        rule("DELETE", config, "coordinator"),
        rule("PUT", config + "/delivered", "coordinator"),
        rule("POST", r"/push/claims", "coordinator"),
        rule("POST", r"/push/release", "coordinator"),
        rule("POST", r"/push/dead-letters", "coordinator"),
    ]


def main() -> None:
    """Entry point of the container and of `mesh-taskstore`."""
    settings = TaskStoreSettings()
    setup_logging(settings.log_level, settings.log_json)
    try:
        database = database_url(settings.database_url, settings.database_password_file)
    except DatabaseSettingsError as error:
        log.error("task store not started: %s", error)
        raise SystemExit(1) from None
    run(lambda stop: serve(stop, settings, database))


if __name__ == "__main__":
    main()
