"""The topic scheme: every MQTT topic the mesh uses is built and parsed here, and nowhere else.

Profile topics (A2A over MQTT 0.1, Core):
    $a2a/v1/discovery/{org}/{unit}/{agent}        retained Agent Card
    $a2a/v1/request/{org}/{unit}/{agent}          requests to one agent
    $a2a/v1/reply/{org}/{unit}/{agent}/{suffix}   a requester's reply inbox
    $a2a/v1/event/{org}/{unit}/{agent}            the agent's task events (the mesh's durable record)
Extensions:
    $a2a/v1/owner/{org}/{unit}/{coordinator}      who created each task a coordinator accepted (for the task store)
    a2a/v1/pool/{org}/{unit}/{pool}               pool requests, consumed via $share/a2a.{org}.{unit}.{pool}/...
                                                  (outside `$`: Mosquitto shares no `$` topic)
The broker's own:
    $SYS/broker/{statistic}                       Mosquitto's statistics, retained, refreshed every sys_interval s
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "$a2a/v1"
POOL_PREFIX = "a2a/v1/pool"
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class TopicError(ValueError):
    """A topic or id that does not follow the scheme."""


def check_id(value: str, what: str = "id") -> str:
    """Return `value` if it is a valid org/unit/agent/pool id, else raise TopicError."""
    if not isinstance(value, str) or not _ID.fullmatch(value):  # fullmatch: `$` alone lets "id\n" through
        raise TopicError(f"invalid {what} {value!r}: must match {_ID.pattern}")
    return value


class TopicKind(StrEnum):
    """What a topic carries."""

    DISCOVERY = "discovery"
    REQUEST = "request"
    REPLY = "reply"
    EVENT = "event"
    OWNER = "owner"
    POOL = "pool"


@dataclass(frozen=True, order=True)
class AgentAddress:
    """An agent's identity on the mesh: `{org}/{unit}/{agent}`, which is also its MQTT client id."""

    org: str
    unit: str
    agent: str

    def __post_init__(self) -> None:
        check_id(self.org, "org id")
        check_id(self.unit, "unit id")
        check_id(self.agent, "agent id")

    @classmethod
    def parse(cls, text: str) -> AgentAddress:
        """Parse `org/unit/agent` (a client id or registry key)."""
        pieces = text.split("/")
        if len(pieces) != 3:
            raise TopicError(f"an agent address is org/unit/agent, got {text!r}")
        return cls(*pieces)

    def __str__(self) -> str:
        return f"{self.org}/{self.unit}/{self.agent}"

    @property
    def client_id(self) -> str:
        """The MQTT client id the profile binds to this identity."""
        return str(self)

    @property
    def discovery_topic(self) -> str:
        """Where the agent's retained card lives."""
        return f"{PREFIX}/discovery/{self}"

    @property
    def request_topic(self) -> str:
        """Where requests to this agent go."""
        return f"{PREFIX}/request/{self}"

    @property
    def event_topic(self) -> str:
        """Where this agent publishes its task events."""
        return f"{PREFIX}/event/{self}"

    @property
    def owner_topic(self) -> str:
        """Where this coordinator publishes the owners of the tasks it accepts (only coordinators may)."""
        return f"{PREFIX}/owner/{self}"

    def reply_topic(self, suffix: str) -> str:
        """A reply inbox owned by this identity; `suffix` should be unguessable (see `new_reply_suffix`)."""
        check_id(suffix, "reply suffix")
        return f"{PREFIX}/reply/{self}/{suffix}"

    def reply_filter(self) -> str:
        """Every reply inbox of this identity."""
        return f"{PREFIX}/reply/{self}/+"


@dataclass(frozen=True)
class PoolAddress:
    """A pool of interchangeable agents (the project's extension to the profile)."""

    org: str
    unit: str
    pool: str

    def __post_init__(self) -> None:
        check_id(self.org, "org id")
        check_id(self.unit, "unit id")
        check_id(self.pool, "pool id")

    @property
    def topic(self) -> str:
        """Where requesters publish pool requests."""
        return f"{POOL_PREFIX}/{self.org}/{self.unit}/{self.pool}"

    @property
    def group(self) -> str:
        """The deterministic shared-subscription group the profile recommends."""
        return f"a2a.{self.org}.{self.unit}.{self.pool}"

    @property
    def shared_subscription(self) -> str:
        """What a pool member subscribes to so the broker spreads requests across members."""
        return f"$share/{self.group}/{self.topic}"


@dataclass(frozen=True)
class ParsedTopic:
    """A topic taken apart: its kind, the agent (or pool) it belongs to, and a reply suffix."""

    kind: TopicKind
    org: str
    unit: str
    name: str
    suffix: str | None = None

    @property
    def agent(self) -> AgentAddress:
        """The agent the topic belongs to (not for pool topics)."""
        if self.kind is TopicKind.POOL:
            raise TopicError("a pool topic names a pool, not an agent")
        return AgentAddress(self.org, self.unit, self.name)

    @property
    def pool(self) -> PoolAddress:
        """The pool a pool topic belongs to."""
        if self.kind is not TopicKind.POOL:
            raise TopicError(f"a {self.kind} topic names an agent, not a pool")
        return PoolAddress(self.org, self.unit, self.name)


def parse_topic(topic: str) -> ParsedTopic:
    """Parse any mesh topic; raises TopicError for anything outside the scheme."""
    if topic.startswith(POOL_PREFIX + "/"):
        pieces = topic[len(POOL_PREFIX) + 1 :].split("/")
        if len(pieces) != 3:
            raise TopicError(f"not a pool topic: {topic!r}")
        org, unit, pool = (check_id(p) for p in pieces)
        return ParsedTopic(TopicKind.POOL, org, unit, pool)
    if not topic.startswith(PREFIX + "/"):
        raise TopicError(f"not an A2A topic: {topic!r}")
    kind_text, *rest = topic[len(PREFIX) + 1 :].split("/")
    try:
        kind = TopicKind(kind_text)
    except ValueError:
        raise TopicError(f"unknown topic kind {kind_text!r} in {topic!r}") from None
    expected = 4 if kind is TopicKind.REPLY else 3
    if kind is TopicKind.POOL or len(rest) != expected:
        raise TopicError(f"malformed {kind} topic: {topic!r}")
    org, unit, name = (check_id(p) for p in rest[:3])
    suffix = check_id(rest[3], "reply suffix") if kind is TopicKind.REPLY else None
    return ParsedTopic(kind, org, unit, name, suffix)


POOL_TOPIC_TEMPLATE = POOL_PREFIX + "/{org}/{unit}/{pool}"
REQUEST_TOPIC_TEMPLATE = PREFIX + "/request/{org}/{unit}/{agent}"


def topic_template(topic: str) -> str:
    """The topic with its ids replaced by their names (`$a2a/v1/request/{org}/{unit}/{agent}`): what traces name a
    publish or process by, so that span names stay few whatever the ids. A topic outside the scheme is kept."""
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return topic
    if parsed.kind is TopicKind.POOL:
        return POOL_TOPIC_TEMPLATE
    template = f"{PREFIX}/{parsed.kind.value}/{{org}}/{{unit}}/{{agent}}"
    return template + "/{inbox}" if parsed.kind is TopicKind.REPLY else template


def is_discovery_topic(topic: str) -> bool:
    """Whether `topic` is an agent's discovery (card and presence) topic."""
    return topic.startswith(f"{PREFIX}/discovery/")


def new_reply_suffix() -> str:
    """An unguessable reply-inbox suffix."""
    return secrets.token_hex(12)


DISCOVERY_ALL = f"{PREFIX}/discovery/#"
"""Every card on the broker (a `#` filter never matches `$` topics, so monitors subscribe to this)."""

EVENTS_ALL = f"{PREFIX}/event/#"
"""Every agent's task events."""

OWNERS_ALL = f"{PREFIX}/owner/#"
"""Every coordinator's owner records (the task store's alone to read)."""


def discovery_filter(org: str | None = None, unit: str | None = None) -> str:
    """Cards of one org (and unit), or of every org."""
    if org is None:
        return DISCOVERY_ALL
    check_id(org, "org id")
    if unit is None:
        return f"{PREFIX}/discovery/{org}/#"
    return f"{PREFIX}/discovery/{org}/{check_id(unit, 'unit id')}/+"


def replies_filter(org: str) -> str:
    """Every reply inbox of one org (what an agent may answer on, and what an edge site's bridge carries back)."""
    return f"{PREFIX}/reply/{check_id(org, 'org id')}/#"


SYS_BROKER_PREFIX = "$SYS/broker"


def broker_statistic_topic(statistic: str) -> str:
    """The `$SYS` topic on which Mosquitto publishes one of its statistics (`clients/connected`, `store/messages/count`,
    ...); a `#` filter never matches it, and only the identities granted that exact topic may read it."""
    if not statistic or statistic.startswith("/") or any(char in statistic for char in "#+"):
        raise TopicError(f"not a broker statistic: {statistic!r}")
    return f"{SYS_BROKER_PREFIX}/{statistic}"
