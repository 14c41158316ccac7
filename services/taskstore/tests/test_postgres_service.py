"""The task store service on a real PostgreSQL: events in over MQTT, the record out over HTTP; its password from a
mounted file (MESH_DATABASE_PASSWORD_FILE), as Compose and Kubernetes hand it over."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from a2amesh.models import Message, Part, Role, StreamResponse, Task, TaskState, TaskStatus, TaskStatusUpdateEvent
from a2amesh.mqtt import EVENT_ID_PROPERTY, make_client, publish_properties
from a2amesh.topics import AgentAddress
from devstack.fixtures import BrokerHandle
from devstack.postgres import postgres_server
from devstack.processes import ManagedProcess, free_port
from devstack.stack import Ports, Stack

IMAGE_OPTIMIZATION = "2"
"""The level the store's image runs at (services/Dockerfile's SERVICE_OPTIMIZE, as compose.yaml builds it): without
docstrings and asserts, which must cost it nothing it does."""


PASSWORD = "store-" + os.urandom(12).hex()
"""The password of the password-protected server's superuser: what the store must read from its file."""


@pytest.fixture(scope="module")
def protected_postgres() -> Iterator[str]:
    """A PostgreSQL that takes connections over TCP by password only (SCRAM-SHA-256, as production's pg_hba.conf);
    its URL carries none. A top-level temporary folder: the server runs as `postgres` when the tests run as root."""
    root = Path(tempfile.mkdtemp(prefix="mesh-postgres-pw-"))
    root.chmod(0o711)
    with postgres_server(root / "server", password=PASSWORD) as url:
        yield url


def store_stack(broker: BrokerHandle, database_url: str, tmp_path: Path) -> Stack:
    ports = Ports(mqtt=broker.port, redis=0, registry=0, taskstore=free_port(), coordinator=0)
    org = f"pg-{uuid.uuid4().hex[:8]}"
    return Stack(run_dir=tmp_path, ports=ports, org=org, broker_of=broker.stack, database_url=database_url)


async def record_a_task(broker: BrokerHandle, stack: Stack) -> dict[str, Any] | None:
    """Publish a task's events as an agent would and read its record back from the store (None if it never came)."""
    task_id = str(uuid.uuid4())
    message = Message(message_id="m1", role=Role.USER, parts=[Part(text="hello")], task_id=task_id, context_id="c")
    events = [
        StreamResponse(
            task=Task(id=task_id, context_id="c", status=TaskStatus(state=TaskState.SUBMITTED), history=[message])
        ),
        *(
            StreamResponse(
                status_update=TaskStatusUpdateEvent(task_id=task_id, context_id="c", status=TaskStatus(state=state))
            )
            for state in (TaskState.WORKING, TaskState.COMPLETED)
        ),
    ]
    async with make_client(broker.settings, f"pg-pub-{uuid.uuid4().hex[:6]}") as client:
        for event in events:
            properties = publish_properties(user=[(EVENT_ID_PROPERTY, uuid.uuid4().hex)])
            await client.publish(
                AgentAddress(stack.org, stack.unit, "agent-pg").event_topic,
                event.to_json(),
                qos=1,
                properties=properties,
            )
    async with httpx.AsyncClient(base_url=stack.taskstore_url, timeout=5) as http:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            response = await http.get(f"/tasks/{task_id}/events?scope=all")
            if response.status_code == 200 and len(response.json()["statusHistory"]) == 3:
                return response.json()
            await asyncio.sleep(0.2)
    return None


STATES = ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]


@pytest.mark.parametrize("optimize", ["", IMAGE_OPTIMIZATION], ids=["as-dev", "as-image"])
async def test_the_store_records_a_task_in_postgresql(
    broker: BrokerHandle, postgres_url: str, tmp_path: Path, optimize: str
) -> None:
    stack = store_stack(broker, postgres_url, tmp_path)
    store = stack.taskstore()
    store.env["PYTHONOPTIMIZE"] = optimize
    stack.launch(store)
    try:
        record = await record_a_task(broker, stack)
    finally:
        codes = stack.stop()
    assert record is not None, "the task never reached PostgreSQL"
    assert [s["state"] for s in record["statusHistory"]] == STATES
    assert codes["taskstore"] == 0


async def test_the_store_connects_with_the_password_of_its_file(
    broker: BrokerHandle, protected_postgres: str, tmp_path: Path
) -> None:
    """The password in MESH_DATABASE_PASSWORD_FILE (with the newline a mounted secret may end in) replaces the one
    of MESH_DATABASE_URL (here a wrong one): the store records into the password-protected server, and its log hides
    the password. The server does refuse a connection without it, so the file's password is the one that got in."""
    assert make_url(protected_postgres).password is None
    password_file = tmp_path / "database.password"
    password_file.write_text(PASSWORD + "\n")
    wrong_in_url = make_url(protected_postgres).set(password="not-the-password")
    stack = store_stack(broker, wrong_in_url.render_as_string(hide_password=False), tmp_path)
    store = stack.taskstore()
    store.env["MESH_DATABASE_PASSWORD_FILE"] = str(password_file)
    stack.launch(store)
    try:
        record = await record_a_task(broker, stack)
    finally:
        codes = stack.stop()
    assert record is not None, f"the task never reached PostgreSQL:\n{store.log_tail()}"
    assert [s["state"] for s in record["statusHistory"]] == STATES
    assert codes["taskstore"] == 0
    log = store.log_path.read_text()
    assert "database postgresql+psycopg://" in log and ":***@" in log, "the startup line names the database"
    assert PASSWORD not in log, "the password leaked into the log"

    in_url = make_url(protected_postgres).set(password=PASSWORD).render_as_string(hide_password=False)
    stack = store_stack(broker, in_url, tmp_path / "in-url")  # no file: the URL's own password, as before
    stack.launch(stack.taskstore())
    try:
        record = await record_a_task(broker, stack)
    finally:
        codes = stack.stop()
    assert record is not None and codes["taskstore"] == 0, "a URL with its own password no longer works"

    unprotected = store_stack(broker, protected_postgres, tmp_path / "without")
    without = unprotected.taskstore()  # the same URL, no file: refused
    without.start()
    try:
        await eventually_logged(without, "no password supplied")
    finally:
        assert without.stop() == 0


async def eventually_logged(process: ManagedProcess, text: str, timeout: float = 30.0) -> None:
    """Wait (bounded) until `process` logged `text`, while it keeps running and never serves."""
    deadline = time.monotonic() + timeout
    while text not in process.log_path.read_text(errors="replace"):
        assert process.running, f"{process.name} exited:\n{process.log_tail()}"
        assert time.monotonic() < deadline, f"{process.name} never logged {text!r}:\n{process.log_tail()}"
        await asyncio.sleep(0.2)
    assert process.ready is not None and not process.ready(), f"{process.name} serves without its database"


async def test_a_missing_or_wrong_password_file_fails_clearly(
    broker: BrokerHandle, protected_postgres: str, tmp_path: Path
) -> None:
    """A password file that is missing, unreadable or empty stops the store at once with exit 1 and one line naming
    MESH_DATABASE_PASSWORD_FILE (no traceback, no fallback to the URL alone), as does a URL it cannot parse (without
    repeating it: it may hold a password); a wrong password keeps it out of service, saying the database refused it,
    until it is stopped."""
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    secret = "p4ss-in-a-bad-url"
    cases = {
        "missing": (protected_postgres, tmp_path / "absent.password", "cannot be read: No such file or directory"),
        "a folder": (protected_postgres, tmp_path, "cannot be read"),
        "empty": (protected_postgres, empty, "is empty"),
        "a bad URL": (f"postgresql+psycopg://u:{secret}@localhost:port/db", empty, ""),
    }
    for what, (url, path, reason) in cases.items():
        stack = store_stack(broker, url, tmp_path / what)
        store = stack.taskstore()
        store.env["MESH_DATABASE_PASSWORD_FILE"] = str(path)
        store.start()
        code = store.wait(30)
        log = store.log_tail()
        assert code == 1, f"{what}: exit {code}:\n{log}"
        expected = f"MESH_DATABASE_PASSWORD_FILE={path} {reason}" if reason else "MESH_DATABASE_URL is not a database"
        assert f"task store not started: {expected}" in log, f"{what}:\n{log}"
        assert "Traceback" not in log, f"{what}: a traceback instead of a clear error:\n{log}"
        assert secret not in log, f"{what}: the URL's password leaked into the log"

    wrong_file = tmp_path / "wrong.password"
    wrong_file.write_text("not-" + PASSWORD)
    stack = store_stack(broker, protected_postgres, tmp_path / "wrong")
    wrong = stack.taskstore()
    wrong.env["MESH_DATABASE_PASSWORD_FILE"] = str(wrong_file)
    wrong.start()
    try:
        await eventually_logged(wrong, "password authentication failed")
    finally:
        assert wrong.stop() == 0
    assert "not-" + PASSWORD not in wrong.log_path.read_text(), "the wrong password leaked into the log"
