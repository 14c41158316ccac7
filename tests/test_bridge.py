"""Past one broker: an edge site's Mosquitto bridged over TLS to the central one, as its own bridge identity. An
agent connected only to the edge broker is discovered centrally and serves tasks sent through the central
coordinator; its replies and events flow back; topics outside the bridge's list stay where they were published."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from a2amesh.mqtt import make_client
from a2amesh.settings import MqttSettings
from a2amesh.topics import AgentAddress, PoolAddress
from devstack.__main__ import bridge_command
from devstack.bridge import EdgeSite
from devstack.identities import Broker
from devstack.pki import Identity, Pki, Role
from devstack.processes import free_port
from devstack.stack import Ports, Stack
from tests.conftest import auth_headers, collect, eventually, send_request, user_message

EDGE_AGENT = "edge-echo"
EDGE_POOL = "edge-pool"
QUIET = 1.5
"""Seconds a "nothing crossed" check keeps listening after a message that did cross."""


@dataclass
class Sites:
    central: Stack
    edge: Stack
    site: EdgeSite


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    """A central mesh (broker, registry, task store, coordinator; no agent of its own) and an edge broker bridged to
    it, with one echo agent connected to the edge broker only."""
    central = Stack(run_dir=tmp_path_factory.mktemp("central"), ports=Ports.random(), agents={}, tester=True)
    central.start()
    site = EdgeSite("edge1", central.org, central.unit, agents=(EDGE_AGENT,), pools=(EDGE_POOL,))
    # one CA for both sites: the edge broker's certificate and its clients' are issued by the same one
    edge_root = tmp_path_factory.mktemp("edge-pki")
    for name in ("ca.crt", "ca.key"):
        shutil.copy2(central.pki.root / name, edge_root / name)
    # what an operator runs (`make bridge`): admit the site's bridge centrally, write the edge broker's folder
    bridge_dir = tmp_path_factory.mktemp("edge-bridge")
    central_broker = Broker("127.0.0.1", central.ports.mqtt)
    address = f"127.0.0.1:{central.ports.mqtt}"
    assert bridge_command(central.pki.root, site, address, bridge_dir, None, central_broker) == 0
    edge = Stack(
        run_dir=tmp_path_factory.mktemp("edge"),
        ports=Ports.random(),
        agents={},
        tester=True,
        pki_dir=edge_root,
        broker_extra=f"include_dir {bridge_dir}\n",
    )
    try:
        edge.launch(edge.broker())
        env = {"MESH_AGENT_ID": EDGE_AGENT, "MESH_HTTP_PORT": str(free_port())}
        identity = Identity(EDGE_AGENT, Role.AGENT)
        edge.launch(edge.service(EDGE_AGENT, "agent_echo", env, central.agent_online(EDGE_AGENT), identity), 60)
        yield Sites(central, edge, site)
    finally:
        edge.stop()
        central.stop()


def probe_properties(correlation: bytes, reply_to: str) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = reply_to
    properties.CorrelationData = correlation
    properties.ContentType = "application/json"
    properties.UserProperty = [("a2a-status", "online"), ("a2a-responder-agent-id", "acme/default/probe")]
    return properties


@contextlib.asynccontextmanager
async def listening(settings: MqttSettings, *filters: str) -> AsyncIterator[aiomqtt.Client]:
    async with make_client(settings, f"probe-{uuid.uuid4().hex[:8]}") as client:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        yield client


async def first_on(client: aiomqtt.Client, topic: str, timeout: float = 20.0) -> aiomqtt.Message:
    """The first message on `topic` (others are skipped), bounded in time."""
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if message.topic.value == topic:
                return message
    raise AssertionError("unreachable")


async def topics_until(client: aiomqtt.Client, sentinel: str, timeout: float = 20.0) -> set[str]:
    """Every topic received until the sentinel arrives, and for QUIET seconds after it."""
    seen: set[str] = set()
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            seen.add(message.topic.value)
            if message.topic.value == sentinel:
                break
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(QUIET):
            async for message in client.messages:
                seen.add(message.topic.value)
    return seen


async def test_mqtt5_request_properties_survive_the_bridge_both_ways(sites: Sites) -> None:
    """The mesh lives on Response Topic, Correlation Data and User Properties: a bridge that dropped them would
    leave every request unanswerable. Edge -> central on a reply topic, central -> edge on a pool topic."""
    org, unit = sites.central.org, sites.central.unit
    reply_topic = AgentAddress(org, unit, "probe-requester").reply_topic(uuid.uuid4().hex)
    pool_topic = PoolAddress(org, unit, EDGE_POOL).topic
    for source, target, topic in ((sites.edge, sites.central, reply_topic), (sites.central, sites.edge, pool_topic)):
        correlation = uuid.uuid4().bytes
        async with listening(target.tester_settings(), topic) as receiver:
            async with make_client(source.tester_settings(), f"probe-{uuid.uuid4().hex[:8]}") as sender:
                properties = probe_properties(correlation, reply_topic)
                await sender.publish(topic, b'{"probe": true}', qos=1, properties=properties)
            message = await first_on(receiver, topic)
        assert message.payload == b'{"probe": true}'
        assert message.properties is not None, f"{topic}: no MQTT 5 properties after the bridge"
        assert message.properties.CorrelationData == correlation
        assert message.properties.ResponseTopic == reply_topic
        assert message.properties.ContentType == "application/json"
        assert ("a2a-responder-agent-id", "acme/default/probe") in message.properties.UserProperty


async def test_the_edge_agent_is_discovered_centrally_with_its_presence(sites: Sites) -> None:
    card_topic = AgentAddress(sites.central.org, sites.central.unit, EDGE_AGENT).discovery_topic
    async with listening(sites.central.tester_settings(), card_topic) as central:
        message = await first_on(central, card_topic)
    assert message.retain, "the card reached the central broker, but not as a retained message"
    assert message.properties is not None
    assert ("a2a-status", "online") in message.properties.UserProperty
    async with httpx.AsyncClient(timeout=10) as http:
        listed = (await http.get(f"{sites.central.registry_url}/agents")).json()
    assert EDGE_AGENT in str(listed)


async def test_a_task_sent_centrally_is_served_at_the_edge_and_recorded_centrally(sites: Sites) -> None:
    central = sites.central
    async with httpx.AsyncClient(timeout=60, headers=auth_headers(central)) as http:
        card = await A2ACardResolver(http, central.coordinator_url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        [event] = await collect(client, send_request(user_message("across the bridge"), skill="echo"))
        task = event.task
        assert task.status.state == pb.TASK_STATE_COMPLETED
        assert task.artifacts[0].parts[0].text == "across the bridge"

        async def recorded() -> dict[str, object] | None:
            response = await http.get(f"{central.taskstore_url}/tasks/{task.id}/events", params={"scope": "all"})
            if response.status_code != 200:
                return None
            body = response.json()
            return body if body["statusHistory"][-1]["state"] == "TASK_STATE_COMPLETED" else None

        body = await eventually(recorded, timeout=30, what="the edge agent's events recorded centrally")
    assert body["agent"] == f"{central.org}/{central.unit}/{EDGE_AGENT}"


async def test_topics_outside_the_bridge_list_do_not_cross(sites: Sites) -> None:
    """Each way, a few topics the bridge must not carry, then one it carries: once that one has crossed (and a
    moment after), none of the others has."""
    org, unit = sites.central.org, sites.central.unit
    stranger = AgentAddress(org, unit, "not-at-the-edge")
    edge_agent = AgentAddress(org, unit, EDGE_AGENT)
    cases = [
        (  # edge -> central: other agents' cards, events and requests, foreign pools, anything outside $a2a
            sites.edge,
            sites.central,
            [
                stranger.discovery_topic,
                stranger.event_topic,
                edge_agent.request_topic,
                PoolAddress(org, unit, "central-pool").topic,
                "site/local/telemetry",
            ],
            AgentAddress(org, unit, "probe-requester").reply_topic(uuid.uuid4().hex),
        ),
        (  # central -> edge: requests to other agents, cards, events and replies, other pools
            sites.central,
            sites.edge,
            [
                stranger.request_topic,
                stranger.discovery_topic,
                edge_agent.event_topic,
                AgentAddress(org, unit, "probe-requester").reply_topic("x"),
                PoolAddress(org, unit, "other").topic,
                "site/central/telemetry",
            ],
            PoolAddress(org, unit, EDGE_POOL).topic,
        ),
    ]
    for source, target, forbidden, sentinel in cases:
        async with listening(target.tester_settings(), "#", "$a2a/#") as receiver:
            async with make_client(source.tester_settings(), f"probe-{uuid.uuid4().hex[:8]}") as sender:
                for topic in forbidden:
                    await sender.publish(topic, b"{}", qos=1)
                await sender.publish(sentinel, b"{}", qos=1)
            seen = await topics_until(receiver, sentinel)
        assert sentinel in seen
        assert not seen & set(forbidden), f"crossed the bridge: {seen & set(forbidden)}"


async def test_an_edge_agent_that_dies_is_marked_offline_centrally_by_its_will(sites: Sites) -> None:
    """Last: it kills the edge agent. The edge broker publishes its Will (the card, `offline`/`lwt`, retained), which
    crosses the bridge like the card did."""
    sites.edge[EDGE_AGENT].kill()
    url = f"{sites.central.registry_url}/agents/{sites.central.org}/{sites.central.unit}/{EDGE_AGENT}"

    async def offline() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(url)
        return response.status_code == 200 and response.json().get("status") == "offline"

    await eventually(offline, timeout=30, what="the edge agent's Will seen by the central registry")


def test_make_certs_keeps_a_bridge_with_its_sites_agents_and_pools(tmp_path: Path) -> None:
    """A bridge is recorded like an outside identity, and its rights (its site's agents and pools) survive the record:
    `make certs` rewrites the seed with the same role."""
    pki = Pki(tmp_path / "pki")
    site = EdgeSite("plant1", pki.org, pki.unit, agents=("a1", "a2"), pools=("p1",))
    pki.ensure([])
    pki.record_outside(site.identity)
    assert pki.outside_identities() == [site.identity]
    pki.write_dynsec([])
    roles = {role["rolename"]: role for role in json.loads(pki.dynsec_file.read_text())["roles"]}
    acls = roles[f"id:{pki.org}/{pki.unit}/bridge-plant1"]["acls"]
    assert {acl["topic"] for acl in acls if acl["acltype"] == "subscribePattern"} == {
        AgentAddress(pki.org, pki.unit, "a1").request_topic,
        AgentAddress(pki.org, pki.unit, "a2").request_topic,
        PoolAddress(pki.org, pki.unit, "p1").topic,
    }
    lines = site.bridge_config("central:8883", pki.ca_cert, pki.client(site.identity), "pw").splitlines()
    topics = [line.split()[1:] for line in lines if line.startswith("topic ")]
    assert [direction for _, direction, _ in topics].count("in") == 3
    assert all(qos == "1" for _, _, qos in topics)
