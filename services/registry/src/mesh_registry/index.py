"""The Redis index of agents: one JSON record per agent, plus sets per skill and per tag so lookups by either
never scan every card. Redis holds nothing the broker does not: the index is rebuilt from retained cards."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from a2amesh.models import AgentCard, utc_now
from a2amesh.topics import AgentAddress

DEFAULT_PREFIX = "mesh:"


class Status(StrEnum):
    """Presence as the card's `a2a-status` user property states it."""

    ONLINE = "online"
    OFFLINE = "offline"


class StatusSource(StrEnum):
    """Who set the status: the agent itself, its Will (the broker saw it vanish), or the broker."""

    AGENT = "agent"
    LWT = "lwt"
    BROKER = "broker"


def timestamp() -> str:
    """Now as ISO-8601 UTC with millisecond precision and `Z`, the way A2A writes timestamps."""
    now = utc_now()
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AgentRecord:
    """What the registry knows about one agent: its card and its last reported presence and load."""

    address: AgentAddress
    card: dict[str, Any]
    status: Status = Status.ONLINE
    status_source: StatusSource | None = None
    load: float | None = None
    updated_at: str = field(default_factory=timestamp)

    @classmethod
    def of(
        cls,
        address: AgentAddress,
        card: AgentCard,
        status: Status = Status.ONLINE,
        status_source: StatusSource | None = None,
        load: float | None = None,
    ) -> AgentRecord:
        """A record for a validated card, stamped now."""
        return cls(address, card.to_wire(), status, status_source, load)

    @property
    def skills(self) -> list[str]:
        """Skill ids, once each, in card order."""
        return list(dict.fromkeys(skill["id"] for skill in self.card.get("skills", [])))

    @property
    def tags(self) -> list[str]:
        """Every tag of every skill, once each, in order of first appearance."""
        return list(dict.fromkeys(tag for skill in self.card.get("skills", []) for tag in skill.get("tags", [])))

    def to_wire(self) -> dict[str, Any]:
        """The record as the HTTP API returns it (and as Redis stores it)."""
        return {
            "address": str(self.address),
            "org": self.address.org,
            "unit": self.address.unit,
            "agentId": self.address.agent,
            "status": self.status.value,
            "statusSource": self.status_source.value if self.status_source else None,
            "load": self.load,
            "updatedAt": self.updated_at,
            "skills": self.skills,
            "tags": self.tags,
            "card": self.card,
        }


def sort_key(record: dict[str, Any]) -> tuple[int, float, str]:
    """Online before offline, then least loaded (no figure counts as idle), then address: the order a caller
    picking an agent wants."""
    load = record.get("load")
    return (0 if record["status"] == Status.ONLINE else 1, load if load is not None else 0.0, record["address"])


def parse_load(text: str | None) -> float | None:
    """The `a2a-load` figure, or None if absent; raises ValueError if it is not a finite, non-negative number."""
    if text is None:
        return None
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"load must be a finite number >= 0, got {text!r}")
    return value


class AgentIndex:
    """Agents in Redis under `prefix`: `agent:{address}` (record JSON), `agents` (all addresses),
    `skill:{id}` and `tag:{tag}` (addresses), `index:epoch` (present while the index is complete)."""

    def __init__(self, redis: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self.all_key = f"{prefix}agents"
        self.epoch_key = f"{prefix}index:epoch"

    def agent_key(self, address: str) -> str:
        return f"{self.prefix}agent:{address}"

    def skill_key(self, skill: str) -> str:
        return f"{self.prefix}skill:{skill}"

    def tag_key(self, tag: str) -> str:
        return f"{self.prefix}tag:{tag}"

    async def put(self, record: AgentRecord) -> None:
        """Insert or replace an agent, moving it out of the skill/tag sets its previous card listed."""
        address = str(record.address)
        wire = record.to_wire()

        async def apply(pipe: Pipeline) -> None:
            old = await self._read(pipe, address)
            pipe.multi()
            if old is not None:
                for skill in set(old["skills"]) - set(wire["skills"]):
                    pipe.srem(self.skill_key(skill), address)
                for tag in set(old["tags"]) - set(wire["tags"]):
                    pipe.srem(self.tag_key(tag), address)
            pipe.set(self.agent_key(address), json.dumps(wire))
            pipe.sadd(self.all_key, address)
            for skill in wire["skills"]:
                pipe.sadd(self.skill_key(skill), address)
            for tag in wire["tags"]:
                pipe.sadd(self.tag_key(tag), address)

        await self.redis.transaction(apply, self.agent_key(address))

    async def remove(self, address: AgentAddress) -> bool:
        """Drop an agent and its set memberships; whether it was there."""
        name = str(address)

        async def apply(pipe: Pipeline) -> bool:
            old = await self._read(pipe, name)
            pipe.multi()
            for skill in old["skills"] if old else []:
                pipe.srem(self.skill_key(skill), name)
            for tag in old["tags"] if old else []:
                pipe.srem(self.tag_key(tag), name)
            pipe.srem(self.all_key, name)
            pipe.delete(self.agent_key(name))
            return old is not None

        return await self.redis.transaction(apply, self.agent_key(name), value_from_callable=True)

    async def get(self, address: AgentAddress) -> dict[str, Any] | None:
        """One agent's record, or None."""
        return await self._read(self.redis, str(address))

    async def find(
        self, skill: str | None = None, tag: str | None = None, status: Status | None = None
    ) -> list[dict[str, Any]]:
        """Agents matching every given filter, in `sort_key` order."""
        keys = [self.skill_key(skill)] if skill is not None else []
        keys += [self.tag_key(tag)] if tag is not None else []
        addresses = await self.redis.sinter(keys) if keys else await self.redis.smembers(self.all_key)
        if not addresses:
            return []
        raw = await self.redis.mget([self.agent_key(_text(a)) for a in sorted(addresses)])
        records = [json.loads(item) for item in raw if item is not None]
        if status is not None:
            records = [record for record in records if record["status"] == status]
        return sorted(records, key=sort_key)

    async def clear(self) -> int:
        """Delete the whole index (before a rebuild from the broker, so no card cleared meanwhile lingers); the
        number of keys deleted."""
        deleted = 0
        for pattern in ("agent:*", "skill:*", "tag:*"):
            batch: list[str] = []
            async for key in self.redis.scan_iter(match=f"{self.prefix}{pattern}", count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self.redis.delete(*batch)
                    batch = []
            if batch:
                deleted += await self.redis.delete(*batch)
        return deleted + await self.redis.delete(self.all_key, self.epoch_key)

    async def mark_complete(self, epoch: str) -> None:
        """Note that the index is (being) filled from the broker; its absence means Redis lost the data."""
        await self.redis.set(self.epoch_key, epoch)

    async def is_marked(self) -> bool:
        """Whether the completeness marker is still there (False after a flush or a restart without persistence)."""
        return bool(await self.redis.exists(self.epoch_key))

    async def _read(self, client: Redis | Pipeline, address: str) -> dict[str, Any] | None:
        raw = await client.get(self.agent_key(address))
        return json.loads(raw) if raw is not None else None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
