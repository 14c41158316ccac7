"""`python -m tests.guarded_agent`: an echo agent under a skill of its own (`guarded-echo`), for tests that need
the only agent of a skill to ask for per-request authorization (start it with MESH_AUTH_JWKS_URL or
MESH_AUTH_TOKENS)."""

from __future__ import annotations

from a2amesh.agent import MeshAgent, TaskContext, serve, skill
from agent_echo.agent import EchoAgent

GUARDED_SKILL = "guarded-echo"


class GuardedEchoAgent(MeshAgent):
    """Echo's work, offered only under GUARDED_SKILL so that routing by skill finds no other agent (a subclass of
    EchoAgent would inherit its `echo` skill too)."""

    name = "Guarded Echo Agent"
    description = "Echoes back what it is sent, for callers that present a token."

    @skill(
        id=GUARDED_SKILL,
        name="Guarded echo",
        description="Returns the message it receives, for callers that present a token.",
        tags=["test"],
        examples=["echo this back behind a token"],
    )
    async def guarded_echo(self, task: TaskContext) -> None:
        await EchoAgent.echo(self, task)  # type: ignore[arg-type]  # echo reads only the task


if __name__ == "__main__":
    serve(GuardedEchoAgent)
