"""Picking a relayed task up again after its relay lost it — the broker went away, or the agent went silent —
instead of ending it FAILED while the agent may well finish it.

The agent that holds the task is asked for it (GetTask over MQTT): a finished task is relayed as it ended, a
running one is followed again (SubscribeToTask), and a request the agent never got is sent again under the same
task id (the agent de-duplicates on it). When the holder itself is gone (a SIGKILLed pool replica), a skill whose
card lets it run again goes to a live member of the pool, under the same task id."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from a2amesh.binding import MeshRequester, RemoteError, ReplyStream, RequestTimeoutError, RetryProfile
from a2amesh.models import ErrorCode, Task
from a2amesh.mqtt import NotConnectedError
from a2amesh.topics import AgentAddress, PoolAddress
from mesh_coordinator.directory import AgentChoice, DependencyError, RegistryClient
from mesh_coordinator.live import handed_back

if TYPE_CHECKING:
    from mesh_coordinator.live import LiveTask

log = logging.getLogger(__name__)

RECONNECT_WAIT = 30.0
"""Seconds a relay waits for the coordinator's broker connection to come back before giving up."""

PROBE_TIMEOUT = 5.0
"""Seconds, at most, the holder gets to answer GetTask (served at once by a live agent, whatever its load)."""


@dataclass
class Resume:
    """What a relay needs to pick its task up again: how it was sent, and where else it may go."""

    requester: MeshRequester
    registry: RegistryClient
    profile: RetryProfile
    params: dict[str, Any] | None
    """The SendStreamingMessage params (with the task id) to send again; None for a relay that only follows."""
    skill: str | None = None
    pool: PoolAddress | None = None
    """The pool the task was sent to, whose live members may take it over."""
    rerunnable: bool = False
    """The skill may run again from the start on another member (its card says so)."""
    authorization: str | None = None
    gone: set[str] = field(default_factory=set)
    """Agents that stopped answering for this task."""

    @property
    def probe(self) -> RetryProfile:
        """One attempt: a holder that does not answer a GetTask within the first-reply timeout is taken as gone."""
        first_reply = min(self.profile.first_reply_timeout, PROBE_TIMEOUT)
        return RetryProfile(first_reply, self.profile.stream_idle_timeout, attempts=1)

    async def reattach(self, live: LiveTask, error: Exception) -> ReplyStream | Task | None:
        """A new stream to relay the task from, or the task as it ended, or None when nothing can be done."""
        holder = live.agent if (live.answered_by or self.pool is None) else None
        if holder is not None and handed_back(error):  # a stopping replica gave it back: a peer takes it
            self.gone.add(holder.agent)
            holder = None
        deadline = asyncio.get_running_loop().time() + RECONNECT_WAIT
        while holder is not None:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self.requester.link.connected.wait(), timeout=max(remaining, 0.01))
                outcome = await self._from_holder(live, holder)
            except TimeoutError:
                return None
            except NotConnectedError:  # the connection dropped again under the probe: wait for the next one
                await asyncio.sleep(0.5)
                continue
            if outcome is not False:
                return outcome
            break
        if self.pool is None or (live.answered_by and not self.rerunnable):
            return None  # the holder is gone, and nobody else may (or can) run the task
        member = await self._live_member()
        if member is not None:
            live.agent = member.address
            topic = member.address.request_topic
        else:
            topic = self.pool.topic
        log.info("task %s: handing it to %s under the same task id", live.id, topic)
        return self._send(topic)

    async def _from_holder(self, live: LiveTask, holder: AgentAddress) -> ReplyStream | Task | bool | None:
        """Ask the holder; False when it is gone (so another member may take the task). NotConnectedError when
        the coordinator's own connection dropped meanwhile."""
        try:
            result = await self.requester.call(holder.request_topic, "GetTask", {"id": live.id}, profile=self.probe)
        except RemoteError as error:
            if error.code != ErrorCode.TASK_NOT_FOUND or self.params is None:
                return None
            if live.answered_by and not self.rerunnable:
                return None  # it ran there and the agent forgot it (a restart): only a re-runnable skill goes again
            log.info("task %s: %s does not have it; sending it again under the same task id", live.id, holder)
            return self._send(holder.request_topic)
        except RequestTimeoutError:
            self.gone.add(holder.agent)
            return False
        task = Task.from_wire(result)
        if task.status.state.ends_stream:
            return task
        log.info("task %s: following it again on %s", live.id, holder)
        params = {"id": live.id}
        return self.requester.request(
            holder.request_topic, "SubscribeToTask", params, profile=self.profile, authorization=self.authorization
        )

    async def cancel(self, live: LiveTask) -> None:
        """CancelTask at the agent holding the task (one attempt; errors are the caller's to ignore)."""
        await self.requester.call(live.agent.request_topic, "CancelTask", {"id": live.id}, profile=self.probe)

    async def _live_member(self) -> AgentChoice | None:
        """The least-loaded online member of the pool that has not gone silent on this task."""
        if self.skill is None or self.pool is None:
            return None
        try:
            candidates = await self.registry.candidates(self.skill)
        except DependencyError:
            return None
        members = [c for c in candidates if c.pool == self.pool.pool and c.address.agent not in self.gone]
        return min(members, key=lambda c: c.load or 0.0) if members else None

    def _send(self, topic: str) -> ReplyStream | None:
        if self.params is None:
            return None
        return self.requester.request(
            topic, "SendStreamingMessage", self.params, profile=self.profile, authorization=self.authorization
        )
