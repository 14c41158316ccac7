"""Routing: which agent and skill a message goes to, for the HTTP face (root and per-agent endpoints) and for the
workflows' steps alike.

A2A has no request field that names a skill, so a message without the mesh's `metadata.skill`/`metadata.agent` is
matched against the card text of the skills online (name, description, tags, examples) with Okapi BM25
(`a2amesh.text`). The best skill wins when it scores at least MIN_SCORE, ties broken by skill id; otherwise the
default skill takes it. The decision (skill, score, matched terms, reason) travels in the task's metadata under
`routing`, so a user can see why. Content that has a shape (CSV text, a table as a data part, a Markdown document,
research passages) adds the words that name that shape to the query, so a table reaches the skill tagged `table`.

`skill_decision` is pure and fast; `MeshRouter` adds the registry's live view (cached briefly) on top."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from a2amesh.models import AgentCard, AgentSkill, Message
from a2amesh.text import Bm25, tokenize
from a2amesh.topics import AgentAddress
from mesh_coordinator.directory import AgentChoice, RegistryClient, SingleFlight

MIN_SCORE = 1.0
"""The least BM25 score that counts as a match: about one distinctive card word (one that a single skill of ten
uses scores ~2; a word most skills share scores well under 1)."""

QUERY_CHARS = 4_000
"""Only the start of a long message is matched: enough to tell what it is, bounded in cost."""

ONLINE_TTL = 1.0
"""Seconds the registry's list of online agents is reused for endpoints and routing."""

NAME_WEIGHT = 2
"""A skill's id, name and tags count twice: they are what the skill is, the description says how."""


# -- what a message looks like ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MessageQuery:
    """The words a message is matched on, and the shapes recognized in it (each adds its words)."""

    text: str
    shapes: tuple[str, ...] = ()

    @property
    def terms(self) -> list[str]:
        shape_words = " ".join(SHAPE_WORDS[shape] for shape in self.shapes)
        return list(dict.fromkeys(tokenize(f"{self.text[:QUERY_CHARS]} {shape_words}")))


SHAPE_WORDS = {
    "csv": "csv table data statistics",
    "table": "table data statistics json",
    "markdown": "markdown report review",
    "passages": "passages report write",
    "question": "question answer",
}
"""The card words each recognized shape of content stands for."""


QUESTION_CHARS = 300
QUESTION = re.compile(r"^\s*(?:(?:how|what|why|when|where|which|who|does|do|is|are|can)\b.*|.*\?\s*)$", re.I | re.S)
"""A short text that asks something: it begins with a question word or ends with a question mark."""


def message_query(message: Message) -> MessageQuery:
    """The text of a message's text parts and the shapes of its content."""
    text = "\n".join(part.text for part in message.parts if part.text is not None)
    shapes: list[str] = []
    if looks_like_csv(text):
        shapes.append("csv")
    elif any(line.lstrip().startswith("#") for line in text[:QUERY_CHARS].splitlines()[:3]):
        shapes.append("markdown")
    elif QUESTION.match(text[:QUESTION_CHARS]) and len(text) <= QUESTION_CHARS:
        shapes.append("question")
    data = [part.data for part in message.parts if part.kind == "data"]
    if any(is_table(value) for value in data):
        shapes.append("table")
    if any(isinstance(value, dict) and "passage" in value for value in data):
        shapes.append("passages")
    return MessageQuery(text, tuple(shapes))


def looks_like_csv(text: str) -> bool:
    """At least a header and two rows, each with the same number (2+) of comma- or tab-separated fields."""
    lines = [line for line in text[:QUERY_CHARS].splitlines() if line.strip()][:20]
    if len(lines) < 3:
        return False
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    widths = {len(row) for row in rows}
    return len(widths) == 1 and widths.pop() >= 2


def is_table(value: Any) -> bool:
    """A list of row objects, or {"columns": [...], "rows": [[...]]}."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(row, dict) for row in value)
    return isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("rows"), list)


# -- the decision ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteDecision:
    """Which skill a message goes to, and why."""

    skill: str
    score: float
    reason: str
    matched: tuple[str, ...] = ()

    def to_metadata(self) -> dict[str, Any]:
        """What goes into the task's metadata under `routing`."""
        score = round(self.score, 3)
        return {"skill": self.skill, "score": score, "matched": list(self.matched), "reason": self.reason}


def skill_document(skill: AgentSkill) -> list[str]:
    """The tokens of a skill's card text, id, name and tags weighted NAME_WEIGHT times."""
    names = " ".join([skill.id, skill.name, *skill.tags])
    return tokenize(" ".join([*([names] * NAME_WEIGHT), skill.description, *(skill.examples or [])]))


class SkillIndex:
    """BM25 over a set of skills' card text (built once per distinct set of skills)."""

    def __init__(self, skills: Sequence[AgentSkill]) -> None:
        self.skills = sorted({skill.id: skill for skill in skills}.values(), key=lambda skill: skill.id)
        self.bm25 = Bm25([skill_document(skill) for skill in self.skills])

    def ranked(self, terms: Iterable[str]) -> list[tuple[float, str, dict[str, float]]]:
        """(score, skill id, per-term scores) of every skill, best first, ties by skill id."""
        terms = list(terms)
        rows = []
        for position, skill in enumerate(self.skills):
            shares = self.bm25.term_scores(terms, position)
            rows.append((sum(shares.values()), skill.id, shares))
        rows.sort(key=lambda row: (-row[0], row[1]))
        return rows


def skill_decision(query: MessageQuery, index: SkillIndex, default: str) -> RouteDecision:
    """The best-matching skill of `index` for `query`, or `default` when none scores MIN_SCORE."""
    shapes = f" (content looks like {', '.join(query.shapes)})" if query.shapes else ""
    ranked = index.ranked(query.terms)
    if ranked and ranked[0][0] >= MIN_SCORE:
        score, skill, shares = ranked[0]
        matched = tuple(term for term, _ in sorted(shares.items(), key=lambda item: (-item[1], item[0])))
        runner_up = f"; next {ranked[1][1]} at {ranked[1][0]:.2f}" if len(ranked) > 1 else ""
        reason = f"card text of {skill} matched {', '.join(matched)}{shapes}: score {score:.2f}{runner_up}"
        return RouteDecision(skill, score, reason, matched)
    best = f"best {ranked[0][1]} at {ranked[0][0]:.2f}" if ranked else "no skills online"
    reason = f"no skill matched well ({best}, below {MIN_SCORE}){shapes}: default skill {default}"
    return RouteDecision(default, ranked[0][0] if ranked and ranked[0][1] == default else 0.0, reason)


# -- the live view ---------------------------------------------------------------------------------------------
class UnknownAgentError(LookupError):
    """No agent or pool of that name has ever registered."""


class AgentOfflineError(RuntimeError):
    """The agent (every member of the pool) is offline right now; a retry later may find it back."""


@dataclass
class Endpoint:
    """One per-agent A2A endpoint: an agent id, or a pool name standing for all its members."""

    name: str
    records: list[dict[str, Any]] = field(default_factory=list)
    """The registry's records of its online instances, least loaded first."""

    @property
    def card(self) -> AgentCard:
        """The card the endpoint serves: its first online instance's (a pool's members share one card)."""
        return AgentCard.from_wire(self.records[0]["card"])

    @property
    def addresses(self) -> list[AgentAddress]:
        return [AgentAddress.parse(record["address"]) for record in self.records]

    def choices(self, skill: str) -> list[AgentChoice]:
        """Its online instances offering `skill`, as routing choices."""
        return [RegistryClient.choice_of(r) for r in self.records if skill in r.get("skills", [])]

    def holds(self, agent: AgentAddress, known: Iterable[AgentAddress] = ()) -> bool:
        """Whether a task held by `agent` belongs to this endpoint."""
        return agent.agent == self.name or agent in self.addresses or agent in known


def endpoint_name(record: dict[str, Any]) -> str:
    """The endpoint an agent record belongs to: its pool, else its own id."""
    return RegistryClient.choice_of(record).pool or AgentAddress.parse(record["address"]).agent


class MeshRouter:
    """The registry's live agents as endpoints and skills, and the routing decisions made over them."""

    def __init__(
        self, registry: RegistryClient, default_skill: str, in_flight: Callable[[AgentAddress], int] = lambda _: 0
    ) -> None:
        self.registry = registry
        self.default_skill = default_skill
        self.in_flight = in_flight
        self._listed: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._refreshes = SingleFlight()
        self._indexes: dict[tuple[str, ...], SkillIndex] = {}

    async def online(self) -> list[dict[str, Any]]:
        """The registry's online agent records, reused for ONLINE_TTL seconds."""
        return await self._listing("online")

    async def known(self) -> list[dict[str, Any]]:
        """Every agent record the registry has, online or not, reused for ONLINE_TTL seconds (public card URLs
        of unknown names must not cost a registry query each)."""
        return await self._listing("")

    async def _listing(self, status: str) -> list[dict[str, Any]]:
        cached = self._listed.get(status)
        if cached is not None and time.monotonic() - cached[0] < ONLINE_TTL:
            return cached[1]
        return await self._refreshes.run(status, lambda: self._list(status))

    async def _list(self, status: str) -> list[dict[str, Any]]:
        records = await (self.registry.agents(status=status) if status else self.registry.agents())
        self._listed[status] = (time.monotonic(), records)
        return records

    async def endpoints(self) -> dict[str, Endpoint]:
        """Every online endpoint by name, sorted by name."""
        found: dict[str, Endpoint] = {}
        for record in await self.online():
            found.setdefault(endpoint_name(record), Endpoint(endpoint_name(record))).records.append(record)
        return dict(sorted(found.items()))

    async def endpoint(self, name: str) -> Endpoint:
        """The online endpoint `name`; UnknownAgentError or AgentOfflineError when there is none."""
        online = (await self.endpoints()).get(name)
        if online is not None:
            return online
        if any(endpoint_name(record) == name for record in await self.known()):
            raise AgentOfflineError(f"agent {name} is offline; retry later")
        raise UnknownAgentError(f"no agent named {name} on this mesh (GET /agents lists them)")

    async def members(self, name: str) -> list[AgentAddress]:
        """Every instance ever registered under the endpoint `name` (online or not): whose tasks it lists."""
        return [AgentAddress.parse(r["address"]) for r in await self.known() if endpoint_name(r) == name]

    async def decide(self, message: Message, endpoint: Endpoint | None = None) -> RouteDecision:
        """The skill for a message that names none: among the endpoint's skills (its first is the default), or
        among every online skill (MESH_DEFAULT_SKILL is the default)."""
        if endpoint is not None:
            skills = endpoint.card.skills
            default = skills[0].id if skills else self.default_skill
        else:
            skills = [skill for record in await self.online() for skill in AgentCard.from_wire(record["card"]).skills]
            default = self.default_skill
        return skill_decision(message_query(message), self._index(skills), default)

    def _index(self, skills: Sequence[AgentSkill]) -> SkillIndex:
        key = tuple(sorted({skill.model_dump_json() for skill in skills}))
        index = self._indexes.get(key)
        if index is None:
            if len(self._indexes) > 64:
                self._indexes.clear()
            index = self._indexes[key] = SkillIndex(skills)
        return index

    async def candidates(self, skill: str, endpoint: Endpoint | None = None) -> list[AgentChoice]:
        """The online instances offering `skill` (only the endpoint's, when given), best first: fewest tasks in
        flight from this coordinator, then the load they report, then the registry's order."""
        choices = endpoint.choices(skill) if endpoint is not None else await self.registry.candidates(skill)
        ranked = sorted(
            enumerate(choices), key=lambda entry: (self.in_flight(entry[1].address), entry[1].load or 0.0, entry[0])
        )
        return [choice for _, choice in ranked]
