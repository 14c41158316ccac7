"""A mesh agent whose one skill, `hold`, keeps each task WORKING until the benchmark releases them all: the open
streams measurement (loadtests.bench.streams) holds N tasks in flight at once to see what each one costs.

Built on the mesh's own agent runtime (`a2amesh.agent`, as every agent is), so its memory per held task is the
runtime's. SIGUSR1 releases every held task at once (each then answers with its text and completes: thousands of
tasks of one agent ending together, which its MQTT link's publish window takes in turn, docs/reliability.md); a task
also ends by itself after metadata `holdSeconds` (at most MAX_HOLD_SECONDS), so nothing is held
forever if the signal never comes. `python -m loadtests.bench.hold_agent`, with the mesh's MESH_* settings (an
agent's)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from a2amesh.agent import MeshAgent, TaskContext, TaskRejectedError, serve, skill
from a2amesh.binding.responder import Responder
from a2amesh.settings import AgentSettings

HOLD_SKILL = "hold"
HELD_NOTE = "held until released"
"""The WORKING note a task reports once it is held: what the measurement waits for on each stream."""
MAX_HOLD_SECONDS = 900.0
DEFAULT_HOLD_SECONDS = 600.0


class HoldAgent(MeshAgent):
    """Holds every task until released (SIGUSR1) or its time is up, then echoes its text."""

    name = "Hold Agent"
    description = "Benchmark agent: keeps each task working until the benchmark releases it, then echoes it."

    def __init__(self, settings: AgentSettings) -> None:
        super().__init__(settings)
        self._released: asyncio.Event | None = None

    def _release_event(self) -> asyncio.Event:
        """One event for every held task, set by SIGUSR1 (a handler on the running loop)."""
        if self._released is None:
            self._released = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._released.set)
        return self._released

    def responder(self) -> Responder:
        """The runtime asks for its responder once its loop runs: the moment to take SIGUSR1 over (its default
        would end the process)."""
        self._release_event()
        return super().responder()

    @skill(
        id=HOLD_SKILL,
        name="Hold",
        description="Keeps the task working until the benchmark releases it (SIGUSR1), then echoes its text.",
        tags=["benchmark"],
        examples=["hold this"],
    )
    async def hold(self, task: TaskContext) -> None:
        seconds = task.metadata.get("holdSeconds", DEFAULT_HOLD_SECONDS)
        if not isinstance(seconds, int | float) or not 0 < seconds <= MAX_HOLD_SECONDS:
            raise TaskRejectedError(f"metadata.holdSeconds must be a number above 0 and at most {MAX_HOLD_SECONDS}")
        released = self._release_event()
        await task.working(HELD_NOTE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), timeout=seconds)
        await task.artifact(text=task.text or "held", name="hold")
        await task.complete()


def main() -> None:
    serve(HoldAgent)


if __name__ == "__main__":
    main()
