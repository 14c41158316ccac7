"""Per-agent cards and the catalogue, pure: the URLs a gateway would rewrite, built once and right."""

from __future__ import annotations

import pytest

from a2amesh.binding.wire import POOL_EXTENSION
from a2amesh.models import AgentCapabilities, AgentCard, AgentExtension, AgentInterface, AgentSkill
from a2amesh.topics import AgentAddress
from mesh_coordinator.app import coordinator_card
from mesh_coordinator.credentials import CallerCredentials
from mesh_coordinator.endpoints import agent_card, catalogue
from mesh_coordinator.router import Endpoint


def research_record(agent: str = "research-0", pool: str | None = "research") -> dict:
    extensions = [AgentExtension(uri=POOL_EXTENSION, params={"pool": pool, "topic": "x"})] if pool else None
    card = AgentCard(
        name="Research Agent",
        description="Searches a corpus.",
        supported_interfaces=[
            AgentInterface(url=f"mqtts://broker/{agent}", protocol_binding="MQTT", protocol_version="1.0")
        ],
        version="1.2.3",
        capabilities=AgentCapabilities(streaming=True, push_notifications=True, extensions=extensions),
        default_input_modes=["text/plain"],
        default_output_modes=["application/json"],
        skills=[AgentSkill(id="research", name="Research", description="Finds passages.", tags=["research"])],
    )
    return {"address": f"acme/default/{agent}", "skills": ["research"], "card": card.to_wire(), "status": "online"}


@pytest.mark.parametrize(
    ("public_url", "base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/agents/research"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/agents/research"),
        ("https://a2a.example.com/mesh/", "https://a2a.example.com/mesh/agents/research"),
    ],
)
def test_an_agents_card_points_at_the_coordinators_urls_for_it(public_url: str, base: str) -> None:
    root = coordinator_card(public_url, "acme", [])
    card = agent_card(Endpoint("research", [research_record()]), public_url, root)
    assert [(i.protocol_binding, i.url) for i in card.supported_interfaces] == [
        ("JSONRPC", f"{base}/"),
        ("HTTP+JSON", base),
    ]
    assert card.name == "Research Agent" and card.version == "1.2.3" and card.skills[0].id == "research"
    assert card.security_schemes == root.security_schemes
    assert card.security_requirements == root.security_requirements
    assert card.capabilities.push_notifications is True  # the coordinator delivers them (mesh_coordinator.push)
    assert not card.capabilities.extensions  # the pool extension describes the MQTT side only
    listed = catalogue(
        {"research": Endpoint("research", [research_record(), research_record("research-1")])}, public_url
    )
    [entry] = listed["agents"]
    assert entry["url"] == f"{base}/" and entry["cardUrl"] == f"{base}/.well-known/agent-card.json"
    assert entry["instances"] == 2 and entry["skills"] == ["research"]


def test_an_endpoint_holds_its_own_and_its_pools_tasks_only() -> None:
    pool = Endpoint("research", [research_record("research-0"), research_record("research-1")])
    assert pool.holds(AgentAddress.parse("acme/default/research-1"))
    assert not pool.holds(AgentAddress.parse("acme/default/echo"))
    assert pool.holds(
        AgentAddress.parse("acme/default/research-3"), known=[AgentAddress.parse("acme/default/research-3")]
    )


def test_caller_credentials_are_bounded_and_forgotten_when_absent() -> None:
    credentials = CallerCredentials(limit=2)
    credentials.remember("a", "Bearer 1")
    credentials.remember("b", "Bearer 2")
    credentials.remember("a", "Bearer 3")  # a newer turn of a: its key, and a is the most recent again
    credentials.remember("c", "Bearer 4")
    assert (credentials.of("a"), credentials.of("b"), credentials.of("c")) == ("Bearer 3", None, "Bearer 4")
    credentials.remember("a", None)
    assert credentials.of("a") is None
