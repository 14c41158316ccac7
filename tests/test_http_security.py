"""The coordinator's HTTP face: credentials required (declared on the public card), no detail leaked, a body size
limit and a per-client rate limit — on a real coordinator with tight limits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from devstack.stack import Ports, Stack
from tests.conftest import auth_headers

LIMITS = {"MESH_RATE_LIMIT": "2", "MESH_RATE_BURST": "5", "MESH_MAX_BODY_BYTES": "20000"}
RPC = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "00000000-0000-4000-8000-000000000000"}}
VERSION = {"A2A-Version": "1.0"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(run_dir=tmp_path_factory.mktemp("guarded"), ports=Ports.random(), agents={}, extra_env=LIMITS)
    stack.start()
    yield stack
    stack.stop()


async def test_requests_without_valid_credentials_get_401_and_no_detail(guarded: Stack) -> None:
    async with httpx.AsyncClient(base_url=guarded.coordinator_url, timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic eA=="}):
            for method, path in (("POST", "/"), ("POST", "/message:send"), ("GET", "/tasks"), ("GET", "/tasks/x")):
                response = await http.request(method, path, json=RPC, headers={**VERSION, **headers})
                assert response.status_code == 401, (headers, path)
                assert response.json() == {"error": "unauthorized"}
                assert response.headers["www-authenticate"].startswith("Bearer")


async def test_the_key_works_as_bearer_token_or_x_api_key(guarded: Stack) -> None:
    async with httpx.AsyncClient(base_url=guarded.coordinator_url, timeout=10) as http:
        bearer = await http.post("/", json=RPC, headers={**VERSION, **auth_headers(guarded)})
        header = await http.post("/", json=RPC, headers={**VERSION, "X-API-Key": guarded.api_key})
    for response in (bearer, header):
        assert response.status_code == 200 and response.json()["error"]["code"] == -32001  # task not found: let in


async def test_the_agent_card_is_public_and_declares_the_schemes(guarded: Stack) -> None:
    async with httpx.AsyncClient(base_url=guarded.coordinator_url, timeout=10) as http:
        card = (await http.get("/.well-known/agent-card.json")).json()
        assert (await http.get("/healthz")).status_code == 200
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert card["securitySchemes"]["apiKey"]["apiKeySecurityScheme"] == {
        "location": "header",
        "name": "X-API-Key",
        "description": "the same API key, in a header",
    }
    assert {"bearer", "apiKey"} == {next(iter(r["schemes"])) for r in card["securityRequirements"]}


async def test_oversized_bodies_are_refused_with_413(guarded: Stack) -> None:
    big = {**RPC, "params": {"id": "x" * 30_000}}
    async with httpx.AsyncClient(base_url=guarded.coordinator_url, timeout=10) as http:
        response = await http.post("/", json=big, headers={**VERSION, **auth_headers(guarded)})
        assert response.status_code == 413 and "bytes" in response.json()["error"]
        assert (await http.post("/", json=RPC, headers={**VERSION, **auth_headers(guarded)})).status_code == 200


async def test_a_client_over_its_rate_gets_429_with_retry_after_then_recovers(guarded: Stack) -> None:
    async with httpx.AsyncClient(base_url=guarded.coordinator_url, timeout=10) as http:
        await asyncio.sleep(3)  # the bucket refills from the earlier tests
        codes = [
            (await http.post("/", json=RPC, headers={**VERSION, **auth_headers(guarded)})).status_code
            for _ in range(12)
        ]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        limited = await http.post("/", json=RPC, headers={**VERSION, **auth_headers(guarded)})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        await asyncio.sleep(1.2)
        assert (await http.post("/", json=RPC, headers={**VERSION, **auth_headers(guarded)})).status_code == 200
