"""The console's HTTP rules, over the running test mesh (the `mesh` fixture starts the console with it): who may see
a page, what a cross-site request gets, the headers every page carries, and what bad input from the Send page gets."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from a2amesh.binding.wire import POOL_EXTENSION
from devstack.stack import Stack
from mesh_console.app import send_request
from mesh_console.security import KEY_COOKIE
from mesh_console.views import child_ids, data_view, part_view, pool_of, timeline


@pytest.fixture
def anonymous(mesh: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.console_url, timeout=30) as client:
        yield client


@pytest.fixture
def signed_in(mesh: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.console_url, timeout=30, cookies={KEY_COOKIE: mesh.api_key}) as client:
        yield client


@pytest.mark.parametrize("path", ["/agents", "/tasks", "/send", "/live"])
def test_pages_ask_for_the_key_first(anonymous: httpx.Client, path: str) -> None:
    response = anonymous.get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_a_key_the_coordinator_refuses_opens_nothing(mesh: Stack) -> None:
    with httpx.Client(base_url=mesh.console_url, cookies={KEY_COOKIE: "guessed"}, timeout=30) as client:
        assert client.get("/tasks").status_code == 303
        assert client.post("/api/send", json={"text": "x"}, headers={"Origin": mesh.console_url}).status_code == 401


def test_signing_in_sets_an_httponly_strict_session_cookie(mesh: Stack, anonymous: httpx.Client) -> None:
    form = {"key": mesh.api_key, "next": "/tasks"}
    response = anonymous.post("/login", data=form, headers={"Origin": mesh.console_url})
    assert response.status_code == 303 and response.headers["location"] == "/tasks"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age" not in cookie and "expires" not in cookie
    refused = anonymous.post("/login", data={"key": "wrong"}, headers={"Origin": mesh.console_url})
    assert refused.status_code == 401 and "refused" in refused.text


def test_sign_in_goes_only_to_pages_of_the_console(mesh: Stack, anonymous: httpx.Client) -> None:
    form = {"key": mesh.api_key, "next": "//evil.example/x"}
    response = anonymous.post("/login", data=form, headers={"Origin": mesh.console_url})
    assert response.headers["location"] == "/agents"


def test_cross_site_posts_are_refused(mesh: Stack, signed_in: httpx.Client) -> None:
    for path in ("/tasks/x/cancel", "/tasks/x/answer", "/api/send"):
        assert signed_in.post(path, headers={"Origin": "http://evil.example"}).status_code == 403, path
        assert signed_in.post(path).status_code == 403, f"{path} without an Origin"


def test_every_page_has_a_strict_content_security_policy(signed_in: httpx.Client) -> None:
    for path in ("/agents", "/tasks", "/send", "/live", "/login"):
        response = signed_in.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in response.text and "onclick" not in response.text, f"{path}: inline script"


def test_an_unknown_task_is_a_clear_404(signed_in: httpx.Client) -> None:
    response = signed_in.get("/tasks/no-such-task")
    assert response.status_code == 404 and "not found" in response.text


def test_bad_send_input_is_a_clear_400(mesh: Stack, signed_in: httpx.Client) -> None:
    origin = {"Origin": mesh.console_url}
    cases = [
        ({"text": ""}, "write a message"),
        ({"data": "{nope"}, "data is not JSON"),
        ({"text": "x", "metadata": "[]"}, "object"),
    ]
    for body, reason in cases:
        response = signed_in.post("/api/send", json=body, headers=origin)
        assert response.status_code == 400 and reason in response.json()["error"], (body, response.text)
    unknown = signed_in.post("/api/send", json={"text": "x", "skill": "no-such-skill"}, headers=origin)
    assert unknown.status_code == 200 and "unknown skill" in unknown.text  # the coordinator's refusal, relayed


def test_send_request_carries_text_data_file_and_routing() -> None:
    raw = base64.b64encode(b"a,b\n1,2\n").decode()
    request = send_request(
        {
            "text": "hi",
            "data": '{"n": 1}',
            "file": {"name": "t.csv", "mediaType": "text/csv", "base64": raw},
            "metadata": '{"delayMs": 5}',
            "skill": "echo",
        }
    )
    parts = request["message"]["parts"]
    assert parts == [{"text": "hi"}, {"data": {"n": 1}}, {"raw": raw, "filename": "t.csv", "mediaType": "text/csv"}]
    assert request["metadata"] == {"delayMs": 5, "skill": "echo"}
    routed = send_request({"text": "hi", "skill": "echo", "agent": "acme/default/echo"})["metadata"]
    assert routed == {"agent": "acme/default/echo"}, "an agent picked wins over the skill"


def test_parts_for_people() -> None:
    assert part_view({"text": "# t", "mediaType": "text/markdown"}).kind == "markdown"
    rows = data_view([{"a": 1}, {"b": "x"}])
    assert (rows.kind, rows.columns, rows.rows) == ("rows", ["a", "b"], [["1", ""], ["", "x"]])
    assert part_view({"url": "javascript:alert(1)"}).href == "", "only web links become links"
    assert part_view({"url": "https://example.org/r.pdf"}).href == "https://example.org/r.pdf"
    stamps = [{"state": "TASK_STATE_SUBMITTED", "timestamp": "2026-01-01T00:00:00.000Z"}]
    stamps.append({"state": "TASK_STATE_COMPLETED", "timestamp": "2026-01-01T00:00:01.500Z"})
    first, last = timeline(stamps)
    assert (first.state, first.took, last.since_start) == ("submitted", "1.50 s", "1.50 s")
    task = {"artifacts": [{"metadata": {"childTaskId": "a"}}, {"parts": [{"data": {"childTaskIds": ["b", "a"]}}]}]}
    assert child_ids(task) == ["a", "b"]


def test_a_replica_names_its_pool() -> None:
    extension = {"uri": POOL_EXTENSION, "params": {"pool": "echo", "topic": "$share/echo/x"}}
    assert pool_of({"capabilities": {"extensions": [extension]}}) == "echo"
    assert pool_of({"capabilities": {}}) == ""
