"""Push notifications through the official a2a-sdk client against a real webhook receiver (uvicorn on loopback,
allow-listed for this stack): configs kept in the task store and scoped to the task's owner, every later update
POSTed in order with the config's authentication and a delivery id, retried when the receiver fails, delivered
after a coordinator restart, and SSRF targets refused when the config is created."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import A2AError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from devstack.processes import free_port
from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, eventually, send_request, user_message

PUSH_ENV = {
    "MESH_PUSH_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
    "MESH_PUSH_BACKOFF": "0.2",
    "MESH_PUSH_MAX_ATTEMPTS": "4",
}
HOOK_SECRET = "hook-secret-4711"
OTHER_CALLER = "other-caller-" + "o" * 32


@dataclass
class Receiver:
    """A webhook: records every POST; `fail_first` answers 503 that many times per delivery id first."""

    url: str = ""
    fail_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)

    def accepted(self, task_id: str) -> list[dict[str, Any]]:
        """The deliveries accepted for a task, each once (the receiver de-duplicates by delivery id)."""
        seen: dict[str, dict[str, Any]] = {}
        for item in self.received:
            if item["task_id"] == task_id:
                seen.setdefault(item["delivery_id"], item)
        return list(seen.values())


@pytest.fixture(scope="module")
def pushing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("push"), ports=Ports.random(), agents={"echo": "agent_echo"}, extra_env=PUSH_ENV
    )
    stack.pki.api_keys_file.parent.mkdir(parents=True, exist_ok=True)
    other_digest = hashlib.sha256(OTHER_CALLER.encode()).hexdigest()
    stack.pki.api_keys_file.write_text(f"mesh-{uuid.uuid4().hex}\nother sha256:{other_digest} scopes=send,read\n")
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: Request) -> JSONResponse:
        delivery = request.headers.get("x-a2a-delivery-id", "")
        if state.refused.get(delivery, 0) < state.fail_first:
            state.refused[delivery] = state.refused.get(delivery, 0) + 1
            return JSONResponse({"error": "try later"}, status_code=503)
        body = await request.json()
        update = body.get("statusUpdate") or body.get("artifactUpdate") or body.get("task") or {}
        state.received.append(
            {
                "delivery_id": delivery,
                "authorization": request.headers.get("authorization"),
                "token": request.headers.get("x-a2a-notification-token"),
                "task_id": update.get("taskId") or update.get("id"),
                "body": body,
            }
        )
        return JSONResponse({"ok": True})

    async def moved(_request: Request) -> RedirectResponse:
        return RedirectResponse("/hook", status_code=307)  # a redirect the coordinator must not follow

    routes = [Route("/hook", hook, methods=["POST"]), Route("/moved", moved, methods=["POST"])]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes), "127.0.0.1", port, log_level="error"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), what="webhook receiver up")
    state.url = f"http://127.0.0.1:{port}/hook"
    yield state
    server.should_exit = True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(serving, 10)


async def _started(server: uvicorn.Server) -> bool:
    return server.started


@contextlib.asynccontextmanager
async def sdk_client(stack: Stack) -> AsyncIterator[tuple[Client, httpx.AsyncClient]]:
    async with httpx.AsyncClient(timeout=30.0, headers=auth_headers(stack)) as http:
        card = await A2ACardResolver(http, stack.coordinator_url).get_agent_card()
        yield ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card), http


async def start_slow_task(client: Client, delay_ms: int) -> str:
    request = send_request(user_message("push me"), skill="echo", return_immediately=True, delayMs=delay_ms)
    async for event in client.send_message(request):
        task = event.task if event.HasField("task") else None
        if task is not None and task.id:
            return task.id
    raise AssertionError("no task came back")


async def configs_of(client: Client, task_id: str) -> pb.ListTaskPushNotificationConfigsResponse:
    return await client.list_task_push_notification_configs(pb.ListTaskPushNotificationConfigsRequest(task_id=task_id))


def push_config(task_id: str, url: str, config_id: str = "hook") -> pb.TaskPushNotificationConfig:
    config = pb.TaskPushNotificationConfig(task_id=task_id, id=config_id, url=url, token="tok-" + task_id[:8])
    config.authentication.scheme = "Bearer"
    config.authentication.credentials = HOOK_SECRET
    return config


async def stored_events_after(http: httpx.AsyncClient, stack: Stack, task_id: str, first: str) -> list[str]:
    """The event ids the task store holds for the task from the one with id `first` on, in order."""
    body = (await http.get(f"{stack.taskstore_url}/tasks/{task_id}/events", params={"scope": "all"})).json()
    ids = [event["eventId"] for event in body["events"]]
    return ids[ids.index(first) :] if first in ids else []


async def test_updates_arrive_in_order_with_the_configured_authorization(pushing: Stack, receiver: Receiver) -> None:
    async with sdk_client(pushing) as (client, http):
        card = await A2ACardResolver(http, pushing.coordinator_url).get_agent_card()
        assert card.capabilities.push_notifications
        task_id = await start_slow_task(client, 2500)
        created = await client.create_task_push_notification_config(push_config(task_id, receiver.url))
        assert (created.id, created.url, created.authentication.scheme) == ("hook", receiver.url, "Bearer")

        listed = await client.list_task_push_notification_configs(
            pb.ListTaskPushNotificationConfigsRequest(task_id=task_id)
        )
        assert [config.id for config in listed.configs] == ["hook"]
        got = await client.get_task_push_notification_config(
            pb.GetTaskPushNotificationConfigRequest(task_id=task_id, id="hook")
        )
        assert got.authentication.credentials == HOOK_SECRET

        async def final_delivered() -> bool:
            return any(
                item["body"].get("statusUpdate", {}).get("status", {}).get("state") == "TASK_STATE_COMPLETED"
                for item in receiver.accepted(task_id)
            )

        await eventually(final_delivered, timeout=60, what="the completed update delivered")
        deliveries = receiver.accepted(task_id)
        assert all(item["authorization"] == f"Bearer {HOOK_SECRET}" for item in deliveries)
        assert all(item["token"] == "tok-" + task_id[:8] for item in deliveries)
        assert len({item["delivery_id"] for item in deliveries}) == len(deliveries)
        # in the order the task store recorded them, with nothing skipped after the first delivered one
        stored = await _event_ids(http, pushing, task_id)
        delivered = [_event_id(item, stored) for item in deliveries]
        assert delivered == sorted(delivered) and delivered == list(range(delivered[0], delivered[0] + len(delivered)))

        await client.delete_task_push_notification_config(
            pb.DeleteTaskPushNotificationConfigRequest(task_id=task_id, id="hook")
        )
        listed = await client.list_task_push_notification_configs(
            pb.ListTaskPushNotificationConfigsRequest(task_id=task_id)
        )
        assert list(listed.configs) == []


async def _event_ids(http: httpx.AsyncClient, stack: Stack, task_id: str) -> list[dict[str, Any]]:
    body = (await http.get(f"{stack.taskstore_url}/tasks/{task_id}/events", params={"scope": "all"})).json()
    return body["events"]


def _event_id(item: dict[str, Any], stored: list[dict[str, Any]]) -> int:
    """The position of a delivered body among the stored events (the body is the stored event as recorded)."""
    for index, event in enumerate(stored):
        if event["event"] == item["body"]:
            return index
    raise AssertionError(f"delivered body not among the stored events: {item['body']}")


async def test_a_receiver_that_fails_twice_still_gets_every_update(pushing: Stack, receiver: Receiver) -> None:
    receiver.fail_first = 2
    async with sdk_client(pushing) as (client, http):
        task_id = await start_slow_task(client, 1500)
        await client.create_task_push_notification_config(push_config(task_id, receiver.url))

        async def completed_delivered() -> bool:
            return any(
                item["body"].get("statusUpdate", {}).get("status", {}).get("state") == "TASK_STATE_COMPLETED"
                for item in receiver.accepted(task_id)
            )

        await eventually(completed_delivered, timeout=60, what="the completed update delivered after two failures")
        for item in receiver.accepted(task_id):
            assert receiver.refused[item["delivery_id"]] == 2  # each update was refused twice, then taken
        letters = (await http.get(f"{pushing.coordinator_url}/push/dead-letters")).json()["deadLetters"]
        assert [letter for letter in letters if letter["taskId"] == task_id] == []


async def test_a_coordinator_restart_between_updates_loses_none(pushing: Stack, receiver: Receiver) -> None:
    async with sdk_client(pushing) as (client, _http):
        task_id = await start_slow_task(client, 4000)
        await client.create_task_push_notification_config(push_config(task_id, receiver.url))
    pushing["coordinator"].stop()  # the task completes while no coordinator runs
    await asyncio.sleep(5)
    assert receiver.accepted(task_id) == []
    await asyncio.to_thread(pushing.launch, pushing.coordinator(), 60)

    async def completed_delivered() -> bool:
        return any(
            item["body"].get("statusUpdate", {}).get("status", {}).get("state") == "TASK_STATE_COMPLETED"
            for item in receiver.accepted(task_id)
        )

    await eventually(completed_delivered, timeout=60, what="the update recorded during the restart delivered")


async def test_a_dead_webhook_leaves_a_dead_letter_its_owner_can_read(pushing: Stack) -> None:
    dead_port = free_port()  # nothing listens here: every POST fails
    async with sdk_client(pushing) as (client, http):
        task_id = await start_slow_task(client, 500)
        await client.create_task_push_notification_config(push_config(task_id, f"http://127.0.0.1:{dead_port}/hook"))

        async def letters() -> list[dict[str, Any]]:
            body = (await http.get(f"{pushing.coordinator_url}/push/dead-letters")).json()
            return [letter for letter in body["deadLetters"] if letter["taskId"] == task_id]

        found = await eventually(letters, timeout=60, what="a dead letter")
        assert found[0]["attempts"] == int(PUSH_ENV["MESH_PUSH_MAX_ATTEMPTS"]) and found[0]["configId"] == "hook"
        assert found[0]["deliveryId"]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "http://10.1.2.3/hook",  # private
        "http://[::1]:8080/hook",  # loopback (only 127.0.0.1 is allow-listed here)
        "http://localhost.:1/hook",  # a name that resolves to loopback (::1 and 127.0.0.1: refused if any is)
        "ftp://example.com/hook",
    ],
)
async def test_a_webhook_at_a_forbidden_address_is_refused_at_config_time(pushing: Stack, url: str) -> None:
    async with sdk_client(pushing) as (client, _http):
        task_id = await start_slow_task(client, 0)
        with pytest.raises(A2AError) as refused:
            await client.create_task_push_notification_config(push_config(task_id, url))
        assert "refused" in str(refused.value) or "must be http" in str(refused.value)
        listed = await client.list_task_push_notification_configs(
            pb.ListTaskPushNotificationConfigsRequest(task_id=task_id)
        )
        assert list(listed.configs) == []


async def test_another_callers_task_has_no_push_configs_to_them(pushing: Stack, receiver: Receiver) -> None:
    async with sdk_client(pushing) as (client, _http):
        task_id = await start_slow_task(client, 0)
        await client.create_task_push_notification_config(push_config(task_id, receiver.url))
    secret = OTHER_CALLER
    async with httpx.AsyncClient(timeout=30.0, headers={"Authorization": f"Bearer {secret}"}) as http:
        card = await A2ACardResolver(http, pushing.coordinator_url).get_agent_card()
        other = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        for attempt in (
            configs_of(other, task_id),
            other.get_task_push_notification_config(
                pb.GetTaskPushNotificationConfigRequest(task_id=task_id, id="hook")
            ),
            other.create_task_push_notification_config(push_config(task_id, receiver.url, "mine")),
            other.delete_task_push_notification_config(
                pb.DeleteTaskPushNotificationConfigRequest(task_id=task_id, id="hook")
            ),
        ):
            with pytest.raises(A2AError, match="not found"):
                await attempt
        letters = (await http.get(f"{pushing.coordinator_url}/push/dead-letters")).json()["deadLetters"]
        assert letters == []  # the first caller's dead letters are not the other's to read


async def test_a_config_sent_with_the_message_gets_every_update_from_the_first(
    pushing: Stack, receiver: Receiver
) -> None:
    async with sdk_client(pushing) as (client, _http):
        request = send_request(user_message("inline"), skill="echo", return_immediately=True, delayMs=300)
        inline = request.configuration.task_push_notification_config
        inline.url, inline.id = receiver.url, "inline"
        inline.authentication.scheme, inline.authentication.credentials = "Bearer", HOOK_SECRET
        task_id = ""
        async for event in client.send_message(request):
            task_id = task_id or (event.task.id if event.HasField("task") else "")
        assert task_id

        async def completed_delivered() -> bool:
            return any(
                item["body"].get("statusUpdate", {}).get("status", {}).get("state") == "TASK_STATE_COMPLETED"
                for item in receiver.accepted(task_id)
            )

        await eventually(completed_delivered, timeout=60, what="the inline config's deliveries")
        first = receiver.accepted(task_id)[0]["body"]
        assert "task" in first  # the task's first event (SUBMITTED) was delivered too
        assert [c.id for c in (await configs_of(client, task_id)).configs] == ["inline"]

        refused = send_request(user_message("inline"), skill="echo", return_immediately=True)
        refused.configuration.task_push_notification_config.url = "http://169.254.169.254/"
        with pytest.raises(A2AError, match="refused"):
            async for _event in client.send_message(refused):
                pass


async def test_a_redirect_is_not_followed(pushing: Stack, receiver: Receiver) -> None:
    async with sdk_client(pushing) as (client, http):
        task_id = await start_slow_task(client, 300)
        await client.create_task_push_notification_config(push_config(task_id, receiver.url.replace("/hook", "/moved")))

        async def letters() -> list[dict[str, Any]]:
            body = (await http.get(f"{pushing.coordinator_url}/push/dead-letters")).json()
            return [letter for letter in body["deadLetters"] if letter["taskId"] == task_id]

        found = await eventually(letters, timeout=60, what="the redirected deliveries dead")
        assert "307" in found[0]["error"]
        assert receiver.accepted(task_id) == []  # /hook, where the redirect pointed, was never called
