"""Ids no database can hold (PostgreSQL's text takes no NUL) in the task store's by-id routes, on a real store process
over SQLite and over PostgreSQL: each answers as for an id the store lacks, the same on both, never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.fixtures import BrokerHandle
from devstack.processes import free_port
from devstack.stack import Ports, Stack

NUL_IDS = ["%00", "a%00b"]
"""As they stand in a URL path: the store reads them as "\\x00" and "a\\x00b"."""

OWNER = {"owner": "key:alice", "tenant": "t1"}

BY_ID: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/tasks/{id}", None),
    ("GET", "/tasks/{id}/events", None),
    ("GET", "/tasks/{id}/push-configs", None),
    ("PUT", "/tasks/{id}/push-configs/hook", {"url": "https://example.com/hook"}),
    ("DELETE", "/tasks/{id}/push-configs/hook", None),
    ("DELETE", "/tasks/t1/push-configs/{id}", None),
    ("PUT", "/tasks/{id}/push-configs/hook/delivered", {"seq": 1}),
    ("PUT", "/tasks/t1/push-configs/{id}/delivered", {"seq": 1}),
]
"""Every route that names a task (or a push config) in its path; read as an owner, so that an unknown task is a 404
on each of them."""


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, broker: BrokerHandle, tmp_path: Path) -> Any:
    """A task store process on the session broker, over a fresh SQLite file or the session's PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 's.db'}"
    ports = Ports(mqtt=broker.port, redis=0, registry=0, taskstore=free_port(), coordinator=0)
    org = f"ids-{uuid.uuid4().hex[:8]}"
    stack = Stack(run_dir=tmp_path, ports=ports, org=org, broker_of=broker.stack, database_url=url)
    stack.launch(stack.taskstore())
    yield stack
    codes = stack.stop()
    assert codes["taskstore"] == 0, stack["taskstore"].log_tail()


async def answer(http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, str]:
    """The status and body text of one request, read as OWNER."""
    response = await http.request(method, path, params=OWNER, json=body)
    return response.status_code, response.text


async def test_a_nul_in_an_id_is_answered_as_an_unknown_id(store: Stack) -> None:
    async with httpx.AsyncClient(base_url=store.taskstore_url, timeout=10) as http:
        for method, template, body in BY_ID:
            unknown = await answer(http, method, template.format(id=f"none-{uuid.uuid4()}"), body)
            assert unknown[0] == 404, (method, template, unknown)
            for nul_id in NUL_IDS:
                assert await answer(http, method, template.format(id=nul_id), body) == unknown, (method, template)

        # a write that would store one is refused, as is a batched read asking about one
        put = await answer(http, "PUT", "/tasks/t1/push-configs/a%00b", {"url": "https://example.com/hook"})
        assert put[0] == 400 and "NUL" in put[1], put
        for config in (
            {"url": "https://example.com/\x00"},
            {"url": "https://example.com/hook", "token": "t\x00"},
            {"url": "https://example.com/hook", "authentication": {"scheme": "Bearer", "credentials": "\x00"}},
        ):
            put = await answer(http, "PUT", "/tasks/t1/push-configs/hook", config)
            assert put[0] == 400 and "NUL" in put[1], (config, put)
        for authentication in ("Bearer x", ["Bearer", "x"]):  # not an object: refused, not a 500
            config = {"url": "https://example.com/hook", "authentication": authentication}
            put = await answer(http, "PUT", "/tasks/t1/push-configs/hook", config)
            assert put[0] == 400 and "authentication" in put[1], (config, put)
        states = await http.post("/task-states", params=OWNER, json={"ids": ["t1", "a\x00b"]})
        assert states.status_code == 400 and "NUL" in states.json()["error"]

        # and so are the push workers' own requests (only the coordinator's replicas send them)
        letter = {"deliveryId": "d1", "taskId": "t1", "configId": "c1", "url": "https://example.com/hook"}
        for path, body in (
            ("/push/claims", {"holder": "h\x00", "leaseSeconds": 5}),
            ("/push/claims", {"holder": "h1", "leaseSeconds": 5, "renew": [{"taskId": "t\x00", "id": "c1"}]}),
            ("/push/release", {"holder": "h\x00"}),
            ("/push/dead-letters", {**letter, "taskId": "t\x00", "eventSeq": 1, "attempts": 3, "error": "e"}),
            ("/push/dead-letters", {**letter, "eventSeq": 1, "attempts": 3, "error": "refused \x00"}),
        ):
            response = await http.post(path, json=body)
            assert response.status_code == 400 and "NUL" in response.json()["error"], (path, body, response.text)

        health = await http.get("/healthz")
        assert health.status_code == 200, health.text


def page_token(task_id: str) -> str:
    """A page token as the store's Cursor writes one, naming `task_id`."""
    raw = json.dumps({"u": "2025-01-01T00:00:00+00:00", "i": task_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def test_a_nul_in_a_listing_or_a_readers_name_is_a_clear_400(store: Stack) -> None:
    """What a listing filters on, and whose tasks a read may see, is asked of the database too: NUL there is refused
    alike on both, where PostgreSQL failed the query."""
    async with httpx.AsyncClient(base_url=store.taskstore_url, timeout=10) as http:
        good = await http.get("/tasks", params={"scope": "all", "pageToken": page_token("t1")})
        assert good.status_code == 200, good.text  # the token as the store makes it reads
        for params in (
            {"scope": "all", "contextId": "c\x00"},
            {"scope": "all", "agent": ["acme/default/echo", "a\x00"]},
            {"scope": "all", "pageToken": page_token("t\x00")},
            {"owner": "key:\x00"},
            {"owner": "key:alice", "tenant": "\x00"},
        ):
            response = await http.get("/tasks", params=params)
            assert response.status_code == 400, (params, response.text)
            assert isinstance(response.json()["error"], str)
        for path in ("/tasks/t1", "/tasks/t1/events", "/push/dead-letters"):
            response = await http.get(path, params={"owner": "key:\x00"})
            assert response.status_code == 400 and "NUL" in response.json()["error"], (path, response.text)
