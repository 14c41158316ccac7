"""The broker's `$SYS` statistics as Prometheus metrics (a2amesh.brokerstats): what Mosquitto sends becomes the
exported value, anything else is left out, and nothing stale is reported while the connection is down.
tests/test_observability.py runs the same against a real broker, through the registry."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from a2amesh.brokerstats import BROKER_STATISTIC_TOPICS, STATISTICS, BrokerStatistics
from a2amesh.topics import TopicError, broker_statistic_topic


def exposition(statistics: BrokerStatistics) -> str:
    registry = CollectorRegistry()
    registry.register(statistics)
    return generate_latest(registry).decode()


def test_each_statistic_becomes_its_metric_with_prometheus_names() -> None:
    up = True
    statistics = BrokerStatistics(lambda: up)
    assert statistics.update("$SYS/broker/clients/connected", b"12")
    assert statistics.update("$SYS/broker/store/messages/count", b"35")
    assert statistics.update("$SYS/broker/messages/received", b"1024")
    text = exposition(statistics)
    assert "mesh_broker_clients_connected 12.0" in text
    assert "mesh_broker_stored_messages 35.0" in text
    assert "mesh_broker_messages_received_total 1024.0" in text
    assert re.search(r"^# TYPE mesh_broker_messages_received(_total)? counter$", text, re.M)
    assert "mesh_broker_retained_messages" not in text, "nothing received yet: no value, not a zero"
    up = False
    assert "mesh_broker_" not in exposition(statistics), "a stale value is reported while disconnected"


def test_what_is_not_an_exported_statistic_or_not_a_number_is_left_out() -> None:
    statistics = BrokerStatistics()
    assert not statistics.update("$SYS/broker/uptime", b"12 seconds")
    assert not statistics.update("$SYS/broker/clients/connected", b"many")
    assert not statistics.update("$SYS/broker/clients/connected", b"\xff")
    assert not statistics.update("$SYS/broker/clients/connected", b"")
    assert statistics.values == {}


def test_the_topics_are_exact_and_unique() -> None:
    assert len(set(BROKER_STATISTIC_TOPICS)) == len(STATISTICS)
    assert all(topic.startswith("$SYS/broker/") and not set(topic) & {"#", "+"} for topic in BROKER_STATISTIC_TOPICS)
    for bad in ("", "clients/#", "+/count", "/clients"):
        with pytest.raises(TopicError):
            broker_statistic_topic(bad)
