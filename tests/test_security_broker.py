"""Break-in tests against the real broker with the project's config: TLS with client certificates from the mesh CA,
no anonymous clients, and Mosquitto's dynamic-security plugin with one identity per client (username = client id,
pinned) and one least-privilege role each (infra/devstack/src/devstack/pki.py).

Every test admits fresh identities to the session broker (`broker.stack.provision`) and attacks with the mesh's own
MQTT client. A refusal is observed where the broker reports it (CONNACK, SUBACK and PUBACK reason codes) and then
checked by effect: a subscriber with the rights to see a forged message sees none, retained cards stay as their owner
left them, refused subscriptions receive nothing. Each attack has an own-topic control that must succeed, so a broker
that refused everything would fail. The tallies are printed with -s and in the terminal summary.
Background, the threat model and the role table: docs/security.md."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import itertools
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from a2amesh.binding import MeshRequester
from a2amesh.binding.requester import RemoteError, RequestTimeoutError, RetryProfile
from a2amesh.binding.responder import Responder
from a2amesh.enroll import EnrollError, replica_entries
from a2amesh.enroll import enroll as enroll_replica
from a2amesh.mqtt import Envelope, make_client, publish_properties
from a2amesh.mqtt_base import AUTHORIZATION_PROPERTY, RESPONDER_PROPERTY, STATUS_PROPERTY
from a2amesh.settings import AgentSettings, EnrollSettings, MqttSettings
from a2amesh.topics import PoolAddress
from agent_echo.agent import EchoAgent
from devstack.bridge import EdgeSite
from devstack.fixtures import BrokerHandle
from devstack.identities import Broker, IdentityError
from devstack.identities import admit as admit_identity
from devstack.identities import revoke as revoke_identity
from devstack.pki import ADMIN, ENROLLER, Identity, Pki, Role
from devstack.processes import ManagedProcess, free_port, tcp_ready
from devstack.stack import REPO_ROOT, find_binary
from tests.security_helpers import (
    DELIVERED,
    GRANTED,
    NOT_AUTHORIZED,
    Actor,
    Tally,
    admit,
    admit_many,
    client,
    collect_until,
    connect_error,
    connected,
    drain,
    leave_with_will,
    payload_of,
    retained,
    role_table,
    running,
    short_id,
    suback,
    user_properties,
)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
POOL_MESSAGES = 20
WIDE_FILTERS = (
    "#",
    "$a2a/#",
    "$a2a/v1/request/#",
    "$a2a/v1/request/+/+/+",
    "$a2a/v1/discovery/#",
    "$a2a/v1/event/#",
    "$a2a/v1/reply/#",
    "a2a/v1/pool/#",
    "$share/spy/a2a/v1/pool/#",
    "$SYS/#",
    "$CONTROL/#",
)
"""Filters that would read other identities' streams; no agent or requester may hold any of them."""


# -- reporting ---------------------------------------------------------------------------------------------------
class _Reports:
    def __init__(self) -> None:
        self.sections: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.sections:
            terminalreporter.section("Broker break-in tally")
            for section in self.sections:
                terminalreporter.write_line(section)


@pytest.fixture(scope="session")
def reports(request: pytest.FixtureRequest) -> _Reports:
    reporter = _Reports()
    request.config.pluginmanager.register(reporter, "security-broker-tally")
    return reporter


def publish_report(reports: _Reports, tally: Tally, title: str) -> None:
    text = tally.report(title)
    print("\n" + text)
    reports.sections.append(text)


def witness_client(broker: BrokerHandle, purpose: str) -> aiomqtt.Client:
    """A client with the test harness's identity, which may read and write anything (a neutral witness)."""
    return client(broker.settings, f"mesh-tester-{purpose}-{short_id()}")


# -- 1. who may connect --------------------------------------------------------------------------------------------
def _anonymous(actor: Actor, other: Actor, tmp_path: Path) -> tuple[MqttSettings, str]:
    return actor.settings_with(username=None, password=None, password_file=None), actor.client_id


def _wrong_password(actor: Actor, other: Actor, tmp_path: Path) -> tuple[MqttSettings, str]:
    return actor.settings_with(password="not-" + actor.settings.secret(), password_file=None), actor.client_id


def _plaintext(actor: Actor, other: Actor, tmp_path: Path) -> tuple[MqttSettings, str]:
    return actor.settings_with(tls=False), actor.client_id


def _no_client_certificate(actor: Actor, other: Actor, tmp_path: Path) -> tuple[MqttSettings, str]:
    return actor.settings_with(cert_file=None, key_file=None), actor.client_id


def _unknown_ca(actor: Actor, other: Actor, tmp_path: Path) -> tuple[MqttSettings, str]:
    """The identity's right name, username and password, but a certificate from a CA the broker does not trust."""
    foreign = Pki(tmp_path / "other-ca", actor.org, actor.unit).client(actor.identity)
    return actor.settings_with(cert_file=foreign.cert, key_file=foreign.key), actor.client_id


def _expired(actor: Actor, other: Actor, tmp_path: Path) -> tuple[MqttSettings, str]:
    """A certificate from the mesh CA itself, for this identity, that expired a month ago."""
    mesh_ca = Path(actor.settings.ca_file)
    cert = Pki(tmp_path).issue(
        "expired",
        common_name=actor.client_id,
        days=30,
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=60),
        ca=(mesh_ca, mesh_ca.parent / "ca.key"),
    )
    return actor.settings_with(cert_file=cert, key_file=tmp_path / "expired.key"), actor.client_id


def _another_client_id(actor: Actor, other: Actor, tmp_path: Path) -> tuple[MqttSettings, str]:
    """Valid credentials of one identity, presented under another identity's client id."""
    return actor.settings, other.client_id


REFUSED = {
    "anonymous: mesh certificate, no username": _anonymous,
    "wrong password": _wrong_password,
    "plaintext to the TLS port": _plaintext,
    "no client certificate": _no_client_certificate,
    "client certificate from an unknown CA": _unknown_ca,
    "expired client certificate from the mesh CA": _expired,
    "another identity's client id": _another_client_id,
}


TLS_CASES = (
    "no client certificate",
    "client certificate from an unknown CA",
    "expired client certificate from the mesh CA",
)


@pytest.mark.parametrize("case", list(REFUSED))
async def test_connection_is_refused(broker: BrokerHandle, tmp_path: Path, case: str) -> None:
    alice, bob = admit_many(broker.stack, f"c-{short_id()}", Role.AGENT, 2)
    assert await connect_error(alice.settings, alice.client_id) is None, "control: the genuine identity connects"
    settings, client_id = REFUSED[case](alice, bob, tmp_path)
    error = await connect_error(settings, client_id)
    print(f"\n  {case}: {error or 'CONNECTED'}")
    hint = (
        " (HOLE: the TLS listener lacks `require_certificate true`, see docs/security.md)" if case in TLS_CASES else ""
    )
    assert error is not None, f"the broker accepted a connection with {case}{hint}"


# -- 2. one agent against another ---------------------------------------------------------------------------------
async def test_an_agent_reads_only_its_own_requests(broker: BrokerHandle) -> None:
    alice, bob = admit_many(broker.stack, f"r-{short_id()}", Role.AGENT, 2)
    (requester,) = admit_many(broker.stack, f"r-{short_id()}", Role.REQUESTER, 1)
    async with connected(alice) as (a, _), connected(bob) as (b, _), connected(requester) as (_, send):
        assert await suback(a, bob.address.request_topic) == NOT_AUTHORIZED
        assert await suback(a, "$a2a/v1/request/+/+/+") == NOT_AUTHORIZED
        assert await suback(b, bob.address.request_topic) in GRANTED
        marker = f"for bob {short_id()}".encode()
        assert await send.publish(bob.address.request_topic, marker) in DELIVERED
        got = await collect_until(b, lambda got: any(payload_of(m) == marker for m in got), 5)
        assert [payload_of(m) for m in got] == [marker]
        assert await drain(a) == [], "alice received bob's request"


async def test_a_refused_pool_share_leaves_every_pool_message_to_its_members(broker: BrokerHandle) -> None:
    """The worst case for a shared group: the intruder asks for the members' own group. With acl_file the broker would
    grant it and deliver half the pool's requests into a subscription that then drops them
    (test_acl_file_would_lose_pool_messages); dynsec refuses the SUBSCRIBE, so the member gets every one."""
    alice, bob = admit_many(broker.stack, f"p-{short_id()}", Role.AGENT, 2, pools=True)
    (requester,) = admit_many(broker.stack, f"p-{short_id()}", Role.REQUESTER, 1)
    pool = bob.pool
    async with connected(alice) as (a, _), connected(bob) as (b, _), connected(requester) as (_, send):
        assert await suback(b, pool.shared_subscription) in GRANTED
        assert await suback(a, pool.shared_subscription) == NOT_AUTHORIZED
        assert await suback(a, f"$share/{alice.name}/{pool.topic}") == NOT_AUTHORIZED
        assert await suback(a, pool.topic) == NOT_AUTHORIZED
        assert await suback(a, alice.pool.shared_subscription) in GRANTED, "control: alice may join her own pool"
        sent = [f"pool request {n}".encode() for n in range(POOL_MESSAGES)]
        for payload in sent:
            assert await send.publish(pool.topic, payload) in DELIVERED
        got = await collect_until(b, lambda got: len(got) >= POOL_MESSAGES, 10)
        stolen = await drain(a)
    print(f"\n  pool {pool.pool}: {len(sent)} published, bob received {len(got)}, alice received {len(stolen)}")
    assert sorted(payload_of(m) for m in got) == sorted(sent)
    assert stolen == []


async def test_an_agent_cannot_overwrite_or_clear_another_agents_card(broker: BrokerHandle) -> None:
    prefix = f"k-{short_id()}"
    alice, bob = admit_many(broker.stack, prefix, Role.AGENT, 2)
    registry = admit(broker.stack, Identity(f"{prefix}-registry", Role.REGISTRY))
    card = json.dumps({"name": "Bob", "id": bob.client_id}).encode()
    online = publish_properties(user=[(STATUS_PROPERTY, "online")])
    target = bob.address.discovery_topic
    async with connected(registry) as (watch, _):
        assert await suback(watch, "$a2a/v1/discovery/#") in GRANTED
        async with connected(bob) as (_, bob_pub):
            assert await bob_pub.publish(target, card, retain=True, properties=online) in DELIVERED
        async with connected(alice) as (a, alice_pub):
            forged = json.dumps({"name": "Bob", "url": "mqtts://evil"}).encode()
            assert await alice_pub.publish(target, forged, retain=True, properties=online) == NOT_AUTHORIZED
            assert await alice_pub.publish(target, b"", retain=True) == NOT_AUTHORIZED  # clear = unregister bob
            await a.publish(target, b"", qos=0, retain=True)  # no PUBACK at QoS 0: only the effect tells
            await a.publish(target, forged, qos=2, retain=True)
        # a Will is published by the broker on the client's behalf: it must be held to the same ACL
        for will_topic in (target, alice.address.discovery_topic):
            will = aiomqtt.Will(will_topic, b"", qos=1, retain=True)
            async with client(alice.settings, alice.client_id, will=will) as leaving:
                await leave_with_will(leaving)
        theirs = (target, alice.address.discovery_topic)  # the session broker holds other tests' cards too
        seen = await collect_until(watch, lambda got: any(m.topic.value == theirs[1] for m in got), 5)
    assert [(m.topic.value, payload_of(m)) for m in seen if m.topic.value in theirs] == [
        (target, card),
        (alice.address.discovery_topic, b""),  # control: alice's Will on her own topic went out
    ]
    kept = await retained(broker.settings, target, f"mesh-tester-card-{short_id()}")
    assert kept is not None and payload_of(kept) == card and user_properties(kept) == {STATUS_PROPERTY: "online"}
    async with witness_client(broker, "clean") as cleaner:
        await cleaner.publish(target, b"", qos=1, retain=True)


async def test_an_agent_cannot_publish_events_as_another(broker: BrokerHandle) -> None:
    prefix = f"e-{short_id()}"
    alice, bob = admit_many(broker.stack, prefix, Role.AGENT, 2)
    taskstore = admit(broker.stack, Identity(f"{prefix}-taskstore", Role.TASKSTORE))
    async with connected(taskstore) as (store, _), connected(alice) as (_, alice_pub):
        assert await suback(store, "$a2a/v1/event/#") in GRANTED
        forged = b'{"statusUpdate":{"taskId":"t1","status":{"state":"TASK_STATE_COMPLETED"}}}'
        assert await alice_pub.publish(bob.address.event_topic, forged) == NOT_AUTHORIZED
        own = b'{"statusUpdate":{"taskId":"t2","status":{"state":"TASK_STATE_WORKING"}}}'
        assert await alice_pub.publish(alice.address.event_topic, own) in DELIVERED
        seen = await drain(store, 1.5)
    theirs = (alice.address.event_topic, bob.address.event_topic)
    assert [(m.topic.value, payload_of(m)) for m in seen if m.topic.value in theirs] == [
        (alice.address.event_topic, own)
    ]


async def test_an_edge_bridge_carries_only_its_own_sites_topics(broker: BrokerHandle) -> None:
    """The bridge identity an edge broker connects as (devstack.bridge): its own agents' cards and events and the
    org's replies in, its own agents' requests and pools out, nothing of another agent, pool or site."""
    prefix = f"b-{short_id()}"
    edge_agent, other = admit_many(broker.stack, prefix, Role.AGENT, 2, pools=True)
    site = EdgeSite(prefix, broker.stack.org, broker.stack.unit, (edge_agent.name,), (edge_agent.identity.pool or "",))
    bridge = admit(broker.stack, site.identity)
    assert await connect_error(bridge.settings, f"{bridge.client_id}-2") is not None, "the bridge is pinned"
    async with connected(bridge) as (link, send):
        for topic_filter in (edge_agent.address.request_topic, edge_agent.pool.topic):
            assert await suback(link, topic_filter) in GRANTED
        for topic_filter in (
            other.address.request_topic,
            other.pool.topic,
            other.pool.shared_subscription,
            "$a2a/v1/request/#",
            "$a2a/v1/discovery/#",
            "$a2a/v1/event/#",
            other.address.reply_filter(),
            "#",
        ):
            assert await suback(link, topic_filter) == NOT_AUTHORIZED, topic_filter
        for topic in (edge_agent.address.event_topic, other.address.reply_topic(short_id())):
            assert await send.publish(topic, b"{}") in DELIVERED
        for topic in (other.address.discovery_topic, other.address.event_topic, other.address.request_topic, "x/y"):
            assert await send.publish(topic, b"{}") == NOT_AUTHORIZED, topic
        assert await send.publish(edge_agent.address.discovery_topic, b"", retain=True) in DELIVERED


def enrolled(broker: BrokerHandle, replica: str, pool: str, out: Path) -> Actor:
    """A replica enrolled as its pod's init container does it (a2amesh.enroll), with the pool's shared certificate."""
    stack = broker.stack
    stack.pki.write_enroll_template(pool)
    shared = stack.pki.client(Identity(pool, Role.AGENT, pool))  # the pool's certificate; never admitted itself
    for source, name in ((stack.pki.ca_cert, "ca.crt"), (shared.cert, "client.crt"), (shared.key, "client.key")):
        (out / "shared").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / "shared" / name)
    enroller = stack.mqtt_settings(stack.pki.client(Identity(ENROLLER, Role.TESTER)))
    settings = EnrollSettings(
        org=stack.org,
        unit=stack.unit,
        agent_id=replica,
        pool=pool,
        enroll_template=stack.pki.enroll_template(pool),
        enroll_mqtt=enroller,
        enroll_out=out / replica,
        enroll_files_from=out / "shared",
    )
    password_file = enroll_replica(settings)
    files = out / replica
    mqtt = stack.mqtt_settings(stack.pki.client(Identity(pool, Role.AGENT, pool))).model_copy(
        update={
            "ca_file": files / "ca.crt",
            "cert_file": files / "client.crt",
            "key_file": files / "client.key",
            "username": f"{stack.org}/{stack.unit}/{replica}",
            "password_file": password_file,
        }
    )
    return Actor(Identity(replica, Role.AGENT, pool), mqtt, stack.org, stack.unit)


async def test_an_enrolled_replica_acts_only_as_itself_and_reads_only_its_own_pool(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    """Replicas enroll their own identities (no ceiling, docs/security.md "Pools without a ceiling"), all with one
    pool certificate: still each is pinned to its own name, holds only its own topics and its own pool's share, and a
    re-enrolled replica's old password stops working. A name outside the pool is refused before the broker is asked."""
    pool, other_pool = f"w{short_id()}", f"v{short_id()}"
    first, second = enrolled(broker, f"{pool}-0", pool, tmp_path), enrolled(broker, f"{pool}-1", pool, tmp_path)
    stranger = enrolled(broker, f"{other_pool}-0", other_pool, tmp_path)
    assert await connect_error(first.settings, second.client_id) is not None, "connected under another replica's id"
    assert await connect_error(first.settings, f"{first.client_id}-x") is not None
    assert await connect_error(first.settings.model_copy(update={"username": second.client_id}), second.client_id)
    async with connected(first) as (mine, send):
        assert await suback(mine, first.address.request_topic) in GRANTED
        assert await suback(mine, first.pool.shared_subscription) in GRANTED
        for topic_filter in (
            second.address.request_topic,
            stranger.address.request_topic,
            stranger.pool.shared_subscription,
            stranger.pool.topic,
            first.pool.topic,  # a plain subscription would copy every request of the pool
            *WIDE_FILTERS,
        ):
            assert await suback(mine, topic_filter) == NOT_AUTHORIZED, topic_filter
        for topic in (second.address.discovery_topic, second.address.event_topic, stranger.address.event_topic):
            assert await send.publish(topic, b"{}") == NOT_AUTHORIZED, topic
        assert await send.publish(first.address.event_topic, b"{}") in DELIVERED
    old = first.settings
    again = enrolled(broker, first.name, pool, tmp_path / "again")
    assert await connect_error(old, first.client_id) is not None, "the old password still works after re-enrolling"
    assert await connect_error(again.settings, first.client_id) is None
    with pytest.raises(EnrollError):
        replica_entries(json.loads(broker.stack.pki.enroll_template(pool).read_text()), "analyst", "x")


async def test_an_enrolled_coordinator_pod_holds_only_its_own_identities(broker: BrokerHandle, tmp_path: Path) -> None:
    """Kubernetes coordinator pods enroll coordinator-<i> and workflows-<i> as they start, from the templates `make
    certs` writes (devstack.pki.SERVICE_REPLICAS): each pinned to its own name; the coordinator replica reads only
    its own reply inboxes and records only under its own name; its workflows agent serves only its own requests and
    joins no pool; a template enrolls only names of its own service."""
    ordinal = 1000 + int(short_id(), 16) % 10**6  # names no other test on this broker uses
    first = enrolled(broker, f"coordinator-{ordinal}", "coordinator", tmp_path)
    second = enrolled(broker, f"coordinator-{ordinal + 1}", "coordinator", tmp_path)
    workflows = enrolled(broker, f"workflows-{ordinal}", "workflows", tmp_path)
    assert await connect_error(first.settings, second.client_id) is not None, "connected under the other's id"
    assert await connect_error(first.settings.model_copy(update={"username": second.client_id}), second.client_id)
    async with connected(first) as (mine, send):
        assert await suback(mine, first.address.reply_filter()) in GRANTED
        for topic_filter in (second.address.reply_filter(), first.address.request_topic, *WIDE_FILTERS):
            assert await suback(mine, topic_filter) == NOT_AUTHORIZED, topic_filter
        assert await send.publish(second.address.event_topic, b"{}") == NOT_AUTHORIZED
        assert await send.publish(first.address.event_topic, b"{}") in DELIVERED
        assert await send.publish(workflows.address.request_topic, b"{}") in DELIVERED  # it sends agents requests
    pool = PoolAddress(broker.stack.org, broker.stack.unit, "workflows").shared_subscription
    async with connected(workflows) as (mine, send):
        assert await suback(mine, workflows.address.request_topic) in GRANTED
        for topic_filter in (pool, first.address.reply_filter(), *WIDE_FILTERS):
            assert await suback(mine, topic_filter) == NOT_AUTHORIZED, topic_filter
        assert await send.publish(first.address.event_topic, b"{}") == NOT_AUTHORIZED
    template = json.loads(broker.stack.pki.enroll_template("coordinator").read_text())
    for name in ("workflows-1", "coordinator", "coordinatorx-1", "analyst-0"):
        with pytest.raises(EnrollError):
            replica_entries(template, name, "x")


async def test_an_enrolled_task_store_partition_holds_only_its_own_identity(
    broker: BrokerHandle, tmp_path: Path
) -> None:
    """Kubernetes task store pods enroll taskstore-<i> as they start (k8s/base/taskstore.yaml, the template `make
    certs` writes): each pinned to its own name, reading the events (its share is kept by topic, not by the broker),
    publishing nothing and reading no request, reply or card; the template enrolls only task store names."""
    ordinal = 1000 + int(short_id(), 16) % 10**6  # names no other test on this broker uses
    first = enrolled(broker, f"taskstore-{ordinal}", "taskstore", tmp_path)
    second = enrolled(broker, f"taskstore-{ordinal + 1}", "taskstore", tmp_path)
    assert await connect_error(first.settings, second.client_id) is not None, "connected under the other's id"
    assert await connect_error(first.settings.model_copy(update={"username": second.client_id}), second.client_id)
    async with connected(first) as (mine, send):
        assert await suback(mine, "$a2a/v1/event/#") in GRANTED
        for topic_filter in ("$a2a/v1/request/#", "$a2a/v1/reply/#", "$a2a/v1/discovery/#", "#"):
            assert await suback(mine, topic_filter) == NOT_AUTHORIZED, topic_filter
        for topic in (first.address.event_topic, second.address.request_topic, first.address.discovery_topic):
            assert await send.publish(topic, b"{}") == NOT_AUTHORIZED, topic
    template = json.loads(broker.stack.pki.enroll_template("taskstore").read_text())
    for name in ("coordinator-1", "taskstore", "taskstorex-1", "analyst-0"):
        with pytest.raises(EnrollError):
            replica_entries(template, name, "x")


async def test_an_enrolled_registry_replica_holds_only_its_own_identity(broker: BrokerHandle, tmp_path: Path) -> None:
    """Kubernetes registry pods enroll registry-<i> as they start (k8s/base/registry.yaml, the template `make certs`
    writes): each pinned to its own name, reading the cards and the broker statistics the registry role reads,
    publishing nothing (no forged card, retained or not) and reading no request, reply or event; the template
    enrolls only registry names."""
    ordinal = 1000 + int(short_id(), 16) % 10**6  # names no other test on this broker uses
    first = enrolled(broker, f"registry-{ordinal}", "registry", tmp_path)
    second = enrolled(broker, f"registry-{ordinal + 1}", "registry", tmp_path)
    assert await connect_error(first.settings, second.client_id) is not None, "connected under the other's id"
    assert await connect_error(first.settings.model_copy(update={"username": second.client_id}), second.client_id)
    async with connected(first) as (mine, send):
        for topic_filter in ("$a2a/v1/discovery/#", "$SYS/broker/clients/connected"):
            assert await suback(mine, topic_filter) in GRANTED, topic_filter
        # every wide filter but the cards', which the registry reads whole
        wide = [f for f in WIDE_FILTERS if f != "$a2a/v1/discovery/#"]
        for topic_filter in ("$a2a/v1/owner/#", "$SYS/#", "$SYS/broker/#", "$CONTROL/dynamic-security/#", *wide):
            assert await suback(mine, topic_filter) == NOT_AUTHORIZED, topic_filter
        for topic in (first.address.discovery_topic, first.address.event_topic, second.address.request_topic):
            assert await send.publish(topic, b"{}") == NOT_AUTHORIZED, topic
        assert await send.publish(second.address.discovery_topic, b"", retain=True) == NOT_AUTHORIZED
    template = json.loads(broker.stack.pki.enroll_template("registry").read_text())
    for name in ("taskstore-1", "registry", "registryx-1", "analyst-0"):
        with pytest.raises(EnrollError):
            replica_entries(template, name, "x")


async def test_a_coordinator_replica_acts_only_as_itself(broker: BrokerHandle) -> None:
    """Coordinator replicas (docs/operations.md, "Scale") each hold their own identity: one cannot take another's
    connection or client id, read its reply inboxes, or record events under its name; on its own topics it may."""
    prefix = f"c-{short_id()}"
    first = admit(broker.stack, Identity(f"{prefix}-coordinator", Role.COORDINATOR))
    second = admit(broker.stack, Identity(f"{prefix}-coordinator-1", Role.COORDINATOR))
    assert await connect_error(second.settings, first.client_id) is not None, "connected under the other's id"
    assert await connect_error(second.settings.model_copy(update={"username": first.client_id}), first.client_id)
    async with connected(second) as (mine, send):
        assert await suback(mine, second.address.reply_filter()) in GRANTED
        assert await suback(mine, first.address.reply_filter()) == NOT_AUTHORIZED
        for topic_filter in WIDE_FILTERS:
            assert await suback(mine, topic_filter) == NOT_AUTHORIZED, topic_filter
        assert await send.publish(first.address.event_topic, b"{}") == NOT_AUTHORIZED
        assert await send.publish(second.address.event_topic, b"{}") in DELIVERED


async def test_streams_are_read_only_by_the_roles_made_for_them(broker: BrokerHandle, reports: _Reports) -> None:
    """Every role against the mesh's streams and the broker's own topics. Expected rights are written out here
    (not read from pki.py), so a change to the roles shows up as a failing cell."""
    prefix = f"s-{short_id()}"
    roles = [Role.AGENT, Role.REQUESTER, Role.COORDINATOR, Role.REGISTRY, Role.TASKSTORE, Role.OBSERVER, Role.HEALTH]
    actors = {role: admit(broker.stack, Identity(f"{prefix}-{role.value}", role)) for role in roles}
    victim = f"{broker.stack.org}/{broker.stack.unit}/{prefix}-victim"
    subscribe_rights: dict[str, set[Role]] = {
        **{topic_filter: set() for topic_filter in WIDE_FILTERS},
        "$a2a/v1/discovery/#": {Role.REGISTRY, Role.OBSERVER},
        f"$a2a/v1/discovery/{broker.stack.org}/#": {Role.REGISTRY, Role.OBSERVER, Role.REQUESTER},
        "$a2a/v1/event/#": {Role.TASKSTORE, Role.OBSERVER},
        "$SYS/broker/uptime": {Role.HEALTH},
        # the broker statistics the registry exports for the dashboard (a2amesh.brokerstats), each by its topic
        **{
            f"$SYS/broker/{statistic}": {Role.REGISTRY}
            for statistic in (
                "clients/connected",
                "clients/disconnected",
                "store/messages/count",
                "store/messages/bytes",
                "retained messages/count",
                "subscriptions/count",
                "messages/received",
                "messages/sent",
                "publish/messages/dropped",
            )
        },
        "$SYS/broker/#": set(),
        "$SYS/broker/clients/+": set(),
        "$SYS/broker/clients/total": set(),
        "$SYS/broker/version": set(),
        f"$a2a/v1/reply/{victim}/+": set(),
    }
    publish_rights: dict[str, set[Role]] = {
        CONTROL_TOPIC: set(),
        f"$a2a/v1/discovery/{victim}": set(),
        f"$a2a/v1/event/{victim}": set(),
        f"$a2a/v1/request/{victim}": {Role.REQUESTER, Role.COORDINATOR},
        f"a2a/v1/pool/{broker.stack.org}/{broker.stack.unit}/{prefix}-pool": {Role.REQUESTER, Role.COORDINATOR},
        f"$a2a/v1/reply/{victim}/{short_id()}": {Role.AGENT},
    }
    tally = Tally()
    grid: list[str] = []
    for role, actor in actors.items():
        async with connected(actor) as (mqtt_client, pub):
            # escalation first: had it worked, the reads below would succeed
            for topic, allowed_roles in publish_rights.items():
                payload = json.dumps(
                    {"commands": [{"command": "addClientRole", "username": actor.client_id, "rolename": "admin"}]}
                ).encode()
                code = await pub.publish(topic, payload)
                record(tally, f"publish {topic}", role, role in allowed_roles, code in DELIVERED, code)
                grid.append(cell(role, "publish", topic, code in DELIVERED))
            for topic_filter, allowed_roles in subscribe_rights.items():
                code = await suback(mqtt_client, topic_filter)
                record(tally, f"subscribe {topic_filter}", role, role in allowed_roles, code in GRANTED, code)
                grid.append(cell(role, "subscribe", topic_filter, code in GRANTED))
    publish_report(reports, tally, "roles x streams (expected rights written in the test)")
    assert not tally.leaks, "\n".join(grid)
    assert not tally.failures, "\n".join(grid)


def cell(role: Role, action: str, topic: str, allowed: bool) -> str:
    return f"  {role.value:<11} {action:<9} {topic:<64} {'allowed' if allowed else 'denied'}"


def record(tally: Tally, kind: str, role: Role, expected: bool, allowed: bool, code: int) -> None:
    """One cell of the role grid: an expected right is a control, anything else an attack."""
    if expected:
        tally.control(kind.split(" ")[0] + " (expected right)", f"{role.value} {kind}", allowed, f"code {code:#x}")
    else:
        denied = code == NOT_AUTHORIZED
        tally.attack(kind.split(" ")[0] + " (no right)", role.value, denied, f"{kind}: code {code:#x}")


async def test_reply_inboxes_are_readable_only_by_their_owner(broker: BrokerHandle) -> None:
    prefix = f"i-{short_id()}"
    (alice,) = admit_many(broker.stack, prefix, Role.AGENT, 1)
    first, second = admit_many(broker.stack, prefix, Role.REQUESTER, 2)
    async with connected(alice) as (a, _), connected(first) as (r1, _), connected(second) as (r2, _):
        assert await suback(r1, first.inbox_filter) in GRANTED
        for intruder in (a, r2):
            assert await suback(intruder, "$a2a/v1/reply/#") == NOT_AUTHORIZED
            assert await suback(intruder, first.inbox_filter) == NOT_AUTHORIZED
            assert await suback(intruder, first.address.reply_topic("guessed")) == NOT_AUTHORIZED


async def test_a_forged_reply_is_dropped_by_the_requester(broker: BrokerHandle) -> None:
    """Agents may publish on any reply topic (that is where replies go), so a malicious agent that learnt a
    requester's inbox from a request it served can write there. The requester's defence is its per-publish, unguessable
    Correlation Data: forged replies are dropped and the real request completes with the real answer. The token the
    requester sent in `a2a-authorization` is never echoed, neither in replies nor in the agent's task events."""
    prefix = f"f-{short_id()}"
    echo = admit(broker.stack, Identity(f"{prefix}-echo", Role.AGENT))
    mallory = admit(broker.stack, Identity(f"{prefix}-mallory", Role.AGENT))
    alice = admit(broker.stack, Identity(f"{prefix}-alice", Role.REQUESTER))
    settings = AgentSettings(org=echo.org, unit=echo.unit, agent_id=echo.name, mqtt=echo.settings, http_port=0)
    agent = EchoAgent(settings)
    responder = Responder(agent.card(), agent.handle, settings, on_cancel=agent.on_cancel)
    requester = MeshRequester(alice.settings, alice.address, RetryProfile(first_reply_timeout=10, attempts=1))
    arrived: list[Envelope] = []
    route = requester.link.handler
    assert route is not None

    async def spy(envelope: Envelope) -> None:
        arrived.append(envelope)
        await route(envelope)

    requester.link.handler = spy
    token = f"Bearer secret-{uuid.uuid4().hex}"
    text = f"the real one {short_id()}"
    async with (
        running(responder.run, responder.link.connected),
        running(requester.run, requester.link.connected),
        connected(mallory) as (m, mallory_pub),
        witness_client(broker, "events") as events,
    ):
        await events.subscribe(echo.address.event_topic, qos=1)
        # mallory learns alice's inbox the way any agent does: alice sends her a request
        assert await suback(m, mallory.address.request_topic) in GRANTED
        lure = requester.request(
            mallory.address.request_topic,
            "SendMessage",
            send_params("hi mallory"),
            profile=RetryProfile(first_reply_timeout=0.5, attempts=1),
        )
        with contextlib.suppress(RequestTimeoutError):
            async for _ in lure.results():
                pass
        (seen,) = await collect_until(m, lambda got: bool(got), 5)
        inbox = seen.properties.ResponseTopic
        stale = bytes(seen.properties.CorrelationData)
        assert inbox == requester.reply_topic
        assert await suback(m, inbox) == NOT_AUTHORIZED, "mallory may write to alice's inbox, never read it"

        call = asyncio.create_task(first_result(requester, echo, send_params(text, delayMs=1500), token))
        await asyncio.sleep(0.3)  # alice's request to echo is in flight
        guesses = [stale, b"", b"1", b"alice-1", b"alice-2", *(uuid.uuid4().hex.encode() for _ in range(30))]
        forged_codes = []
        for n, correlation in enumerate(guesses):
            forged = {"jsonrpc": "2.0", "id": f"{alice.name}-{n}", "result": {"task": forged_task(text)}}
            properties = publish_properties(correlation_data=correlation, user=[(RESPONDER_PROPERTY, echo.name)])
            forged_codes.append(await mallory_pub.publish(inbox, json.dumps(forged).encode(), properties=properties))
        result = await asyncio.wait_for(call, timeout=20)
        event_log = await drain(events, 0.5)

    print(
        f"\n  forged replies published: {len(guesses)}, accepted by the broker: {len(forged_codes)}, "
        f"delivered to alice's inbox: {sum(b'FORGED' in e.payload for e in arrived)}, used: 0"
    )
    assert all(code in DELIVERED for code in forged_codes), "by design: agents may publish on reply topics"
    assert sum(b"FORGED" in envelope.payload for envelope in arrived) == len(guesses), "the forgeries reached alice"
    assert result["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert result["task"]["artifacts"][0]["parts"][0]["text"] == text
    assert "FORGED" not in json.dumps(result)
    assert not requester._inboxes, "every correlation was released"
    echoed = [
        e for e in arrived if e.user_properties.get(RESPONDER_PROPERTY) == echo.name and b"FORGED" not in e.payload
    ]
    assert echoed, "echo's genuine reply arrived"
    secret = token.split(" ", 1)[1].encode()
    for envelope in echoed:
        assert AUTHORIZATION_PROPERTY not in envelope.user_properties and secret not in envelope.payload
    assert event_log, "echo recorded its task events"
    for message in event_log:
        assert AUTHORIZATION_PROPERTY not in user_properties(message) and secret not in payload_of(message)
    async with witness_client(broker, "clean") as cleaner:
        await cleaner.publish(echo.address.discovery_topic, b"", qos=1, retain=True)


async def test_a_retained_request_is_not_a_standing_order(broker: BrokerHandle) -> None:
    """Requesters may publish on request and pool topics, and Mosquitto 2.0's ACLs cannot tell a retained publish from
    a live one. A request published with the retain flag would then be redelivered whenever the agent subscribes
    again, and run again after every restart (its task memory is gone). The agent must not execute a retained
    request: it never is a live one. Control: a live request is answered."""
    prefix = f"t-{short_id()}"
    echo = admit(broker.stack, Identity(f"{prefix}-echo", Role.AGENT, f"{prefix}-pool"))
    planter = admit(broker.stack, Identity(f"{prefix}-planter", Role.REQUESTER))
    inbox = planter.address.reply_topic(f"i{short_id()}")
    settings = AgentSettings(
        org=echo.org, unit=echo.unit, agent_id=echo.name, pool=echo.identity.pool, mqtt=echo.settings, http_port=0
    )
    replies_per_start = []
    async with connected(planter) as (mqtt_client, pub):
        assert await suback(mqtt_client, planter.inbox_filter) in GRANTED
        for topic in (echo.address.request_topic, echo.pool.topic):
            request = json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": send_params(f"planted on {topic}")}
            )
            properties = publish_properties(response_topic=inbox, correlation_data=b"planted")
            assert await pub.publish(topic, request.encode(), retain=True, properties=properties) in DELIVERED
        try:
            for _ in range(2):  # a start, and a restart
                agent = EchoAgent(settings)
                responder = Responder(agent.card(), agent.handle, settings)
                async with running(responder.run, responder.link.connected):
                    replies_per_start.append(await drain(mqtt_client, 1.5))
                    live = json.dumps(
                        {"jsonrpc": "2.0", "id": 2, "method": "SendMessage", "params": send_params("live")}
                    )
                    properties = publish_properties(response_topic=inbox, correlation_data=b"live")
                    await pub.publish(echo.address.request_topic, live.encode(), properties=properties)
                    answered = await collect_until(
                        mqtt_client, lambda got: any(b"live" in payload_of(m) for m in got), 10
                    )
                    assert answered, "control: the agent answers a live request"
        finally:
            for topic in (echo.address.request_topic, echo.pool.topic, echo.address.discovery_topic):
                async with witness_client(broker, "clean") as cleaner:
                    await cleaner.publish(topic, b"", qos=1, retain=True)
    executed = [len(replies) for replies in replies_per_start]
    print(f"\n  replies to a planted retained request, per agent start: {executed}")
    assert executed == [0, 0], (
        "HOLE: a retained request is executed on every (re)subscribe; the responder must ignore requests that "
        "arrive retained (see docs/security.md)"
    )


async def test_an_agent_that_declares_per_request_authorization_enforces_it(broker: BrokerHandle) -> None:
    """An agent given tokens declares Bearer in its card and refuses requests whose `a2a-authorization` User Property
    is missing or wrong, without saying more; the token is never echoed."""
    prefix = f"a-{short_id()}"
    guarded = admit(broker.stack, Identity(f"{prefix}-guarded", Role.AGENT))
    caller = admit(broker.stack, Identity(f"{prefix}-caller", Role.REQUESTER))
    secret = f"tok-{uuid.uuid4().hex}"
    settings = AgentSettings(
        org=guarded.org, unit=guarded.unit, agent_id=guarded.name, mqtt=guarded.settings, http_port=0,
        auth_tokens=[secret],
    )  # fmt: skip
    agent = EchoAgent(settings)
    responder = Responder(agent.card(), agent.handle, settings)
    requester = MeshRequester(caller.settings, caller.address, RetryProfile(first_reply_timeout=10, attempts=1))
    arrived: list[Envelope] = []
    route = requester.link.handler
    assert route is not None

    async def spy(envelope: Envelope) -> None:
        arrived.append(envelope)
        await route(envelope)

    requester.link.handler = spy
    outcomes: dict[str, str] = {}
    async with running(responder.run, responder.link.connected), running(requester.run, requester.link.connected):
        for case, token in (("none", None), ("wrong", "Bearer not-the-token"), ("right", f"Bearer {secret}")):
            try:
                result = await first_result(requester, guarded, send_params(f"with {case} token"), token)
                outcomes[case] = result["task"]["status"]["state"]
            except RemoteError as error:
                outcomes[case] = error.error.message
    card = await retained(broker.settings, guarded.address.discovery_topic, f"mesh-tester-card-{short_id()}")
    async with witness_client(broker, "clean") as cleaner:
        await cleaner.publish(guarded.address.discovery_topic, b"", qos=1, retain=True)
    print(f"\n  per-request authorization: {outcomes}")
    assert outcomes == {
        "none": "authorization required",
        "wrong": "authorization refused",
        "right": "TASK_STATE_COMPLETED",
    }
    assert card is not None and "bearer" in json.loads(payload_of(card)).get("securitySchemes", {})
    assert len(arrived) == 3
    for envelope in arrived:
        assert AUTHORIZATION_PROPERTY not in envelope.user_properties and secret.encode() not in envelope.payload


def send_params(text: str, **metadata: Any) -> dict[str, Any]:
    message = {
        "messageId": uuid.uuid4().hex,
        "role": "ROLE_USER",
        "parts": [{"text": text}],
        "taskId": str(uuid.uuid4()),
    }
    return {"message": message, "metadata": metadata} if metadata else {"message": message}


def forged_task(text: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "contextId": str(uuid.uuid4()),
        "status": {"state": "TASK_STATE_COMPLETED"},
        "artifacts": [{"artifactId": "a1", "parts": [{"text": f"FORGED instead of {text}"}]}],
    }


async def first_result(requester: MeshRequester, agent: Actor, params: dict[str, Any], token: str) -> Any:
    stream = requester.request(agent.address.request_topic, "SendMessage", params, authorization=token)
    async for result in stream.results():
        return result
    raise AssertionError("no result")


# -- 3. everyone against everyone ----------------------------------------------------------------------------------
async def test_every_identity_against_every_other(broker: BrokerHandle, reports: _Reports) -> None:
    """Four agents (each with a pool) and two requesters. Each one tries every other identity's topics, and the wide
    filters; each one also does its own things (controls). Then a witness checks the effects: no forged message was
    delivered, every card is its owner's, and a refused subscription receives nothing."""
    prefix = f"m-{short_id()}"
    agents = admit_many(broker.stack, prefix, Role.AGENT, 4, pools=True)
    requesters = admit_many(broker.stack, prefix, Role.REQUESTER, 2)
    actors = [*agents, *requesters]
    tally = Tally()
    sequence = itertools.count()
    expected_delivered: set[bytes] = set()
    must_not_arrive: set[bytes] = set()

    def marker(delivered: bool) -> bytes:
        value = f"{prefix}:{next(sequence)}".encode()
        (expected_delivered if delivered else must_not_arrive).add(value)
        return value

    async with contextlib.AsyncExitStack() as exits:
        witness = await exits.enter_async_context(witness_client(broker, "witness"))
        for topic_filter in ("$a2a/#", "a2a/#"):
            assert await suback(witness, topic_filter) in GRANTED
        links = {actor.name: await exits.enter_async_context(connected(actor)) for actor in actors}

        # own things first (controls): these must all work
        cards: dict[str, bytes] = {}
        for agent in agents:
            mqtt_client, pub = links[agent.name]
            tally.control("connect with own client id", agent.name, True)
            own_subscriptions = (agent.address.request_topic, agent.pool.shared_subscription)
            for topic_filter in own_subscriptions:
                tally.control(
                    "subscribe own request topic / pool share",
                    agent.name,
                    await suback(mqtt_client, topic_filter) in GRANTED,
                    topic_filter,
                )
            cards[agent.name] = marker(True)
            code = await pub.publish(agent.address.discovery_topic, cards[agent.name], retain=True)
            tally.control("publish own card (retained)", agent.name, code in DELIVERED, f"code {code:#x}")
            code = await pub.publish(agent.address.event_topic, marker(True))
            tally.control("publish own event", agent.name, code in DELIVERED, f"code {code:#x}")
            for requester in requesters:
                code = await pub.publish(requester.address.reply_topic(f"r{short_id()}"), marker(True))
                tally.control("reply into a requester's inbox (by design)", agent.name, code in DELIVERED)
        for requester in requesters:
            mqtt_client, pub = links[requester.name]
            tally.control("connect with own client id", requester.name, True)
            tally.control(
                "subscribe own reply inbox",
                requester.name,
                await suback(mqtt_client, requester.inbox_filter) in GRANTED,
            )
            for agent in agents:
                code = await pub.publish(agent.address.request_topic, marker(True))
                tally.control("send a request to an agent", requester.name, code in DELIVERED, f"code {code:#x}")
                code = await pub.publish(agent.pool.topic, marker(True))
                tally.control("send a request to a pool", requester.name, code in DELIVERED, f"code {code:#x}")

        # everyone against everyone else (a requester is not pinned to a client id: see
        # test_a_requester_on_another_clients_id_receives_nothing_of_it for what it gets under another's)
        for actor in agents:
            for other in actors:
                if other is not actor:
                    error = await connect_error(actor.settings, other.client_id)
                    tally.attack("connect with another's client id", f"{actor.name} as {other.name}", error is not None)
        for requester in requesters:
            error = await connect_error(requester.settings, f"{requester.client_id}-{short_id()}")
            tally.control("requester connects with a session suffix", requester.name, error is None, error or "")
        for actor in actors:
            mqtt_client, pub = links[actor.name]
            escalate = {"commands": [{"command": "addClientRole", "username": actor.client_id, "rolename": "admin"}]}
            code = await pub.publish(CONTROL_TOPIC, json.dumps(escalate).encode())
            tally.attack("publish on $CONTROL (grant self admin)", actor.name, code == NOT_AUTHORIZED, f"{code:#x}")
            for topic_filter in WIDE_FILTERS:
                code = await suback(mqtt_client, topic_filter)
                tally.attack("subscribe a wide filter", actor.name, code == NOT_AUTHORIZED, f"{topic_filter} {code:#x}")
            for other in agents:
                if other is not actor:
                    await attack_agent(tally, actor, other, *links[actor.name], marker)
            for other in requesters:
                if other is not actor:
                    for topic_filter in (other.inbox_filter, f"$a2a/v1/reply/{other.client_id}/#"):
                        code = await suback(mqtt_client, topic_filter)
                        tally.attack(
                            "subscribe another's reply inbox",
                            actor.name,
                            code == NOT_AUTHORIZED,
                            f"{topic_filter} {code:#x}",
                        )

        # effects: refused subscriptions receive nothing, and each identity still gets what is its own
        probes: dict[str, set[str]] = {}
        for agent in agents:
            probes[agent.name] = {agent.address.request_topic, agent.pool.topic}
        for requester in requesters:
            probes[requester.name] = {requester.address.reply_topic(f"probe{short_id()}")}
        for topics in probes.values():
            for topic in topics:
                await witness.publish(topic, b"probe " + topic.encode(), qos=1)
        received = await asyncio.gather(*(probe_inbox(links[a.name][0], probes[a.name]) for a in actors))
        stray = [
            f"{actor.name} <- {message.topic.value}"
            for actor, messages in zip(actors, received, strict=True)
            for message in messages
            if not owns(actor, message.topic.value)
        ]
        missing = [
            f"{actor.name} never got its own {topic}"
            for actor, messages in zip(actors, received, strict=True)
            for topic in probes[actor.name]
            if topic not in {m.topic.value for m in messages}
        ]
        seen = await collect_until(witness, lambda got: expected_delivered <= {payload_of(m) for m in got}, timeout=5)
        seen += await drain(witness, 0.3)
        seen_payloads = {payload_of(m) for m in seen}
        forged_seen = sorted(p.decode() for p in must_not_arrive & seen_payloads)
        allowed_missing = sorted(p.decode() for p in expected_delivered - seen_payloads)
        kept = {
            agent.name: await retained(broker.settings, agent.address.discovery_topic, f"mesh-tester-r-{short_id()}")
            for agent in agents
        }
        for agent in agents:  # leave no retained card behind (an agent may clear its own)
            await links[agent.name][1].publish(agent.address.discovery_topic, b"", retain=True)

    publish_report(reports, tally, f"every identity x every other ({len(agents)} agents, {len(requesters)} requesters)")
    print(
        f"  witness: {len(expected_delivered)} allowed publishes seen {len(expected_delivered) - len(allowed_missing)}"
        f", {len(must_not_arrive)} refused publishes seen {len(forged_seen)}; refused subscriptions delivered "
        f"{len(stray)} messages"
    )
    assert tally.attempts and tally.denied == tally.attempts, tally.leaks
    assert tally.controls and tally.allowed == tally.controls, tally.failures
    assert not forged_seen, f"refused publishes were delivered: {forged_seen}"
    assert not allowed_missing, f"allowed publishes never arrived: {allowed_missing}"
    assert not stray, stray
    assert not missing, missing
    assert {name: payload_of(m) if m else None for name, m in kept.items()} == cards, "a card was poisoned"


async def attack_agent(
    tally: Tally,
    actor: Actor,
    victim: Actor,
    mqtt_client: aiomqtt.Client,
    pub: Any,
    marker: Callable[[bool], bytes],
) -> None:
    """Everything `actor` might try against agent `victim`'s topics; each must be refused (0x87)."""
    for kind, topic_filter in (
        ("subscribe another's request topic", victim.address.request_topic),
        ("share another's pool (its members' group)", victim.pool.shared_subscription),
        ("share another's pool (a group of one's own)", f"$share/{actor.name}/{victim.pool.topic}"),
        ("subscribe another's pool topic directly", victim.pool.topic),
    ):
        code = await suback(mqtt_client, topic_filter)
        tally.attack(kind, f"{actor.name} -> {victim.name}", code == NOT_AUTHORIZED, f"{code:#x}")
    for kind, topic, payload, retain in (
        ("overwrite another's card (retained)", victim.address.discovery_topic, marker(False), True),
        ("clear another's card (empty retained)", victim.address.discovery_topic, b"", True),
        ("publish an event as another", victim.address.event_topic, marker(False), False),
    ):
        code = await pub.publish(topic, payload, retain=retain)
        tally.attack(kind, f"{actor.name} -> {victim.name}", code == NOT_AUTHORIZED, f"{code:#x}")
    if actor.identity.role is Role.AGENT:  # requesters may send requests; agents are not requesters
        code = await pub.publish(victim.address.request_topic, marker(False))
        tally.attack("an agent sending a request", f"{actor.name} -> {victim.name}", code == NOT_AUTHORIZED)


async def probe_inbox(mqtt_client: aiomqtt.Client, own_topics: set[str]) -> list[aiomqtt.Message]:
    """What reaches a client until its own probes did (then a short quiet period for stragglers)."""
    messages = await collect_until(
        mqtt_client, lambda got: own_topics <= {m.topic.value for m in got if payload_of(m).startswith(b"probe ")}, 5
    )
    return messages + await drain(mqtt_client, 0.3)


def owns(actor: Actor, topic: str) -> bool:
    """Whether `topic` is one `actor` may read: its request topic and pool, or its reply inboxes."""
    if actor.identity.role is Role.AGENT:
        return topic in (actor.address.request_topic, actor.pool.topic)
    return topic.startswith(actor.inbox_filter[:-1])


# -- 4. revoking an identity ---------------------------------------------------------------------------------------
async def test_revoking_an_identity_disconnects_it_and_keeps_it_out(broker: BrokerHandle) -> None:
    """The revocation docs/security.md gives, run as written: `mosquitto_ctrl ... dynsec deleteClient <username>` as
    the broker's admin. The revoked client is disconnected at once and cannot come back; others are untouched."""
    revoked, bystander = admit_many(broker.stack, f"v-{short_id()}", Role.AGENT, 2)
    pki = broker.stack.pki
    admin = pki.client(Identity(ADMIN, Role.TESTER))
    command = [
        find_binary("mosquitto_ctrl"),
        *("-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(pki.ca_cert)),
        *("--cert", str(admin.cert), "--key", str(admin.key), "-u", ADMIN, "-P", admin.password, "-i", ADMIN),
        *("dynsec", "deleteClient", revoked.client_id),
    ]
    async with connected(revoked) as (gone, _), connected(bystander) as (stays, _):
        assert await suback(gone, revoked.address.request_topic) in GRANTED
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=15)
        assert done.returncode == 0, done.stderr
        with pytest.raises(aiomqtt.MqttError):
            await drain(gone, 5)  # the broker drops the connection
        assert await suback(stays, bystander.address.request_topic) in GRANTED
    error = await connect_error(revoked.settings, revoked.client_id)
    print(f"\n  revoked {revoked.client_id}: reconnect -> {error}")
    assert error is not None and "Not authorized" in error


# -- 4b. outside identities (make identity / make identity-remove) ----------------------------------------------
def outside(broker: BrokerHandle, identity: Identity) -> Actor:
    """An identity admitted as `make identity` admits one (devstack.identities.admit), and its credentials."""
    files = admit_identity(broker.stack.pki, identity, Broker("127.0.0.1", broker.port))
    return Actor(identity, broker.stack.mqtt_settings(files), broker.stack.org, broker.stack.unit)


async def test_an_outside_requester_under_a_session_client_id_reads_only_its_own_replies(broker: BrokerHandle) -> None:
    """A requester admitted by `make identity` connects as the a2a-over-mqtt SDK does (`<username>-<session>`), and is
    held to the requester's rights: its own inboxes and the cards; never another's replies, never an agent's topics."""
    prefix = f"o-{short_id()}"
    alice = outside(broker, Identity(f"{prefix}-alice", Role.REQUESTER))
    bob = outside(broker, Identity(f"{prefix}-bob", Role.REQUESTER))
    agent = outside(broker, Identity(f"{prefix}-agent", Role.AGENT))
    org = broker.stack.org
    async with (
        connected(alice, f"{alice.client_id}-{short_id()}") as (a, alice_pub),
        connected(bob, f"{bob.client_id}-{short_id()}") as (b, _),
        connected(agent) as (g, agent_pub),
    ):
        assert await suback(b, bob.inbox_filter) in GRANTED
        assert await suback(g, agent.address.request_topic) in GRANTED
        assert await suback(a, alice.address.reply_topic("s1")) in GRANTED, "control: its own inbox"
        assert await suback(a, f"$a2a/v1/discovery/{org}/#") in GRANTED, "control: the cards, to find agents"
        for stolen in (bob.inbox_filter, bob.address.reply_topic("s1"), "$a2a/v1/reply/#", f"$a2a/v1/reply/{org}/#"):
            assert await suback(a, stolen) == NOT_AUTHORIZED, stolen
        for agents_own in (agent.address.request_topic, "$a2a/v1/request/#", "$a2a/v1/event/#", "a2a/v1/pool/#"):
            assert await suback(a, agents_own) == NOT_AUTHORIZED, agents_own
        # publishing as an agent: a card, an event, a reply into another requester's inbox
        for topic in (
            alice.address.discovery_topic,
            agent.address.discovery_topic,
            alice.address.event_topic,
            agent.address.event_topic,
            bob.address.reply_topic("s1"),
        ):
            assert await alice_pub.publish(topic, b"forged", retain=topic.startswith("$a2a/v1/discovery")) == (
                NOT_AUTHORIZED
            ), topic
        request = f"a request {short_id()}".encode()
        assert await alice_pub.publish(agent.address.request_topic, request) in DELIVERED, "control: it may ask"
        reply = f"for bob {short_id()}".encode()
        assert await agent_pub.publish(bob.address.reply_topic("s1"), reply) in DELIVERED
        got = await collect_until(b, lambda got: any(payload_of(m) == reply for m in got), 5)
        assert [payload_of(m) for m in got] == [reply], "control: bob gets his reply"
        assert [payload_of(m) for m in await collect_until(g, lambda got: bool(got), 5)] == [request]
        assert [m for m in await drain(a) if payload_of(m) in (reply, b"forged")] == []


async def test_a_requester_on_another_clients_id_receives_nothing_of_it(broker: BrokerHandle) -> None:
    """A requester is not pinned to a client id (the SDK adds a session suffix), and Mosquitto 2.0's plugin cannot
    reserve a client id for its owner: a requester may connect under an agent's id and take over its session with
    its subscriptions. Its role lets it receive only what it may subscribe to, so the agent's requests published
    after the takeover never reach it (docs/security.md names what this does not cover). Control: the tester, which
    may receive anything, takes over the same session and does get them."""
    prefix = f"t-{short_id()}"
    victim = admit(broker.stack, Identity(f"{prefix}-agent", Role.AGENT))
    thief = outside(broker, Identity(f"{prefix}-thief", Role.REQUESTER))
    sender = outside(broker, Identity(f"{prefix}-sender", Role.REQUESTER))

    def session(settings: MqttSettings) -> aiomqtt.Client:
        persistent = make_client(settings, victim.client_id, persistent=True)
        persistent.timeout = 3.0
        return persistent

    async with session(victim.settings) as agent:
        assert await suback(agent, victim.address.request_topic) in GRANTED
    async with connected(sender) as (_, send):
        async with session(thief.settings) as taken:
            first = f"after the takeover {short_id()}".encode()
            assert await send.publish(victim.address.request_topic, first) in DELIVERED
            assert await drain(taken, 1.5) == [], "the requester received the agent's request"
        async with session(broker.settings) as witness:
            second = f"to the witness {short_id()}".encode()
            assert await send.publish(victim.address.request_topic, second) in DELIVERED
            got = await collect_until(witness, lambda got: any(payload_of(m) == second for m in got), 5)
    assert second in [payload_of(m) for m in got], "control: the session's subscription was taken over"
    async with client(broker.settings, victim.client_id):  # clean start: the session ends
        pass


async def test_make_identity_remove_disconnects_and_refuses_at_once(broker: BrokerHandle, tmp_path: Path) -> None:
    """`make identity-remove` (devstack.identities.revoke): every connection of the identity, whatever its client id,
    is dropped at once; it cannot reconnect; its files and its entries in the broker's seed are gone."""
    pki = broker.stack.pki
    gone = outside(broker, Identity(f"x-{short_id()}-gone", Role.REQUESTER))
    stays = outside(broker, Identity(f"x-{short_id()}-stays", Role.REQUESTER))
    assert gone.client_id in pki.seed_usernames()
    kept = {}  # what the revoked party still holds: its certificate, key and password
    for name, path in (("cert_file", gone.settings.cert_file), ("key_file", gone.settings.key_file)):
        assert path is not None
        kept[name] = tmp_path / path.name
        shutil.copyfile(path, kept[name])
    held = gone.settings_with(password=gone.settings.secret(), password_file=None, **kept)
    async with (
        connected(gone, f"{gone.client_id}-{short_id()}") as (first, _),
        connected(gone, f"{gone.client_id}-{short_id()}") as (second, _),
        connected(stays, f"{stays.client_id}-{short_id()}") as (other, _),
    ):
        assert await suback(first, gone.inbox_filter) in GRANTED
        revoke_identity(pki, gone.name, Broker("127.0.0.1", broker.port))
        for connection in (first, second):
            with pytest.raises(aiomqtt.MqttError):
                await drain(connection, 5)  # the broker drops the connection
        assert await suback(other, stays.inbox_filter) in GRANTED, "control: another identity is untouched"
    error = await connect_error(held, f"{gone.client_id}-{short_id()}")
    assert error is not None and "Not authorized" in error, error
    assert not any(path.exists() for path in (gone.settings.cert_file, gone.settings.password_file) if path)
    assert gone.client_id not in pki.seed_usernames() and gone.identity not in pki.outside_identities()
    with pytest.raises(IdentityError):
        revoke_identity(pki, gone.name, Broker("127.0.0.1", broker.port))


def test_make_certs_keeps_outside_identities_and_refuses_to_reissue_the_meshs_own(tmp_path: Path) -> None:
    """`make certs` rewrites the broker's seed: an identity admitted with `make identity` stays in it (a broker seeded
    later still admits it), with the requester's unpinned client; the mesh's own names cannot be taken."""
    pki = Pki(tmp_path)
    mesh_identities = [Identity("echo", Role.AGENT), Identity("coordinator", Role.COORDINATOR)]
    pki.ensure(mesh_identities)
    admit_identity(pki, Identity("outsider", Role.REQUESTER), None)
    pki.ensure(mesh_identities)  # what `make certs` does on every run
    seed = json.loads(pki.dynsec_file.read_text())
    clients = {client["username"]: client for client in seed["clients"]}
    assert "clientid" not in clients["acme/default/outsider"], "a requester is not pinned"
    assert clients["acme/default/echo"]["clientid"] == "acme/default/echo"
    assert "id:acme/default/outsider" in {role["rolename"] for role in seed["roles"]}
    for taken in ("echo", "coordinator", ADMIN, "coordinator-7", "taskstore-1"):  # replicas' names are the mesh's
        with pytest.raises(IdentityError):
            admit_identity(pki, Identity(taken, Role.REQUESTER), None)
    with pytest.raises(IdentityError):
        admit_identity(pki, Identity("outsider", Role.AGENT), None)  # another role: revoke first


# -- 5. why dynamic security and not acl_file ------------------------------------------------------------------------
async def test_acl_file_would_lose_pool_messages(tmp_path: Path) -> None:
    """The premise of the design, shown on a throwaway loopback broker: with Mosquitto's acl_file an intruder's
    forbidden shared subscription is granted and takes its turn in the group, and the messages it is sent are then
    dropped at delivery, so the pool loses them. (The project's broker refuses the SUBSCRIBE instead.)"""
    port = free_port()
    (tmp_path / "acl").write_text("pattern read a2a/v1/pool/acme/default/%c\npattern write a2a/v1/pool/#\n")
    (tmp_path / "mosquitto.conf").write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"acl_file {tmp_path / 'acl'}\n"
    )
    broker = ManagedProcess(
        "acl-file-broker",
        [find_binary("mosquitto"), "-c", str(tmp_path / "mosquitto.conf")],
        tmp_path / "broker.log",
        tcp_ready(port),
        cwd=REPO_ROOT,
    )
    broker.start()
    try:
        broker.wait_ready(10)

        def plain(client_id: str) -> aiomqtt.Client:
            return aiomqtt.Client("127.0.0.1", port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5)

        share = "$share/g/a2a/v1/pool/acme/default/member"
        async with plain("member") as member, plain("intruder") as intruder, plain("sender") as sender:
            assert await suback(member, share) in GRANTED
            intruder_code = await suback(intruder, share)
            for n in range(POOL_MESSAGES):
                await sender.publish("a2a/v1/pool/acme/default/member", f"{n}", qos=1)
            got = await collect_until(member, lambda got: len(got) >= POOL_MESSAGES, 2)
            stolen = await drain(intruder, 0.3)
    finally:
        broker.stop()
    print(
        f"\n  acl_file: intruder's share SUBACK {intruder_code:#x}; the member received {len(got)} of "
        f"{POOL_MESSAGES}, the intruder {len(stolen)}: {POOL_MESSAGES - len(got)} lost"
    )
    assert intruder_code in GRANTED
    assert len(got) < POOL_MESSAGES and not stolen


# -- 6. the documentation stays true --------------------------------------------------------------------------------
def test_the_role_table_in_docs_matches_pki() -> None:
    """docs/security.md carries the role table as pki.py grants it; regenerate it with
    `uv run python -c "from tests.security_helpers import role_table; print(role_table())"`."""
    assert role_table() in (REPO_ROOT / "docs" / "security.md").read_text()
