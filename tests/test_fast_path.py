"""The coordinator's fast path for SendMessage / SendStreamingMessage against the a2a-sdk routes it stands in front
of: the same request answered both ways must mean the same thing to a protobuf reader, errors included, and every
request the fast path does not fully accept must reach the SDK untouched."""

from __future__ import annotations

import json
import uuid
from typing import Any, cast

import httpx
from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict, ParseDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from devstack.stack import Stack
from mesh_coordinator.fastpath import FastSendPath
from mesh_coordinator.handler import MeshRequestHandler

FAST = "1.0"
"""The version header the fast path takes."""
SDK = "1.0.0"
"""Accepted as 1.0 by the a2a-sdk's version check, left to the SDK's routes by the fast path."""
VARYING = {"id", "taskId", "contextId", "messageId", "artifactId", "timestamp"}


def send_call(method: str, text: str, skill: str = "echo", **params: Any) -> dict[str, Any]:
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]}
    return {
        "jsonrpc": "2.0",
        "id": "call-1",
        "method": method,
        "params": {"message": message, "metadata": {"skill": skill}, **params},
    }


async def post(mesh: Stack, http: httpx.AsyncClient, body: dict[str, Any], version: str) -> httpx.Response:
    headers = {"A2A-Version": version, "Content-Type": "application/json"}
    return await http.post(f"{mesh.coordinator_url}/", json=body, headers=headers)


def sse_data(response: httpx.Response) -> list[tuple[str, str]]:
    """(event name, data) of each server-sent event."""
    frames = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            fields = dict(line.split(": ", 1) for line in lines)
            frames.append((fields.get("event", "message"), fields["data"]))
    return frames


def stable(value: Any) -> Any:
    """A wire value with what differs between two runs of the same task (ids, timestamps) taken out."""
    if isinstance(value, dict):
        return {key: stable(item) for key, item in value.items() if key not in VARYING}
    if isinstance(value, list):
        return [stable(item) for item in value]
    return value


def as_sdk_reads_it(result: dict[str, Any], message_type: type) -> dict[str, Any]:
    """Parse strictly (an unknown field fails) into the SDK's protobuf, and write it back as the SDK would."""
    return stable(MessageToDict(ParseDict(result, message_type())))


async def streamed(mesh: Stack, http: httpx.AsyncClient, version: str) -> tuple[list[str], list[dict[str, Any]]]:
    response = await post(mesh, http, send_call("SendStreamingMessage", "same either way"), version)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    frames = sse_data(response)
    assert all(name == "message" for name, _ in frames), frames
    replies = [json.loads(data) for _, data in frames]
    assert all(reply["id"] == "call-1" for reply in replies)
    return [data for _, data in frames], [as_sdk_reads_it(reply["result"], pb.StreamResponse) for reply in replies]


async def test_streaming_means_the_same_on_both_paths(mesh: Stack, http: httpx.AsyncClient) -> None:
    fast_raw, fast = await streamed(mesh, http, FAST)
    sdk_raw, sdk = await streamed(mesh, http, SDK)

    assert [next(iter(event)) for event in fast] == ["task", "statusUpdate", "artifactUpdate", "statusUpdate"]
    assert fast == sdk
    # which path answered: the fast path writes compact JSON, the SDK's json.dumps a space after each separator
    assert all('"jsonrpc":"2.0"' in data for data in fast_raw)
    assert all('"jsonrpc": "2.0"' in data for data in sdk_raw)


async def test_blocking_send_means_the_same_on_both_paths(mesh: Stack, http: httpx.AsyncClient) -> None:
    results = []
    for version in (FAST, SDK):
        response = await post(mesh, http, send_call("SendMessage", "blocking"), version)
        reply = response.json()
        assert reply["id"] == "call-1" and "error" not in reply, reply
        results.append(as_sdk_reads_it(reply["result"], pb.SendMessageResponse))
    fast, sdk = results
    assert fast == sdk
    assert fast["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert fast["task"]["artifacts"][0]["parts"] == [{"text": "blocking"}]


async def test_errors_are_the_same_on_both_paths(mesh: Stack, http: httpx.AsyncClient) -> None:
    cases = {
        "unknown skill": send_call("SendStreamingMessage", "x", skill="no-such-skill"),
        "empty parts": {
            **send_call("SendMessage", "x"),
            "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": []}},
        },
        "blocking, unknown agent": {
            **send_call("SendMessage", "x"),
            "params": {**send_call("SendMessage", "x")["params"], "metadata": {"agent": "bad/agent/address/x"}},
        },
    }
    for case, body in cases.items():
        replies = []
        for version in (FAST, SDK):
            response = await post(mesh, http, body, version)
            assert response.headers["content-type"].startswith("application/json"), (case, version)
            replies.append(response.json())
        fast, sdk = replies
        assert "error" in fast and fast["id"] == "call-1", (case, fast)
        assert fast["error"]["code"] == sdk["error"]["code"] == -32602, (case, fast, sdk)
        assert fast["error"]["message"] == sdk["error"]["message"], case


async def test_requests_the_fast_path_does_not_take_reach_the_sdk_untouched() -> None:
    seen: list[tuple[str, bytes]] = []

    async def sdk_routes(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        seen.append((request.method, await request.body()))
        await PlainTextResponse("sdk")(scope, receive, send)

    # the fast path must not touch the handler for any of these: with none, it would fail loudly
    app = FastSendPath(sdk_routes, cast(MeshRequestHandler, None))
    call = send_call("SendStreamingMessage", "x")
    good = json.dumps(call).encode()
    cases: dict[str, tuple[str, dict[str, str], bytes]] = {
        "no version header": ("/", {}, good),
        "another version": ("/", {"a2a-version": "0.3"}, good),
        "1.0 spelled otherwise": ("/", {"a2a-version": "1.0.0"}, good),
        "another method": ("/", {"a2a-version": FAST}, json.dumps({**call, "method": "GetTask"}).encode()),
        "params our model refuses": (
            "/",
            {"a2a-version": FAST},
            json.dumps({**call, "params": {}}).encode(),
        ),
        "boolean id": ("/", {"a2a-version": FAST}, json.dumps({**call, "id": True}).encode()),
        "batch": ("/", {"a2a-version": FAST}, b"[" + good + b"]"),
        "not JSON-RPC 2.0": ("/", {"a2a-version": FAST}, json.dumps({**call, "jsonrpc": "1.0"}).encode()),
        "not the JSON-RPC path": ("/v1/message:stream", {"a2a-version": FAST}, good),
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as client:
        for case, (path, headers, body) in cases.items():
            seen.clear()
            response = await client.post(path, content=body, headers=headers)
            assert response.text == "sdk", case
            assert seen == [("POST", body)], case
