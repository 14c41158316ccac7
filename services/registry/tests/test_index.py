"""The Redis index, card parsing and message handling on their own, against the session's real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from a2amesh.models import AgentCard
from a2amesh.mqtt import Envelope
from a2amesh.settings import MqttSettings
from devstack.fixtures import RedisHandle
from mesh_registry.consumer import CardConsumer, InvalidCard, record_of
from mesh_registry.index import AgentIndex, AgentRecord, Status, StatusSource, parse_load, sort_key

from .helpers import card, new_address, skill


@pytest.fixture
async def index(redis_server: RedisHandle) -> AsyncIterator[AgentIndex]:
    """An index under a prefix of its own (within `mesh:`, the registry user's keys), deleted afterwards."""
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    prefix = f"mesh:test-{uuid.uuid4().hex[:8]}:"
    yield AgentIndex(redis, prefix)
    keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def record(name: str, skills: list[dict], **kwargs: object) -> AgentRecord:
    return AgentRecord.of(new_address(name), AgentCard.from_wire(card(name, skills)), **kwargs)  # type: ignore[arg-type]


async def addresses(index: AgentIndex, **filters: object) -> list[str]:
    return [item["address"] for item in await index.find(**filters)]  # type: ignore[arg-type]


async def test_put_get_and_lookups(index: AgentIndex) -> None:
    alpha = record("alpha", [skill("search", "web", "text"), skill("sum", "text")], load=0.5)
    beta = record("beta", [skill("search", "web")])
    await index.put(alpha)
    await index.put(beta)

    stored = await index.get(alpha.address)
    assert stored == alpha.to_wire()
    assert stored["skills"] == ["search", "sum"] and stored["tags"] == ["web", "text"]
    assert await addresses(index, skill="search") == [str(beta.address), str(alpha.address)]  # no load first
    assert await addresses(index, tag="text") == [str(alpha.address)]
    assert await addresses(index, skill="search", tag="text") == [str(alpha.address)]
    assert await addresses(index, skill="nothing") == []
    assert set(await addresses(index)) == {str(alpha.address), str(beta.address)}


async def test_status_filter(index: AgentIndex) -> None:
    up = record("up", [skill("s")])
    down = record("down", [skill("s")], status=Status.OFFLINE, status_source=StatusSource.LWT)
    await index.put(up)
    await index.put(down)

    assert await addresses(index, status=Status.ONLINE) == [str(up.address)]
    assert await addresses(index, skill="s", status=Status.OFFLINE) == [str(down.address)]
    assert await addresses(index, skill="s") == [str(up.address), str(down.address)]


async def test_replacing_a_card_moves_its_skills_and_tags(index: AgentIndex) -> None:
    first = record("mover", [skill("old", "old-tag", "shared")])
    await index.put(first)
    second = AgentRecord.of(first.address, AgentCard.from_wire(card("mover", [skill("new", "shared")])))
    await index.put(second)

    assert await addresses(index, skill="old") == []
    assert await addresses(index, tag="old-tag") == []
    assert await addresses(index, skill="new") == [str(first.address)]
    assert await addresses(index, tag="shared") == [str(first.address)]
    assert not await index.redis.exists(index.skill_key("old"), index.tag_key("old-tag"))


async def test_remove(index: AgentIndex) -> None:
    gone = record("gone", [skill("x", "y")])
    await index.put(gone)

    assert await index.remove(gone.address) is True
    assert await index.get(gone.address) is None
    assert await addresses(index) == []
    assert not await index.redis.exists(index.skill_key("x"), index.tag_key("y"), index.all_key)
    assert await index.remove(gone.address) is False


async def test_clear_and_marker(index: AgentIndex) -> None:
    await index.put(record("a", [skill("x", "y")]))
    await index.mark_complete("epoch-1")
    assert await index.is_marked()

    assert await index.clear() > 0

    assert await addresses(index) == []
    assert not await index.is_marked()
    assert [key async for key in index.redis.scan_iter(match=f"{index.prefix}*")] == []


def test_sort_key_orders_online_then_load_then_address() -> None:
    records = [
        {"address": "o/u/d", "status": "offline", "load": 0.0},
        {"address": "o/u/c", "status": "online", "load": 0.9},
        {"address": "o/u/b", "status": "online", "load": None},
        {"address": "o/u/a", "status": "online", "load": 0.0},
    ]
    assert [r["address"] for r in sorted(records, key=sort_key)] == ["o/u/a", "o/u/b", "o/u/c", "o/u/d"]


@pytest.mark.parametrize(("text", "expected"), [(None, None), ("0", 0.0), ("0.250", 0.25), ("1.5", 1.5)])
def test_parse_load(text: str | None, expected: float | None) -> None:
    assert parse_load(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1", "nan", "inf", ""])
def test_parse_load_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_load(text)


def envelope(payload: bytes, **user: str) -> Envelope:
    return Envelope(topic="$a2a/v1/discovery/o/u/a", payload=payload, retain=True, user_properties=user)


def test_record_of_reads_status_source_and_load() -> None:
    address = new_address()
    payload = json.dumps(card("A", [skill("s", "t")])).encode()

    parsed = record_of(
        envelope(payload, **{"a2a-status": "offline", "a2a-status-source": "lwt", "a2a-load": "2"}), address
    )

    assert (parsed.status, parsed.status_source, parsed.load) == (Status.OFFLINE, StatusSource.LWT, 2.0)
    assert parsed.address == address and parsed.skills == ["s"] and parsed.tags == ["t"]


def test_record_of_defaults() -> None:
    parsed = record_of(envelope(json.dumps(card("A")).encode()), new_address())
    assert (parsed.status, parsed.status_source, parsed.load) == (Status.ONLINE, None, None)


def test_record_of_tolerates_unknown_source_and_bad_load() -> None:
    payload = json.dumps(card("A")).encode()
    parsed = record_of(envelope(payload, **{"a2a-status-source": "martians", "a2a-load": "x"}), new_address())
    assert (parsed.status, parsed.status_source, parsed.load) == (Status.ONLINE, None, None)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{oops", "Invalid JSON"),
        (b"[]", "should be an object"),
        (json.dumps({"name": "x"}).encode(), "supportedInterfaces"),
        (json.dumps({**card("A"), "supportedInterfaces": []}).encode(), "supportedInterfaces"),
        (json.dumps({**card("A"), "skills": [{"id": "s"}]}).encode(), "skills.0.name"),
    ],
)
def test_record_of_rejects_invalid_cards(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidCard, match=reason):
        record_of(envelope(payload), new_address())


def test_record_of_rejects_unknown_status() -> None:
    with pytest.raises(InvalidCard, match="a2a-status"):
        record_of(envelope(json.dumps(card("A")).encode(), **{"a2a-status": "napping"}), new_address())


async def test_consumer_applies_messages_in_order(index: AgentIndex) -> None:
    consumer = CardConsumer(MqttSettings(), "unused", index, asyncio.Event(), check_interval=1.0)
    address = new_address("direct")
    payload = json.dumps(card("Direct", [skill("s", "t")])).encode()

    await consumer.handle(Envelope(address.discovery_topic, payload, True, user_properties={"a2a-load": "0.5"}))
    assert (await index.get(address) or {}).get("load") == 0.5

    await consumer.handle(Envelope(address.discovery_topic, b"{broken", True))
    assert (await index.get(address) or {}).get("load") == 0.5  # an invalid card changes nothing

    await consumer.handle(Envelope(address.discovery_topic, b"", True))
    assert await index.get(address) is None


@pytest.mark.parametrize(
    "topic", ["$a2a/v1/discovery/o/u", "$a2a/v1/discovery/o/u/a/extra", "$a2a/v1/discovery/o/u/bad id"]
)
async def test_consumer_ignores_topics_outside_the_scheme(index: AgentIndex, topic: str) -> None:
    consumer = CardConsumer(MqttSettings(), "unused", index, asyncio.Event(), check_interval=1.0)

    await consumer.handle(Envelope(topic, json.dumps(card("Stray")).encode(), True))

    assert await index.find() == []
