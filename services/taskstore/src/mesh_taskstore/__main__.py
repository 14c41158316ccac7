"""`python -m mesh_taskstore`: the task store service. Consumes every agent's task events over MQTT into the
database and serves them over HTTP; SIGTERM stops both and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.engine import Engine, make_url

from a2amesh.internal import IdentityGate, rule, tls_server_options
from a2amesh.runtime import http_server, run, serve_until, setup_logging
from a2amesh.settings import TaskStoreSettings
from mesh_taskstore.api import build_app
from mesh_taskstore.consumer import RETRY_DELAYS, EventConsumer
from mesh_taskstore.db import create_tables, make_engine
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


async def serve(stop: asyncio.Event, settings: TaskStoreSettings) -> None:
    """Run the service until `stop` is set."""
    engine = make_engine(settings.database_url)
    try:
        if not await _prepare_database(engine, stop):
            return
        store = TaskStore(engine)
        consumer = EventConsumer(
            store,
            settings.mqtt,
            settings.address("taskstore").client_id,
            batch_max_events=settings.batch_max_events,
            batch_max_wait=settings.batch_max_wait,
            trusted_recorders=frozenset(settings.trusted_recorders),
        )
        app, options = guarded(build_app(store, consumer.is_connected), settings)
        server = http_server(app, settings.http_host, settings.http_port, **options)
        log.info(
            "task store on %s://%s:%d, database %s",
            "https" if options else "http",
            settings.http_host,
            settings.http_port,
            make_url(settings.database_url).render_as_string(hide_password=True),
        )
        await serve_until(stop, server, consumer.run(stop))
    finally:
        engine.dispose()
        log.info("task store stopped")


def guarded(app: Any, settings: TaskStoreSettings) -> tuple[Any, dict[str, Any]]:
    """With internal TLS on: the API behind mutual TLS; reads for the readers (coordinator, meshctl), recording a
    task's owner for the coordinator only."""
    if not settings.internal.enabled:
        return app, {}
    readers = settings.internal.readers
    rules = [rule("GET", r"/tasks(/[^/]+(/events)?)?", *readers), rule("PUT", r"/tasks/[^/]+/owner", "coordinator")]
    return IdentityGate(app, settings, rules), tls_server_options(settings.internal)


def main() -> None:
    """Entry point of the container and of `mesh-taskstore`."""
    settings = TaskStoreSettings()
    setup_logging(settings.log_level, settings.log_json)
    run(lambda stop: serve(stop, settings))


if __name__ == "__main__":
    main()
