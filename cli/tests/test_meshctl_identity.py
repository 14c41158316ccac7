"""`meshctl identity` over the real mesh: an operator admits an outside requester, it connects as the a2a-over-mqtt
SDK does (client id with a session suffix) and gets a completed task from echo; then it is revoked."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import aiomqtt
from a2a_over_mqtt import A2ARequest, Requester, TopicSpace

from a2amesh.mqtt import make_client
from a2amesh.settings import MqttSettings
from devstack.stack import Stack
from tests.interop.sdk_config import sdk_config

from .conftest import Meshctl


def settings_from(mesh: Stack, record: dict[str, str]) -> MqttSettings:
    return MqttSettings(
        host="127.0.0.1",
        port=mesh.ports.mqtt,
        tls=True,
        ca_file=Path(record["caFile"]),
        cert_file=Path(record["certFile"]),
        key_file=Path(record["keyFile"]),
        username=record["username"],
        password_file=Path(record["passwordFile"]),
    )


async def refused(settings: MqttSettings, client_id: str) -> bool:
    try:
        async with make_client(settings, client_id):
            return False
    except aiomqtt.MqttError:
        return True


def test_identity_add_admits_an_sdk_requester_and_remove_revokes_it(
    meshctl: Meshctl, mesh: Stack, tmp_path: Path
) -> None:
    name = f"ops-{uuid.uuid4().hex[:6]}"
    pki = str(mesh.pki.root)
    added = meshctl("identity", "add", name, "--role", "requester", "--pki-dir", pki, "--json")
    assert added.exit_code == 0, added.output
    record = json.loads(added.output)
    assert record["username"] == f"{mesh.org}/{mesh.unit}/{name}" and record["role"] == "requester"
    settings = settings_from(mesh, record)
    kept = {}  # what the revoked party still holds after its files are deleted: certificate, key, password
    for field in ("cert_file", "key_file"):
        kept[field] = tmp_path / field
        shutil.copyfile(getattr(settings, field), kept[field])
    held = settings.model_copy(update={"password": settings.secret(), "password_file": None, **kept})

    listed = meshctl("identity", "list", "--pki-dir", pki, "--json")
    assert {"username": record["username"], "role": "requester", "pool": ""} in json.loads(listed.output)["identities"]

    requester = Requester(sdk_config(settings), TopicSpace(mesh.org, mesh.unit), requester_id=name)
    request = A2ARequest(text="admitted by meshctl", request_id="r1")

    async def ask() -> list[tuple[str, str]]:
        return [reply async for reply in requester.stream("echo", request.to_json(), "corr-1")]

    replies = asyncio.run(ask())
    assert replies[-1] == ("terminal", "admitted by meshctl"), replies

    again = meshctl("identity", "add", name, "--role", "agent", "--pki-dir", pki)
    assert again.exit_code == 2 and "already admitted as requester" in again.output

    removed = meshctl("identity", "remove", name, "--pki-dir", pki)
    assert removed.exit_code == 0, removed.output
    assert asyncio.run(refused(held, f"{record['username']}-{uuid.uuid4().hex[:6]}"))
    assert meshctl("identity", "remove", name, "--pki-dir", pki).exit_code == 2


def test_identity_add_refuses_bad_input_clearly(meshctl: Meshctl, mesh: Stack) -> None:
    pki = str(mesh.pki.root)
    cases = {
        ("identity", "add", "bad/name", "--role", "requester"): "bad name",
        ("identity", "add", "someone", "--role", "coordinator"): "bad role",
        ("identity", "add", "coordinator", "--role", "requester"): "mesh's own identities",
        ("identity", "add", "someone", "--role", "requester", "--pool", "p"): "only an agent joins a pool",
    }
    for args, reason in cases.items():
        result = meshctl(*args, "--pki-dir", pki)
        assert result.exit_code == 2 and reason in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert meshctl("identity", "list", "--pki-dir", "/nonexistent").exit_code == 2
