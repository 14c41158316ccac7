"""An MQTT link's publish window (a2amesh.mqtt.PublishWindow) on the real broker: publishes beyond the window wait
their turn, first come first served, so what one caller publishes after another arrives after it; never more than
the window are out at once; and a broker that stays away fails the waiting publishes within their wait, not one
window's worth per wait. (tests/test_publish_window.py runs the burst it exists for: thousands of an agent's tasks
ending at once.)"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from pydantic import ValidationError

from a2amesh.mqtt import Envelope, MqttLink, NotConnectedError
from a2amesh.settings import MqttSettings
from devstack.agent_testing import running
from devstack.fixtures import BrokerHandle
from devstack.processes import free_port

WINDOW = 4
PUBLISHES = 400


async def test_publishes_beyond_the_window_wait_their_turn_in_order(broker: BrokerHandle) -> None:
    topic = f"test/window/{uuid.uuid4().hex[:8]}"
    received: list[int] = []
    all_received = asyncio.Event()

    async def on_message(envelope: Envelope) -> None:
        received.append(int(envelope.payload))
        if len(received) >= PUBLISHES:
            all_received.set()

    settings = broker.settings.model_copy(update={"publish_window": WINDOW})
    publisher = MqttLink(settings, f"window-{uuid.uuid4().hex[:8]}")
    watcher = MqttLink(broker.settings, f"watch-{uuid.uuid4().hex[:8]}", [topic], on_message)
    most_out = 0

    async def publish(number: int) -> None:
        nonlocal most_out
        await publisher.publish(topic, str(number).encode(), wait=60.0)
        most_out = max(most_out, publisher.window.out)

    async with running(watcher), running(publisher):
        publishes = [asyncio.create_task(publish(number)) for number in range(PUBLISHES)]  # all called at once
        await asyncio.sleep(0)  # every publish has run to its place in the window
        assert publisher.window.waiting == PUBLISHES - WINDOW
        async with asyncio.timeout(60):
            await asyncio.gather(*publishes)
            await all_received.wait()
    assert most_out <= WINDOW
    assert publisher.window.out == 0 and publisher.window.waiting == 0
    assert received == list(range(PUBLISHES)), "publishes left in another order than they were called"


async def test_a_broker_that_stays_away_fails_the_waiting_publishes_within_their_wait(broker: BrokerHandle) -> None:
    """40 publishes, 2 at a time, each allowed 2 s without a broker: all fail at about 2 s, not in 20 rounds of 2 s
    (the time spent waiting for a turn, while the link has no connection, counts against the wait)."""
    nobody = broker.settings.model_copy(update={"port": free_port(), "publish_window": 2})
    link = MqttLink(nobody, f"window-{uuid.uuid4().hex[:8]}")
    stop = asyncio.Event()
    runner = asyncio.create_task(link.run(stop))
    started = time.monotonic()
    try:
        async with asyncio.timeout(20):  # one round of 2 s per window's worth would take 40 s
            outcomes = await asyncio.gather(
                *(link.publish("test/window/nobody", b"x", wait=2.0) for _ in range(40)), return_exceptions=True
            )
    finally:
        stop.set()
        await asyncio.wait_for(runner, timeout=10)
    assert all(isinstance(outcome, NotConnectedError) for outcome in outcomes), outcomes[:3]
    assert link.window.out == 0 and link.window.waiting == 0
    assert time.monotonic() - started >= 2.0  # none gave up before its wait


@pytest.mark.parametrize("size", [0, -1])
def test_a_window_must_hold_at_least_one_publish(size: int) -> None:
    with pytest.raises(ValidationError, match="publish_window"):
        MqttSettings.model_validate({"publish_window": size})
