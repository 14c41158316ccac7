"""Turn A2A wire JSON into what the templates show: parts for people, a timeline with durations, a workflow's steps.

Everything here returns plain data; the templates escape it (Jinja2 autoescape), so agent text stays text."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from a2amesh.binding.wire import POOL_EXTENSION

TERMINAL_STATES = frozenset({"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"})
STATES = (
    "TASK_STATE_SUBMITTED",
    "TASK_STATE_WORKING",
    "TASK_STATE_INPUT_REQUIRED",
    "TASK_STATE_AUTH_REQUIRED",
    "TASK_STATE_COMPLETED",
    "TASK_STATE_FAILED",
    "TASK_STATE_CANCELED",
    "TASK_STATE_REJECTED",
)
SAFE_LINK_SCHEMES = ("http://", "https://")


def short_state(state: str | None) -> str:
    """TASK_STATE_INPUT_REQUIRED -> input-required."""
    return (state or "unknown").removeprefix("TASK_STATE_").lower().replace("_", "-")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """1.234 -> '1.23 s', 75 -> '1 min 15 s'."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


@dataclass
class PartView:
    """One part as people see it: `kind` picks the template block."""

    kind: str  # text | markdown | table | rows | json | file
    text: str = ""
    media_type: str = ""
    rows: list[list[str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    href: str = ""
    name: str = ""


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def data_view(value: Any) -> PartView:
    """A data part as a table: an object as key/value rows, a list of objects as rows with one column per key."""
    if isinstance(value, dict) and value:
        return PartView("table", columns=["key", "value"], rows=[[str(k), _cell(v)] for k, v in value.items()])
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        columns = list(dict.fromkeys(key for row in value for key in row))
        return PartView("rows", columns=columns, rows=[[_cell(row.get(c, "")) for c in columns] for row in value])
    return PartView("json", text=json.dumps(value, indent=2, ensure_ascii=False))


def part_view(part: dict[str, Any], download: str = "") -> PartView:
    """A wire Part for people. `download` is the console URL that serves this part's inline bytes, if any."""
    media_type = str(part.get("mediaType") or "")
    if "text" in part:
        kind = "markdown" if media_type == "text/markdown" else "text"
        return PartView(kind, text=str(part["text"]), media_type=media_type)
    if "data" in part:
        view = data_view(part["data"])
        view.media_type = media_type
        return view
    name = str(part.get("filename") or part.get("name") or "file")
    if "url" in part or "uri" in part:
        url = str(part.get("url") or part.get("uri") or "")
        # only web links become links; anything else (javascript:, data:) is shown as text
        href = url if url.lower().startswith(SAFE_LINK_SCHEMES) else ""
        return PartView("file", text=url, href=href, name=name, media_type=media_type)
    if "raw" in part:
        return PartView("file", text=f"{len(decode_raw(part['raw']))} bytes", href=download, name=name)
    return PartView("json", text=json.dumps(part, indent=2, ensure_ascii=False))


def decode_raw(raw: Any) -> bytes:
    try:
        return base64.b64decode(str(raw), validate=False)
    except (binascii.Error, ValueError):
        return b""


def message_text(message: dict[str, Any] | None) -> str:
    """The text parts of a message, joined (for one-line summaries)."""
    if not message:
        return ""
    return " ".join(str(part["text"]) for part in message.get("parts", []) if "text" in part)


@dataclass
class TimelineEntry:
    state: str
    timestamp: str
    text: str
    since_start: str
    took: str


def timeline(history: list[dict[str, Any]]) -> list[TimelineEntry]:
    """Status history with the time since the first status and how long each status lasted (until the next)."""
    times = [parse_time(status.get("timestamp")) for status in history]
    start = next((t for t in times if t is not None), None)
    entries = []
    for index, status in enumerate(history):
        at = times[index]
        after = times[index + 1] if index + 1 < len(times) else None
        entries.append(
            TimelineEntry(
                state=short_state(status.get("state")),
                timestamp=status.get("timestamp", ""),
                text=message_text(status.get("message")),
                since_start=duration((at - start).total_seconds()) if at and start else "",
                took=duration((after - at).total_seconds()) if at and after else "",
            )
        )
    return entries


def child_ids(task: dict[str, Any]) -> list[str]:
    """The child tasks a workflow names in its artifacts' metadata (childTaskId, childTaskIds)."""
    found: list[str] = []
    for artifact in task.get("artifacts") or []:
        metadata = artifact.get("metadata") or {}
        found += [metadata["childTaskId"]] if isinstance(metadata.get("childTaskId"), str) else []
        found += [i for i in metadata.get("childTaskIds") or [] if isinstance(i, str)]
        for part in artifact.get("parts", []):
            data = part.get("data")
            if isinstance(data, dict):
                found += [i for i in data.get("childTaskIds") or [] if isinstance(i, str)]
    return list(dict.fromkeys(found))


def parent_of(task: dict[str, Any]) -> str:
    """The workflow task this one is a step of: its first message's referenceTaskIds / metadata.parentTaskId."""
    for message in task.get("history") or []:
        parent = (message.get("metadata") or {}).get("parentTaskId")
        if isinstance(parent, str) and parent:
            return parent
        references = message.get("referenceTaskIds") or []
        if references:
            return str(references[0])
    return ""


def step_of(task: dict[str, Any]) -> str:
    for message in task.get("history") or []:
        step = (message.get("metadata") or {}).get("step")
        if isinstance(step, str):
            return step
    return ""


def pool_of(card: dict[str, Any]) -> str:
    """The pool a replica serves, from its card's pool extension ("" when it serves alone)."""
    for extension in (card.get("capabilities") or {}).get("extensions") or []:
        if extension.get("uri") == POOL_EXTENSION:
            return str((extension.get("params") or {}).get("pool") or "")
    return ""


def artifact_downloads(task_id: str, artifact: dict[str, Any]) -> list[PartView]:
    base = f"/tasks/{task_id}/artifacts/{artifact.get('artifactId', '')}/parts"
    return [part_view(part, f"{base}/{index}") for index, part in enumerate(artifact.get("parts", []))]
