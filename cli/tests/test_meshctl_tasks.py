"""meshctl over the real mesh: agents, send, get, list, cancel, and the errors people meet."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from click.testing import Result

from devstack.processes import free_port


def parsed(result: Result) -> Any:
    assert result.stdout.strip(), f"no output (exit {result.exit_code}): {result.output}"
    return json.loads(result.stdout)


def table_cells(line: str) -> list[str]:
    """The cells of a rich table's body row (empty for borders and headers)."""
    cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
    return cells if len(cells) > 1 and "/" in cells[0] else []


def test_agents_lists_echo_and_research_online(meshctl) -> None:
    table = meshctl("agents")
    assert table.exit_code == 0, table.output
    rows = {cells[0].split("/")[-1]: cells for cells in map(table_cells, table.stdout.splitlines()) if cells}
    assert rows["echo"][1] == "online" and "echo" in rows["echo"][3]
    assert rows["research"][1] == "online" and "research" in rows["research"][3].split(", ")

    records = parsed(meshctl("agents", "--json"))["agents"]
    by_id = {record["agentId"]: record for record in records}
    assert by_id["echo"]["status"] == "online" and "echo" in by_id["echo"]["skills"]
    assert by_id["research"]["status"] == "online"


def test_agents_filters_by_skill_and_status(meshctl) -> None:
    records = parsed(meshctl("--json", "agents", "--skill", "research", "--status", "online"))["agents"]
    assert records and all("research" in record["skills"] for record in records)
    bad = meshctl("agents", "--status", "asleep")
    assert bad.exit_code == 1 and "status must be online or offline" in bad.output


def test_send_streams_progress_and_completes(meshctl) -> None:
    result = meshctl("send", "hello", "--skill", "echo")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "hello" in lines
    assert any("SUBMITTED" in line for line in lines) and any("WORKING" in line for line in lines)
    assert lines[-1].startswith("COMPLETED  task ")


def test_send_json_is_the_final_task(meshctl) -> None:
    task = parsed(meshctl("send", "hello json", "--skill", "echo", "--json"))
    assert uuid.UUID(task["id"]) and task["status"]["state"] == "TASK_STATE_COMPLETED"
    assert task["artifacts"][0]["parts"][0]["text"] == "hello json"

    blocking = parsed(meshctl("--json", "send", "--no-stream", "--agent", "echo", "--data", '{"n": 3, "xs": [1, 2]}'))
    assert blocking["status"]["state"] == "TASK_STATE_COMPLETED"
    assert blocking["artifacts"][0]["parts"][0]["data"] == {"n": 3, "xs": [1, 2]}


def test_send_data_part_prints_as_json(meshctl) -> None:
    result = meshctl("send", "--skill", "echo", "--no-stream", "--data", '{"answer": 42}')
    assert result.exit_code == 0, result.output
    assert '"answer": 42' in result.stdout


def test_rejected_task_exits_1_with_the_reason(meshctl) -> None:
    result = meshctl("send", "x", "--skill", "echo", "--meta", "delayMs=-5")
    assert result.exit_code == 1
    assert "REJECTED" in result.stdout and "delayMs" in result.stdout


def test_unknown_skill_and_bad_input_are_clear_errors(meshctl) -> None:
    unknown = meshctl("send", "hi", "--skill", "no-such-skill")
    assert unknown.exit_code == 1 and "unknown skill 'no-such-skill'" in unknown.stderr
    assert "Traceback" not in unknown.output
    assert meshctl("send", "--skill", "echo").exit_code == 2
    assert meshctl("send", "x", "--data", "{nope").exit_code == 2
    assert meshctl("send", "x", "--meta", "novalue").exit_code == 2
    assert meshctl("list", "--state", "sleepy").exit_code == 2


def test_get_and_list_show_a_finished_task(meshctl) -> None:
    context_id = str(uuid.uuid4())
    task = parsed(meshctl("send", "remember me", "--skill", "echo", "--context-id", context_id, "--json"))

    shown = meshctl("get", task["id"], "--history", "1")
    assert shown.exit_code == 0, shown.output
    assert task["id"] in shown.stdout and "COMPLETED" in shown.stdout and "remember me" in shown.stdout
    assert "history (1 messages)" in shown.stdout

    fetched = parsed(meshctl("get", task["id"], "--json", "--history", "0"))
    assert fetched["status"]["state"] == "TASK_STATE_COMPLETED" and not fetched.get("history")

    page = parsed(meshctl("list", "--context", context_id, "--json"))
    assert [item["id"] for item in page["tasks"]] == [task["id"]] and page["totalSize"] == 1
    table = meshctl("list", "--context", context_id, "--state", "completed")
    assert table.exit_code == 0 and task["id"] in table.stdout
    assert "0 of 0" in meshctl("list", "--context", context_id, "--state", "failed").stdout

    record = _eventually_recorded(meshctl, task["id"])
    assert record["agent"].endswith("/echo")
    assert [item["kind"] for item in record["events"]] == ["task", "statusUpdate", "artifactUpdate", "statusUpdate"]


def _eventually_recorded(meshctl, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        result = meshctl("get", task_id, "--events", "--json")
        record = parsed(result)["record"] if result.exit_code == 0 else None
        if record and len(record["events"]) == 4:
            human = meshctl("get", task_id, "--events")
            assert "artifactUpdate" in human.stdout and "echo" in human.stdout
            return record
        assert time.monotonic() < deadline, f"task {task_id} not fully recorded: {result.output}"
        time.sleep(0.2)


def test_list_pages_with_a_token(meshctl) -> None:
    context_id = str(uuid.uuid4())
    ids = {parsed(meshctl("send", f"n{i}", "--context-id", context_id, "--json"))["id"] for i in range(3)}
    # straight after the sends: the coordinator lists the tasks it accepted before the store records them
    first = parsed(meshctl("list", "--context", context_id, "--page-size", "2", "--json"))
    assert len(first["tasks"]) == 2 and first["nextPageToken"] and first["totalSize"] == 3
    human = meshctl("list", "--context", context_id, "--page-size", "2")
    human_token = human.stdout.split("--page-token ", 1)[1].split()[0]  # a listing of its own: its own token
    second = parsed(meshctl("list", "--context", context_id, "--page-token", first["nextPageToken"], "--json"))
    listed = [task["id"] for task in first["tasks"] + second["tasks"]]
    assert sorted(listed) == sorted(ids) and not second.get("nextPageToken")
    rest = parsed(meshctl("list", "--context", context_id, "--page-token", human_token, "--json"))
    assert len(rest["tasks"]) == 1 and rest["tasks"][0]["id"] in ids and not rest.get("nextPageToken")


def test_get_of_an_unknown_task_exits_1_with_a_clear_message(meshctl) -> None:
    missing = str(uuid.uuid4())
    result = meshctl("get", missing)
    assert result.exit_code == 1
    assert f"Task {missing} not found" in result.stderr and "Traceback" not in result.output
    assert meshctl("cancel", missing).exit_code == 1


def test_no_wait_then_cancel_a_slow_task(meshctl) -> None:
    started = meshctl("send", "slow", "--skill", "echo", "--meta", "delayMs=30000", "--no-wait")
    assert started.exit_code == 0, started.output
    task_id = started.stdout.split("task ", 1)[1].split()[0]
    assert f"meshctl cancel {task_id}" in started.stdout

    canceled = meshctl("cancel", task_id)
    assert canceled.exit_code == 0, canceled.output
    assert canceled.stdout.startswith("CANCELED") and task_id in canceled.stdout
    assert parsed(meshctl("get", task_id, "--json"))["status"]["state"] == "TASK_STATE_CANCELED"

    again = meshctl("cancel", task_id)
    assert again.exit_code == 1 and "already CANCELED" in again.stderr


def test_no_wait_json_has_the_running_task(meshctl) -> None:
    task = parsed(meshctl("--json", "send", "later", "--meta", "delayMs=20000", "--meta", 'skill="echo"', "--no-wait"))
    assert task["status"]["state"] in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
    assert parsed(meshctl("cancel", task["id"], "--json"))["status"]["state"] == "TASK_STATE_CANCELED"


def test_unreachable_services_are_named(meshctl) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args in (["get", "x"], ["send", "hi"], ["list"]):
        result = meshctl("--coordinator", nowhere, *args)
        assert result.exit_code == 1 and f"cannot reach the coordinator at {nowhere}" in result.stderr
    result = meshctl("--registry", nowhere, "agents")
    assert result.exit_code == 1 and f"cannot reach the registry at {nowhere}" in result.stderr
    result = meshctl("--mqtt-port", str(free_port()), "events", "--seconds", "1")
    assert result.exit_code == 1 and "cannot reach the MQTT broker" in result.stderr
