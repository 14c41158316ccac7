"""A2A v1.0 JSON-RPC on the wire, as load generators need it: request builders, reading a task's state from a
result, and an SSE frame parser. Plain dicts and bytes (no SDK types), so Locust users and the benchmark's
asyncio drivers share them."""

from __future__ import annotations

import json
import uuid
from typing import Any

A2A_HEADERS = {"Content-Type": "application/json", "A2A-Version": "1.0"}
"""Headers of every JSON-RPC call to an A2A v1.0 server (the SDK refuses a call without A2A-Version)."""

COMPLETED = "TASK_STATE_COMPLETED"
TERMINAL_STATES = frozenset({COMPLETED, "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"})
INTERRUPTED_STATES = frozenset({"TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED"})
STREAM_END_STATES = TERMINAL_STATES | INTERRUPTED_STATES


def filler_text(size: int) -> str:
    """A readable payload of exactly `size` characters (at least 1)."""
    words = "the quick brown fox jumps over the lazy dog "
    return (words * (size // len(words) + 1))[: max(size, 1)]


def user_message(text: str, *, task_id: str | None = None, context_id: str | None = None) -> dict[str, Any]:
    """A ROLE_USER message with one text part."""
    message: dict[str, Any] = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]}
    if task_id:
        message["taskId"] = task_id
    if context_id:
        message["contextId"] = context_id
    return message


def send_params(
    text: str,
    *,
    skill: str | None = None,
    task_id: str | None = None,
    context_id: str | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """SendMessage / SendStreamingMessage params; `skill` and other keywords go to the request's metadata."""
    if skill is not None:
        metadata["skill"] = skill
    params: dict[str, Any] = {"message": user_message(text, task_id=task_id, context_id=context_id)}
    if metadata:
        params["metadata"] = metadata
    return params


def rpc(method: str, params: dict[str, Any], request_id: int | str = 1) -> dict[str, Any]:
    """A JSON-RPC 2.0 request object."""
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def rpc_bytes(method: str, params: dict[str, Any], request_id: int | str = 1) -> bytes:
    """A JSON-RPC request as compact UTF-8 JSON."""
    return json.dumps(rpc(method, params, request_id), separators=(",", ":")).encode()


def result_task(result: dict[str, Any]) -> dict[str, Any] | None:
    """The Task of a SendMessage result (`{"task": ...}`), a GetTask result (the task itself), or None."""
    if "task" in result and isinstance(result["task"], dict):
        return result["task"]
    if "status" in result and "id" in result:
        return result
    return None


def stream_state(result: dict[str, Any]) -> str | None:
    """The task state a StreamResponse (or SendMessage result) carries, if any."""
    task = result_task(result)
    if task is not None:
        return task.get("status", {}).get("state")
    update = result.get("statusUpdate")
    if isinstance(update, dict):
        return update.get("status", {}).get("state")
    return None


def ends_stream(result: dict[str, Any]) -> bool:
    """Whether this item is the last of a stream (terminal or interrupted state)."""
    return stream_state(result) in STREAM_END_STATES


def artifact_text(task: dict[str, Any]) -> str:
    """The text parts of a task's artifacts, joined by newlines."""
    texts = [
        part["text"]
        for artifact in task.get("artifacts") or []
        for part in artifact.get("parts") or []
        if isinstance(part.get("text"), str)
    ]
    return "\n".join(texts)


class RpcError(Exception):
    """A JSON-RPC error answer, or an answer that is not what the call expects."""


def rpc_result(body: Any) -> dict[str, Any]:
    """The `result` of a JSON-RPC response; RpcError for an error or a malformed body."""
    if not isinstance(body, dict):
        raise RpcError(f"not a JSON-RPC response: {str(body)[:200]}")
    if body.get("error") is not None:
        error = body["error"]
        raise RpcError(f"{error.get('code')}: {error.get('message')}")
    result = body.get("result")
    if not isinstance(result, dict):
        raise RpcError(f"no result in {str(body)[:200]}")
    return result


class SseParser:
    """Incremental Server-Sent Events parser: feed bytes as they arrive, get each event's JSON `data`.

    Frames end with a blank line; the a2a-sdk server separates lines with CRLF, other servers with LF."""

    def __init__(self) -> None:
        self._buffer = b""
        self._carry = b""

    def feed(self, chunk: bytes) -> list[Any]:
        """The JSON payloads of every event completed by this chunk."""
        raw = self._carry + chunk
        # a CR at the very end may be the first half of a CRLF: keep it until the next chunk says
        self._carry = b"\r" if raw.endswith(b"\r") else b""
        if self._carry:
            raw = raw[:-1]
        self._buffer += raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[Any] = []
        while b"\n\n" in self._buffer:
            frame, self._buffer = self._buffer.split(b"\n\n", 1)
            data = [line[5:].lstrip(b" ") for line in frame.split(b"\n") if line.startswith(b"data:")]
            if data:
                events.append(json.loads(b"\n".join(data)))
        return events
