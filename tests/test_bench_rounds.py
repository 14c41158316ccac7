"""The benchmark compares scenarios that ran together: which ones are grouped, and the ratio round by round."""

from __future__ import annotations

from loadtests.bench.report import targets, twin_key
from loadtests.bench.runner import _groups


def test_compared_scenarios_next_to_each_other_are_measured_together() -> None:
    names = ("floor", "binding", "sdk-mqtt", "http-face", "sdk-http", "pool", "record", "record-postgres")
    assert _groups(names) == [
        ("floor", "binding", "sdk-mqtt"),
        ("http-face", "sdk-http"),
        ("pool",),
        ("record",),
        ("record-postgres",),
    ]
    # apart, or across groups, they are not
    assert _groups(("floor", "pool", "binding")) == [("floor",), ("pool",), ("binding",)]
    assert _groups(("sdk-mqtt", "sdk-http")) == [("sdk-mqtt",), ("sdk-http",)]


def _run(key: str, best: float, rounds: list[float]) -> dict[str, object]:
    return {"key": key, "tasks_per_s": best, "rounds_tasks_per_s": rounds}


def test_targets_report_the_best_rounds_and_each_round() -> None:
    data = {
        "scenarios": [_run("floor", 500.0, [500.0, 400.0]), _run("binding", 290.0, [290.0, 280.0])],
        "idle_rss_mb": {},
    }
    binding = targets(data)[0]
    assert binding["measured"] == "0.58x floor (best rounds; round by round: 0.58, 0.70)"
    assert binding["met"] is False


def test_the_task_store_targets_compare_each_path_with_and_without_it() -> None:
    runs = [("binding", 300.0), ("record", 250.0), ("record-postgres", 210.0)]
    runs += [("http-face", 200.0), ("deployed", 150.0)]
    data = {"scenarios": [_run(key, rate, [rate]) for key, rate in runs], "idle_rss_mb": {}}
    [record] = [target for target in targets(data) if "task store recording on SQLite" in target["target"]]
    [postgres] = [target for target in targets(data) if "task store recording on PostgreSQL" in target["target"]]
    [deployed] = [target for target in targets(data) if target["target"].startswith("deployed path")]
    assert (record["measured"], record["met"]) == ("0.83x", True)  # record / binding
    assert (postgres["measured"], postgres["met"]) == ("0.70x", False)  # record-postgres / binding
    assert (deployed["measured"], deployed["met"]) == ("0.75x", False)  # deployed / HTTP face


def test_the_task_store_targets_show_the_ratio_the_cpu_per_task_allows() -> None:
    """Beside the measured ratio, the one the paths' CPU per task allows: binding 2.0 ms a task (services and
    client), record 2.5 ms, so 0.80x; the target still reads the measured one."""

    def run(key: str, rate: float, service: float, client: float) -> dict[str, object]:
        return {**_run(key, rate, [rate]), "service_cpu_ms_per_task": service, "client_cpu_ms_per_task": client}

    scenarios = [run("binding", 800.0, 1.2, 0.8), run("record", 600.0, 1.7, 0.8), run("http-face", 300.0, 3.0, 1.0)]
    scenarios.append(run("deployed", 270.0, 3.5, 1.0))
    [record, deployed] = [
        target
        for target in targets({"scenarios": scenarios, "idle_rss_mb": {}})
        if "recording on SQLite" in target["target"] or target["target"].startswith("deployed path")
    ]
    assert (record["measured"], record["met"]) == ("0.75x (by CPU per task: 0.80x)", False)
    assert (deployed["measured"], deployed["met"]) == ("0.90x (by CPU per task: 0.89x)", True)


def test_the_task_store_targets_compare_with_the_twin_measured_beside_them() -> None:
    """With the twin's binding and HTTP face in the run, each store target is measured against them round by round,
    and the ratio against the first stack's (minutes earlier) is shown beside it, not used."""
    runs = [("binding", 900.0, [900.0]), ("http-face", 300.0, [300.0])]
    runs += [("record", 640.0, [600.0, 640.0]), (twin_key("binding", "record"), 760.0, [700.0, 760.0])]
    runs += [("deployed", 230.0, [230.0, 200.0]), (twin_key("http-face", "deployed"), 320.0, [320.0, 310.0])]
    data = {"scenarios": [_run(key, rate, rounds) for key, rate, rounds in runs], "idle_rss_mb": {}}
    [record] = [target for target in targets(data) if "task store recording on SQLite" in target["target"]]
    [deployed] = [target for target in targets(data) if target["target"].startswith("deployed path")]
    measured = "0.84x (best rounds; round by round: 0.86, 0.84); against the `binding` measured earlier: 0.71x"
    assert (record["measured"], record["met"]) == (measured, True)
    measured = "0.72x (best rounds; round by round: 0.72, 0.65); against the `http-face` measured earlier: 0.77x"
    assert (deployed["measured"], deployed["met"]) == (measured, False)


def test_a_twin_that_completed_nothing_leaves_the_earlier_comparison() -> None:
    runs = [("binding", 800.0, [800.0]), ("record", 680.0, [680.0]), (twin_key("binding", "record"), 0.0, [0.0])]
    data = {"scenarios": [_run(key, rate, rounds) for key, rate, rounds in runs], "idle_rss_mb": {}}
    [record] = [target for target in targets(data) if "task store recording on SQLite" in target["target"]]
    assert (record["measured"], record["met"]) == ("0.85x", True)
