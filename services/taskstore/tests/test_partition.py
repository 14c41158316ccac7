"""Task store replicas split the events by topic: every topic has exactly one owner, stable across processes."""

from __future__ import annotations

import pytest

from a2amesh.topics import AgentAddress
from mesh_taskstore.partition import Partition


def test_every_topic_has_exactly_one_owner_among_the_replicas() -> None:
    topics = [AgentAddress("acme", "default", f"agent-{n}").event_topic for n in range(200)]
    for count in (1, 2, 3, 5):
        replicas = [Partition(index, count) for index in range(count)]
        for topic in topics:
            assert sum(replica.owns(topic) for replica in replicas) == 1
        if count > 1:  # the hash spreads the agents: every replica gets a share
            assert all(any(replica.owns(topic) for topic in topics) for replica in replicas)


def test_a_partition_outside_the_count_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        Partition(2, 2)
