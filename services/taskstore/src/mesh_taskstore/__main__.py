"""`python -m mesh_taskstore`: the task store service. Consumes every agent's task events over MQTT into the
database and serves them over HTTP; SIGTERM stops both and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.engine import Engine, make_url

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
            trusted_recorders=frozenset(settings.trusted_recorders),
        )
        app = build_app(store, consumer.is_connected)
        server = http_server(app, settings.http_host, settings.http_port)
        log.info(
            "task store on http://%s:%d, database %s",
            settings.http_host,
            settings.http_port,
            make_url(settings.database_url).render_as_string(hide_password=True),
        )
        await serve_until(stop, server, consumer.run(stop))
    finally:
        engine.dispose()
        log.info("task store stopped")


def main() -> None:
    """Entry point of the container and of `mesh-taskstore`."""
    settings = TaskStoreSettings()
    setup_logging(settings.log_level, settings.log_json)
    run(lambda stop: serve(stop, settings))


if __name__ == "__main__":
    main()
