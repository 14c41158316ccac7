"""`meshctl send`: the request it builds, the task it follows (folding the stream into one Task as events
arrive), and the exit code the outcome maps to."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict, ParseDict
from pydantic import ValidationError

from a2amesh.models import StreamResponse, Task
from a2amesh.models.fold import FoldRules
from a2amesh.models.fold import fold as fold_event
from meshctl.client import CliError, coordinator

EXIT_OK, EXIT_FAILED, EXIT_INPUT_REQUIRED = 0, 1, 3
ENDED_BADLY = {pb.TASK_STATE_FAILED, pb.TASK_STATE_REJECTED, pb.TASK_STATE_CANCELED}
NEEDS_USER = {pb.TASK_STATE_INPUT_REQUIRED, pb.TASK_STATE_AUTH_REQUIRED}
RUNNING = {pb.TASK_STATE_SUBMITTED, pb.TASK_STATE_WORKING}


def parse_meta(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; each value is read as JSON when it parses (`delayMs=500` is a number), else as text."""
    metadata: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--meta takes key=value, got {pair!r}", code=2)
        try:
            metadata[key] = json.loads(text)
        except ValueError:
            metadata[key] = text
    return metadata


def parse_data(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise CliError(f"--data is not JSON: {error}", code=2) from None


@dataclass
class SendOptions:
    """What to send and how."""

    text: str | None = None
    data: Any = None
    skill: str | None = None
    agent: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    task_id: str = ""
    context_id: str = ""
    stream: bool = True
    wait: bool = True

    def request(self) -> pb.SendMessageRequest:
        if self.text is None and self.data is None:
            raise CliError("nothing to send: give TEXT, --data JSON, or both", code=2)
        message = pb.Message(
            message_id=uuid.uuid4().hex, role=pb.ROLE_USER, task_id=self.task_id, context_id=self.context_id
        )
        if self.text is not None:
            message.parts.append(pb.Part(text=self.text))
        if self.data is not None:
            part = message.parts.add()
            ParseDict(self.data, part.data)
        request = pb.SendMessageRequest(message=message)
        metadata = dict(self.metadata)
        if self.skill:
            metadata["skill"] = self.skill
        if self.agent:
            metadata["agent"] = self.agent
        if metadata:
            request.metadata.update(metadata)
        if not self.wait:
            request.configuration.return_immediately = True
        return request


SHOWN = FoldRules(status_messages=False)
"""How meshctl folds a stream: as it comes, with the history as the agent's snapshots had it."""


def fold(task: pb.Task | None, event: pb.StreamResponse) -> pb.Task | None:
    """The task as known after one more stream event (status replaces, artifact chunks extend by id): the
    mesh's one fold (`a2amesh.models.fold`), over the SDK's messages read as the mesh's models."""
    try:
        known = None if task is None else Task.from_wire(MessageToDict(task))
        folded = fold_event(known, StreamResponse.from_wire(MessageToDict(event)), SHOWN)
    except ValidationError as error:  # e.g. an artifact without an artifactId, which A2A requires
        raise CliError(f"the coordinator sent an event that is not valid A2A: {error}") from None
    return None if folded is None else ParseDict(folded.to_wire(), pb.Task())


@dataclass
class Outcome:
    """How a send ended: the task as last known, or the agent's direct reply."""

    task: pb.Task | None = None
    message: pb.Message | None = None


async def run_send(
    url: str, options: SendOptions, on_event: Callable[[pb.StreamResponse, pb.Task | None], None]
) -> Outcome:
    """Send, calling `on_event` with each event and the task folded so far; return the outcome."""
    request = options.request()
    streaming = options.stream and options.wait
    outcome = Outcome()
    async with coordinator(url, streaming=streaming, wait_long=options.wait) as client:
        async for event in client.send_message(request):
            outcome.task = fold(outcome.task, event)
            if event.HasField("message"):
                outcome.message = event.message
            on_event(event, outcome.task)
    return outcome


def exit_code(outcome: Outcome, waited: bool) -> int:
    """0 COMPLETED (or a direct reply, or still running after --no-wait); 1 FAILED/REJECTED/CANCELED or a
    stream that ended with the task unfinished; 3 INPUT_REQUIRED/AUTH_REQUIRED."""
    if outcome.task is None:
        return EXIT_OK if outcome.message is not None else EXIT_FAILED
    state = outcome.task.status.state
    if state == pb.TASK_STATE_COMPLETED:
        return EXIT_OK
    if state in NEEDS_USER:
        return EXIT_INPUT_REQUIRED
    if state in RUNNING and not waited:
        return EXIT_OK
    return EXIT_FAILED
