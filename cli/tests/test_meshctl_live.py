"""meshctl's live side over the real mesh: following events on the broker, and answering an agent's question."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from a2amesh.agent import MeshAgent, TaskContext
from a2amesh.binding.responder import Responder
from a2amesh.models import AgentSkill
from a2amesh.mqtt import make_client
from a2amesh.settings import AgentSettings
from devstack.pki import Identity, Role
from devstack.stack import Stack

ASK_SKILL = "meshctl-ask"


class TaskSender:
    """Sends echo tasks to the coordinator from a thread, every 0.3 s until stopped (so a follower that
    subscribes at any moment sees events)."""

    def __init__(self, mesh: Stack, skill: str = "echo") -> None:
        self.url, self.skill = mesh.coordinator_url, skill
        self.auth = {"Authorization": f"Bearer {mesh.api_key}"}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.done.is_set():
                message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": "tick"}]}
                params = {"message": message, "metadata": {"skill": self.skill}}
                body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}
                response = http.post(self.url + "/", json=body, headers={"A2A-Version": "1.0", **self.auth})
                if response.status_code == 200 and "result" in response.json():
                    self.sent += 1  # only tasks the mesh accepted
                self.done.wait(0.3)

    def __enter__(self) -> TaskSender:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(timeout=30)


def test_events_prints_one_line_per_event_while_tasks_run(meshctl, mesh: Stack) -> None:
    started = time.monotonic()
    with TaskSender(mesh) as sender:
        result = meshctl("events", "--limit", "6", "--seconds", "30")
    assert result.exit_code == 0, result.output
    assert sender.sent and time.monotonic() - started < 30
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and all(" echo " in line for line in lines)
    kinds = {line.split()[3] for line in lines}
    assert kinds <= {"task", "status", "artifact"} and len(kinds) >= 2
    assert any("COMPLETED" in line or "WORKING" in line for line in lines)
    # it follows as its own identity: the broker pins meshctl's credentials to this client id
    assert "following $a2a/v1/event/#" in result.stderr and f"as {mesh.org}/{mesh.unit}/meshctl " in result.stderr


def test_events_of_one_agent_as_json_lines(meshctl, mesh: Stack) -> None:
    with TaskSender(mesh):
        result = meshctl("--json", "events", "--agent", "echo", "--limit", "4", "--seconds", "30")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 4
    assert all(event["agent"] == f"{mesh.org}/{mesh.unit}/echo" and event["taskId"] for event in events)
    assert {event["kind"] for event in events} <= {"task", "status", "artifact"}


def test_events_stop_after_seconds_when_nothing_happens(meshctl) -> None:
    started = time.monotonic()
    result = meshctl("events", "--agent", f"quiet-{uuid.uuid4().hex[:6]}", "--seconds", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and 0.9 < time.monotonic() - started < 10


class AskerAgent(MeshAgent):
    """Asks who to greet on the first turn, greets on the second."""

    name = "Asker"
    description = "Asks a question before it answers (meshctl's multi-turn test)."
    skills = [AgentSkill(id=ASK_SKILL, name="Ask", description="Greets whoever you name.", tags=["test"])]

    async def handle(self, task: TaskContext) -> None:
        if task.turn == 1:
            await task.require_input("Who should I greet?")
            return
        await task.artifact(text=f"hello {task.text}", name="greeting")


@pytest.fixture(scope="module")
def asker(mesh: Stack) -> Iterator[str]:
    """The asker agent, served from a thread of the test process for this module, then unregistered."""
    agent_id = f"meshctl-asker-{uuid.uuid4().hex[:6]}"
    mesh.provision(Identity(agent_id, Role.AGENT))
    credentials = mesh.mqtt_settings(mesh.pki.client(Identity(agent_id, Role.AGENT)))
    settings = AgentSettings(org=mesh.org, unit=mesh.unit, agent_id=agent_id, mqtt=credentials, http_port=0)
    agent = AskerAgent(settings)
    done = threading.Event()

    async def serve() -> None:
        stop = asyncio.Event()
        responder = asyncio.create_task(Responder(agent.card(), agent.handle, settings).run(stop))
        await asyncio.to_thread(done.wait)
        stop.set()
        await responder

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    online = mesh.agent_online(agent_id)
    deadline = time.monotonic() + 15
    while not online():
        assert time.monotonic() < deadline, "asker agent never came online"
        time.sleep(0.1)
    yield agent_id
    done.set()
    thread.join(timeout=20)
    asyncio.run(_unregister(settings))


async def _unregister(settings: AgentSettings) -> None:
    address = settings.address(settings.agent_id)
    async with make_client(settings.mqtt, address.client_id) as client:  # its own (pinned) id: the agent has stopped
        await client.publish(address.discovery_topic, b"", qos=1, retain=True)


def ask(meshctl, *args: str) -> tuple[list[str], list[str]]:
    """Send to the asker; return its output lines and the follow-up command it printed."""
    asked = meshctl("send", "greet someone", "--skill", ASK_SKILL, *args)
    assert asked.exit_code == 3, asked.output
    lines = asked.stdout.splitlines()
    follow_up = next(line for line in lines if line.startswith("answer with:"))
    return lines, follow_up.removeprefix("answer with:").split()


def test_input_required_exits_3_with_the_question_and_the_follow_up(meshctl, mesh: Stack, asker: str) -> None:
    lines, command = ask(meshctl)
    assert any("INPUT_REQUIRED" in line and "Who should I greet?" in line for line in lines)
    assert "the agent asks: Who should I greet?" in lines
    assert command[:4] == ["meshctl", "--coordinator", mesh.coordinator_url, "send"]
    assert command[4:6] == ["'<your", "answer>'"] and command[6] == "--task-id" and command[8] == "--context-id"
    assert lines[-3].startswith(f"INPUT_REQUIRED  task {command[7]}  (context {command[9]})")


def test_input_required_as_json_and_blocking(meshctl, asker: str) -> None:
    result = meshctl("send", "greet", "--agent", asker, "--no-stream", "--json")
    assert result.exit_code == 3
    task = json.loads(result.stdout)
    assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert task["status"]["message"]["parts"][0]["text"] == "Who should I greet?"


def test_answering_the_question_completes_the_task(meshctl, asker: str) -> None:
    _, command = ask(meshctl)
    task_id, context_id = command[7], command[9]
    answered = meshctl("send", "Ada", "--task-id", task_id, "--context-id", context_id)
    assert answered.exit_code == 0, answered.output
    assert "hello Ada" in answered.stdout.splitlines() and task_id in answered.stdout.splitlines()[-1]
