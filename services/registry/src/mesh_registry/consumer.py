"""MQTT -> index: every retained card on `$a2a/v1/discovery/#` becomes (or, when cleared, removes) an index entry.

The broker is the source of truth and Redis only a cache of it. Retained cards re-deliver on every subscribe, so
the index is rebuilt from scratch when the process starts (dropping cards cleared while it was away), and when
Redis loses it (flush, restart without persistence) the consumer re-subscribes and the index fills again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from faststream.mqtt import MQTTBroker, MQTTMessage
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from a2amesh.brokerstats import BrokerStatistics
from a2amesh.models import AgentCard
from a2amesh.mqtt import Envelope
from a2amesh.mqtt_base import LOAD_PROPERTY, STATUS_PROPERTY, STATUS_SOURCE_PROPERTY
from a2amesh.settings import MqttSettings
from a2amesh.subscribers import envelope_of, is_connected, mqtt_broker, start_until_stopped, the_message
from a2amesh.topics import DISCOVERY_ALL, AgentAddress, TopicError, TopicKind, parse_topic
from mesh_registry.index import AgentIndex, AgentRecord, Status, StatusSource, parse_load

log = logging.getLogger(__name__)
T = TypeVar("T")

"""Optional user property on a card: in-flight tasks / capacity (the project's extension to the profile)."""

REDIS_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to write a message while Redis is unreachable; the last value repeats."""


class InvalidCard(ValueError):
    """A discovery message the registry cannot index (the reason is the message)."""


def record_of(envelope: Envelope, address: AgentAddress) -> AgentRecord:
    """The index record a non-empty discovery message describes; raises InvalidCard with the reason."""
    try:
        card = AgentCard.from_json(envelope.payload)
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in error.errors())
        raise InvalidCard(f"not a valid Agent Card ({reasons})") from None
    properties = envelope.user_properties
    status_text = properties.get(STATUS_PROPERTY, Status.ONLINE.value)
    try:
        status = Status(status_text.lower())
    except ValueError:
        raise InvalidCard(f"{STATUS_PROPERTY} must be online or offline, got {status_text!r}") from None
    source_text = properties.get(STATUS_SOURCE_PROPERTY)
    source = None
    if source_text is not None:
        try:
            source = StatusSource(source_text.lower())
        except ValueError:
            log.warning("%s: ignoring unknown %s %r", address, STATUS_SOURCE_PROPERTY, source_text)
    try:
        load = parse_load(properties.get(LOAD_PROPERTY))
    except ValueError as error:
        log.warning("%s: ignoring %s: %s", address, LOAD_PROPERTY, error)
        load = None
    return AgentRecord.of(address, card, status, source, load)


class CardConsumer:
    """Keeps the index in step with the broker's retained cards, and the index complete across Redis losses.
    A FastStream subscriber on a clean session: every (re)subscribe re-delivers every retained card. On the same
    connection (the registry's identity is pinned to one client id), `broker_statistics` receives the broker's
    `$SYS` statistics for /metrics (a2amesh.brokerstats)."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        index: AgentIndex,
        stop: asyncio.Event,
        check_interval: float,
        broker_statistics: BrokerStatistics | None = None,
    ) -> None:
        self.settings = settings
        self.broker_statistics = broker_statistics
        self.client_id = client_id
        self.index = index
        self.stop = stop
        self.check_interval = check_interval
        self.broker = self._subscribed()
        self._rebuild_pending = True  # the first connect rebuilds: cards cleared while we were away must go

    def _subscribed(self) -> MQTTBroker:
        broker = mqtt_broker(self.settings, self.client_id, graceful_timeout=1.0)
        broker.subscriber(
            DISCOVERY_ALL,
            qos=1,
            decoder=the_message,
            title="registry.cards",
            description="Every retained Agent Card, indexed in Redis (an empty payload removes the agent).",
        )(self._receive)
        if self.broker_statistics is not None:
            self.broker_statistics.subscribe(broker)
        return broker

    def is_connected(self) -> bool:
        """Whether the consumer holds a broker connection (the health check reads it)."""
        return is_connected(self.broker)

    async def run(self) -> None:
        """Consume discovery messages until `stop` is set (FastStream reconnects as needed). The retained cards
        that arrive on subscribing are the whole truth, so the index is prepared before the first subscribe."""
        await self._prepare_index()
        try:
            await start_until_stopped(self.broker, self.stop)
            await self.stop.wait()
        finally:
            await self.broker.stop()

    async def _receive(self, message: MQTTMessage) -> None:
        await self.handle(envelope_of(message))

    async def handle(self, envelope: Envelope) -> None:
        """Apply one discovery message to the index; a message that is not a valid card is logged and dropped."""
        try:
            parsed = parse_topic(envelope.topic)
            if parsed.kind is not TopicKind.DISCOVERY:
                raise TopicError(f"not a discovery topic: {envelope.topic!r}")
            address = parsed.agent
        except TopicError as error:
            log.warning("ignoring message on %s: %s", envelope.topic, error)
            return
        if not envelope.payload:
            removed = await self._with_redis(lambda: self.index.remove(address))
            log.info("card of %s cleared%s", address, "" if removed else " (was not indexed)")
            return
        try:
            record = record_of(envelope, address)
        except InvalidCard as error:
            log.warning("ignoring invalid card for %s: %s", address, error)
            return
        await self._with_redis(lambda: self.index.put(record))
        log.info("indexed %s: %s/%s", address, record.status, record.status_source)

    async def watch_index(self) -> None:
        """Every `check_interval` seconds, check that the index still has its marker; if Redis lost it (or a
        rebuild is pending), rebuild: disconnect, clear, mark, and subscribe afresh so the broker re-delivers
        every retained card."""
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.check_interval)
            if self.stop.is_set() or not self.is_connected():
                continue  # not connected: the reconnect re-delivers the retained cards anyway
            try:
                if not self._rebuild_pending and await self.index.is_marked():
                    continue
            except (RedisError, OSError) as error:
                log.warning("index check failed: %s", error)
                continue
            log.warning("index incomplete (Redis flushed, restarted or unreachable): re-reading retained cards")
            await self.broker.stop()
            self.broker = self._subscribed()
            await self._prepare_index()
            if not self.stop.is_set():
                await start_until_stopped(self.broker, self.stop)

    async def _prepare_index(self) -> None:
        """Before subscribing: on the first connect (or after Redis lost the index) start from an empty index."""
        try:
            if self._rebuild_pending or not await self.index.is_marked():
                await self._reset_index()
        except (RedisError, OSError) as error:
            self._rebuild_pending = True
            log.warning("could not prepare the index (%s); the index check will rebuild it", error)

    async def _reset_index(self) -> None:
        deleted = await self.index.clear()
        await self.index.mark_complete(uuid.uuid4().hex)
        self._rebuild_pending = False
        log.info("index reset (%d keys dropped); rebuilding from retained cards", deleted)

    async def _with_redis(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run an index write, waiting out Redis outages so no card is lost (the consumer is back-pressured)."""
        attempt = 0
        while True:
            try:
                return await operation()
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                if self.stop.is_set():
                    raise
                delay = REDIS_RETRY_DELAYS[min(attempt, len(REDIS_RETRY_DELAYS) - 1)]
                attempt += 1
                log.warning("redis unavailable (%s); retrying in %.1fs", error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
