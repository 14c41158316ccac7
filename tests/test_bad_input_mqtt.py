"""Bad input over MQTT against the real mesh: every malformed request is answered with the right JSON-RPC error, or
logged and dropped when it cannot be answered, and afterwards the agent (or service) still serves a valid request.

A raw MQTT 5 client with a reply inbox of its own publishes whatever it likes (as the broker's `mesh-tester`
identity), so nothing here goes through the binding's well-behaved requester unless a test says so. The counts of
what was sent are printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from a2amesh.binding import MeshRequester, RequestTooLargeError
from a2amesh.binding.wire import STREAMING_METHODS
from a2amesh.models import StreamResponse, TaskState
from a2amesh.mqtt import EVENT_ID_PROPERTY, Envelope, make_client
from a2amesh.mqtt_base import STATUS_PROPERTY, TASK_AGENT_PROPERTY
from a2amesh.topics import AgentAddress, new_reply_suffix
from devstack.stack import Stack
from tests.conftest import eventually

REPLY_TIMEOUT = 10.0
"""Seconds an agent gets to answer one request (it answers bad input at once; echo tasks take milliseconds)."""
QUIET = 0.5
"""Seconds of silence after which no further reply is expected."""
MAX_PACKET = 1_048_576
"""The broker policy's max_packet_size (services/broker/conf.d)."""
FUZZ_EXAMPLES = 200

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


# ---------------------------------------------------------------------------------------------------------------------
# Tally, printed at the end of the run
# ---------------------------------------------------------------------------------------------------------------------


class TallyReport:
    """A pytest plugin printing a tally of what a suite sent, at the end of the run."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.counts: Counter[str] = Counter()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.counts:
            return
        terminalreporter.section(self.title)
        width = max(len(name) for name in [*self.counts, "total"])
        for name, count in sorted(self.counts.items()):
            terminalreporter.write_line(f"{name:<{width}}  {count:6d}")
        terminalreporter.write_line(f"{'total':<{width}}  {sum(self.counts.values()):6d}")


@pytest.fixture(scope="session")
def tally(request: pytest.FixtureRequest) -> Counter[str]:
    report = TallyReport("Bad input over MQTT: messages sent")
    request.config.pluginmanager.register(report, "bad-input-mqtt-tally")
    return report.counts


# ---------------------------------------------------------------------------------------------------------------------
# A raw client with a reply inbox
# ---------------------------------------------------------------------------------------------------------------------


def address(mesh: Stack, name: str) -> AgentAddress:
    return AgentAddress(mesh.org, mesh.unit, name)


def rpc(method: str, params: Any, request_id: Any = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()


def send_params(text: str, *, task_id: str | None = None, context_id: str | None = None, **metadata: Any) -> dict:
    message: dict[str, Any] = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]}
    message["taskId"] = task_id or str(uuid.uuid4())
    if context_id:
        message["contextId"] = context_id
    params: dict[str, Any] = {"message": message}
    if metadata:
        params["metadata"] = metadata
    return params


def properties(response_topic: str | None, correlation: bytes | None, user: list[tuple[str, str]] = ()) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if response_topic:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    if user:
        props.UserProperty = list(user)
    return props


def streaming(payload: bytes) -> bool:
    """Whether a request asks for a stream (so that only an error or a final item closes the exchange)."""
    try:
        request = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(request, dict) and request.get("method") in STREAMING_METHODS


def ends(reply: dict, stream: bool) -> bool:
    """Whether a reply closes its exchange: an error, any result of a one-shot request, or a stream item that ends
    the stream."""
    if "error" in reply or not stream:
        return True
    try:
        return StreamResponse.from_wire(reply.get("result")).ends_stream
    except ValueError:
        return False


class Inbox:
    """A raw MQTT 5 client: publishes anything anywhere and gathers the replies on its inbox by correlation."""

    def __init__(self, mesh: Stack, name: str) -> None:
        self.mesh = mesh
        self.identity = address(mesh, name)
        self.topic = self.identity.reply_topic(new_reply_suffix())
        self.replies: defaultdict[bytes, list[dict]] = defaultdict(list)
        self.streams: dict[bytes, bool] = {}
        self.other: list[Envelope] = []
        self._arrived = asyncio.Event()
        self._mqtt: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Inbox:
        self._mqtt = make_client(self.mesh.tester_settings(), f"{self.identity.client_id}-{uuid.uuid4().hex[:6]}")
        await self._mqtt.__aenter__()
        await self._mqtt.subscribe(self.topic, qos=1)
        self._reader = asyncio.create_task(self._read(self._mqtt))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._mqtt is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._mqtt.__aexit__(None, None, None)

    @property
    def client(self) -> aiomqtt.Client:
        assert self._mqtt is not None
        return self._mqtt

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            envelope = Envelope.of(message)
            if envelope.topic == self.topic and envelope.correlation_data is not None:
                try:
                    body = json.loads(envelope.payload)
                except ValueError:
                    body = {"undecodable": envelope.payload[:200].decode(errors="replace")}
                self.replies[envelope.correlation_data].append(body)
            else:
                self.other.append(envelope)
            self._arrived.set()

    async def publish(
        self, topic: str, payload: bytes, *, response: bool = True, correlation: bytes | None = None, **kw: Any
    ) -> bytes:
        """Publish with this inbox as Response Topic (unless `response` is false); the correlation used."""
        correlation = correlation if correlation is not None else uuid.uuid4().hex.encode()
        self.streams[correlation] = streaming(payload)
        props = properties(self.topic if response else None, correlation, kw.pop("user", []))
        await self.client.publish(topic, payload, qos=1, properties=props, **kw)
        return correlation

    async def exchange(self, topic: str, payload: bytes, timeout: float = REPLY_TIMEOUT) -> list[dict]:
        """Publish a request and wait (bounded) for the replies that close it."""
        correlation = await self.publish(topic, payload)
        return await self.wait_end(correlation, timeout)

    async def wait_end(self, correlation: bytes, timeout: float = REPLY_TIMEOUT) -> list[dict]:
        deadline = time.monotonic() + timeout
        stream = self.streams.get(correlation, False)
        while not (self.replies[correlation] and ends(self.replies[correlation][-1], stream)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no closing reply within {timeout}s; got {self.replies[correlation]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=remaining)
        return list(self.replies[correlation])

    async def error_of(self, topic: str, payload: bytes) -> dict:
        """The single JSON-RPC error a request gets (and checks that nothing else follows it)."""
        correlation = await self.publish(topic, payload)
        [reply] = await self.wait_end(correlation)
        await asyncio.sleep(QUIET)
        assert len(self.replies[correlation]) == 1, f"more than one reply: {self.replies[correlation]}"
        assert "error" in reply, f"expected an error, got {reply}"
        assert isinstance(reply["error"].get("message"), str) and reply["error"]["message"]
        return reply["error"]


def api_headers(mesh: Stack) -> dict[str, str]:
    headers = {"A2A-Version": "1.0", "Content-Type": "application/json"}
    key = getattr(mesh, "api_key", None)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def agent_health_url(mesh: Stack, agent_id: str) -> str:
    return f"http://127.0.0.1:{mesh[agent_id].env['MESH_HTTP_PORT']}/healthz"


async def assert_healthy(mesh: Stack, inbox: Inbox, agent_id: str = "echo") -> None:
    """The agent (and every service) is up and the agent still completes a valid task."""
    marker = f"still here {uuid.uuid4().hex[:8]}"
    replies = await inbox.exchange(address(mesh, agent_id).request_topic, rpc("SendMessage", send_params(marker)))
    [reply] = replies
    task = reply["result"]["task"]
    assert task["status"]["state"] == TaskState.COMPLETED.value, task["status"]
    assert task["artifacts"][0]["parts"][0]["text"] == marker
    async with httpx.AsyncClient(timeout=5) as http:
        for url in (
            agent_health_url(mesh, agent_id),
            f"{mesh.registry_url}/healthz",
            f"{mesh.taskstore_url}/healthz",
            f"{mesh.coordinator_url}/healthz",
        ):
            response = await http.get(url)
            assert response.status_code == 200, f"{url}: {response.status_code} {response.text}"
    for name in ("broker", "registry", "taskstore", "coordinator", agent_id):
        assert mesh[name].running, f"{name} died:\n{mesh[name].log_tail()}"


@pytest.fixture(scope="module")
async def inbox(mesh: Stack) -> AsyncIterator[Inbox]:
    async with Inbox(mesh, f"badin-{uuid.uuid4().hex[:6]}") as box:
        yield box


@pytest.fixture
def echo(mesh: Stack) -> str:
    return address(mesh, "echo").request_topic


# ---------------------------------------------------------------------------------------------------------------------
# Requests the echo agent must answer with an error
# ---------------------------------------------------------------------------------------------------------------------


def _without_task_id() -> dict:
    params = send_params("no id")
    del params["message"]["taskId"]
    return params


def _message_with(**fields: Any) -> dict:
    return {"message": {**send_params("x")["message"], **fields}}


# (what is wrong, the expected error code): payload
BAD_REQUESTS: dict[tuple[str, int], dict[str, bytes]] = {
    ("malformed JSON", PARSE_ERROR): {
        "truncated": b'{"jsonrpc":"2.0","id":1,"method":"SendMessage"',
        "not json": b"hello mesh",
        "empty": b"",
        "invalid utf-8": b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}',
        "deep nesting": b"[" * 100_000,
        "5000-digit number": b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"GetTask","params":{}}',
    },
    ("wrong shape", INVALID_REQUEST): {
        "array": b"[]",
        "batch": b'[{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x"}}]',
        "number": b"42",
        "string": b'"SendMessage"',
        "null": b"null",
        "no jsonrpc": b'{"id":1,"method":"GetTask","params":{}}',
        "jsonrpc 1.0": b'{"jsonrpc":"1.0","id":1,"method":"GetTask","params":{}}',
        "no method": b'{"jsonrpc":"2.0","id":1,"params":{}}',
        "method not a string": b'{"jsonrpc":"2.0","id":1,"method":7,"params":{}}',
        "empty method": b'{"jsonrpc":"2.0","id":1,"method":"","params":{}}',
        "params an array": b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":["x"]}',
        "id an object": b'{"jsonrpc":"2.0","id":{"a":1},"method":"GetTask","params":{}}',
        "id a boolean": b'{"jsonrpc":"2.0","id":true,"method":"GetTask","params":{}}',
        "unknown member": b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{},"extra":1}',
    },
    ("unknown method", METHOD_NOT_FOUND): {
        method: rpc(method, send_params("hi"))
        for method in ["NoSuchMethod", "sendMessage", "tasks/send", "message/send", "GetTask "]
    },
    ("invalid params / task id", INVALID_PARAMS): {
        "no taskId": rpc("SendMessage", _without_task_id()),
        "taskId not a uuid": rpc("SendMessage", send_params("x", task_id="task-1")),
        "taskId empty": rpc("SendStreamingMessage", _message_with(taskId="")),
        "taskId a number": rpc("SendMessage", _message_with(taskId=12345)),
        "no message": rpc("SendMessage", {"metadata": {}}),
        "no parts": rpc("SendMessage", _message_with(parts=[])),
        "part with two contents": rpc("SendMessage", _message_with(parts=[{"text": "a", "url": "b"}])),
        "role unknown": rpc("SendMessage", _message_with(role="ROLE_ROBOT")),
        "GetTask id missing": rpc("GetTask", {}),
        "GetTask id a list": rpc("GetTask", {"id": ["x"]}),
        "GetTask historyLength beyond int32": rpc("GetTask", {"id": "x", "historyLength": 2**40}),
        "CancelTask id missing": rpc("CancelTask", {"metadata": {}}),
        "SubscribeToTask id null": rpc("SubscribeToTask", {"id": None}),
    },
}
CASES = [(kind, code, payload) for (kind, code), cases in BAD_REQUESTS.items() for payload in cases.values()]
CASE_IDS = [f"{kind}: {name}" for (kind, _), cases in BAD_REQUESTS.items() for name in cases]


@pytest.mark.parametrize(("kind", "code", "payload"), CASES, ids=CASE_IDS)
async def test_bad_request_is_answered_with_its_error_and_the_agent_serves_on(
    mesh: Stack, inbox: Inbox, echo: str, kind: str, code: int, payload: bytes, tally: Counter[str]
) -> None:
    tally[kind] += 1
    error = await inbox.error_of(echo, payload)
    assert error["code"] == code, error
    await assert_healthy(mesh, inbox)


async def test_context_id_that_does_not_match_the_stored_one_is_answered_invalid_params(
    mesh: Stack, inbox: Inbox, echo: str, tally: Counter[str]
) -> None:
    tally["contextId mismatch"] += 2
    task_id = str(uuid.uuid4())
    [first] = await inbox.exchange(echo, rpc("SendMessage", send_params("first", task_id=task_id, context_id="ctx-1")))
    assert first["result"]["task"]["contextId"] == "ctx-1"
    error = await inbox.error_of(echo, rpc("SendMessage", send_params("second", task_id=task_id, context_id="ctx-2")))
    assert error["code"] == INVALID_PARAMS and "contextId" in error["message"]
    await assert_healthy(mesh, inbox)


# ---------------------------------------------------------------------------------------------------------------------
# Oversized payloads
# ---------------------------------------------------------------------------------------------------------------------


async def test_payload_over_the_brokers_limit_disconnects_the_publisher_not_the_agent(
    mesh: Stack, inbox: Inbox, echo: str, tally: Counter[str]
) -> None:
    tally["oversized (> max packet)"] += 1
    payload = rpc("SendMessage", send_params("x" * (MAX_PACKET + 10_000)))
    refused = False
    try:
        async with make_client(mesh.tester_settings(), f"badin-big-{uuid.uuid4().hex[:6]}") as client:
            await client.publish(echo, payload, qos=1, properties=properties(inbox.topic, b"too-big"))
            await client.publish(echo, rpc("GetTask", {"id": "x"}), qos=1, properties=properties(inbox.topic, b"after"))
    except aiomqtt.MqttError:
        refused = True
    assert refused, "the broker accepted a PUBLISH larger than its max_packet_size"
    await asyncio.sleep(QUIET)
    assert not inbox.replies[b"too-big"], "the oversized request reached the agent"
    await assert_healthy(mesh, inbox)


@pytest.mark.parametrize("method", ["SendMessage", "SendStreamingMessage", "GetTask", "SendMessage again"])
async def test_request_under_the_limit_whose_answer_would_exceed_it_is_still_answered(
    mesh: Stack, inbox: Inbox, echo: str, method: str, tally: Counter[str]
) -> None:
    """600 KB of text fits in a request, and each stream item carrying it fits too; but a Task carrying it twice
    (history and artifact) does not fit in one reply. The agent must answer within the broker's limit rather than
    be disconnected for publishing too much (which also cuts off every other requester's replies)."""
    tally["large request, larger answer"] += 1
    text = "y" * 600_000
    task_id = str(uuid.uuid4())
    send_method = "SendMessage" if method == "SendMessage" else "SendStreamingMessage"
    reconnects_before = await _reconnects(mesh, "echo")
    replies = await inbox.exchange(echo, rpc(send_method, send_params(text, task_id=task_id)), timeout=20)
    if method == "GetTask":
        replies = await inbox.exchange(echo, rpc("GetTask", {"id": task_id}), timeout=20)
    elif method == "SendMessage again":  # a retry of a finished task: the task as it ended, one-shot
        replies = await inbox.exchange(echo, rpc("SendMessage", send_params(text, task_id=task_id)), timeout=20)
    assert replies, "no answer"
    last = replies[-1]
    if "error" in last:
        assert last["error"]["code"] < 0 and "too large" in last["error"]["message"], last["error"]
    else:
        result = last["result"]
        task = result.get("task", result) if "statusUpdate" not in result else None
        state = task["status"]["state"] if task else result["statusUpdate"]["status"]["state"]
        assert state == TaskState.COMPLETED.value
    assert await _reconnects(mesh, "echo") == reconnects_before, "the agent was disconnected by the broker"
    await assert_healthy(mesh, inbox)


def test_a_requester_refuses_to_publish_a_request_over_the_brokers_limit(mesh: Stack, tally: Counter[str]) -> None:
    """Published, it would get the requester's own connection dropped (and every reply in flight with it)."""
    tally["oversized requests refused by the requester"] += 1
    requester = MeshRequester(mesh.tester_settings(), address(mesh, f"badin-big-{uuid.uuid4().hex[:6]}"))
    params = send_params("é" * 200_000)  # 400 KB of UTF-8, but escaped six bytes a character in the request's JSON
    with pytest.raises(RequestTooLargeError, match="fit in one MQTT packet"):
        requester.request(address(mesh, "echo").request_topic, "SendMessage", params)
    requester.request(address(mesh, "echo").request_topic, "SendMessage", send_params("é" * 100_000))


async def _reconnects(mesh: Stack, agent_id: str) -> float:
    url = agent_health_url(mesh, agent_id).replace("/healthz", "/metrics")
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    lines = [line for line in text.splitlines() if line.startswith("mesh_mqtt_reconnects_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


# ---------------------------------------------------------------------------------------------------------------------
# Requests that cannot be answered, and replies nobody asked for
# ---------------------------------------------------------------------------------------------------------------------


async def test_request_without_response_topic_or_correlation_is_logged_and_dropped(
    mesh: Stack, inbox: Inbox, echo: str, tally: Counter[str]
) -> None:
    tally["no Response Topic / no Correlation Data"] += 2
    log_before = mesh["echo"].log_path.read_text(errors="replace").count("without Response Topic or Correlation Data")
    no_topic = await inbox.publish(echo, rpc("SendMessage", send_params("unanswerable")), response=False)
    props = properties(inbox.topic, None)
    await inbox.client.publish(echo, rpc("SendMessage", send_params("uncorrelated")), qos=1, properties=props)
    await assert_healthy(mesh, inbox)
    await asyncio.sleep(QUIET)
    assert not inbox.replies[no_topic]
    assert not [e for e in inbox.other if e.topic == inbox.topic], "a reply without correlation data was published"

    async def logged() -> int:
        text = mesh["echo"].log_path.read_text(errors="replace")
        return text.count("without Response Topic or Correlation Data") - log_before

    assert await eventually(logged, timeout=5, what="both drops logged") == 2


async def test_replies_with_unknown_correlation_are_dropped_and_the_real_request_completes(
    mesh: Stack, inbox: Inbox, echo: str, tally: Counter[str]
) -> None:
    requester = MeshRequester(mesh.tester_settings(), address(mesh, f"badin-req-{uuid.uuid4().hex[:6]}"))
    stop = asyncio.Event()
    link = asyncio.create_task(requester.run(stop))
    try:
        await asyncio.wait_for(requester.link.connected.wait(), timeout=10)
        params = send_params("the real one", delayMs=1500)
        pending = asyncio.create_task(requester.call(echo, "SendMessage", params))
        junk = [
            (
                b'{"jsonrpc":"2.0","id":1,"result":{"task":{"id":"forged","status":{"state":"TASK_STATE_FAILED"}}}}',
                b"x",
            ),
            (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"forged"}}', uuid.uuid4().hex.encode()),
            (b"garbage", b"y"),
            (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"no correlation"}}', None),
            (b"", b""),
        ]
        for _ in range(20):
            for payload, correlation in junk:
                props = properties(None, correlation)
                await inbox.client.publish(requester.reply_topic, payload, qos=1, properties=props)
                tally["replies with unknown correlation"] += 1
        result = await asyncio.wait_for(pending, timeout=30)
        assert result["task"]["status"]["state"] == TaskState.COMPLETED.value
        assert result["task"]["artifacts"][0]["parts"][0]["text"] == "the real one"
        assert not requester._inboxes, "the finished request left its inbox behind"
    finally:
        stop.set()
        await asyncio.wait_for(link, timeout=15)
    await assert_healthy(mesh, inbox)


async def test_junk_on_the_coordinators_reply_inbox_changes_nothing(
    mesh: Stack, inbox: Inbox, echo: str, tally: Counter[str]
) -> None:
    """The coordinator's inbox is unguessable, but an identity allowed to read request topics learns it: junk
    published there (forged correlation, the real correlation with malformed payloads) leaves the task intact."""
    watcher = make_client(mesh.tester_settings(), f"badin-watch-{uuid.uuid4().hex[:6]}")
    async with watcher, httpx.AsyncClient(timeout=30) as http:
        await watcher.subscribe(echo, qos=1)
        text = f"through the coordinator {uuid.uuid4().hex[:6]}"
        # pinned: the test watches this agent's request topic, whatever else offers the skill
        call = asyncio.create_task(coordinator_send(mesh, http, text, agent="echo", delayMs=1500))
        request = await asyncio.wait_for(_first_request_with(watcher, text), timeout=10)
        coordinator_inbox, correlation = request.response_topic, request.correlation_data
        assert coordinator_inbox and correlation
        junk = [
            (b"garbage", correlation),
            (b"{}", correlation),
            (b'{"jsonrpc":"2.0","id":1}', correlation),
            (b'{"jsonrpc":"2.0","id":1,"result":{"statusUpdate":{"taskId":"other"}}}', correlation),
            (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"forged"}}', b"forged-correlation"),
            (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"forged"}}', None),
        ]
        for payload, corr in junk:
            await watcher.publish(coordinator_inbox, payload, qos=1, properties=properties(None, corr))
            tally["junk on the coordinator's inbox"] += 1
        response = await asyncio.wait_for(call, timeout=30)
    assert response.status_code == 200, response.text
    task = response.json()["result"]["task"]
    assert task["status"]["state"] == TaskState.COMPLETED.value, task
    assert task["artifacts"][0]["parts"][0]["text"] == text
    await assert_healthy(mesh, inbox)


async def coordinator_send(mesh: Stack, http: httpx.AsyncClient, text: str, **metadata: Any) -> httpx.Response:
    """A blocking SendMessage to the coordinator over JSON-RPC, as any A2A client sends it."""
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message, "metadata": metadata}}
    return await http.post(f"{mesh.coordinator_url}/", json=body, headers=api_headers(mesh))


async def _first_request_with(client: aiomqtt.Client, text: str) -> Envelope:
    async for message in client.messages:
        envelope = Envelope.of(message)
        if text.encode() in envelope.payload:
            return envelope
    raise AssertionError("no request seen")


@pytest.mark.parametrize(
    "answer",
    [
        {"result": {"unexpected": "not a stream item"}},
        {"result": {"statusUpdate": {"taskId": "someone-else", "status": {"state": "TASK_STATE_WORKING"}}}},
        {"error": {"code": -32602, "message": "the agent does not like this"}},
    ],
    ids=["result-not-a-stream-item", "update-then-silence", "error"],
)
async def test_an_agent_answering_junk_gets_the_task_ended_not_the_client_hung(
    mesh: Stack, inbox: Inbox, answer: dict, tally: Counter[str]
) -> None:
    """A responder the coordinator is pinned to answers its request with something that is not a stream: the HTTP
    client gets an answer within a bound (an error, or the task FAILED) instead of waiting forever."""
    tally["junk answers from an agent"] += 1
    ghost = address(mesh, f"badin-ghost-{uuid.uuid4().hex[:6]}")
    watcher = make_client(mesh.tester_settings(), f"badin-ghost-{uuid.uuid4().hex[:6]}")
    async with watcher, httpx.AsyncClient(timeout=60) as http:
        await watcher.subscribe(ghost.request_topic, qos=1)
        text = f"for the ghost {uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        call = asyncio.create_task(coordinator_send(mesh, http, text, agent=ghost.agent))
        request = await asyncio.wait_for(_first_request_with(watcher, text), timeout=10)
        reply = json.dumps({"jsonrpc": "2.0", "id": json.loads(request.payload)["id"], **answer}).encode()
        assert request.response_topic is not None
        await watcher.publish(
            request.response_topic, reply, qos=1, properties=properties(None, request.correlation_data)
        )
        try:
            response = await asyncio.wait_for(call, timeout=45)
        except TimeoutError:
            call.cancel()
            raise AssertionError(
                f"the coordinator did not answer within 45s after the agent replied {answer}"
            ) from None
    assert response.status_code == 200, response.text
    body = response.json()
    if "error" in body:
        assert body["error"]["code"] < 0 and body["error"]["message"]
    else:
        task = body["result"]["task"]
        assert task["status"]["state"] == TaskState.FAILED.value, task
        task_id = task["id"]
        async with httpx.AsyncClient(timeout=5) as http:

            async def recorded_failed() -> bool:
                got = await http.get(f"{mesh.taskstore_url}/tasks/{task_id}?scope=all")
                return got.status_code == 200 and got.json()["status"]["state"] == TaskState.FAILED.value

            await eventually(recorded_failed, timeout=10, what="the store records the task FAILED")
    print(f"\nagent answered {answer}: the client had its answer in {time.monotonic() - started:.1f}s")
    await assert_healthy(mesh, inbox)


# ---------------------------------------------------------------------------------------------------------------------
# Cards and events the services must ignore
# ---------------------------------------------------------------------------------------------------------------------


def card(name: str, skill: str) -> dict:
    return {
        "name": name,
        "description": "bad-input test card",
        "version": "1",
        "supportedInterfaces": [{"url": "mqtt://127.0.0.1/x", "protocolBinding": "JSONRPC"}],
        "skills": [{"id": skill, "name": skill, "description": "never routed to", "tags": ["badinput"]}],
    }


async def test_invalid_cards_and_cards_on_wrong_topics_are_ignored_by_the_registry(
    mesh: Stack, inbox: Inbox, tally: Counter[str]
) -> None:
    marker = uuid.uuid4().hex[:8]
    agent = address(mesh, f"badin-card-{marker}")
    skill = f"badinput-{marker}"
    good = json.dumps(card(f"card-{marker}", skill)).encode()
    online = [(STATUS_PROPERTY, "online")]
    record_url = f"{mesh.registry_url}/agents/{agent}"
    invalid = [
        (b"not json", online),
        (b"{}", online),
        (b"[]", online),
        (json.dumps({**card("x", skill), "supportedInterfaces": []}).encode(), online),
        (json.dumps({**card("", skill)}).encode(), online),
        (json.dumps({**card("x", skill), "skills": [{"id": skill}]}).encode(), online),
        (b"[" * 50_000, online),
        (b"\xff\xfe", online),
        (good, [(STATUS_PROPERTY, "sideways")]),
    ]
    wrong_topics = [
        f"$a2a/v1/discovery/{mesh.org}/{mesh.unit}",
        f"$a2a/v1/discovery/{mesh.org}/{mesh.unit}/{agent.agent}/extra",
        f"$a2a/v1/discovery/{mesh.org}/{mesh.unit}/bad id {marker}",
        f"$a2a/v1/discovery/{mesh.org}/{mesh.unit}/{agent.agent}/",
        f"$a2a/v1/discovery/{mesh.org}",
    ]
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            # an unknown agent: invalid cards never create a record
            for payload, user in invalid:
                await inbox.publish(agent.discovery_topic, payload, response=False, user=user)
                tally["invalid cards"] += 1
            for topic in wrong_topics:
                await inbox.publish(topic, good, response=False, user=online)
                tally["cards on wrong topics"] += 1
            # a known agent: an invalid card leaves its record as it was
            await inbox.publish(agent.discovery_topic, good, response=False, user=online, retain=True)
            record = await _registry_record(http, record_url, lambda r: r is not None)
            for payload, user in invalid:
                await inbox.publish(agent.discovery_topic, payload, response=False, user=user)
                tally["invalid cards"] += 1
            await inbox.publish(agent.discovery_topic, good, response=False, user=[(STATUS_PROPERTY, "offline")])
            after = await _registry_record(http, record_url, lambda r: r is not None and r["status"] == "offline")
            assert after["card"] == record["card"] and after["skills"] == [skill]
            listed = (await http.get(f"{mesh.registry_url}/agents")).json()["agents"]
            names = [r["address"] for r in listed if r["card"].get("name") == f"card-{marker}"]
            assert names == [str(agent)], f"cards on wrong topics were indexed: {names}"
        finally:
            await inbox.publish(agent.discovery_topic, b"", response=False, retain=True)  # unregister
        await _registry_record(http, record_url, lambda r: r is None)
    await assert_healthy(mesh, inbox)


async def _registry_record(http: httpx.AsyncClient, url: str, wanted: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(url)
        assert response.status_code in (200, 404), response.text
        record = response.json() if response.status_code == 200 else None
        if wanted(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"registry record at {url} not as expected: {record}")
        await asyncio.sleep(0.1)


def task_event(task_id: str, state: str = "TASK_STATE_SUBMITTED", **task: Any) -> bytes:
    return json.dumps({"task": {"id": task_id, "contextId": "ctx", "status": {"state": state}, **task}}).encode()


async def test_events_on_wrong_topics_or_malformed_are_ignored_by_the_store(
    mesh: Stack, inbox: Inbox, tally: Counter[str]
) -> None:
    source = address(mesh, f"badin-src-{uuid.uuid4().hex[:6]}")
    ignored: list[str] = []
    wrong_topics = [
        f"$a2a/v1/event/{mesh.org}/{mesh.unit}",
        f"$a2a/v1/event/{mesh.org}/{mesh.unit}/{source.agent}/extra",
        f"$a2a/v1/event/{mesh.org}/{mesh.unit}/bad id",
        f"$a2a/v1/event/{mesh.org}/{mesh.unit}/{source.agent}/",
        f"$a2a/v1/event/{mesh.org}",
    ]
    for topic in wrong_topics:
        task_id = str(uuid.uuid4())
        ignored.append(task_id)
        await inbox.publish(topic, task_event(task_id), response=False, user=[(EVENT_ID_PROPERTY, task_id)])
        tally["events on wrong topics"] += 1
    task_id = str(uuid.uuid4())
    ignored.append(task_id)
    malformed = [
        b"garbage",
        b"{}",
        b"[" * 50_000,
        b"\xff\xfe",
        json.dumps({"task": {"id": task_id}}).encode(),
        json.dumps({"jsonrpc": "2.0", "id": 1, "result": json.loads(task_event(task_id))}).encode(),
        json.dumps({"message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "no task"}]}}).encode(),
        task_event(task_id) + b"trailing",
        json.dumps({**json.loads(task_event(task_id)), "statusUpdate": {"taskId": task_id, "status": {}}}).encode(),
        task_event(task_id).replace(b'"status": {', b'"status": {"timestamp": "0001-01-01T00:00:00+05:30", '),
    ]
    for payload in malformed:
        await inbox.publish(source.event_topic, payload, response=False, user=[(EVENT_ID_PROPERTY, uuid.uuid4().hex)])
        tally["malformed events"] += 1
    # the coordinator may name the agent holding a task; an invalid name is dropped
    forged_id = str(uuid.uuid4())
    ignored.append(forged_id)
    coordinator_topic = address(mesh, "coordinator").event_topic
    await inbox.publish(
        coordinator_topic, task_event(forged_id), response=False, user=[(TASK_AGENT_PROPERTY, "not an address")]
    )
    tally["malformed events"] += 1
    # a valid event after them all: once it is recorded, everything before it has been handled (one writer, in order)
    control = str(uuid.uuid4())
    await inbox.publish(source.event_topic, task_event(control), response=False, user=[(EVENT_ID_PROPERTY, control)])
    async with httpx.AsyncClient(timeout=5) as http:
        deadline = time.monotonic() + 15
        while (await http.get(f"{mesh.taskstore_url}/tasks/{control}?scope=all")).status_code != 200:
            assert time.monotonic() < deadline, "the store stopped recording after bad events"
            await asyncio.sleep(0.1)
        for task_id in ignored:
            response = await http.get(f"{mesh.taskstore_url}/tasks/{task_id}?scope=all")
            assert response.status_code == 404, f"event for {task_id} was recorded: {response.text}"
    await assert_healthy(mesh, inbox)


# ---------------------------------------------------------------------------------------------------------------------
# Fuzzing the echo agent
# ---------------------------------------------------------------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
json_any = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid four times in five, so that requests get past the first check often enough to reach the later ones."""
    return st.sampled_from([valid, valid, valid, valid, invalid]).flatmap(lambda chosen: chosen)


REUSED_IDS = [str(uuid.UUID(int=n)) for n in range(1, 4)]
task_ids = mostly(
    st.sampled_from(REUSED_IDS) | st.uuids().map(str),
    st.text(max_size=8) | st.none() | st.integers() | json_any | st.uuids().map(lambda u: u.hex.upper()),
)
valid_parts = st.lists(
    st.builds(lambda t: {"text": t}, st.text(max_size=20))
    | st.builds(lambda d: {"data": d}, json_any)
    | st.builds(lambda u: {"url": u, "mediaType": "text/plain"}, st.text(max_size=10))
    | st.builds(lambda r: {"raw": r}, st.sampled_from(["aGVsbG8=", "aGk"])),
    min_size=1,
    max_size=3,
)
invalid_parts = (
    st.lists(st.dictionaries(st.sampled_from(["text", "data", "url", "raw", "filename"]), json_any, max_size=3))
    | st.just([])
    | json_any
)


@st.composite
def message_params(draw: st.DrawFn) -> Any:
    message: dict[str, Any] = {
        "messageId": draw(mostly(st.text(min_size=1, max_size=8), json_any)),
        "role": draw(mostly(st.sampled_from(["ROLE_USER", "ROLE_AGENT"]), st.sampled_from(["user", ""]) | json_any)),
        "parts": draw(mostly(valid_parts, invalid_parts)),
    }
    task_id = draw(task_ids)
    if task_id is not None:
        message["taskId"] = task_id
    if draw(st.booleans()):
        message["contextId"] = draw(mostly(st.sampled_from(["ctx-a", "ctx-b"]), json_any))
    params: dict[str, Any] = {"message": message}
    if draw(st.booleans()):
        # a bad delay is one echo refuses (never a long valid one: every answer must come within REPLY_TIMEOUT)
        delays = mostly(st.integers(0, 50), st.sampled_from(["10", None, -1, 60_001, 1e12, [5], {}]) | st.text())
        params["metadata"] = draw(st.fixed_dictionaries({}, optional={"delayMs": delays, "note": json_any}))
    if draw(st.booleans()):
        options = {
            "returnImmediately": mostly(st.booleans(), json_any),
            "historyLength": mostly(st.integers(0, 5), json_any),
        }
        params["configuration"] = draw(st.fixed_dictionaries({}, optional=options))
    return params


METHODS = ["SendStreamingMessage", "SendMessage"] * 3 + ["GetTask", "CancelTask", "SubscribeToTask", "ListTasks"]
rpc_requests = st.builds(
    lambda method, params, request_id: json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    ).encode(),
    mostly(st.sampled_from(METHODS), st.text(max_size=10)),
    st.one_of(message_params(), message_params(), st.fixed_dictionaries({"id": task_ids}), json_any),
    mostly(st.integers(0, 10**6) | st.text(max_size=6) | st.none(), json_any),
)
fuzz_payloads = mostly(rpc_requests, st.binary(max_size=200) | json_any.map(lambda v: json.dumps(v).encode()))


async def test_fuzzed_requests_each_get_one_error_or_a_stream(
    mesh: Stack, inbox: Inbox, echo: str, tally: Counter[str]
) -> None:
    loop = asyncio.get_running_loop()
    sent: list[tuple[bytes, bytes]] = []

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(fuzz_payloads)
    def one(payload: bytes) -> None:
        future = asyncio.run_coroutine_threadsafe(inbox.publish(echo, payload), loop)
        correlation = future.result(timeout=10)
        sent.append((payload, correlation))
        tally["fuzzed requests (hypothesis)"] += 1
        asyncio.run_coroutine_threadsafe(inbox.wait_end(correlation), loop).result(timeout=REPLY_TIMEOUT + 5)

    started = time.monotonic()
    await asyncio.to_thread(one)
    await asyncio.sleep(1.0)  # anything that would follow a closing reply has arrived by now
    kinds: Counter[str] = Counter()
    for payload, correlation in sent:
        replies = inbox.replies[correlation]
        stream = streaming(payload)
        assert replies and ends(replies[-1], stream), f"{payload[:200]!r} was not answered to the end: {replies}"
        assert not any(ends(r, stream) for r in replies[:-1]), f"{payload[:200]!r}: replies after the end: {replies}"
        if "error" in replies[0]:
            code = replies[0]["error"]["code"]
            assert isinstance(code, int) and -32768 <= code <= -32000, replies[0]
            kinds[f"error {code}"] += 1
            continue
        method = json.loads(payload)["method"]
        if method in STREAMING_METHODS:
            items = [StreamResponse.from_wire(reply["result"]) for reply in replies]
            assert items[0].task is not None, f"a stream must start with the Task: {replies}"
            kinds[f"stream ({len(items)} items)"] += 1
        else:
            assert len(replies) == 1, f"{method} got {len(replies)} replies"
            kinds[f"{method} result"] += 1
    print(f"\nfuzzed {len(sent)} requests in {time.monotonic() - started:.1f}s: {dict(sorted(kinds.items()))}")
    assert len(sent) >= FUZZ_EXAMPLES // 2
    await assert_healthy(mesh, inbox)
