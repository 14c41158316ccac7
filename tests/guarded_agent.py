"""`python -m tests.guarded_agent`: an echo agent under a skill of its own (`guarded-echo`), for tests that need
the only agent of a skill to ask for per-request authorization (start it with MESH_AUTH_TOKENS)."""

from __future__ import annotations

from typing import ClassVar

from a2amesh.agent import serve
from a2amesh.models import AgentSkill
from agent_echo.agent import EchoAgent

GUARDED_SKILL = "guarded-echo"


class GuardedEchoAgent(EchoAgent):
    """Echo, offered under GUARDED_SKILL so that routing by skill finds no other agent."""

    name = "Guarded Echo Agent"
    skills: ClassVar[list[AgentSkill]] = [
        AgentSkill(
            id=GUARDED_SKILL,
            name="Guarded echo",
            description="Returns the message it receives, for callers that present a token.",
            tags=["test"],
            examples=["echo this back behind a token"],
        )
    ]


if __name__ == "__main__":
    serve(GuardedEchoAgent)
