"""The registry process end to end: cards published on the real broker, read back through its HTTP API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path

import httpx
from a2a_over_mqtt import build_card

from a2amesh.models import AgentCard
from devstack.pki import TESTER, Identity, Role

from .helpers import Publisher, Registry, card, eventually, new_address, skill

WILL_CLIENT = Path(__file__).with_name("will_client.py")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_healthz_ok(registry: Registry) -> None:
    response = await registry.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_valid_card_is_indexed(registry: Registry, publisher: Publisher) -> None:
    address = new_address()
    translate, summarise = unique("translate"), unique("summarise")
    payload = card("Polyglot", [skill(translate, "language", "text"), skill(summarise, "text")])
    await publisher.publish(address, payload, load=0.25)

    record = await registry.wait_record(address)

    assert record["address"] == str(address)
    assert (record["org"], record["unit"], record["agentId"]) == (address.org, address.unit, address.agent)
    assert record["status"] == "online"
    assert record["statusSource"] == "agent"
    assert record["load"] == 0.25
    assert TIMESTAMP.match(record["updatedAt"]), record["updatedAt"]
    assert record["skills"] == [translate, summarise]
    assert record["tags"] == ["language", "text"]
    assert record["card"] == AgentCard.from_wire(payload).to_wire()


async def test_status_defaults_to_online_without_properties(registry: Registry, publisher: Publisher) -> None:
    address = new_address()
    await publisher.publish(address, card("Plain"), status=None, source=None)

    record = await registry.wait_record(address)

    assert (record["status"], record["statusSource"], record["load"]) == ("online", None, None)


async def test_find_by_skill_and_by_tag(registry: Registry, publisher: Publisher) -> None:
    search, tag, other_tag = unique("search"), unique("tag"), unique("tag")
    first, second, third = new_address("a"), new_address("b"), new_address("c")
    await publisher.publish(first, card("First", [skill(search, tag)]))
    await publisher.publish(second, card("Second", [skill(search, other_tag)]))
    await publisher.publish(third, card("Third", [skill(unique("other"), tag)]))
    for address in (first, second, third):
        await registry.wait_record(address)

    async def addresses(**params: str) -> set[str]:
        response = await registry.get("/agents", **params)
        assert response.status_code == 200, response.text
        return {record["address"] for record in response.json()["agents"]}

    assert await addresses(skill=search) == {str(first), str(second)}
    assert await addresses(tag=tag) == {str(first), str(third)}
    assert await addresses(skill=search, tag=tag) == {str(first)}
    assert await addresses(skill=search, tag=unique("nothing")) == set()
    assert {str(first), str(second), str(third)} <= await addresses()


async def test_status_filter_and_ordering(registry: Registry, publisher: Publisher) -> None:
    tag = unique("ordered")
    busy, idle, unknown, gone = (new_address(name) for name in ("busy", "idle", "unknown", "gone"))
    await publisher.publish(busy, card("Busy", [skill("work", tag)]), load=0.75)
    await publisher.publish(idle, card("Idle", [skill("work", tag)]), load=0.1)
    await publisher.publish(unknown, card("Unknown", [skill("work", tag)]))
    await publisher.publish(gone, card("Gone", [skill("work", tag)]), status="offline", load=0.0)
    for address in (busy, idle, unknown, gone):
        await registry.wait_record(address)

    response = await registry.get("/agents", tag=tag)
    assert [record["address"] for record in response.json()["agents"]] == [
        str(unknown),  # no load figure counts as 0
        str(idle),
        str(busy),
        str(gone),  # offline last, whatever its load
    ]
    online = (await registry.get("/agents", tag=tag, status="online")).json()["agents"]
    offline = (await registry.get("/agents", tag=tag, status="offline")).json()["agents"]
    assert [record["address"] for record in online] == [str(unknown), str(idle), str(busy)]
    assert [record["address"] for record in offline] == [str(gone)]


async def test_changed_skills_leave_old_lookups(registry: Registry, publisher: Publisher) -> None:
    address = new_address()
    old_skill, new_skill, old_tag = unique("old"), unique("new"), unique("oldtag")
    await publisher.publish(address, card("Changing", [skill(old_skill, old_tag)]))
    await registry.wait_record(address)
    await publisher.publish(address, card("Changing", [skill(new_skill, "fresh")]))
    await registry.wait_record(address, lambda record: record["skills"] == [new_skill])

    assert (await registry.get("/agents", skill=old_skill)).json() == {"agents": []}
    assert (await registry.get("/agents", tag=old_tag)).json() == {"agents": []}
    assert [r["address"] for r in (await registry.get("/agents", skill=new_skill)).json()["agents"]] == [str(address)]


async def test_bad_json_is_ignored(registry: Registry, publisher: Publisher) -> None:
    address = new_address("badjson")
    await publisher.publish(address, b"{not json")

    line = await registry.wait_log("invalid card", str(address))

    assert "WARNING" in line
    assert (await registry.get(f"/agents/{address}")).status_code == 404
    assert (await registry.get("/healthz")).status_code == 200


async def test_card_missing_fields_leaves_index_unchanged(registry: Registry, publisher: Publisher) -> None:
    address = new_address("partial")
    await publisher.publish(address, card("Whole", [skill("keep", "kept")]))
    before = await registry.wait_record(address)

    await publisher.publish(address, {"name": "Half", "skills": []}, status="offline")
    line = await registry.wait_log("invalid card", str(address))

    assert "supportedInterfaces" in line and "version" in line, line
    assert await registry.record(address) == before
    assert (await registry.get("/healthz")).status_code == 200


async def test_unknown_status_is_ignored(registry: Registry, publisher: Publisher) -> None:
    address = new_address("weird")
    await publisher.publish(address, card("Weird"), status="sleepy")

    await registry.wait_log("invalid card", str(address), "sleepy")

    assert (await registry.get(f"/agents/{address}")).status_code == 404


async def test_bad_load_is_dropped_but_card_kept(registry: Registry, publisher: Publisher) -> None:
    address = new_address("loady")
    await publisher.publish(address, card("Loady"), load="lots")

    record = await registry.wait_record(address)

    assert record["load"] is None


async def test_graceful_offline(registry: Registry, publisher: Publisher) -> None:
    address = new_address("polite")
    payload = card("Polite", [skill("greet")])
    await publisher.publish(address, payload)
    await registry.wait_record(address, lambda record: record["status"] == "online")

    await publisher.publish(address, payload, status="offline", source="agent")

    record = await registry.wait_record(address, lambda record: record["status"] == "offline")
    assert record["statusSource"] == "agent"


async def test_will_marks_agent_offline(registry: Registry, publisher: Publisher) -> None:
    address = new_address("crashy")
    payload = json.dumps(card("Crashy", [skill("crash")]))
    publisher.topics.add(address.discovery_topic)  # the Will leaves a retained card behind: clear it afterwards
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WILL_CLIENT),
        "127.0.0.1",
        str(registry.stack.ports.mqtt),
        str(address),
        payload,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **registry.stack.identity_env(Identity(TESTER, Role.TESTER))},  # TLS and credentials
    )
    try:
        assert agent.stdout is not None
        line = await asyncio.wait_for(agent.stdout.readline(), timeout=15)
        assert line.strip() == b"published", line
        online = await registry.wait_record(address, lambda record: record["status"] == "online")
        assert online["statusSource"] == "agent"

        agent.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sees the socket drop and sends the Will
        await asyncio.wait_for(agent.wait(), timeout=5)

        record = await registry.wait_record(address, lambda record: record["status"] == "offline")
        assert record["statusSource"] == "lwt"
        assert record["card"]["name"] == "Crashy"
    finally:
        if agent.returncode is None:
            agent.kill()
            await asyncio.wait_for(agent.wait(), timeout=5)


async def test_cleared_card_removes_agent(registry: Registry, publisher: Publisher) -> None:
    address = new_address("leaving")
    leaving_skill = unique("leave")
    await publisher.publish(address, card("Leaving", [skill(leaving_skill, "bye")]))
    await registry.wait_record(address)

    await publisher.clear(address)

    await registry.wait_gone(address)
    response = await registry.get(f"/agents/{address}")
    assert response.json() == {"error": "agent not found"}
    assert (await registry.get("/agents", skill=leaving_skill)).json() == {"agents": []}


async def test_sdk_card_is_accepted(registry: Registry, publisher: Publisher) -> None:
    address = new_address("sdk")
    sdk_skill = unique("sdk-skill")
    payload = build_card(
        name="SDK Agent",
        description="built by a2a_over_mqtt",
        url=f"mqtt://127.0.0.1:1883/{address}",
        skills=[{"id": sdk_skill, "name": "SDK skill", "description": "no tags on purpose"}],
    )

    await publisher.publish(address, payload)
    record = await registry.wait_record(address)

    assert record["skills"] == [sdk_skill]
    assert record["tags"] == []
    assert record["card"]["supportedInterfaces"][0]["protocolBinding"] == "MQTTv5+JSONRPCv2"
    found = (await registry.get("/agents", skill=sdk_skill)).json()["agents"]
    assert [item["address"] for item in found] == [str(address)]


async def test_default_sdk_card_is_accepted(registry: Registry, publisher: Publisher) -> None:
    address = new_address("sdkdefault")
    await publisher.publish(address, build_card(name="Echo Bot", description="echoes", url="mqtt://x"))

    record = await registry.wait_record(address)

    assert record["skills"] == ["echo-bot"]


async def test_unknown_agent_is_404(registry: Registry) -> None:
    response = await registry.get(f"/agents/{new_address('nobody')}")
    assert response.status_code == 404
    assert response.json() == {"error": "agent not found"}


async def test_bad_query_values_are_400(registry: Registry) -> None:
    bogus = await registry.get("/agents", status="bogus")
    assert bogus.status_code == 400
    assert "status" in bogus.json()["error"]
    empty = await registry.get("/agents", skill="")
    assert empty.status_code == 400
    assert "skill" in empty.json()["error"]
    async with httpx.AsyncClient(base_url=registry.url) as client:
        twice = await client.get("/agents?tag=a&tag=b")
    assert twice.status_code == 400
    bad_id = await registry.get("/agents/acme/default/no%20spaces")
    assert bad_id.status_code == 400


async def test_index_rebuilt_after_flush(registry: Registry, publisher: Publisher) -> None:
    from redis.asyncio import Redis

    address = new_address("survivor")
    survivor_skill = unique("survive")
    await publisher.publish(address, card("Survivor", [skill(survivor_skill, "tough")]), load=0.5)
    await registry.wait_record(address)

    admin = registry.stack.redis_url_for("mesh-admin", int(registry.redis_url.rsplit("/", 1)[1]))
    redis = Redis.from_url(admin, decode_responses=True)  # flushing is an operator's right, not the registry's
    try:
        await redis.flushdb()
        assert await redis.dbsize() == 0
    finally:
        await redis.aclose()

    record = await registry.wait_record(address, within=15)
    assert record["load"] == 0.5

    async def found() -> bool:
        agents = (await registry.get("/agents", skill=survivor_skill)).json()["agents"]
        return [item["address"] for item in agents] == [str(address)]

    await eventually(found, 10, "skill lookup rebuilt")
