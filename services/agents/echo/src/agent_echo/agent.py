"""Echo: answers with what it was sent. Optional metadata `delayMs` makes it slow (for cancel and load tests)."""

from __future__ import annotations

import asyncio

from a2amesh.agent import MeshAgent, TaskContext, TaskRejectedError, skill

MAX_DELAY_MS = 60_000


class EchoAgent(MeshAgent):
    """Returns the request's text (and data parts) as an artifact."""

    name = "Echo Agent"
    description = "Echoes back the text and data it is sent. The smallest mesh agent and the template for new ones."
    rerunnable = True  # its work has no effect outside the task: a pool peer may redo it

    @skill(
        id="echo",
        name="Echo",
        description="Returns the message it receives, unchanged.",
        tags=["echo", "test", "template"],
        examples=["hello mesh", "echo this back"],
    )
    async def echo(self, task: TaskContext) -> None:
        delay_ms = task.metadata.get("delayMs", 0)
        if not isinstance(delay_ms, int | float) or not 0 <= delay_ms <= MAX_DELAY_MS:
            raise TaskRejectedError(f"metadata.delayMs must be a number from 0 to {MAX_DELAY_MS}")
        if not task.text and not task.data:
            raise TaskRejectedError("nothing to echo: send a text or data part")
        if delay_ms:
            await task.working(f"echoing in {delay_ms} ms")
            await asyncio.sleep(delay_ms / 1000)
        await task.artifact(text=task.text or None, data=task.data[0] if task.data else None, name="echo")
