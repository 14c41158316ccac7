"""Every service answers /livez, /healthz and /metrics, and the metrics count real work."""

from __future__ import annotations

import json
import re
import uuid

import httpx
from a2a.types import a2a_pb2 as pb

from devstack.stack import Stack
from tests.conftest import collect, forget_card, send_request, user_message


def http_base(mesh: Stack, name: str) -> str:
    return f"http://127.0.0.1:{mesh[name].env['MESH_HTTP_PORT']}"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_every_service_is_live_ready_and_exports_metrics(mesh: Stack, http: httpx.AsyncClient) -> None:
    services = ["coordinator", "registry", "taskstore", *mesh.agents]
    for name in services:
        base = http_base(mesh, name)
        assert (await http.get(f"{base}/livez")).status_code == 200, name
        ready = await http.get(f"{base}/healthz")
        assert ready.status_code == 200 and ready.json()["status"] == "ok", (name, ready.text)
        exported = (await http.get(f"{base}/metrics")).text
        assert metric(exported, "process_resident_memory_bytes") > 0, name


async def test_task_metrics_count_completed_tasks_at_the_coordinator_and_the_agent(
    mesh: Stack, http: httpx.AsyncClient, make_client
) -> None:
    async def completed(name: str) -> float:
        exported = (await http.get(f"{http_base(mesh, name)}/metrics")).text
        return metric(exported, "mesh_tasks_total", state="COMPLETED", skill="echo")

    before = {name: await completed(name) for name in ("coordinator", "echo")}
    for text in ("one", "two", "three"):
        [event] = await collect(make_client(), send_request(user_message(text), skill="echo"))
        assert event.task.status.state == 3

    assert await completed("coordinator") == before["coordinator"] + 3
    assert await completed("echo") == before["echo"] + 3
    exported = (await http.get(f"{http_base(mesh, 'echo')}/metrics")).text
    assert metric(exported, "mesh_task_duration_seconds_count", service="echo", skill="echo", agent="echo") >= 3


async def test_json_logs_are_one_object_per_line_with_the_task_id(mesh: Stack, make_client) -> None:
    """At INFO an agent logs the tasks that end other than COMPLETED (completions are counted by the metrics)."""
    agent_id = f"echo-json-{uuid.uuid4().hex[:6]}"
    process = mesh.launch(mesh.agent(agent_id, "agent_echo", MESH_LOG_JSON="true"))
    [rejected] = await collect(make_client(), send_request(user_message("log me"), agent=agent_id, delayMs=-1))
    [completed] = await collect(make_client(), send_request(user_message("not me"), agent=agent_id))
    assert rejected.task.status.state == pb.TASK_STATE_REJECTED
    assert completed.task.status.state == pb.TASK_STATE_COMPLETED
    process.stop()
    await forget_card(mesh, agent_id)  # it offers `echo`: later tests routing by skill must not find it
    entries = [json.loads(line) for line in process.log_path.read_text().splitlines() if line.strip()]
    assert entries and all({"ts", "level", "logger", "msg"} <= set(entry) for entry in entries)
    ended = [entry for entry in entries if entry.get("task_id") == rejected.task.id]
    assert ended and ended[-1]["msg"].endswith("REJECTED") and ended[-1]["agent"] == agent_id
    assert ended[-1]["level"] == "INFO"
    assert not [entry for entry in entries if entry.get("task_id") == completed.task.id]
