"""The data analyst agent as a real process on a real broker: its retained card, statistics of a data-part table
and of CSV text, a rejection, and a clean SIGTERM exit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.agent_testing import agent_process
from devstack.fixtures import BrokerHandle

ORG, UNIT = "acme", "default"
CSV = "region;sales\nnorth;120\nsouth;95\nnorth;80\neast;\n"
TABLE = {"columns": ["region", "sales"], "rows": [["north", 120], ["south", 95], ["north", 80], ["east", None]]}


def statistics_of(items: list[dict[str, Any]]) -> dict[str, Any]:
    assert items[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED", items[-1]
    (update,) = [item["artifactUpdate"] for item in items if "artifactUpdate" in item]
    assert update["artifact"]["name"] == "statistics" and update["lastChunk"] is True
    return update["artifact"]["parts"][1]["data"]


async def test_analyst_agent_describes_tables_over_mqtt(broker: BrokerHandle, tmp_path: Path) -> None:
    async with agent_process(broker, tmp_path, "agent_analyst", "analyst") as agent:
        card = agent.card
        assert card["name"] == "Data Analyst Agent"
        assert [skill["id"] for skill in card["skills"]] == ["analyze-table"]
        assert len(card["skills"][0]["examples"]) == 3
        from_data = await agent.stream({"parts": [{"data": TABLE}]})
        from_csv = await agent.stream({"parts": [{"text": CSV}]})
        ragged = await agent.stream({"parts": [{"text": "region,sales\nnorth,120,extra\n"}]})

    stats = statistics_of(from_data)
    assert stats["rowCount"] == 4 and stats["numericColumns"] == ["sales"] and stats["textColumns"] == ["region"]
    region, sales = stats["columns"]
    assert sales == {
        "name": "sales",
        "type": "numeric",
        "count": 3,
        "missing": 1,
        "mean": 98.333333,
        "median": 95,
        "min": 80,
        "max": 120,
        "stdev": 20.207259,
        "sum": 295,
    }
    assert region["distinct"] == 3 and region["top"][0] == {"value": "north", "count": 2}
    assert statistics_of(from_csv) == stats  # the same table as CSV text

    final = ragged[-1]["statusUpdate"]["status"]
    assert final["state"] == "TASK_STATE_REJECTED"
    assert final["message"]["parts"][0]["text"] == "ragged rows: CSV line 2 has 3 fields, the header has 2"
    assert not any("artifactUpdate" in item for item in ragged)
