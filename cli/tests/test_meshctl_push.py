"""meshctl's push configs (set, get, list, delete, over JSON-RPC and gRPC), the refusal of a forbidden webhook, the
dead letters of a webhook that never answers, and a send over gRPC, against a stack that allow-lists 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import Result

from devstack.processes import free_port
from devstack.stack import Ports, Stack

PUSH_ENV = {"MESH_PUSH_ALLOWED_NETWORKS": '["127.0.0.1/32"]', "MESH_PUSH_BACKOFF": "0.1", "MESH_PUSH_MAX_ATTEMPTS": "2"}


@pytest.fixture(scope="module")
def pushing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("meshctl-push"),
        ports=Ports.random(),
        agents={"echo": "agent_echo"},
        extra_env=PUSH_ENV,
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def meshctl(pushing: Stack, meshctl_runner: Callable[[dict[str, str]], Callable[..., Result]]) -> Callable[..., Result]:
    return meshctl_runner(
        {"MESH_COORDINATOR_URL": pushing.coordinator_url, "MESH_API_KEY": pushing.api_key, "COLUMNS": "200"}
    )


def parsed(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def new_task(meshctl: Callable[..., Result], delay_ms: int = 0) -> str:
    task = parsed(meshctl("--json", "send", "push me", "--skill", "echo", "--meta", f"delayMs={delay_ms}", "--no-wait"))
    return str(task["id"])


@pytest.mark.parametrize("binding", [[], ["--grpc"]], ids=["jsonrpc", "grpc"])
def test_set_get_list_delete(meshctl: Callable[..., Result], binding: list[str]) -> None:
    task_id = new_task(meshctl)
    hook = f"http://127.0.0.1:{free_port()}/hook"
    args = ["push", "set", task_id, hook, "--id", "h1", "--scheme", "Bearer", "--credentials", "s3cret"]
    saved = parsed(meshctl(*binding, "--json", *args))["configs"][0]
    assert (saved["id"], saved["url"], saved["authentication"]["scheme"]) == ("h1", hook, "Bearer")
    shown = meshctl(*binding, "push", "list", task_id)
    assert shown.exit_code == 0 and "h1" in shown.stdout and "s3cret" not in shown.stdout  # secrets stay hidden
    got = parsed(meshctl(*binding, "--json", "push", "get", task_id, "h1"))["configs"][0]
    assert got["authentication"]["credentials"] == "s3cret"
    assert meshctl(*binding, "push", "delete", task_id, "h1").exit_code == 0
    assert parsed(meshctl(*binding, "--json", "push", "list", task_id))["configs"] == []
    missing = meshctl(*binding, "push", "get", task_id, "h1")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_a_forbidden_webhook_is_refused_with_the_reason(meshctl: Callable[..., Result]) -> None:
    task_id = new_task(meshctl)
    refused = meshctl("push", "set", task_id, "http://169.254.169.254/latest/meta-data/")
    assert refused.exit_code == 1 and "refused" in refused.output and "MESH_PUSH_ALLOWED_NETWORKS" in refused.output


def test_a_webhook_that_never_answers_leaves_dead_letters(meshctl: Callable[..., Result]) -> None:
    task_id = new_task(meshctl, delay_ms=1500)
    assert meshctl("push", "set", task_id, f"http://127.0.0.1:{free_port()}/hook", "--id", "dead").exit_code == 0
    deadline = time.monotonic() + 60
    letters: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not letters:
        body = parsed(meshctl("--json", "push", "dead-letters"))
        letters = [letter for letter in body["deadLetters"] if letter["taskId"] == task_id]
        time.sleep(0.5)
    assert letters and all(letter["attempts"] == 2 and letter["configId"] == "dead" for letter in letters)
    table = meshctl("push", "dead-letters")
    assert table.exit_code == 0 and task_id[:8] in table.stdout


def test_send_over_grpc(meshctl: Callable[..., Result]) -> None:
    task = parsed(meshctl("--grpc", "--json", "send", "hello grpc", "--skill", "echo"))
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    assert task["artifacts"][0]["parts"][0]["text"] == "hello grpc"
