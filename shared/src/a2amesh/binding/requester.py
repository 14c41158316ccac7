"""The requester side of the binding: one reply inbox per process, correlation per publish, and the profile's
Core retry rules (first reply within 15 s, stream idle at most 30 s, 3 attempts with 1/2/4 s backoff ±20%, new
Correlation Data each attempt, the same Task.id; never retried once a stream item has arrived)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from a2amesh.binding.wire import MAX_PACKET_BYTES, STREAMING_METHODS, new_correlation
from a2amesh.models import BindingError, JsonRpcErrorBody, JsonRpcResponse, StreamResponse
from a2amesh.models.jsonrpc import JsonRpcId
from a2amesh.mqtt import Envelope, MqttLink, publish_properties
from a2amesh.mqtt_base import AUTHORIZATION_PROPERTY, KEEPALIVE_PROPERTY, RESPONDER_PROPERTY
from a2amesh.settings import MqttSettings
from a2amesh.topics import AgentAddress, new_reply_suffix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryProfile:
    """Timeouts and retries of one request (defaults: the profile's Core values)."""

    first_reply_timeout: float = 15.0
    stream_idle_timeout: float = 30.0
    attempts: int = 3
    backoff: tuple[float, ...] = (1.0, 2.0, 4.0)
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """Backoff before retry number `attempt` (0-based), with jitter."""
        base = self.backoff[min(attempt, len(self.backoff) - 1)]
        return base * (1 + self.jitter * (2 * random.random() - 1))


class RemoteError(Exception):
    """The responder answered with a JSON-RPC error."""

    def __init__(self, error: JsonRpcErrorBody) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error

    @property
    def code(self) -> int:
        return self.error.code

    @property
    def binding_error(self) -> BindingError | None:
        return self.error.binding_error


class RequestTooLargeError(ValueError):
    """The request would not fit in one MQTT packet: publishing it would get the connection dropped by the broker."""


class RequestTimeoutError(TimeoutError):
    """No (further) reply within the profile's timeouts."""

    def __init__(self, message: str, *, got_reply: bool) -> None:
        super().__init__(message)
        self.got_reply = got_reply


class ReplyStream:
    """The replies to one request, as they arrive. Iterate it; `responder` names the agent that answered."""

    def __init__(
        self,
        requester: MeshRequester,
        topic: str,
        payload: bytes,
        streaming: bool,
        profile: RetryProfile,
        authorization: str | None,
    ) -> None:
        self._requester = requester
        self._topic = topic
        self._payload = payload
        self._streaming = streaming
        self._profile = profile
        self._authorization = authorization
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=1024)
        self._correlations: list[bytes] = []
        self.responder: str | None = None
        self.items_received = 0

    async def results(self) -> AsyncIterator[Any]:
        """Each reply's `result` as decoded JSON, with retries before the first reply; raises RemoteError /
        RequestTimeoutError."""
        async with aclosing(self._replies(typed=False)) as replies:
            async for result in replies:
                yield result

    async def items(self) -> AsyncIterator[StreamResponse]:
        """The replies to a streaming request as stream items, each parsed once, straight from its bytes. A reply
        that is not a valid stream item is logged and skipped (the stream goes on to its real end)."""
        async with aclosing(self._replies(typed=self._streaming)) as replies:
            async for item in replies:
                if isinstance(item, StreamResponse):
                    yield item
                else:
                    log.warning("skipping a reply on %s that is not a stream item", self._topic)

    async def _replies(self, *, typed: bool) -> AsyncIterator[Any]:
        """Replies until the stream ends; the inboxes of every attempt are gone once this generator is closed."""
        try:
            async for reply in self._attempts(typed=typed):
                yield reply
        finally:
            for correlation in self._correlations:
                self._requester._inboxes.pop(correlation, None)

    async def _attempts(self, *, typed: bool) -> AsyncIterator[Any]:
        profile = self._profile
        refused: JsonRpcErrorBody | None = None  # the last retryable refusal (-32003/-32004), if that was the answer
        for attempt in range(profile.attempts):
            if attempt:
                await asyncio.sleep(profile.delay(attempt - 1))
            await self._publish_attempt()
            timeout = profile.first_reply_timeout
            while True:
                try:
                    async with asyncio.timeout(timeout):  # unlike wait_for, no task per reply
                        envelope = await self._queue.get()
                except TimeoutError:
                    if self.items_received:
                        raise RequestTimeoutError(
                            f"stream from {self._topic} idle for {timeout}s", got_reply=True
                        ) from None
                    refused = None
                    break  # no reply at all: retry with new correlation data
                if KEEPALIVE_PROPERTY in envelope.user_properties:
                    continue  # the agent still runs the task: the idle clock starts again, nothing to relay
                item = _stream_item(envelope.payload) if typed else None
                if item is not None:  # the common case: one parse, and the item says whether it ends the stream
                    result, ends = item, item.ends_stream
                else:
                    response = _decode(envelope)
                    if response is None:
                        continue
                    if response.error is not None:
                        binding_error = response.error.binding_error
                        if binding_error and binding_error.retryable and not self.items_received:
                            log.info("%s answered %s; retrying", self._topic, binding_error.wire_name)
                            refused = response.error
                            break
                        raise RemoteError(response.error)
                    result = response.result
                    ends = not self._streaming or _ends_stream(result)
                self.items_received += 1
                self.responder = envelope.user_properties.get(RESPONDER_PROPERTY, self.responder)
                yield result
                if ends:
                    return
                timeout = profile.stream_idle_timeout
        if refused is not None:
            raise RemoteError(refused)  # every attempt was turned away: say so, rather than 'no reply'
        raise RequestTimeoutError(
            f"no reply from {self._topic} after {profile.attempts} attempts", got_reply=bool(self.items_received)
        )

    async def _publish_attempt(self) -> None:
        correlation = new_correlation()
        self._correlations.append(correlation)
        self._requester._inboxes[correlation] = self._queue
        user = [(AUTHORIZATION_PROPERTY, self._authorization)] if self._authorization else []
        properties = publish_properties(
            response_topic=self._requester.reply_topic,
            correlation_data=correlation,
            user=user,
            # a request still queued (say, for a replica that died) after the requester stopped waiting is moot
            message_expiry=max(1, math.ceil(self._profile.first_reply_timeout)),
        )
        await self._requester.link.publish(self._topic, self._payload, qos=1, properties=properties)


class _StreamItemReply(BaseModel):
    """A successful reply whose result is a stream item: decoded in one pass from the payload's bytes."""

    model_config = ConfigDict(extra="ignore")

    jsonrpc: Literal["2.0"]
    id: JsonRpcId = None
    result: StreamResponse
    error: None = None  # a reply with both is malformed: the general decoder turns it away


def _stream_item(payload: bytes) -> StreamResponse | None:
    """The stream item a reply carries, or None for anything else (an error, a malformed reply), which the general
    decoder then handles."""
    try:
        return _StreamItemReply.model_validate_json(payload).result
    except (ValidationError, ValueError):
        return None


def _decode(envelope: Envelope) -> JsonRpcResponse | None:
    try:
        return JsonRpcResponse.model_validate_json(envelope.payload)
    except (ValidationError, ValueError):
        log.warning("dropping malformed reply on %s", envelope.topic)
        return None


def _ends_stream(result: Any) -> bool:
    """Whether a streaming reply closes its stream. One that is not a stream item does not: the consumer skips it
    and the stream goes on to its real end or the idle timeout, rather than ending with no final state."""
    try:
        return StreamResponse.from_wire(result).ends_stream
    except (ValidationError, ValueError, TypeError):
        return False


class MeshRequester:
    """Sends requests to agents over MQTT and routes their replies back by Correlation Data.

    One connection and one unguessable reply inbox serve every request of the process."""

    def __init__(self, settings: MqttSettings, identity: AgentAddress, profile: RetryProfile | None = None) -> None:
        self.identity = identity
        self.profile = profile or RetryProfile()
        self.reply_topic = identity.reply_topic(new_reply_suffix())
        self._inboxes: dict[bytes, asyncio.Queue[Envelope]] = {}
        self._request_seq = 0
        self.link = MqttLink(
            settings,
            identity.client_id,
            [self.reply_topic],
            self._route,  # the broker pins identities to their id
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the connection (and the reply subscription) up until `stop` is set."""
        await self.link.run(stop)

    async def _route(self, envelope: Envelope) -> None:
        inbox = self._inboxes.get(envelope.correlation_data or b"")
        if inbox is None:
            log.debug("dropping reply with unknown correlation on %s", envelope.topic)
            return
        try:
            inbox.put_nowait(envelope)
        except asyncio.QueueFull:
            log.warning("reply inbox full; dropping a reply on %s", envelope.topic)

    def request(
        self,
        topic: str,
        method: str,
        params: dict[str, Any],
        *,
        profile: RetryProfile | None = None,
        authorization: str | None = None,
    ) -> ReplyStream:
        """Prepare a request to `topic` (an agent's request topic or a pool topic); iterate `.results()`."""
        self._request_seq += 1
        payload = json.dumps(
            {"jsonrpc": "2.0", "id": f"{self.identity.agent}-{self._request_seq}", "method": method, "params": params},
            separators=(",", ":"),
        ).encode()
        room = MAX_PACKET_BYTES - len(topic.encode()) - len(self.reply_topic) - len(authorization or "") - 1024
        if len(payload) > room:
            raise RequestTooLargeError(f"the request is {len(payload)} bytes; at most {room} fit in one MQTT packet")
        return ReplyStream(self, topic, payload, method in STREAMING_METHODS, profile or self.profile, authorization)

    async def call(
        self, topic: str, method: str, params: dict[str, Any], *, profile: RetryProfile | None = None
    ) -> Any:
        """A one-shot request: the single result, or RemoteError / RequestTimeoutError."""
        async with aclosing(self.request(topic, method, params, profile=profile).results()) as results:
            async for result in results:
                return result
        raise RequestTimeoutError(f"no result from {topic}", got_reply=False)
