"""Several task store replicas sharing the events over one database: each records the events of the agents whose
event topic hashes to its partition, and acknowledges the others' unread.

Why not an MQTT shared subscription: Mosquitto delivers no shared subscription on `$` topics (docs/topics.md), and
the profile puts events under `$a2a/v1/event/`. So every replica subscribes to every event with its own persistent
session and keeps its share by topic, which has two more merits: a topic's events (one agent's, or one
coordinator replica's relayed ones) always reach the same replica, in the order the broker got them, so a task's
record is written in order; and a stopped or killed replica's share waits in its session on the broker (up to the
broker's queue limit) until it is back, so nothing is lost and nothing is written twice (events are idempotent by
id besides)."""

from __future__ import annotations

import zlib


class Partition:
    """Replica `index` of `count`: the event topics it records."""

    def __init__(self, index: int = 0, count: int = 1) -> None:
        if not 0 <= index < count:
            raise ValueError(f"partition {index} is not one of 0..{count - 1}")
        self.index = index
        self.count = count

    def owns(self, topic: str) -> bool:
        """Whether this replica records the events published on `topic` (a stable hash: every replica, whatever
        its process, agrees on the owner)."""
        return self.count == 1 or zlib.crc32(topic.encode()) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
