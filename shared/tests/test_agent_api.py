"""The agent API (`@skill`: declared on the card, routed to its method) and the in-memory harness, which must give
what the runtime gives over MQTT: WORKING sent for the handler, a return COMPLETED, a rejection REJECTED with the
reason in status.message, INPUT_REQUIRED pausing the task until the next turn, any other error FAILED."""

from __future__ import annotations

import pytest

from a2amesh.agent import MeshAgent, TaskContext, TaskFailedError, TaskRejectedError, skill
from a2amesh.models import AgentSkill, Part, TaskState
from a2amesh.settings import AgentSettings
from a2amesh.testing import AgentHarness, AgentRequestError


class Greeter(MeshAgent):
    """Two skills, one of them multi-turn, and every way a handler ends a task."""

    name = "Greeter"
    description = "Greets, and converses."

    @skill(id="greet", name="Greet", description="Greets whoever is named.", tags=["test"], examples=["Ada"])
    async def greet(self, task: TaskContext) -> None:
        if not task.text.strip():
            raise TaskRejectedError("nobody to greet: send a name")
        if task.text == "boom":
            raise RuntimeError("kaput")
        if task.text == "give up":
            raise TaskFailedError("gave up on purpose")
        await task.working("greeting")
        await task.artifact(
            Part(raw=b"hello", media_type="application/octet-stream", filename="hello.bin"),
            text=f"hello {task.text}",
            data={"name": task.text},
            name="greeting",
        )

    @skill(id="converse", name="Converse", description="Asks a name, then greets.", output_modes=["text/plain"])
    async def converse(self, task: TaskContext) -> None:
        if task.turn == 1:
            await task.require_input("Who are you?")
            return
        await task.complete(f"nice to meet you, {task.text}")


@pytest.fixture(scope="module")
def harness() -> AgentHarness[Greeter]:
    return AgentHarness(Greeter(AgentSettings(agent_id="greeter-test")))


def test_the_skills_are_on_the_card_in_declaration_order(harness: AgentHarness[Greeter]) -> None:
    card = harness.agent.card()
    assert card.skill_ids() == ["greet", "converse"]
    greet, converse = card.skills
    assert (greet.name, greet.description, greet.tags, greet.examples) == (
        "Greet",
        "Greets whoever is named.",
        ["test"],
        ["Ada"],
    )
    assert converse.output_modes == ["text/plain"] and converse.examples is None


async def test_a_return_completes_after_the_runtime_sent_working(harness: AgentHarness[Greeter]) -> None:
    reply = await harness.send("Ada")
    assert reply.state is TaskState.COMPLETED and reply.text == ""
    kinds = [next(iter(event)) for event in reply.events]
    assert kinds == ["task", "statusUpdate", "statusUpdate", "artifactUpdate", "statusUpdate"]
    states = [event["statusUpdate"]["status"]["state"] for event in reply.events if "statusUpdate" in event]
    assert states == ["TASK_STATE_WORKING", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]
    assert reply.notes == ["greeting"]
    (artifact,) = reply.artifacts
    raw, text, data = artifact.parts
    assert (raw.raw, raw.filename, text.text, data.data) == (b"hello", "hello.bin", "hello Ada", {"name": "Ada"})
    assert [event.get("statusUpdate", {}).get("status", {}).get("state") for event in harness.events][-1] == (
        "TASK_STATE_COMPLETED"
    )  # the task events the task store records, beside the reply


async def test_the_skill_named_in_metadata_runs_and_an_unknown_one_is_rejected(harness: AgentHarness[Greeter]) -> None:
    assert (await harness.send("Ada", skill="converse")).state is TaskState.INPUT_REQUIRED
    reply = await harness.send("Ada", skill="dance")
    assert reply.state is TaskState.REJECTED
    assert reply.text == "unknown skill 'dance': this agent does 'greet', 'converse'"


@pytest.mark.parametrize(
    ("text", "state", "reason"),
    [
        (" ", TaskState.REJECTED, "nobody to greet: send a name"),
        ("give up", TaskState.FAILED, "gave up on purpose"),
        ("boom", TaskState.FAILED, "agent error: RuntimeError: kaput"),
    ],
)
async def test_an_error_ends_the_task_with_the_reason_in_the_status_message(
    harness: AgentHarness[Greeter], text: str, state: TaskState, reason: str
) -> None:
    reply = await harness.send(text)
    assert reply.state is state and reply.text == reason
    assert not reply.artifact_updates


async def test_input_required_pauses_the_task_and_the_answer_continues_it(harness: AgentHarness[Greeter]) -> None:
    first = await harness.send("hi", skill="converse")
    assert first.state is TaskState.INPUT_REQUIRED and first.text == "Who are you?"
    second = await harness.send("Grace", task_id=first.task_id)
    assert second.task_id == first.task_id and second.context_id == first.context_id
    assert second.state is TaskState.COMPLETED and second.text == "nice to meet you, Grace"


async def test_a_request_the_runtime_refuses_raises(harness: AgentHarness[Greeter]) -> None:
    with pytest.raises(AgentRequestError) as refused:
        await harness.send()
    assert refused.value.code == -32602 and "parts must not be empty" in refused.value.message


async def test_an_agent_that_wants_a_token_gets_the_one_given() -> None:
    settings = AgentSettings(agent_id="greeter-auth", auth_tokens=["s3cret"])
    with pytest.raises(AgentRequestError, match="authorization required"):
        await AgentHarness(Greeter(settings)).send("Ada")
    reply = await AgentHarness(Greeter(settings), authorization="Bearer s3cret").send("Ada")
    assert reply.state is TaskState.COMPLETED


def test_an_agent_declares_skills_one_way() -> None:
    with pytest.raises(TypeError, match="not both"):

        class Both(MeshAgent):
            name = description = "x"
            skills = [AgentSkill(id="a", name="A", description="a", tags=[])]

            @skill(id="b", name="B", description="b")
            async def b(self, task: TaskContext) -> None: ...

    class Neither(MeshAgent):
        name = description = "x"
        skills: list[AgentSkill] = []

    with pytest.raises(TypeError, match="declare at least one @skill method"):
        Neither(AgentSettings(agent_id="neither"))
