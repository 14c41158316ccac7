"""The broker's connections and queues as Prometheus metrics: Mosquitto publishes its statistics on `$SYS/broker/...`
(retained, refreshed every `sys_interval` seconds, 10 by default) and the registry, which already holds a broker
connection and has memory to spare, subscribes to exactly the topics below and exports them on its /metrics. Its
broker role may read these topics and no other `$SYS` one (devstack.pki, docs/security.md).

Mosquitto 2.0 publishes no separate in-flight or queued counts: a message waiting for a subscriber (in flight, or
queued for a persistent session that is away) is held in the broker's store, as the retained messages are, so the
store's count (and bytes) is the queue depth to watch, beside the retained count that forms its floor; dropped
publishes count what a full queue (`max_queued_messages`) turned away."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from a2amesh.topics import broker_statistic_topic

if TYPE_CHECKING:
    from faststream.mqtt import MQTTBroker, MQTTMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerStatistic:
    """One `$SYS/broker` statistic and the metric it becomes."""

    statistic: str
    metric: str
    counter: bool
    documentation: str

    @property
    def topic(self) -> str:
        return broker_statistic_topic(self.statistic)


STATISTICS = (
    BrokerStatistic("clients/connected", "mesh_broker_clients_connected", False, "Clients connected to the broker"),
    BrokerStatistic(
        "clients/disconnected",
        "mesh_broker_clients_disconnected",
        False,
        "Persistent sessions whose client is away (the broker queues their QoS 1 messages)",
    ),
    BrokerStatistic(
        "store/messages/count",
        "mesh_broker_stored_messages",
        False,
        "Messages held in the broker's store: retained ones, and those in flight or queued for a subscriber",
    ),
    BrokerStatistic(
        "store/messages/bytes", "mesh_broker_stored_messages_bytes", False, "Payload bytes held in the broker's store"
    ),
    BrokerStatistic(
        "retained messages/count", "mesh_broker_retained_messages", False, "Retained messages (Agent Cards and others)"
    ),
    BrokerStatistic("subscriptions/count", "mesh_broker_subscriptions", False, "Subscriptions held by the broker"),
    BrokerStatistic(
        "messages/received", "mesh_broker_messages_received", True, "MQTT messages of any kind the broker received"
    ),
    BrokerStatistic("messages/sent", "mesh_broker_messages_sent", True, "MQTT messages of any kind the broker sent"),
    BrokerStatistic(
        "publish/messages/dropped",
        "mesh_broker_publish_dropped",
        True,
        "PUBLISH messages the broker dropped, a subscriber's queue being full (max_queued_messages)",
    ),
)
"""What is exported, by Mosquitto 2.0's names: connections, the store (queue depth) and message flow. Counters are
the broker's own totals since it started (a restart resets them, which rate() handles)."""

BROKER_STATISTIC_TOPICS = tuple(statistic.topic for statistic in STATISTICS)
"""The `$SYS` topics the registry's broker role may read, each exactly (no `$SYS/#`)."""

_BY_TOPIC = {statistic.topic: statistic for statistic in STATISTICS}


class BrokerStatistics:
    """The latest value of each statistic, exported (a prometheus_client collector) while the connection that
    receives them is up: after a loss the values would be stale, so none is reported until it is back."""

    def __init__(self, connected: Callable[[], bool] = lambda: True) -> None:
        self.connected = connected
        self.values: dict[str, float] = {}

    def update(self, topic: str, payload: bytes) -> bool:
        """Record one `$SYS` message; False (and nothing recorded) for a topic or value this does not export."""
        statistic = _BY_TOPIC.get(topic)
        if statistic is None:
            return False
        try:
            value = float(payload.decode("ascii").split()[0])
        except (UnicodeDecodeError, ValueError, IndexError):
            log.debug("ignoring %s: not a number: %r", topic, payload[:40])
            return False
        self.values[statistic.metric] = value
        return True

    def subscribe(self, broker: MQTTBroker) -> None:
        """Subscribe `broker` (a FastStream MQTT broker, before it starts) to every statistic, at QoS 0: the broker
        sends each again at its next interval, and retained, on every subscribe."""

        from a2amesh.subscribers import the_message  # FastStream's side: a2amesh[faststream]

        for statistic in STATISTICS:
            broker.subscriber(
                statistic.topic,
                qos=0,
                decoder=the_message,
                title=f"broker.{statistic.statistic}",
                description=f"Mosquitto's {statistic.statistic}, exported as {statistic.metric}.",
            )(self._receiver())

    def _receiver(self) -> Callable[[MQTTMessage], Awaitable[None]]:
        """A handler of its own for each subscriber (FastStream wraps each handler once)."""

        async def receive(message: MQTTMessage) -> None:
            raw = message.raw_message
            self.update(raw.topic, bytes(raw.payload))

        return receive

    def collect(self) -> Iterator[Metric]:
        if not self.connected():
            return
        for statistic in STATISTICS:
            value = self.values.get(statistic.metric)
            if value is not None:
                family = _family(statistic)
                family.add_metric([], value)
                yield family

    def describe(self) -> Iterator[Metric]:
        for statistic in STATISTICS:
            yield _family(statistic)


def _family(statistic: BrokerStatistic) -> Metric:
    kind = CounterMetricFamily if statistic.counter else GaugeMetricFamily
    return kind(statistic.metric, statistic.documentation, labels=[])
