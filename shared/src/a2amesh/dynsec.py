"""Commands to Mosquitto's dynamic-security plugin over its control topic, as an identity allowed to send them: how
identities are created and removed on a running broker (devstack's `make identity`, a replica enrolling itself).
The broker writes every change back to its own file, so it survives a restart."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiomqtt

from a2amesh.mqtt import make_client
from a2amesh.settings import MqttSettings

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"


class DynsecError(RuntimeError):
    """The broker refused a dynamic-security command, or could not be reached."""


def run_commands(
    admin: MqttSettings,
    commands: list[dict[str, Any]],
    tolerated: tuple[str, ...] = (),
    timeout: float = 10.0,
    client_id: str | None = None,
) -> None:
    """Send dynamic-security commands in one message and wait for their answers; any error but the `tolerated`
    ones raises DynsecError. `client_id`: the connection's (default: the username)."""
    tagged = [{**command, "correlationData": uuid.uuid4().hex} for command in commands]
    # its own thread and loop: callers may be sync code or already inside an event loop (async tests)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _run(admin, tagged, tolerated, timeout, client_id)).result()


async def _run(
    admin: MqttSettings,
    commands: list[dict[str, Any]],
    tolerated: tuple[str, ...],
    timeout: float,
    client_id: str | None,
) -> None:
    mine = {command["correlationData"] for command in commands}
    try:
        async with asyncio.timeout(timeout), make_client(admin, client_id or admin.username or "dynsec") as client:
            await client.subscribe(RESPONSE_TOPIC, qos=1)
            await client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
            async for message in client.messages:
                responses = json.loads(bytes(message.payload)).get("responses", [])
                answers = [r for r in responses if r.get("correlationData") in mine]
                if not answers:
                    continue  # another admin's answers
                errors = [r for r in answers if r.get("error") and not any(t in r["error"] for t in tolerated)]
                if errors:
                    raise DynsecError("; ".join(f"{r['command']}: {r['error']}" for r in errors))
                return
    except aiomqtt.MqttError as error:
        raise DynsecError(f"broker {admin.host}:{admin.port} not reachable as {admin.username}: {error}") from None
    except TimeoutError:
        raise DynsecError(f"broker {admin.host}:{admin.port} did not answer within {timeout:.0f}s") from None
