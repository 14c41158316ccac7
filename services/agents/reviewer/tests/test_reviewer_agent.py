"""The reviewer agent as a real process on a real broker: its retained card, the INPUT_REQUIRED round trip (a
question, then the answer on the same task), a rejection, and a clean SIGTERM exit."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from devstack.agent_testing import agent_process
from devstack.fixtures import BrokerHandle

ORG, UNIT = "acme", "default"
GOOD = (Path(__file__).parent / "good_report.md").read_text()


def final_status(items: list[dict[str, Any]]) -> tuple[str, str]:
    status = items[-1]["statusUpdate"]["status"]
    return status["state"], status["message"]["parts"][0]["text"]


async def test_reviewer_asks_for_the_audience_then_completes_over_mqtt(broker: BrokerHandle, tmp_path: Path) -> None:
    task_id = str(uuid.uuid4())
    async with agent_process(broker, tmp_path, "agent_reviewer", "reviewer") as agent:
        card = agent.card
        assert card["name"] == "Reviewer Agent"
        assert [skill["id"] for skill in card["skills"]] == ["review-report"]
        assert card["skills"][0]["examples"]
        # turn 1: no audience -> the stream ends INPUT_REQUIRED with the question
        asked = await agent.stream({"parts": [{"text": GOOD}], "taskId": task_id})
        context_id = asked[0]["task"]["contextId"]
        # turn 2: same task and context, a new message carrying the answer
        answer = {"parts": [{"text": "executives"}], "taskId": task_id, "contextId": context_id}
        answered = await agent.stream(answer)
        rejected = await agent.stream({"parts": [{"data": {"report": "# T"}}], "taskId": str(uuid.uuid4())})

    # the question
    assert asked[0]["task"]["id"] == task_id
    state, question = final_status(asked)
    assert state == "TASK_STATE_INPUT_REQUIRED"
    assert question.startswith("Who is the audience for this report")
    assert not any("artifactUpdate" in item for item in asked)

    # the answer: the same task, now two user turns long, completes with the review
    snapshot = answered[0]["task"]
    assert snapshot["id"] == task_id and snapshot["contextId"] == context_id
    assert [message["role"] for message in snapshot["history"]].count("ROLE_USER") == 2
    (update,) = [item["artifactUpdate"] for item in answered if "artifactUpdate" in item]
    assert update["taskId"] == task_id and update["artifact"]["name"] == "review"
    review = update["artifact"]["parts"][1]["data"]
    assert review["audience"] == "executives" and review["verdict"] == "accept" and review["score"] == 100
    done = "score 100/100 for executives: accept; every check passed."
    assert final_status(answered) == ("TASK_STATE_COMPLETED", done)

    # a data part and no report text
    state, reason = final_status(rejected)
    assert state == "TASK_STATE_REJECTED" and reason.startswith("unsupported input: only data parts")
