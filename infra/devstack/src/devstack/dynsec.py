"""Admitting an identity to a running broker through Mosquitto's dynamic-security control topic, as its admin.
(The broker writes the change back to its configuration file, so it survives a broker restart.)"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from a2amesh.mqtt import make_client
from a2amesh.settings import MqttSettings
from devstack.pki import ADMIN, Identity, Pki

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ALREADY = ("already exists",)


class DynsecError(RuntimeError):
    """The broker refused a dynamic-security command."""


def add_identity(admin: MqttSettings, pki: Pki, identity: Identity, timeout: float = 10.0) -> None:
    """Create the identity's role and client on the running broker (an identity that exists is left as it is)."""
    client, role = pki.dynsec_entries(identity)
    # the control API takes the password itself (the plugin hashes it); the file format holds the hash
    client = {key: value for key, value in client.items() if key not in ("password", "salt", "iterations")}
    client["password"] = pki.client(identity).password
    commands = [{"command": "createRole", **role}, {"command": "createClient", **client}]
    # its own thread and loop: callers may be sync code or already inside an event loop (async tests)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _run(admin, commands, timeout)).result()


async def _run(admin: MqttSettings, commands: list[dict[str, Any]], timeout: float) -> None:
    async with make_client(admin, ADMIN) as client:
        await client.subscribe(RESPONSE_TOPIC, qos=1)
        await client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
        async with asyncio.timeout(timeout):
            async for message in client.messages:
                responses = json.loads(bytes(message.payload)).get("responses", [])
                errors = [r for r in responses if r.get("error") and not any(a in r["error"] for a in ALREADY)]
                if errors:
                    raise DynsecError("; ".join(f"{r['command']}: {r['error']}" for r in errors))
                return
