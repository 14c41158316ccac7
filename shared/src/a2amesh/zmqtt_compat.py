"""Every place the mesh relies on internals of zmqtt (FastStream's MQTT client, which the task store also drives
directly: `a2amesh.zmqtt_consumer`), in this one module, each with the reason and the versions it was verified with,
as `a2amesh.mqtt_compat` does for aiomqtt and paho. It imports neither of those, so the task store does not load
them. shared/pyproject.toml pins zmqtt with an upper bound, and shared/tests/test_mqtt_compat.py fails loudly
(naming this module) if an upgrade breaks any of them.

- zmqtt (FastStream's MQTT client) sends each PUBACK as its own TLS write and drain (`StreamTransport.write`), which
  was a fifth of the task store's CPU: `one_write` collects the packets a block writes and sends them in one, by
  shadowing the connection's transport `write` (`client._protocol._transport`, private) for that block. It takes
  a FastStream broker or a bare zmqtt client (the task store's, `a2amesh.zmqtt_consumer`).
- zmqtt matches every incoming PUBLISH against its subscription tree anew (`SubscriptionIndex.select`: a tree walk,
  a filter match and a sort by specificity), which was a tenth of the task store's CPU although its events come on
  a few hundred topics: `memoize_subscription_selection` remembers the selection per topic, forgotten whenever a
  subscription is added or removed (the index's `add`, `remove` and `clear`; `add_many` goes through `add`).
- zmqtt's `Subscription.get_message` races the subscription's queue against the client's failure signal with a
  new task, `asyncio.wait` and `gather` for every message, which was a tenth of the task store's CPU: `next_messages`
  takes the messages already waiting in that queue (`Subscription._queue`, private) at once, and calls
  `get_message` only when none is, so a burst costs one wait, not one per message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # FastStream and zmqtt are the `faststream` extra's: imported only where used
    import zmqtt
    from faststream.mqtt import MQTTBroker
    from zmqtt._internal.transport.base import StreamTransport

VERIFIED_WITH = {"zmqtt": ("0.2.5",)}
"""Versions every workaround here was verified with (shared/tests/test_mqtt_compat.py checks the installed one)."""


def stream_transport(broker: MQTTBroker | zmqtt.MQTTClient) -> StreamTransport | None:
    """The TLS/TCP stream zmqtt writes the packets of `broker` (a FastStream broker or a zmqtt client) to, or None
    (not connected, or zmqtt no longer keeps one where this module looks: callers then write packet by packet, as
    zmqtt does)."""
    from zmqtt._internal.transport.base import StreamTransport  # here: the faststream extra may be absent

    config = getattr(broker, "config", None)
    client = getattr(config, "client", None) if config is not None else broker
    transport = getattr(getattr(client, "_protocol", None), "_transport", None)
    return transport if isinstance(transport, StreamTransport) else None


@contextlib.asynccontextmanager
async def one_write(broker: MQTTBroker | zmqtt.MQTTClient) -> AsyncIterator[None]:
    """Every packet `broker`'s connection writes inside the block (the PUBACKs of a batch) goes out in one write at
    its end, in order. Meant for a block that does not wait on the network: its writes only queue until the end."""
    transport = stream_transport(broker)
    if transport is None:
        yield
        return
    chunks: list[bytes] = []
    write = transport.write

    async def collect(data: bytes) -> None:
        chunks.append(data)

    transport.write = collect  # type: ignore[method-assign]
    try:
        yield
    finally:
        del transport.write  # the class's method again
        if chunks:
            await write(b"".join(chunks))


SELECTION_CACHE_SIZE = 4096
"""Topics whose subscription selection is remembered at most (then the memory starts again)."""


def memoize_subscription_selection() -> None:
    """Make zmqtt remember, per topic, which subscription a PUBLISH goes to (see the module's docstring). The
    selection depends only on the topic and the set of subscriptions, so it is forgotten whenever that set changes.
    Idempotent; a process-wide patch of zmqtt's `SubscriptionIndex`, whose instances (one per connection) are not
    reachable before they route their first message."""
    from zmqtt._internal.subscription_index import SubscriptionIndex  # here: the faststream extra may be absent

    if getattr(SubscriptionIndex, "_mesh_memoized", False):
        return
    select, add, remove, clear = (
        SubscriptionIndex.select,
        SubscriptionIndex.add,
        SubscriptionIndex.remove,
        SubscriptionIndex.clear,
    )

    def selections(index: SubscriptionIndex) -> dict[str, Any]:
        memo: dict[str, Any] | None = index.__dict__.get("_mesh_selections")
        if memo is None:
            memo = index.__dict__["_mesh_selections"] = {}
        return memo

    def memoized_select(self: SubscriptionIndex, topic: str) -> Any:
        memo = selections(self)
        selection = memo.get(topic)
        if selection is None:
            if len(memo) >= SELECTION_CACHE_SIZE:
                memo.clear()
            selection = memo[topic] = select(self, topic)
        return selection

    def forgetting(method: Callable[..., Any]) -> Callable[..., Any]:
        def changed(self: SubscriptionIndex, *args: Any) -> Any:
            selections(self).clear()
            return method(self, *args)

        return changed

    SubscriptionIndex.select = memoized_select  # type: ignore[method-assign]
    SubscriptionIndex.add = forgetting(add)  # type: ignore[method-assign]
    SubscriptionIndex.remove = forgetting(remove)  # type: ignore[method-assign]
    SubscriptionIndex.clear = forgetting(clear)  # type: ignore[method-assign]
    SubscriptionIndex._mesh_memoized = True  # type: ignore[attr-defined]


async def next_messages(subscription: zmqtt.Subscription, limit: int) -> list[zmqtt.Message]:
    """The messages waiting on a zmqtt subscription (at most `limit`, in order), or the next one to arrive when
    none is waiting. Raises as `get_message` does once the subscription is detached or the client has failed."""
    queue = getattr(subscription, "_queue", None)
    if not isinstance(queue, asyncio.Queue) or queue.empty() or subscription._detached:
        return [await subscription.get_message()]  # zmqtt's own path: waits, and raises what it raises
    failure = subscription._client._subscription_failure
    if failure is not None and failure.done():
        raise failure.result()
    taken = [queue.get_nowait() for _ in range(min(limit, queue.qsize()))]
    await subscription._notify_capacity_available()  # as get_message does: room for messages zmqtt holds back
    return taken
