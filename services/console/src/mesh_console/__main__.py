"""`python -m mesh_console`: serve the web console until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from a2amesh.runtime import http_server, run, serve_until, setup_logging
from a2amesh.settings import ConsoleSettings
from mesh_console.app import create_app

log = logging.getLogger("mesh_console")


async def serve(settings: ConsoleSettings, stop: asyncio.Event) -> None:
    server = http_server(create_app(settings, stop), settings.http_host, settings.http_port)
    log.info("console on http://%s:%d", settings.http_host, settings.http_port)
    await serve_until(stop, server)
    log.info("console stopped")


def main() -> None:
    """Entry point of the container and of `mesh-console`."""
    settings = ConsoleSettings()
    setup_logging(settings.log_level, settings.log_json)
    run(lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
