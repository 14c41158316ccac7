"""Changing what a running broker admits, through Mosquitto's dynamic-security control topic, as its admin.
(The broker writes every change back to its configuration file, so it survives a broker restart.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiomqtt

from a2amesh.mqtt import make_client
from a2amesh.settings import MqttSettings
from devstack.pki import ADMIN, Identity, Pki

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ALREADY = ("already exists",)
GONE = ("not found",)


class DynsecError(RuntimeError):
    """The broker refused a dynamic-security command, or could not be reached."""


def add_identity(admin: MqttSettings, pki: Pki, identity: Identity, timeout: float = 10.0) -> None:
    """Create the identity's role and client on the running broker (an identity that exists is left as it is)."""
    client, role = pki.dynsec_entries(identity)
    # the control API takes the password itself (the plugin hashes it); the file format holds the hash
    client = {key: value for key, value in client.items() if key not in ("password", "salt", "iterations")}
    client["password"] = pki.client(identity).password
    run_commands(admin, [{"command": "createRole", **role}, {"command": "createClient", **client}], ALREADY, timeout)


def remove_identity(admin: MqttSettings, pki: Pki, identity: Identity, timeout: float = 10.0) -> None:
    """Delete the identity's client and role on the running broker. The plugin disconnects every connection of that
    username at once, and refuses it from then on (an identity that is not there is left as it is)."""
    username = identity.username(pki.org, pki.unit)
    commands = [
        {"command": "deleteClient", "username": username},
        {"command": "deleteRole", "rolename": f"id:{username}"},
    ]
    run_commands(admin, commands, GONE, timeout)


def run_commands(
    admin: MqttSettings, commands: list[dict[str, Any]], tolerated: tuple[str, ...] = (), timeout: float = 10.0
) -> None:
    """Send dynamic-security commands in one message and wait for their answers; any error but the `tolerated`
    ones raises DynsecError."""
    tagged = [{**command, "correlationData": uuid.uuid4().hex} for command in commands]
    # its own thread and loop: callers may be sync code or already inside an event loop (async tests)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _run(admin, tagged, tolerated, timeout)).result()


async def _run(admin: MqttSettings, commands: list[dict[str, Any]], tolerated: tuple[str, ...], timeout: float) -> None:
    mine = {command["correlationData"] for command in commands}
    try:
        async with asyncio.timeout(timeout), make_client(admin, ADMIN) as client:
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
        raise DynsecError(f"broker {admin.host}:{admin.port} not reachable as {ADMIN}: {error}") from None
    except TimeoutError:
        raise DynsecError(f"broker {admin.host}:{admin.port} did not answer within {timeout:.0f}s") from None
