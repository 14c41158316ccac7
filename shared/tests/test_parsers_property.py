"""Bad input against every parser of the message package: property tests (hypothesis) over arbitrary and
almost-valid input.

Each parser either accepts its input, and then what it built is sound (ids match the scheme, topics round-trip
through the builders, accepted models serialise and read back), or it refuses with its documented error
(TopicError; pydantic's ValidationError or ValueError) — never another exception, never a hang. The responder is
driven in process with a stub link: every request that names a Response Topic gets exactly one JSON-RPC error or
a stream that ends. How many examples each property tried is printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ValidationError

import a2amesh.models as models
from a2amesh.binding.machine import IncomingRequest, ReplyAddress, TaskMachine
from a2amesh.binding.requester import MeshRequester, ReplyStream, RetryProfile, _decode, _ends_stream
from a2amesh.binding.tasks import Subscriber, TaskContext
from a2amesh.binding.transport import fitted, stream_payload
from a2amesh.binding.wire import MAX_PACKET_BYTES, STREAMING_METHODS
from a2amesh.models import (
    AgentCard,
    JsonRpcRequest,
    JsonRpcResponse,
    Message,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskStatus,
)
from a2amesh.mqtt import Envelope
from a2amesh.settings import AgentSettings, MqttSettings
from a2amesh.topics import (
    AgentAddress,
    ParsedTopic,
    PoolAddress,
    TopicError,
    TopicKind,
    check_id,
    discovery_filter,
    parse_topic,
)

from .strategies import json_values, ours

ID = re.compile(r"[A-Za-z0-9_.-]+")
"""What the scheme allows for org, unit, agent, pool and reply-suffix ids (docs/topics.md), used with fullmatch."""

PARSE_ERRORS = (ValidationError, ValueError)
"""What a model parser may raise on bad input (TopicError and pydantic's ValidationError are ValueErrors too)."""


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------------------------------------------------------------
# Input strategies
# ---------------------------------------------------------------------------------------------------------------------

valid_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True)
nasty_ids = st.sampled_from(
    [
        "",
        " ",
        "a b",
        "a/b",
        "+",
        "#",
        "a+",
        "x#",
        "$share",
        "é",
        "a\n",
        "\n",
        "\t",
        "a\x00b",
        "..",
        "-",
        "\u200b",
        "\uff41",
    ]
)
pieces = valid_ids | nasty_ids | st.text(max_size=6)
prefixes = st.sampled_from(
    [
        "$a2a/v1/discovery",
        "$a2a/v1/request",
        "$a2a/v1/reply",
        "$a2a/v1/event",
        "$a2a/v1/pool",
        "a2a/v1/pool",
        "$a2a/v1/bogus",
        "$a2a/v1",
        "$a2a/v2/request",
        "a2a/v1/request",
        "$A2A/v1/request",
        "",
    ]
)
topic_like = st.builds(lambda prefix, rest: "/".join([prefix, *rest]), prefixes, st.lists(pieces, max_size=6))
topic_text = topic_like | st.text(max_size=60) | topic_like.map(lambda t: t + "/") | topic_like.map(lambda t: t + "\n")

raw_bytes = st.binary(max_size=300)
json_text = json_values.map(json.dumps)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a JSON value (the root included)."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], make: Callable[[Any], Any]) -> Any:
    if not path:
        return make(value)
    head, *rest = path
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replace(copy[head], tuple(rest), make)
    return copy


_DELETE = object()


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not _DELETE}
    if isinstance(value, list):
        return [_prune(v) for v in value if v is not _DELETE]
    return value


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """A valid wire value with one to three spots broken: a value replaced by any JSON, deleted, wrapped in a
    list, turned into a string, or given an unknown sibling."""
    value = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(value)))
        operation = draw(st.sampled_from(["replace", "delete", "wrap", "stringify", "null", "extra"]))
        if operation == "replace":
            other = draw(json_values)
            value = _replace(value, path, lambda _old, other=other: other)
        elif operation == "delete" and path:
            value = _prune(_replace(value, path, lambda _old: _DELETE))
        elif operation == "wrap":
            value = _replace(value, path, lambda old: [old])
        elif operation == "stringify":
            value = _replace(value, path, lambda old: json.dumps(old))
        elif operation == "null":
            value = _replace(value, path, lambda _old: None)
        elif operation == "extra":
            key, extra = draw(st.text(max_size=8)), draw(json_values)
            value = _replace(
                value, path, lambda old, key=key, extra=extra: {**old, key: extra} if isinstance(old, dict) else old
            )
    return value


def wire(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy.map(lambda model: model.to_wire())


# Almost-valid wire values for the models the mesh reads off the network.
NEAR_VALID: dict[type[BaseModel], st.SearchStrategy[Any]] = {
    AgentCard: wire(ours.cards),
    Task: wire(ours.tasks),
    Message: wire(ours.messages),
    StreamResponse: wire(ours.stream_responses),
    SendMessageRequest: wire(ours.send_requests),
    models.ListTasksRequest: wire(ours.list_tasks_requests),
    models.ListTasksResponse: wire(ours.list_tasks_responses),
    models.SendMessageResponse: wire(ours.send_responses),
    models.GetTaskRequest: wire(ours.get_task_requests),
    models.CancelTaskRequest: wire(ours.cancel_requests),
    models.SecurityScheme: wire(ours.security_schemes),
}

# Texts that break naive JSON decoders: deep nesting, oversized integers, non-finite numbers, bad encodings.
HOSTILE_TEXTS = [
    "[" * 5000,
    '{"a":' * 3000,
    "[" * 500 + "]" * 500,
    "1" * 5000,
    '{"jsonrpc":"2.0","id":' + "9" * 5000 + ',"method":"GetTask","params":{}}',
    '{"id":NaN}',
    '{"timestamp":Infinity}',
    "\ufeff{}",
    '{"a":"\\ud800"}',
    "",
    "null",
    "[]",
]
HOSTILE_BYTES = [b"\xff\xfe\x00", b'{"a":"\xff"}', b"\x00" * 64, "é".encode("latin-1")]

MODEL_TYPES: list[type[BaseModel]] = sorted(
    {
        candidate
        for name in models.__all__
        if isinstance(candidate := getattr(models, name), type) and issubclass(candidate, BaseModel)
    },
    key=lambda cls: cls.__name__,
)
MODEL_IDS = [cls.__name__ for cls in MODEL_TYPES]


def from_json(cls: type[BaseModel], data: str | bytes) -> BaseModel:
    reader = getattr(cls, "from_json", None)
    return reader(data) if reader else cls.model_validate_json(data)


def from_wire(cls: type[BaseModel], data: Any) -> BaseModel:
    reader = getattr(cls, "from_wire", None)
    return reader(data) if reader else cls.model_validate(data)


def written(model: BaseModel) -> str:
    """The JSON a model writes on the wire."""
    to_json = getattr(model, "to_json", None)
    if to_json is not None:
        return to_json()
    to_wire = getattr(model, "to_wire", None)
    return json.dumps(to_wire()) if to_wire else model.model_dump_json()


def check_accepted(cls: type[BaseModel], model: BaseModel) -> None:
    """An accepted value can be written, and what is written reads back."""
    text = written(model)  # raises on a value the parser should not have accepted
    from_json(cls, text)


# ---------------------------------------------------------------------------------------------------------------------
# Topics and ids
# ---------------------------------------------------------------------------------------------------------------------


def _ids_of(parsed: ParsedTopic) -> list[str]:
    return [parsed.org, parsed.unit, parsed.name, *([parsed.suffix] if parsed.suffix is not None else [])]


def rebuilt(parsed: ParsedTopic) -> str:
    """The topic the builders make for what was parsed."""
    if parsed.kind is TopicKind.POOL:
        with pytest.raises(TopicError):
            _ = parsed.agent
        return parsed.pool.topic
    with pytest.raises(TopicError):
        _ = parsed.pool
    agent = parsed.agent
    if parsed.kind is TopicKind.REPLY:
        assert parsed.suffix is not None
        return agent.reply_topic(parsed.suffix)
    return {
        TopicKind.DISCOVERY: agent.discovery_topic,
        TopicKind.REQUEST: agent.request_topic,
        TopicKind.EVENT: agent.event_topic,
        TopicKind.OWNER: agent.owner_topic,
    }[parsed.kind]


@example("$a2a/v1/request/acme/default/echo\n")
@example("$a2a/v1/reply/acme/default/coordinator/abc\n")
@example("a2a/v1/pool/acme/default/pool\n")
@fuzz(3000)
@given(topic_text)
def test_parse_topic_round_trips_or_raises_topic_error(parser_tally: Counter[str], text: str) -> None:
    parser_tally["topics.parse_topic"] += 1
    try:
        parsed = parse_topic(text)
    except TopicError:
        return
    assert all(ID.fullmatch(piece) for piece in _ids_of(parsed)), f"{text!r} parsed into invalid ids: {parsed}"
    assert rebuilt(parsed) == text


@example("acme/default/echo\n")
@fuzz(1500)
@given(topic_like | st.text(max_size=30) | st.builds("/".join, st.lists(pieces, min_size=3, max_size=3)))
def test_agent_address_parse_round_trips_or_raises_topic_error(parser_tally: Counter[str], text: str) -> None:
    parser_tally["topics.AgentAddress.parse"] += 1
    try:
        address = AgentAddress.parse(text)
    except TopicError:
        return
    assert all(ID.fullmatch(piece) for piece in (address.org, address.unit, address.agent)), repr(address)
    assert str(address) == address.client_id == text
    for topic, kind in (
        (address.discovery_topic, TopicKind.DISCOVERY),
        (address.request_topic, TopicKind.REQUEST),
        (address.event_topic, TopicKind.EVENT),
        (address.owner_topic, TopicKind.OWNER),
    ):
        parsed = parse_topic(topic)
        assert parsed.kind is kind and parsed.agent == address
    assert parse_topic(address.reply_topic("inbox")).suffix == "inbox"
    assert address.reply_filter().endswith("/+")


@example("acme", "default", "pool\n")
@fuzz(1500)
@given(pieces, pieces, pieces)
def test_pool_address_round_trips_or_raises_topic_error(parser_tally: Counter[str], org: str, unit: str, pool: str):
    parser_tally["topics.PoolAddress"] += 1
    try:
        address = PoolAddress(org, unit, pool)
    except TopicError:
        return
    assert all(ID.fullmatch(piece) for piece in (org, unit, pool))
    parsed = parse_topic(address.topic)
    assert parsed.kind is TopicKind.POOL and parsed.pool == address
    assert address.shared_subscription == f"$share/{address.group}/{address.topic}"
    assert "/" not in address.group and "+" not in address.group and "#" not in address.group


@example("abc\n")
@example(b"abc")
@example(None)
@example(42)
@fuzz(1500)
@given(pieces | st.text(max_size=20) | st.none() | st.integers() | st.binary(max_size=5) | st.lists(valid_ids))
def test_check_id_returns_a_valid_id_or_raises_topic_error(parser_tally: Counter[str], value: Any) -> None:
    parser_tally["topics.check_id"] += 1
    try:
        checked = check_id(value)
    except TopicError:
        return
    assert checked == value and isinstance(checked, str) and ID.fullmatch(checked)


@fuzz(500)
@given(st.none() | pieces, st.none() | pieces)
def test_discovery_filter_is_a_filter_or_raises_topic_error(parser_tally: Counter[str], org: Any, unit: Any) -> None:
    parser_tally["topics.discovery_filter"] += 1
    try:
        topic_filter = discovery_filter(org, unit)
    except TopicError:
        return
    assert topic_filter.startswith("$a2a/v1/discovery/") and topic_filter.endswith(("#", "+"))
    assert topic_filter.count("/") <= 6


# ---------------------------------------------------------------------------------------------------------------------
# Models: from_json / from_wire
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MODEL_TYPES, ids=MODEL_IDS)
def test_model_from_json_on_arbitrary_bytes_and_text(cls: type[BaseModel], parser_tally: Counter[str]) -> None:
    @fuzz(150)
    @given(raw_bytes | json_text | json_text.map(str.encode) | st.sampled_from(HOSTILE_TEXTS + HOSTILE_BYTES))
    def prop(data: str | bytes) -> None:
        parser_tally[f"{cls.__name__}.from_json (bytes/text)"] += 1
        try:
            model = from_json(cls, data)
        except PARSE_ERRORS:
            return
        check_accepted(cls, model)

    prop()


@pytest.mark.parametrize("cls", MODEL_TYPES, ids=MODEL_IDS)
def test_model_from_wire_on_arbitrary_json(cls: type[BaseModel], parser_tally: Counter[str]) -> None:
    strategy = json_values | st.dictionaries(st.sampled_from(_field_names(cls)), json_values, max_size=6)
    if cls in NEAR_VALID:
        strategy = strategy | mutated(NEAR_VALID[cls])

    @fuzz(300 if cls in NEAR_VALID else 120)
    @given(strategy)
    def prop(data: Any) -> None:
        parser_tally[f"{cls.__name__}.from_wire (json)"] += 1
        try:
            model = from_wire(cls, data)
        except PARSE_ERRORS:
            return
        check_accepted(cls, model)
        # the JSON text form of the same value must get the same verdict
        from_json(cls, json.dumps(data))

    prop()


def _field_names(cls: type[BaseModel]) -> list[str]:
    """The wire (and Python) names of a model's fields, so arbitrary objects hit real fields too."""
    names: list[str] = []
    for name, info in cls.model_fields.items():
        names.append(name)
        alias = info.alias or (cls.model_config.get("alias_generator") or (lambda n: n))(name)
        if isinstance(alias, str):
            names.append(alias)
    return sorted(set(names)) or ["x"]


@example("0001-01-01T00:00:00+05:30")
@example("9999-12-31T23:59:59-08:00")
@fuzz(300)
@given(
    st.datetimes(timezones=st.timezones()).map(lambda value: value.isoformat())
    | st.text(max_size=30)
    | st.integers().map(str)
)
def test_timestamps_that_are_accepted_can_be_written(parser_tally: Counter[str], text: str) -> None:
    parser_tally["TaskStatus.timestamp (any ISO text)"] += 1
    try:
        status = TaskStatus.from_wire({"state": "TASK_STATE_WORKING", "timestamp": text})
    except PARSE_ERRORS:
        return
    check_accepted(TaskStatus, status)


# ---------------------------------------------------------------------------------------------------------------------
# JSON-RPC envelopes
# ---------------------------------------------------------------------------------------------------------------------

rpc_ids = st.none() | st.integers() | st.text(max_size=8) | st.booleans() | st.floats() | st.lists(st.integers())
rpc_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", "2", 2.0, None]),
        "id": rpc_ids,
        "method": st.sampled_from([*STREAMING_METHODS, "SendMessage", "GetTask", "", "x"]) | st.text(max_size=8),
        "params": json_values,
        "result": json_values,
        "error": st.fixed_dictionaries(
            {}, optional={"code": st.integers() | st.text(max_size=4), "message": json_values, "data": json_values}
        )
        | json_values,
        "extra": json_values,
    },
)


@example({"jsonrpc": "2.0", "id": True, "method": "GetTask", "params": {}})
@fuzz(1500)
@given(rpc_like | json_values)
def test_json_rpc_request_accepts_only_well_formed_requests(parser_tally: Counter[str], data: Any) -> None:
    parser_tally["JsonRpcRequest"] += 1
    try:
        request = JsonRpcRequest.model_validate(data)
    except ValidationError:
        return
    assert isinstance(data, dict) and data["jsonrpc"] == "2.0"
    assert isinstance(request.method, str) and request.method == data["method"] != ""
    assert request.params == data.get("params", {}) and isinstance(request.params, dict)
    given_id = data.get("id")
    assert not isinstance(given_id, bool | list | dict), f"id {given_id!r} accepted"
    assert request.id == given_id


@example({})
@example({"jsonrpc": "2.0", "id": 1})
@example({"jsonrpc": "2.0", "id": 1, "result": 1, "error": {"code": 1, "message": "both"}})
@fuzz(1500)
@given(rpc_like | json_values)
def test_json_rpc_response_accepts_exactly_one_of_result_or_error(parser_tally: Counter[str], data: Any) -> None:
    parser_tally["JsonRpcResponse"] += 1
    try:
        response = JsonRpcResponse.model_validate(data)
    except ValidationError:
        return
    assert isinstance(data, dict) and data.get("jsonrpc", "2.0") == "2.0"
    has_error = data.get("error") is not None
    assert ("result" in data) != has_error, f"accepted a response with result and error both present or absent: {data}"
    assert (response.error is not None) == has_error
    wire_form = response.to_wire()
    assert ("result" in wire_form) != ("error" in wire_form)


# ---------------------------------------------------------------------------------------------------------------------
# MQTT envelopes and the requester's reply decoding
# ---------------------------------------------------------------------------------------------------------------------


def _valid_topic(text: str) -> bool:
    return bool(text) and "+" not in text and "#" not in text and "\x00" not in text and len(text.encode()) < 65535


@st.composite
def publish_properties(draw: st.DrawFn) -> Properties | None:
    if draw(st.booleans()):
        return None
    properties = Properties(PacketTypes.PUBLISH)
    if draw(st.booleans()):
        properties.ResponseTopic = draw(st.text(max_size=30))
    if draw(st.booleans()):
        properties.CorrelationData = draw(st.binary(max_size=40))
    if draw(st.booleans()):
        properties.UserProperty = draw(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=4))
    if draw(st.booleans()):
        properties.ContentType = draw(st.text(max_size=10))
    return properties


@fuzz(1000)
@given(
    topic_text.filter(_valid_topic),
    st.binary(max_size=200)
    | st.text(max_size=50)
    | st.integers()
    | st.floats()
    | st.none()
    | st.binary().map(bytearray),
    st.booleans(),
    publish_properties(),
)
def test_envelope_reads_any_message(parser_tally: Counter[str], topic: str, payload: Any, retain: bool, props) -> None:
    parser_tally["mqtt.Envelope.of"] += 1
    envelope = Envelope.of(aiomqtt.Message(topic, payload, 1, retain, 1, props))
    assert envelope.topic == topic and isinstance(envelope.payload, bytes) and envelope.retain is retain
    assert envelope.response_topic is None or (isinstance(envelope.response_topic, str) and envelope.response_topic)
    assert envelope.correlation_data is None or isinstance(envelope.correlation_data, bytes)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in envelope.user_properties.items())


@example(b"{}")
@example(b'{"jsonrpc":"2.0","id":1}')
@example(b'{"jsonrpc":"2.0","id":1,"result":null,"error":{"code":-32603,"message":"both"}}')
@fuzz(2000)
@given(raw_bytes | json_text.map(str.encode) | rpc_like.map(lambda d: json.dumps(d).encode()))
def test_requester_decodes_a_reply_or_drops_it(parser_tally: Counter[str], payload: bytes) -> None:
    parser_tally["requester._decode"] += 1
    response = _decode(Envelope("$a2a/v1/reply/acme/default/c/inbox", payload, False, correlation_data=b"c"))
    if response is None:
        return
    data = json.loads(payload)
    assert isinstance(data, dict) and ("result" in data) != (data.get("error") is not None)
    if response.error is None:
        assert isinstance(_ends_stream(response.result), bool)


def _is_stream_item(result: Any) -> bool:
    try:
        StreamResponse.from_wire(result)
    except PARSE_ERRORS:
        return False
    return True


class _StubLink:
    """Stands in for MqttLink: records publishes instead of sending them."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, Properties | None]] = []
        self.connected = asyncio.Event()
        self.connected.set()
        self.reconnects = 0
        self.client = None

    async def publish(self, topic: str, payload: bytes | str, *, properties: Properties | None = None, **_: Any):
        self.published.append((topic, payload.encode() if isinstance(payload, str) else payload, properties))


def _stream_item(task_id: str, state: str) -> bytes:
    status_update = {"taskId": task_id, "contextId": "ctx", "status": {"state": state}}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"statusUpdate": status_update}}).encode()


@fuzz(300)
@given(
    st.lists(
        st.tuples(st.sampled_from(["mine", "unknown", "none"]), raw_bytes | rpc_like.map(lambda d: json.dumps(d))),
        max_size=8,
    )
)
def test_requester_stream_survives_junk_replies(parser_tally: Counter[str], junk: list[tuple[str, Any]]) -> None:
    """Replies with unknown (or no) correlation are dropped; malformed ones with ours are skipped; the real stream
    still arrives in full, and nothing raises."""
    parser_tally["requester stream + junk replies"] += 1

    async def scenario() -> list[Any]:
        requester = MeshRequester(MqttSettings(), AgentAddress("acme", "default", "fuzz"))
        link = _StubLink()
        requester.link = link  # type: ignore[assignment]
        stream = requester.request(
            "$a2a/v1/request/acme/default/echo",
            "SendStreamingMessage",
            {},
            profile=RetryProfile(first_reply_timeout=2.0, stream_idle_timeout=2.0, attempts=1),
        )
        assert isinstance(stream, ReplyStream)
        results = stream.results()
        first = asyncio.ensure_future(anext(results))
        for _ in range(100):
            if link.published:
                break
            await asyncio.sleep(0)
        [(_, _, properties)] = link.published
        correlation = properties.CorrelationData
        task_id = str(uuid.uuid4())
        for whose, payload in junk:
            data = payload if isinstance(payload, bytes) else payload.encode()
            if whose == "mine":  # ours: a real error or stream item would be a real reply, not junk
                response = _decode(Envelope("t", data, False))
                if response is not None and (response.error is not None or _is_stream_item(response.result)):
                    continue
            correlation_data = {"mine": correlation, "unknown": b"not-ours", "none": None}[whose]
            await requester._route(Envelope(requester.reply_topic, data, False, correlation_data=correlation_data))
        for state in ("TASK_STATE_WORKING", "TASK_STATE_COMPLETED"):
            payload = _stream_item(task_id, state)
            await requester._route(Envelope(requester.reply_topic, payload, False, correlation_data=correlation))
        received = [await asyncio.wait_for(first, 5)]
        received += [item async for item in results]
        assert not requester._inboxes, "a finished stream leaves no inbox behind"
        return received

    received = asyncio.run(scenario())
    # well-formed results that are not stream items are passed on (the consumer skips them) and end nothing
    assert [item["statusUpdate"]["status"]["state"] for item in received if _is_stream_item(item)] == [
        "TASK_STATE_WORKING",
        "TASK_STATE_COMPLETED",
    ]


# ---------------------------------------------------------------------------------------------------------------------
# The responder's request handling, in process
# ---------------------------------------------------------------------------------------------------------------------

REPLY_TOPIC = "$a2a/v1/reply/acme/default/fuzzer/inbox"
METHODS = [
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "CancelTask",
    "SubscribeToTask",
    "ListTasks",
    "GetExtendedAgentCard",
]
KNOWN_IDS = [str(uuid.UUID(int=n)) for n in range(1, 4)]
task_ids = st.sampled_from(KNOWN_IDS) | st.uuids().map(str) | st.text(max_size=8) | st.none() | st.integers()


@st.composite
def send_params(draw: st.DrawFn) -> Any:
    params = draw(wire(ours.send_requests))
    message = params["message"]
    task_id = draw(task_ids)
    if task_id is None:
        message.pop("taskId", None)
    else:
        message["taskId"] = task_id
    if draw(st.booleans()):
        message["contextId"] = draw(st.sampled_from(["ctx-a", "ctx-b"]))
    params.pop("configuration", None)
    if draw(st.booleans()):
        params["configuration"] = {"returnImmediately": draw(st.booleans())}
    return draw(st.just(params) | mutated(st.just(params)))


request_payloads = st.one_of(
    raw_bytes,
    json_text.map(str.encode),
    st.sampled_from(HOSTILE_TEXTS).map(str.encode),
    st.sampled_from(HOSTILE_BYTES),
    st.builds(
        lambda method, params, request_id: json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        ).encode(),
        st.sampled_from(METHODS) | st.text(max_size=10),
        send_params() | json_values | st.fixed_dictionaries({"id": task_ids}),
        st.integers(0, 10**6) | st.text(max_size=6) | st.none(),
    ),
    rpc_like.map(lambda d: json.dumps(d).encode()),
)


class _RecordingOutbox:
    """A task machine's outbox that keeps each reply's payload, framed as the MQTT transport frames it."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        """(Correlation Data, payload) of every reply and stream item, in order."""

    async def reply(self, to: ReplyAddress, response: JsonRpcResponse) -> None:
        self.sent.append((to.correlation, fitted(response, MAX_PACKET_BYTES)))

    async def stream(self, subscriber: Subscriber, item: StreamResponse, body: bytes) -> None:
        self.sent.append((subscriber.correlation, stream_payload(subscriber.request_id, body)))

    async def keepalive(self, subscriber: Subscriber, body: bytes) -> None:
        return

    async def record(self, body: bytes) -> None:
        return


async def _echo_handler(task: TaskContext) -> None:
    await task.artifact(text=task.text or "(no text)")


def _method_of(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return data.get("method") if isinstance(data, dict) and isinstance(data.get("method"), str) else None


@example([b"[" * 5000])
@example([b"1" * 5000])
@example(['{"jsonrpc":"2.0","id":' + "9" * 5000 + ',"method":"GetTask","params":{}}'])
@example(
    [
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}], "taskId": t}},
            }
        ).encode()
        for t in (KNOWN_IDS[0], KNOWN_IDS[0])
    ]
)
@fuzz(600)
@given(st.lists(request_payloads, min_size=1, max_size=4))
def test_responder_answers_every_request_once_with_an_error_or_a_stream(
    parser_tally: Counter[str], payloads: list[bytes | str]
) -> None:
    parser_tally["responder request handling (in process)"] += len(payloads)

    async def scenario() -> list[tuple[bytes, list[JsonRpcResponse]]]:
        settings = AgentSettings(org="acme", unit="default", agent_id="fuzzed", http_port=0, max_concurrent=4)
        card = AgentCard(
            name="fuzzed",
            description="x",
            version="1",
            supported_interfaces=[models.AgentInterface(url="mqtt://x", protocol_binding="x")],
        )
        outbox = _RecordingOutbox()
        machine = TaskMachine(card, _echo_handler, settings, outbox)
        outcome: list[tuple[bytes, list[JsonRpcResponse]]] = []
        for index, payload in enumerate(payloads):
            data = payload.encode() if isinstance(payload, str) else payload
            correlation = f"c{index}".encode()
            request = IncomingRequest(data, ReplyAddress(REPLY_TOPIC, correlation))
            await asyncio.wait_for(machine.handle(request), timeout=5)
            runners = [record.runner for record in machine.tasks.values() if record.runner]
            if runners:
                await asyncio.wait_for(asyncio.gather(*runners, return_exceptions=True), timeout=5)
            replies = [JsonRpcResponse.model_validate_json(body) for to, body in outbox.sent if to == correlation]
            outcome.append((data, replies))
        return outcome

    for payload, replies in asyncio.run(scenario()):
        assert replies, f"no reply to {payload[:120]!r}"
        errors = [reply for reply in replies if reply.error is not None]
        if errors:
            assert len(replies) == 1, f"an error and more for {payload[:120]!r}: {replies}"
            assert -32768 <= errors[0].error.code <= -32000
            continue
        method = _method_of(payload)
        if method in STREAMING_METHODS:
            items = [StreamResponse.from_wire(reply.result) for reply in replies]
            assert items[-1].ends_stream, f"stream for {payload[:120]!r} did not end: {items}"
            assert not any(item.ends_stream for item in items[:-1])
        else:
            assert len(replies) == 1, f"{method} answered {len(replies)} times"
