"""The pieces of a2amesh.tracing that need no running mesh: which environment turns tracing on, topic templates for
span names, and trace context added to MQTT 5 properties without changing the shared originals (tests/test_tracing.py
follows a task across the running mesh)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from paho.mqtt.packettypes import PacketTypes

from a2amesh.mqtt import event_properties, publish_properties
from a2amesh.mqtt_compat import LeanProperties, with_user_properties
from a2amesh.topics import AgentAddress, PoolAddress, is_discovery_topic, topic_template
from a2amesh.tracing import requested_exporters


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_named(environ: dict[str, str], exporters: list[str]) -> None:
    assert requested_exporters(environ) == exporters


def test_with_tracing_off_nothing_of_the_sdk_is_imported() -> None:
    probe = (
        "import sys, a2amesh.binding, a2amesh.mqtt, a2amesh.runtime, a2amesh.tracing as t; "
        "assert not t.enabled; "
        "assert not [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))]"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_span_names_use_topic_templates_not_ids() -> None:
    agent = AgentAddress("acme", "default", "research")
    assert topic_template(agent.request_topic) == "$a2a/v1/request/{org}/{unit}/{agent}"
    assert topic_template(agent.event_topic) == "$a2a/v1/event/{org}/{unit}/{agent}"
    assert topic_template(agent.reply_topic("abc123")) == "$a2a/v1/reply/{org}/{unit}/{agent}/{inbox}"
    assert topic_template(PoolAddress("acme", "default", "p").topic) == "a2a/v1/pool/{org}/{unit}/{pool}"
    assert topic_template("not/a/mesh/topic") == "not/a/mesh/topic"
    assert is_discovery_topic(agent.discovery_topic) and not is_discovery_topic(agent.request_topic)


def test_trace_context_is_added_to_a_copy_of_the_properties() -> None:
    shared = publish_properties(correlation_data=b"c0ffee", user=[("a2a-responder-agent-id", "echo")], reused=True)
    packed_before = shared.pack()
    traced = with_user_properties(shared, [("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")])
    assert shared.pack() == packed_before, "the shared properties must stay as they were"
    assert traced.UserProperty == [
        ("a2a-responder-agent-id", "echo"),
        ("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"),
    ]
    assert traced.CorrelationData == b"c0ffee" and traced.ContentType == "application/json"
    event = event_properties("e1")
    assert with_user_properties(event, [("tracestate", "k=v")]).UserProperty == [
        ("a2a-event-id", "e1"),
        ("tracestate", "k=v"),
    ]
    empty = with_user_properties(None, [("traceparent", "x")])
    assert isinstance(empty, LeanProperties) and empty.packetType == PacketTypes.PUBLISH
    assert empty.UserProperty == [("traceparent", "x")]
