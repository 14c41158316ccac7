"""Bad input against the coordinator's HTTP API (JSON-RPC at `/`, the HTTP+JSON routes), from hypothesis.

The coordinator publishes no OpenAPI document for schemathesis to read, so these strategies play its part: JSON-RPC
bodies (real methods with wrong or random params, random methods, random JSON, non-JSON bytes, batches, wrong
versions and ids, wrong content types and A2A-Version headers) posted to `/`, and random paths, methods, queries and
bodies on the REST routes. Every answer must come within a bound, carry no traceback, be a JSON-RPC error object with
a sane code (or a result) on `/` and a JSON error on the REST routes, and never be a 5xx the input caused; the
coordinator stays healthy throughout. How many requests each suite sent is printed at the end of the run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.stack import Stack
from tests.test_bad_input_mqtt import TallyReport, json_any, mostly

JSONRPC_EXAMPLES = 300
REST_EXAMPLES = 300
ANSWER_BOUND = 20.0
"""Seconds any one request may take (echo tasks finish in milliseconds; nothing here waits on a slow agent)."""
BIG_BODY = 5 * 1024 * 1024

A2A_METHODS = [
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
]
OLD_METHODS = ["message/send", "message/stream", "tasks/get", "tasks/cancel", "tasks/resubscribe"]
INTERNAL_ERRORS: list[str] = []
JSONRPC_CODES = {-32700, -32600, -32601, -32602, -32603} | set(range(-32099, -32000))
"""JSON-RPC's own codes and the implementation-defined server range, where A2A's codes (-32001..-32009) live."""


# ---------------------------------------------------------------------------------------------------------------------
# Tally, printed at the end of the run
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tally(request: pytest.FixtureRequest) -> Counter[str]:
    report = TallyReport("Bad input over HTTP (coordinator): requests sent")
    request.config.pluginmanager.register(report, "bad-input-http-tally")
    return report.counts


# ---------------------------------------------------------------------------------------------------------------------
# Talking to the coordinator
# ---------------------------------------------------------------------------------------------------------------------


def api_headers(mesh: Stack, **extra: str | None) -> dict[str, str]:
    """The coordinator's usual headers (with its API key when it has one); `extra` overrides, None removes."""
    headers = {"a2a-version": "1.0", "content-type": "application/json"}
    key = getattr(mesh, "api_key", None)
    if key:
        headers["authorization"] = f"Bearer {key}"
    for name, value in extra.items():
        name = name.replace("_", "-").lower()
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


@pytest.fixture(scope="module")
def http(mesh: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.coordinator_url, timeout=ANSWER_BOUND) as client:
        yield client


def call(http: httpx.Client, method: str, path: str, *, content: bytes | None, headers: dict[str, str], **kw: Any):
    """One request, read to the end (SSE included) within ANSWER_BOUND; returns (status, headers, body, seconds)."""
    for _ in range(10):  # the coordinator rate-limits each client: wait as told when it says so
        started = time.monotonic()
        with http.stream(method, path, content=content, headers=headers, **kw) as response:
            chunks = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                assert time.monotonic() - started < ANSWER_BOUND, f"{method} {path}: still streaming after the bound"
        if response.status_code != 429:
            break
        time.sleep(min(float(response.headers.get("retry-after", "1")), 2.0))
    elapsed = time.monotonic() - started
    assert elapsed < ANSWER_BOUND, f"{method} {path}: answered in {elapsed:.1f}s"
    return response.status_code, response.headers, b"".join(chunks), elapsed


def no_traceback(body: bytes) -> None:
    text = body.decode(errors="replace")
    for marker in ("Traceback (most recent call last)", 'File "/', "site-packages"):
        assert marker not in text, f"a traceback leaked into the body: {text[:500]}"


def sse_events(body: bytes) -> list[dict]:
    events = []
    for block in body.decode().split("\r\n\r\n" if "\r\n\r\n" in body.decode() else "\n\n"):
        data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
        if data:
            events.append(json.loads(data))
    return events


def check_jsonrpc_answer(status: int, headers: httpx.Headers, body: bytes, outcome: Counter[str]) -> None:
    """An answer on `/`: 200 with a JSON-RPC response (or an SSE stream of them), errors with sane codes."""
    no_traceback(body)
    assert status < 500, f"{status}: {body[:500]!r}"
    if status == 413:
        outcome["413"] += 1
        return
    assert status == 200, f"{status}: {body[:500]!r}"
    if headers.get("content-type", "").startswith("text/event-stream"):
        events = sse_events(body)
        assert events, "an empty stream"
        for event in events:
            assert event.get("jsonrpc") == "2.0" and ("result" in event) != ("error" in event), event
        outcome["stream"] += 1
        if "error" in events[-1]:
            outcome[f"stream ending in error {events[-1]['error']['code']}"] += 1
        return
    answer = json.loads(body)
    assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0", answer
    assert ("result" in answer) != ("error" in answer), answer
    if "error" in answer:
        error = answer["error"]
        assert isinstance(error.get("code"), int) and error["code"] in JSONRPC_CODES, error
        assert isinstance(error.get("message"), str) and error["message"], error
        outcome[f"error {error['code']}"] += 1
        if error["code"] == -32603:  # an internal error: worth a look, each is listed at the end
            INTERNAL_ERRORS.append(error["message"][:200])
    else:
        outcome["result"] += 1


def assert_coordinator_healthy(mesh: Stack, http: httpx.Client) -> None:
    assert mesh["coordinator"].running, f"the coordinator died:\n{mesh['coordinator'].log_tail()}"
    health = http.get("/healthz")
    assert health.status_code == 200, health.text
    text = f"healthy {uuid.uuid4().hex[:6]}"
    body = rpc("SendMessage", {"message": user_message(text), "metadata": {"skill": "echo"}})
    # through `call`, which waits out the rate limit the requests before may have used up (a 429 is not a failure)
    _, _, raw, _ = call(http, "POST", "/", content=json.dumps(body).encode(), headers=api_headers(mesh))
    answer = json.loads(raw)
    assert "result" in answer, answer
    task = answer["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
    assert task["artifacts"][0]["parts"][0]["text"] == text


def rpc(method: Any, params: Any, request_id: Any = 1) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def user_message(text: str, **fields: Any) -> dict:
    return {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}], **fields}


# ---------------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------------

task_ids = mostly(st.uuids().map(str), st.text(max_size=12) | st.sampled_from(["", "..", "a/b", "../healthz", "%2F"]))
parts = mostly(
    st.lists(
        st.builds(lambda t: {"text": t}, st.text(max_size=20))
        | st.builds(lambda d: {"data": d}, json_any)
        | st.builds(lambda u: {"url": u}, st.text(max_size=10))
        | st.builds(lambda r: {"raw": r}, st.sampled_from(["aGVsbG8=", "!!"])),
        min_size=1,
        max_size=3,
    ),
    st.just([]) | st.just([{}]) | json_any,
)


@st.composite
def send_params(draw: st.DrawFn) -> Any:
    message: dict[str, Any] = {
        "messageId": draw(mostly(st.text(min_size=1, max_size=8), json_any)),
        "role": draw(mostly(st.sampled_from(["ROLE_USER", "ROLE_AGENT"]), st.sampled_from(["user", "", "ROLE_X"]))),
        "parts": draw(parts),
    }
    for field, values in (("taskId", task_ids), ("contextId", st.text(max_size=8) | json_any)):
        if draw(st.integers(0, 3)) == 0:
            message[field] = draw(values)
    params: dict[str, Any] = {"message": message}
    # never pin an agent that does not exist: that request is valid and waits out the retry profile (~50 s)
    metadata = st.fixed_dictionaries(
        {},
        optional={
            "skill": mostly(st.just("echo"), st.text(max_size=8) | json_any),
            "delayMs": mostly(st.integers(0, 50), json_any.filter(lambda v: not isinstance(v, int | float))),
            "agent": st.sampled_from(["echo", "a/b", "x/y/z/w", "", "bad id"]),
        },
    )
    if draw(st.booleans()):
        params["metadata"] = draw(mostly(metadata, json_any))
    if draw(st.booleans()):
        options = {
            "returnImmediately": mostly(st.booleans(), json_any),
            "historyLength": mostly(st.integers(-2, 5), json_any),
            "acceptedOutputModes": json_any,
        }
        params["configuration"] = draw(st.fixed_dictionaries({}, optional=options))
    return params


def params_for(method: str) -> st.SearchStrategy[Any]:
    if method in ("SendMessage", "SendStreamingMessage", "message/send", "message/stream"):
        return send_params()
    if method in ("GetTask", "CancelTask", "SubscribeToTask", "tasks/get", "tasks/cancel"):
        return st.fixed_dictionaries(
            {"id": task_ids}, optional={"historyLength": mostly(st.integers(-3, 5), json_any), "metadata": json_any}
        )
    if method == "ListTasks":
        return st.fixed_dictionaries(
            {},
            optional={
                "pageSize": mostly(st.integers(-5, 200), json_any),
                "pageToken": st.text(max_size=12),
                "status": st.sampled_from(["TASK_STATE_COMPLETED", "TASK_STATE_UNSPECIFIED", "DONE", "7"]),
                "contextId": st.text(max_size=8),
                "historyLength": mostly(st.integers(-3, 5), json_any),
                "statusTimestampAfter": st.sampled_from(["2025-01-01T00:00:00Z", "yesterday", "0001-01-01T00:00:00Z"]),
                "includeArtifacts": json_any,
            },
        )
    return st.fixed_dictionaries({}, optional={"id": task_ids, "taskId": task_ids, "url": st.text(max_size=10)})


@st.composite
def jsonrpc_bodies(draw: st.DrawFn) -> bytes:
    method = draw(mostly(st.sampled_from(A2A_METHODS), st.sampled_from(OLD_METHODS) | st.text(max_size=10) | json_any))
    params = draw(mostly(params_for(method) if isinstance(method, str) else json_any, json_any))
    body: dict[str, Any] = rpc(method, params, draw(mostly(st.integers(0, 10**6) | st.text(max_size=6), json_any)))
    if draw(st.integers(0, 9)) == 0:
        body["jsonrpc"] = draw(st.sampled_from(["1.0", "2", 2.0, None]))
    if draw(st.integers(0, 9)) == 0:
        del body[draw(st.sampled_from(["jsonrpc", "id", "method", "params"]))]
    if draw(st.integers(0, 14)) == 0:
        return json.dumps([body, body]).encode()  # a batch
    return json.dumps(body).encode()


garbage_bodies = (
    st.binary(max_size=300)
    | json_any.map(lambda v: json.dumps(v).encode())
    | st.sampled_from([b"", b"{", b"[" * 20_000, b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b"}", b"\xff\xfe{}"])
)
content_types = mostly(
    st.just("application/json"),
    st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "", "application/xml"]),
)
versions = mostly(st.just("1.0"), st.sampled_from(["0.3", "2.0", "1", "garbage", "", None]))


# ---------------------------------------------------------------------------------------------------------------------
# JSON-RPC at /
# ---------------------------------------------------------------------------------------------------------------------


def test_jsonrpc_endpoint_answers_every_generated_request(mesh: Stack, http: httpx.Client, tally: Counter[str]):
    outcome: Counter[str] = Counter()
    slowest = 0.0

    @settings(max_examples=JSONRPC_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(mostly(jsonrpc_bodies(), garbage_bodies), content_types, versions)
    def one(body: bytes, content_type: str, version: str | None) -> None:
        nonlocal slowest
        tally["JSON-RPC at / (hypothesis)"] += 1
        headers = api_headers(mesh, content_type=content_type, a2a_version=version)
        try:
            status, response_headers, answer, seconds = call(http, "POST", "/", content=body, headers=headers)
            slowest = max(slowest, seconds)
            check_jsonrpc_answer(status, response_headers, answer, outcome)
        except AssertionError as error:
            raise AssertionError(f"POST / body={body!r:.300} headers={headers}: {error}") from None

    one()
    print(f"\nJSON-RPC: {sum(outcome.values())} answers, slowest {slowest:.2f}s: {dict(sorted(outcome.items()))}")
    for message in sorted(set(INTERNAL_ERRORS)):
        print(f"  -32603: {message}")
    assert_coordinator_healthy(mesh, http)


@pytest.mark.parametrize("streaming", [False, True], ids=["SendMessage", "SendStreamingMessage"])
def test_oversized_body_gets_a_clear_error_not_a_hang(
    mesh: Stack, http: httpx.Client, streaming: bool, tally: Counter[str]
) -> None:
    tally["oversized bodies (5 MB)"] += 1
    method = "SendStreamingMessage" if streaming else "SendMessage"
    body = json.dumps(rpc(method, {"message": user_message("x" * BIG_BODY), "metadata": {"skill": "echo"}})).encode()
    status, _, answer, _ = call(http, "POST", "/", content=body, headers=api_headers(mesh))
    no_traceback(answer)
    if status != 413:
        assert status == 200, answer[:300]
        error = json.loads(answer)["error"]
        assert error["code"] == -32600 and "too large" in error["message"].lower(), error
    assert_coordinator_healthy(mesh, http)


def test_body_under_the_http_limit_that_grows_past_the_brokers_gets_a_clear_error(
    mesh: Stack, http: httpx.Client, tally: Counter[str]
) -> None:
    """Non-ASCII text travels escaped on MQTT (six bytes a character): a body that fits the HTTP limit may not fit
    the broker's packet limit. The client gets an error at once and the coordinator keeps its broker connection."""
    tally["bodies that outgrow the broker's limit"] += 1
    reconnects = _reconnects(http)
    body = json.dumps(
        rpc("SendMessage", {"message": user_message("é" * 300_000), "metadata": {"skill": "echo"}}), ensure_ascii=False
    ).encode()
    assert len(body) < 1_000_000
    status, _, answer, seconds = call(http, "POST", "/", content=body, headers=api_headers(mesh))
    no_traceback(answer)
    assert status in (200, 413), answer[:300]
    if status == 200:
        reply = json.loads(answer)
        if "result" in reply:  # accepted after all: then it must have completed, not been cut off
            assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        else:
            assert reply["error"]["code"] in JSONRPC_CODES and "too large" in reply["error"]["message"].lower()
    assert _reconnects(http) == reconnects, "the coordinator was disconnected from the broker"
    print(f"\nanswered in {seconds:.2f}s: {answer[:200]!r}")
    assert_coordinator_healthy(mesh, http)


def _reconnects(http: httpx.Client) -> float:
    lines = [line for line in http.get("/metrics").text.splitlines() if line.startswith("mesh_mqtt_reconnects_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


@pytest.mark.parametrize("method", ["SendMessage", "SendStreamingMessage", "GetTask", "ListTasks"])
def test_missing_a2a_version_header_gets_the_sdks_version_error(
    mesh: Stack, http: httpx.Client, method: str, tally: Counter[str]
) -> None:
    tally["no A2A-Version header"] += 1
    params = {"message": user_message("v?"), "metadata": {"skill": "echo"}} if "Message" in method else {}
    if method == "GetTask":
        params = {"id": str(uuid.uuid4())}
    body = json.dumps(rpc(method, params)).encode()
    status, headers, answer, _ = call(http, "POST", "/", content=body, headers=api_headers(mesh, a2a_version=None))
    outcome: Counter[str] = Counter()
    check_jsonrpc_answer(status, headers, answer, outcome)
    error = json.loads(answer)["error"]
    assert error["code"] == -32009 and "version" in error["message"].lower(), error


TARGETED = {
    "not json": (b"hello", -32700),
    "not utf-8": (b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"\x92"}}', -32700),
    "5000-digit number": (b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"GetTask","params":{}}', -32700),
    "Infinity": (
        json.dumps(rpc("SendMessage", {"message": user_message("x"), "metadata": {"n": 1e999}})).encode(),
        -32700,
    ),
    "NaN": (b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"x","historyLength":NaN}}', -32700),
    "deep nesting": (b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":' + b"[" * 50_000 + b"}", -32700),
    "truncated": (b'{"jsonrpc":"2.0","id":1,"method":"GetTask"', -32700),
    "batch": (json.dumps([rpc("GetTask", {"id": "x"})]).encode(), -32600),
    "jsonrpc 1.0": (json.dumps({**rpc("GetTask", {"id": "x"}), "jsonrpc": "1.0"}).encode(), -32600),
    "id a boolean": (json.dumps(rpc("GetTask", {"id": "x"}, True)).encode(), -32600),
    "no method": (json.dumps({"jsonrpc": "2.0", "id": 1, "params": {}}).encode(), -32600),
    "unknown method": (json.dumps(rpc("DoSomething", {})).encode(), -32601),
    "params a list": (json.dumps(rpc("GetTask", ["x"])).encode(), -32602),  # the SDK reads it as no id
    "SendMessage without message": (json.dumps(rpc("SendMessage", {})).encode(), -32602),
    "SendMessage with an empty part": (
        json.dumps(rpc("SendMessage", {"message": {**user_message("x"), "parts": [{}]}})).encode(),
        -32602,
    ),
    "SendMessage with no parts": (
        json.dumps(rpc("SendMessage", {"message": {**user_message("x"), "parts": []}})).encode(),
        -32602,
    ),
    "SendMessage to an unknown skill": (
        json.dumps(rpc("SendMessage", {"message": user_message("x"), "metadata": {"skill": "nope"}})).encode(),
        -32602,
    ),
    "SendMessage pinned to a malformed address": (
        json.dumps(rpc("SendMessage", {"message": user_message("x"), "metadata": {"agent": "a/b"}})).encode(),
        -32602,
    ),
    "follow-up to an unknown task": (
        json.dumps(rpc("SendMessage", {"message": user_message("x", taskId=str(uuid.uuid4()))})).encode(),
        -32001,
    ),
    "GetTask unknown": (json.dumps(rpc("GetTask", {"id": str(uuid.uuid4())})).encode(), -32001),
    "GetTask empty id": (json.dumps(rpc("GetTask", {"id": ""})).encode(), -32602),
    "CancelTask no id": (json.dumps(rpc("CancelTask", {})).encode(), -32602),
    "SubscribeToTask no id": (json.dumps(rpc("SubscribeToTask", {})).encode(), -32602),
    "GetTask id with a slash": (json.dumps(rpc("GetTask", {"id": "x/events"})).encode(), -32001),
    "GetTask id climbing out": (json.dumps(rpc("GetTask", {"id": "../healthz"})).encode(), -32001),
    "GetTask id with a query": (json.dumps(rpc("GetTask", {"id": "x?historyLength=1"})).encode(), -32001),
    "GetTask negative history": (json.dumps(rpc("GetTask", {"id": "x", "historyLength": -1})).encode(), -32602),
    "CancelTask unknown": (json.dumps(rpc("CancelTask", {"id": str(uuid.uuid4())})).encode(), -32001),
    "CancelTask id with a slash": (json.dumps(rpc("CancelTask", {"id": "a/events"})).encode(), -32001),
    "SubscribeToTask unknown": (json.dumps(rpc("SubscribeToTask", {"id": str(uuid.uuid4())})).encode(), -32001),
    "ListTasks bad page token": (json.dumps(rpc("ListTasks", {"pageToken": "!!"})).encode(), -32602),
    "ListTasks negative page size": (json.dumps(rpc("ListTasks", {"pageSize": -1})).encode(), -32602),
    "push config of an unknown task": (
        json.dumps(rpc("CreateTaskPushNotificationConfig", {"taskId": "x", "url": "https://example.com/h"})).encode(),
        -32001,
    ),
    "push configs of no task": (json.dumps(rpc("ListTaskPushNotificationConfigs", {})).encode(), -32602),
    "push config of a task id with a slash": (
        json.dumps(rpc("GetTaskPushNotificationConfig", {"taskId": "a/events", "id": "h"})).encode(),
        (-32602, -32001),
    ),
}


@pytest.mark.parametrize(("body", "code"), TARGETED.values(), ids=TARGETED.keys())
def test_targeted_jsonrpc_errors(mesh: Stack, http: httpx.Client, body: bytes, code: Any, tally: Counter[str]) -> None:
    tally["targeted JSON-RPC"] += 1
    status, headers, answer, _ = call(http, "POST", "/", content=body, headers=api_headers(mesh))
    check_jsonrpc_answer(status, headers, answer, Counter())
    reply = json.loads(answer)
    assert "error" in reply, reply
    assert reply["error"]["code"] in (code if isinstance(code, tuple) else (code,)), reply["error"]


# ---------------------------------------------------------------------------------------------------------------------
# The HTTP+JSON routes
# ---------------------------------------------------------------------------------------------------------------------

ROUTES = [
    ("POST", "/message:send"),
    ("POST", "/message:stream"),
    ("GET", "/tasks/{id}"),
    ("GET", "/tasks"),
    ("POST", "/tasks/{id}:cancel"),
    ("GET", "/tasks/{id}:subscribe"),
    ("POST", "/tasks/{id}:subscribe"),
]
path_ids = mostly(
    st.uuids().map(str),
    st.text(max_size=12).map(lambda t: quote(t, safe="")) | st.sampled_from(["", "..", "%2F", "a%2Fevents", "%00"]),
)
queries = st.dictionaries(
    st.sampled_from(["historyLength", "pageSize", "pageToken", "status", "contextId", "includeArtifacts", "x"]),
    st.text(max_size=8) | st.integers(-5, 500).map(str),
    max_size=3,
)
rest_bodies = mostly(send_params().map(lambda p: json.dumps(p).encode()), garbage_bodies)


@st.composite
def rest_requests(draw: st.DrawFn) -> tuple[str, str, dict, bytes | None]:
    method, template = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    path = template.replace("{id}", draw(path_ids))
    if draw(st.integers(0, 9)) == 0:
        path = f"/{quote(draw(st.text(min_size=1, max_size=6)), safe='')}{path}"  # a tenant prefix
    if draw(st.integers(0, 14)) == 0:
        path = "/" + "/".join(quote(p, safe="") for p in draw(st.lists(st.text(max_size=6), max_size=3)))
    body = draw(rest_bodies) if method in ("POST", "PUT", "PATCH") else None
    return method, path, draw(queries), body


def check_rest_answer(status: int, body: bytes, outcome: Counter[str]) -> None:
    no_traceback(body)
    assert status < 500, f"{status}: {body[:500]!r}"
    outcome[str(status)] += 1
    if status < 400:
        return
    if status in (404, 405) and not body.startswith(b"{"):
        return  # Starlette's own answer for a path no route serves
    error = json.loads(body)
    assert isinstance(error, dict) and isinstance(error.get("error"), dict), error
    assert error["error"].get("message"), error


def test_rest_routes_answer_every_generated_request(mesh: Stack, http: httpx.Client, tally: Counter[str]) -> None:
    outcome: Counter[str] = Counter()

    @settings(max_examples=REST_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(rest_requests(), content_types, versions)
    def one(request: tuple[str, str, dict, bytes | None], content_type: str, version: str | None) -> None:
        tally["HTTP+JSON routes (hypothesis)"] += 1
        method, path, query, body = request
        headers = api_headers(mesh, content_type=content_type, a2a_version=version)
        try:
            status, _, answer, _ = call(http, method, path, content=body, headers=headers, params=query)
            check_rest_answer(status, answer, outcome)
        except AssertionError as error:
            raise AssertionError(
                f"{method} {path} query={query} body={body!r:.300} headers={headers}: {error}"
            ) from None

    one()
    print(f"\nREST: {sum(outcome.values())} answers: {dict(sorted(outcome.items()))}")
    assert_coordinator_healthy(mesh, http)


def test_rest_oversized_body_gets_a_clear_error(mesh: Stack, http: httpx.Client, tally: Counter[str]) -> None:
    tally["oversized bodies (5 MB)"] += 1
    body = json.dumps({"message": user_message("x" * BIG_BODY), "metadata": {"skill": "echo"}}).encode()
    status, _, answer, _ = call(http, "POST", "/message:send", content=body, headers=api_headers(mesh))
    no_traceback(answer)
    assert status == 413, f"{status}: {answer[:300]!r}"
    assert json.loads(answer)["error"], answer
    assert_coordinator_healthy(mesh, http)


REST_TARGETED = {
    "not utf-8": (
        "POST",
        "/message:send",
        b'{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"text":"\x92"}]}}',
    ),
    "deep nesting": ("POST", "/message:send", b'{"message":' + b"[" * 50_000),
    "Infinity": (
        "POST",
        "/message:send",
        b'{"message":{"messageId":"m","role":"ROLE_USER","parts":[{"data":Infinity}]}}',
    ),
    "not json": ("POST", "/message:stream", b"hello"),
    "no message": ("POST", "/message:send", b"{}"),
    "empty part": ("POST", "/message:send", b'{"message":{"messageId":"m","role":"ROLE_USER","parts":[{}]}}'),
    "cancel unknown": ("POST", f"/tasks/{uuid.uuid4()}:cancel", b""),
    "get unknown": ("GET", f"/tasks/{uuid.uuid4()}", None),
    "get dot-dot": ("GET", "/tasks/%2E%2E", None),
    "get encoded slash": ("GET", "/tasks/x%2Fevents", None),
    "list bad token": ("GET", "/tasks?pageToken=!!", None),
    "list bad page size": ("GET", "/tasks?pageSize=-1", None),
    "subscribe unknown": ("GET", f"/tasks/{uuid.uuid4()}:subscribe", None),
}


@pytest.mark.parametrize(("method", "path", "body"), REST_TARGETED.values(), ids=REST_TARGETED.keys())
def test_targeted_rest_errors(
    mesh: Stack, http: httpx.Client, method: str, path: str, body: bytes | None, tally: Counter[str]
) -> None:
    tally["targeted HTTP+JSON"] += 1
    status, _, answer, _ = call(http, method, path, content=body, headers=api_headers(mesh))
    check_rest_answer(status, answer, Counter())
    assert 400 <= status < 500, f"{status}: {answer[:300]!r}"
    if status == 404 and not answer.startswith(b"{"):
        return  # the server decodes %2F before routing: /tasks/x/events is a path no route serves
    assert isinstance(json.loads(answer).get("error"), dict), answer[:300]
