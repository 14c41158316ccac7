"""Everything meshctl prints: rich tables and status lines for people, plain JSON for machines."""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any

from a2a.types import a2a_pb2 as pb
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.json import JSON
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "SUBMITTED": "cyan",
    "WORKING": "blue",
    "COMPLETED": "bold green",
    "FAILED": "bold red",
    "REJECTED": "bold red",
    "CANCELED": "yellow",
    "INPUT_REQUIRED": "bold magenta",
    "AUTH_REQUIRED": "bold magenta",
}
DEFAULT_COORDINATOR = "http://127.0.0.1:8000"


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


# -- plain values ------------------------------------------------------------------------------------------
def tidy(value: Any) -> Any:
    """JSON as people wrote it: protobuf turns every number into a float, so 3.0 becomes 3 again."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: tidy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [tidy(item) for item in value]
    return value


def as_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as A2A wire JSON."""
    return tidy(MessageToDict(message))


def print_json(value: Any) -> None:
    print(json.dumps(tidy(value), indent=2, ensure_ascii=False), flush=True)


def state_name(state: int) -> str:
    return pb.TaskState.Name(state).removeprefix("TASK_STATE_")


def styled_state(name: str) -> Text:
    name = name.removeprefix("TASK_STATE_")
    return Text(name, style=STATE_STYLES.get(name, ""))


def message_text(message: pb.Message) -> str:
    return "\n".join(part.text for part in message.parts if part.HasField("text"))


def clock(timestamp: Any = None) -> str:
    """HH:MM:SS of a protobuf Timestamp (local time), or of now."""
    when = timestamp.ToDatetime().astimezone() if timestamp is not None and timestamp.seconds else datetime.now()
    return when.strftime("%H:%M:%S")


def moment(timestamp: Any) -> str:
    """A protobuf Timestamp in local time: the time today, the date and time before."""
    if not timestamp.seconds:
        return "-"
    when = timestamp.ToDatetime().astimezone()
    return when.strftime("%H:%M:%S" if when.date() == datetime.now().date() else "%Y-%m-%d %H:%M:%S")


# -- parts, artifacts, tasks -------------------------------------------------------------------------------
def print_parts(console: Console, parts: Any) -> None:
    """Text parts as text, data parts as pretty JSON, file parts as one line naming them."""
    for part in parts:
        content = part.WhichOneof("content")
        if content == "text":
            console.print(Text(part.text))
        elif content == "data":
            console.print(JSON(json.dumps(tidy(MessageToDict(part.data)), ensure_ascii=False)))
        elif content in ("url", "raw"):
            where = part.url if content == "url" else f"{len(part.raw)} bytes inline"
            console.print(Text(f"[file] {part.filename or '-'} ({part.media_type or 'unknown type'}) {where}"))


def artifact_header(console: Console, artifact: pb.Artifact) -> None:
    console.print(Text.assemble(("artifact ", "bold"), (artifact.name or artifact.artifact_id or "-", "bold cyan")))


def status_line(console: Console, status: pb.TaskStatus) -> None:
    line = Text.assemble((clock(status.timestamp) + " ", "dim"), "● ", styled_state(state_name(status.state)))
    note = message_text(status.message) if status.HasField("message") else ""
    if note:
        line.append("  " + note)
    console.print(line)


def print_task(console: Console, task: pb.Task, *, history: bool = False) -> None:
    """One task for people: identity, state, the agent's last word, artifacts (and history when asked)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_row(Text("task", style="bold"), task.id)
    grid.add_row(Text("context", style="bold"), task.context_id or "-")
    grid.add_row(Text("state", style="bold"), styled_state(state_name(task.status.state)))
    if task.status.HasField("timestamp"):
        stamp = task.status.timestamp.ToDatetime().astimezone().isoformat(timespec="seconds")
        grid.add_row(Text("updated", style="bold"), stamp)
    if task.status.HasField("message") and message_text(task.status.message):
        grid.add_row(Text("message", style="bold"), message_text(task.status.message))
    console.print(grid)
    for artifact in task.artifacts:
        artifact_header(console, artifact)
        print_parts(console, artifact.parts)
    if history and task.history:
        console.print(Text(f"history ({len(task.history)} messages)", style="bold"))
        for message in task.history:
            role = pb.Role.Name(message.role).removeprefix("ROLE_").lower()
            console.print(Text(f"{role}:", style="bold cyan" if role == "user" else "bold green"))
            print_parts(console, message.parts)


def print_store_record(console: Console, record: dict[str, Any]) -> None:
    """The task store's view: the agent that held the task and every event it recorded."""
    console.print(Text.assemble(("agent ", "bold"), record.get("agent") or "-"))
    table = Table("seq", "received", "kind", "state / artifact", box=None, header_style="bold")
    for item in record.get("events", []):
        table.add_row(str(item.get("seq", "")), str(item.get("receivedAt", "")), item.get("kind", ""), _detail(item))
    console.print(table)


def _detail(item: dict[str, Any]) -> Text:
    event = item.get("event") or {}
    for key in ("task", "statusUpdate"):
        if key in event:
            return styled_state(event[key].get("status", {}).get("state", ""))
    if "artifactUpdate" in event:
        artifact = event["artifactUpdate"].get("artifact", {})
        return Text(artifact.get("name") or artifact.get("artifactId") or "-")
    return Text("-")


def tasks_table(page: pb.ListTasksResponse) -> Table:
    table = Table(title=f"{len(page.tasks)} of {page.total_size} tasks", header_style="bold", title_justify="left")
    table.add_column("task", no_wrap=True)
    table.add_column("context", overflow="fold")
    table.add_column("state")
    table.add_column("updated", no_wrap=True)
    for task in page.tasks:
        styled = styled_state(state_name(task.status.state))
        table.add_row(task.id, task.context_id, styled, moment(task.status.timestamp))
    return table


# -- agents ------------------------------------------------------------------------------------------------
def agents_table(records: list[dict[str, Any]]) -> Table:
    table = Table(header_style="bold")
    table.add_column("agent", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("load", justify="right")
    table.add_column("skills")
    table.add_column("tags", style="dim")
    for record in records:
        online = record.get("status") == "online"
        status = Text(record.get("status", "?"), style="green" if online else "red")
        if not online and record.get("statusSource"):
            status.append(f" ({record['statusSource']})", style="dim")
        load = record.get("load")
        table.add_row(
            record.get("address") or record.get("agentId", "?"),
            status,
            f"{load:.2f}" if isinstance(load, int | float) else "-",
            ", ".join(record.get("skills", [])),
            ", ".join(record.get("tags", [])),
        )
    return table


# -- the end of a send -------------------------------------------------------------------------------------
def follow_up_command(task: pb.Task, coordinator_url: str) -> str:
    words = ["meshctl"]
    if coordinator_url.rstrip("/") != DEFAULT_COORDINATOR:
        words += ["--coordinator", coordinator_url]
    words += ["send", "<your answer>", "--task-id", task.id, "--context-id", task.context_id]
    return shlex.join(words)


def print_outcome(console: Console, task: pb.Task, coordinator_url: str, *, waited: bool) -> None:
    """The final word on a sent task: its state and id, and what to do next when that is not obvious."""
    name = state_name(task.status.state)
    console.print(Text.assemble(styled_state(name), "  task ", (task.id, "bold"), f"  (context {task.context_id})"))
    if name in ("INPUT_REQUIRED", "AUTH_REQUIRED"):
        question = message_text(task.status.message) if task.status.HasField("message") else ""
        console.print(Text.assemble(("the agent asks: ", "bold magenta"), question or "(no question given)"))
        console.print(Text("answer with:  ", style="bold") + Text(follow_up_command(task, coordinator_url)))
    elif name in ("SUBMITTED", "WORKING"):
        hint = "follow it with" if not waited else "the task is still running; see it with"
        console.print(Text(f"{hint}:  meshctl get {task.id}   (stop it: meshctl cancel {task.id})"))
