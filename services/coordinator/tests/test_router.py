"""The router's scoring, pure and fast: which skill a message without `metadata.skill` goes to, and why."""

from __future__ import annotations

import pytest

from a2amesh.models import AgentSkill, Message, Part, Role
from agent_analyst.agent import AnalystAgent
from agent_echo.agent import EchoAgent
from agent_research.agent import ResearchAgent
from agent_reviewer.agent import ReviewerAgent
from agent_writer.agent import WriterAgent
from mesh_coordinator.router import (
    MIN_SCORE,
    MessageQuery,
    SkillIndex,
    looks_like_csv,
    message_query,
    skill_decision,
)
from mesh_coordinator.workflows import WorkflowAgent

MESH_SKILLS = [
    skill
    for agent in (ResearchAgent, WriterAgent, ReviewerAgent, AnalystAgent, EchoAgent, WorkflowAgent)
    for skill in agent.skills
]


def message(*parts: Part) -> Message:
    return Message(message_id="m1", role=Role.USER, parts=list(parts))


def decide(*parts: Part, skills: list[AgentSkill] = MESH_SKILLS, default: str = "echo"):
    return skill_decision(message_query(message(*parts)), SkillIndex(skills), default)


@pytest.mark.parametrize(
    ("text", "skill"),
    [
        ("how do retained messages work", "research"),
        ("What does QoS 1 guarantee?", "research"),
        ("hello mesh", "echo"),
        ("list sources", "list-sources"),
        ("write a report on backoff from these passages", "write-report"),
        ("review this report for executives", "review-report"),
        ("compute the mean and median of this table", "analyze-table"),
        ("city,temp_c\nOslo,4\nLima,19\nCairo,24", "analyze-table"),
        ("# Retries\n\n## Summary\n\nRetry with backoff [1].\n\n## Sources\n\n1. retries", "review-report"),
        ("research, write and review a report on MQTT sessions", "workflow.pipeline"),
    ],
)
def test_the_example_agents_cards_route_typical_messages(text: str, skill: str) -> None:
    decision = decide(Part(text=text))
    assert decision.skill == skill, decision.reason
    assert decision.score >= MIN_SCORE and decision.matched


def test_a_table_as_a_data_part_goes_to_the_analyst() -> None:
    decision = decide(Part(data=[{"region": "north", "sales": 120}, {"region": "south", "sales": 95}]))
    assert decision.skill == "analyze-table"
    assert "table" in decision.reason


def test_nothing_matching_falls_back_to_the_default_skill_and_says_so() -> None:
    decision = decide(Part(text="zzkq vrrp"))
    assert decision.skill == "echo" and decision.matched == ()
    assert "no skill matched well" in decision.reason and "default skill echo" in decision.reason
    assert decide(Part(text="zzkq vrrp"), default="research").skill == "research"


def test_the_reason_names_the_matched_words_the_score_and_the_runner_up() -> None:
    decision = decide(Part(text="how do retained messages work"))
    assert {"retain", "messag"} <= set(decision.matched)
    assert f"{decision.score:.2f}" in decision.reason and "next " in decision.reason
    metadata = decision.to_metadata()
    assert metadata["skill"] == "research" and metadata["reason"] == decision.reason
    assert metadata["matched"] == list(decision.matched)


def test_the_decision_is_deterministic_whatever_the_order_of_the_skills() -> None:
    query = MessageQuery("retained messages")
    forward = skill_decision(query, SkillIndex(MESH_SKILLS), "echo")
    backward = skill_decision(query, SkillIndex(list(reversed(MESH_SKILLS))), "echo")
    assert forward == backward


def test_ties_go_to_the_smaller_skill_id() -> None:
    twins = [
        AgentSkill(id=skill_id, name="Weather", description="forecasts", tags=["weather"]) for skill_id in ("b", "a")
    ]
    others = [AgentSkill(id=f"other-{n}", name="Other", description="something else", tags=[]) for n in range(3)]
    decision = decide(Part(text="weather"), skills=[*twins, *others])
    assert decision.skill == "a"


def test_only_the_given_skills_compete() -> None:
    research_only = list(ResearchAgent.skills)
    assert decide(Part(text="list sources"), skills=research_only, default="research").skill == "list-sources"
    assert decide(Part(text="hello mesh"), skills=research_only, default="research").skill == "research"


def test_no_skills_at_all_is_the_default() -> None:
    decision = decide(Part(text="how do retained messages work"), skills=[])
    assert decision.skill == "echo" and "no skills online" in decision.reason


def test_csv_needs_a_header_and_rows_of_one_width() -> None:
    assert looks_like_csv("a,b\n1,2\n3,4")
    assert looks_like_csv("a\tb\n1\t2\n3\t4")
    assert not looks_like_csv("a,b\n1,2")  # a header and one row: too little to call it a table
    assert not looks_like_csv("hello, world\nhow are you\nfine, thanks, and you")
    assert not looks_like_csv("one\ntwo\nthree")


def test_only_the_start_of_a_long_message_is_matched() -> None:
    long_text = "hello mesh " + "zzkq " * 10_000 + "retained messages"
    assert decide(Part(text=long_text)).skill == "echo"
