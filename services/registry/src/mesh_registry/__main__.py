"""`python -m mesh_registry`: consume retained cards into Redis and serve the index over HTTP until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from a2amesh.brokerstats import BrokerStatistics
from a2amesh.internal import IdentityGate, rule, tls_server_options
from a2amesh.observability import ServiceMetrics
from a2amesh.runtime import http_server, run, serve_until, setup_logging
from a2amesh.settings import RegistrySettings, read_secret
from mesh_registry.api import create_app
from mesh_registry.consumer import CardConsumer
from mesh_registry.index import AgentIndex

log = logging.getLogger("mesh_registry")


async def serve(settings: RegistrySettings, stop: asyncio.Event) -> None:
    """Run the consumer, the index check and the HTTP API until `stop`, then close Redis."""
    # a short retry: outages are waited out by the consumer (and reported by /healthz), not inside each call
    # the URL names its ACL user; the password comes from its mounted file (a password in the URL wins)
    redis = Redis.from_url(
        settings.redis_url,
        password=read_secret(settings.redis_password_file),
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
    )
    index = AgentIndex(redis)
    statistics = BrokerStatistics()
    consumer = CardConsumer(
        settings.mqtt,
        settings.service_address("registry").client_id,
        index,
        stop,
        settings.index_check_interval,
        statistics,
    )
    # the broker's connections and queues on the registry's /metrics, while its connection is up (a2amesh.brokerstats)
    statistics.connected = consumer.is_connected
    metrics = ServiceMetrics("registry")
    metrics.registry.register(statistics)
    app, options = guarded(create_app(index, consumer.is_connected, metrics), settings)
    server = http_server(app, settings.http_host, settings.http_port, **options)
    scheme = "https" if options else "http"
    where = urlsplit(settings.redis_url)  # never the password a URL may carry
    log.info(
        "registry on %s://%s:%d, redis %s:%s as %s",
        scheme,
        settings.http_host,
        settings.http_port,
        where.hostname,
        where.port or 6379,
        where.username or "default",
    )
    try:
        await serve_until(stop, server, consumer.run(), consumer.watch_index())
    finally:
        await redis.aclose()
    log.info("registry stopped")


def guarded(app: Any, settings: RegistrySettings) -> tuple[Any, dict[str, Any]]:
    """With internal TLS on: the API behind mutual TLS, its listings for the readers (coordinator, meshctl) and the
    console."""
    if not settings.internal.enabled:
        return app, {}
    readers = settings.internal.readers
    rules = [rule("GET", r"/agents(/.*)?", *readers, *settings.internal.browsers)]
    return IdentityGate(app, settings, rules), tls_server_options(settings.internal)


def main() -> None:
    """Entry point of the container and of `mesh-registry`."""
    settings = RegistrySettings()
    setup_logging(settings.log_level, settings.log_json)
    run(lambda stop: serve(settings, stop))


if __name__ == "__main__":
    main()
