"""How the coordinator's task store client takes each answer, against a real HTTP server (uvicorn on loopback) that
answers whatever status the path names: the same refusals mean the same on a GET and on the batched POST, except that
only the POST takes 403/404/405 as a store without the route."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from devstack.processes import free_port
from mesh_coordinator.directory import DependencyError, StatesUnsupported, TaskStoreClient

WORDS = "the store's own words"


def answer(request: Request) -> Response:
    """The answer the path asks for: a status code, or `nonsense` (200, not JSON)."""
    wanted = request.path_params["answer"]
    if wanted == "nonsense":
        return PlainTextResponse("not JSON")
    if wanted == "task":
        return JSONResponse({"id": "t1", "contextId": "c", "status": {"state": "TASK_STATE_COMPLETED"}})
    if wanted == "states":
        return JSONResponse({"states": {"t1": "TASK_STATE_COMPLETED"}})
    return JSONResponse({"error": WORDS}, status_code=int(wanted))


async def get_answer(request: Request) -> Response:
    return answer(request)


async def post_answer(request: Request) -> Response:
    await request.body()
    return answer(request)


@pytest.fixture
async def store_url() -> AsyncIterator[str]:
    routes = [
        Route("/tasks/{answer}", get_answer, methods=["GET"]),
        Route("/states/{answer}", post_answer, methods=["POST"]),
    ]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes), "127.0.0.1", port, log_level="error"))
    serving = asyncio.create_task(server.serve())
    for _ in range(200):  # at most 10 s
        if server.started or serving.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the stand-in store never started"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(serving, 10)


async def read(store_url: str, how: str, wanted: str) -> object:
    """A GET (`get_task`) or a batched POST (`states`) that the server answers with `wanted`."""
    async with httpx.AsyncClient(timeout=10) as http:
        store = TaskStoreClient(store_url, http)
        if how == "GET":
            return await store.get_task(wanted)
        store.states_path = f"/states/{wanted}"
        return await store.states(["t1"])


@pytest.mark.parametrize("how", ["GET", "POST"])
async def test_a_refused_question_is_the_readers_error_in_the_stores_words(store_url: str, how: str) -> None:
    with pytest.raises(ValueError, match=WORDS) as raised:
        await read(store_url, how, "400")
    assert not isinstance(raised.value, DependencyError)


@pytest.mark.parametrize("how", ["GET", "POST"])
@pytest.mark.parametrize("wanted", ["500", "503", "401", "nonsense"])
async def test_a_failing_store_is_a_dependency_error_not_a_missing_route(store_url: str, how: str, wanted: str) -> None:
    with pytest.raises(DependencyError) as raised:
        await read(store_url, how, wanted)
    assert not isinstance(raised.value, StatesUnsupported)


@pytest.mark.parametrize("wanted", ["403", "404", "405"])
async def test_only_the_batched_read_takes_403_404_405_as_a_store_without_the_route(
    store_url: str, wanted: str
) -> None:
    with pytest.raises(StatesUnsupported, match=f"{wanted} to POST /states/{wanted}"):
        await read(store_url, "POST", wanted)
    if wanted == "404":
        assert await read(store_url, "GET", wanted) is None  # a task the store lacks
    else:
        with pytest.raises(DependencyError) as raised:
            await read(store_url, "GET", wanted)
        assert not isinstance(raised.value, StatesUnsupported)


async def test_a_good_answer_is_read(store_url: str) -> None:
    task = await read(store_url, "GET", "task")
    assert getattr(task, "id", None) == "t1"
    states = await read(store_url, "POST", "states")
    assert states == {"t1": "TASK_STATE_COMPLETED"}


@pytest.mark.parametrize("how", ["GET", "POST"])
async def test_no_store_listening_is_a_dependency_error(how: str) -> None:
    with pytest.raises(DependencyError, match="task store unavailable") as raised:
        await read(f"http://127.0.0.1:{free_port()}", how, "states" if how == "POST" else "task")
    assert not isinstance(raised.value, StatesUnsupported)
