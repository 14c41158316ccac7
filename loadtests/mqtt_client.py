"""A blocking A2A-over-MQTT requester on paho-mqtt, for Locust users (TLS and credentials from MqttSettings).

Locust runs users as gevent greenlets with the standard library monkey-patched, so paho's network thread and the
`threading.Event`s below cooperate with them; the same class also works in plain threads. One connection and one
reply inbox per user; each request gets fresh Correlation Data and waits for the reply that ends it."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from a2amesh.mqtt import tls_context
from a2amesh.settings import MqttSettings
from a2amesh.topics import AgentAddress, new_reply_suffix
from loadtests.a2a import RpcError, ends_stream, rpc_bytes

STREAMING = "SendStreamingMessage"


@dataclass
class _Pending:
    streaming: bool
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    size: int = 0
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Reply:
    """What one request got back."""

    results: list[dict[str, Any]]
    size: int
    """Payload bytes received."""

    @property
    def last(self) -> dict[str, Any]:
        return self.results[-1]


class BindingClient:
    """Sends JSON-RPC requests to agents' request topics and collects their replies by Correlation Data."""

    def __init__(self, settings: MqttSettings, org: str, unit: str, name: str | None = None) -> None:
        self.identity = AgentAddress(org, unit, name or f"locust-{secrets.token_hex(4)}")
        self.reply_topic = self.identity.reply_topic(new_reply_suffix())
        self._pending: dict[bytes, _Pending] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._subscribed = threading.Event()
        self._paho = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=self.identity.client_id, protocol=paho.MQTTv5
        )
        self._paho.on_connect = self._on_connect
        self._paho.on_subscribe = self._on_subscribe
        self._paho.on_message = self._on_message
        context = tls_context(settings)
        if context is not None:
            self._paho.tls_set_context(context)
        if settings.username:
            self._paho.username_pw_set(settings.username, settings.secret())
        self._host, self._port = settings.host, settings.port

    def connect(self, timeout: float = 10.0) -> None:
        """Connect, subscribe to the reply inbox and wait until both are acknowledged."""
        self._paho.connect(self._host, self._port, keepalive=30, clean_start=True)
        self._paho.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise TimeoutError(f"no MQTT connection to {self._host}:{self._port} within {timeout}s")

    def close(self) -> None:
        self._paho.disconnect()
        self._paho.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.reply_topic, qos=1)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        with self._lock:
            pending = self._pending.get(bytes(correlation)) if correlation is not None else None
        if pending is None or pending.done.is_set():
            return
        pending.size += len(message.payload)
        try:
            body = json.loads(message.payload)
        except ValueError:
            pending.error = "malformed JSON reply"
            pending.done.set()
            return
        if body.get("error") is not None:
            pending.error = f"{body['error'].get('code')}: {body['error'].get('message')}"
            pending.done.set()
            return
        result = body.get("result")
        if not isinstance(result, dict):
            pending.error = "reply without a result"
            pending.done.set()
            return
        pending.results.append(result)
        if not pending.streaming or ends_stream(result):
            pending.done.set()

    def request(self, topic: str, method: str, params: dict[str, Any], timeout: float = 30.0) -> Reply:
        """Publish a request (QoS 1, Response Topic, Correlation Data) and wait for its last reply.
        RpcError for an error answer, TimeoutError when the stream does not end in time."""
        correlation = secrets.token_hex(16).encode()
        pending = _Pending(streaming=method == STREAMING)
        with self._lock:
            self._pending[correlation] = pending
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = self.reply_topic
        properties.CorrelationData = correlation
        properties.ContentType = "application/json"
        try:
            self._paho.publish(topic, rpc_bytes(method, params, uuid.uuid4().hex), qos=1, properties=properties)
            if not pending.done.wait(timeout):
                got = len(pending.results)
                raise TimeoutError(f"{method} to {topic}: stream not ended after {timeout}s ({got} replies)")
        finally:
            with self._lock:
                self._pending.pop(correlation, None)
        if pending.error is not None:
            raise RpcError(pending.error)
        return Reply(pending.results, pending.size)


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[float, Any, BaseException | None]:
    """Run `call`, returning (milliseconds, result or None, exception or None)."""
    started = time.perf_counter()
    try:
        result = call(*args, **kwargs)
    except Exception as error:  # reported to Locust as a failure, never raised into the user
        return (time.perf_counter() - started) * 1000, None, error
    return (time.perf_counter() - started) * 1000, result, None
