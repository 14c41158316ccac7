"""Talking to the mesh over HTTP: the coordinator through the official a2a-sdk client, the registry and the task
store through their plain JSON APIs. Every failure leaves here as a `CliError` with a message for people."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.client.errors import AgentCardResolutionError
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import A2AError

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


class CliError(Exception):
    """A failure to report in one line (no traceback) and the exit code to leave with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _unreachable(what: str, url: str, error: BaseException) -> CliError:
    reason = str(error) or type(error).__name__
    return CliError(f"cannot reach the {what} at {url} ({reason}); is the mesh running (make dev)?")


_api_key: str | None = None
_internal_tls: ssl.SSLContext | None = None
_grpc = False


def use_api_key(key: str | None) -> None:
    """The key every coordinator call presents (Authorization: Bearer); set once from the global options."""
    global _api_key
    _api_key = key


def use_grpc(enabled: bool) -> None:
    """Call the coordinator over its gRPC binding (the card's GRPC interface) instead of JSON-RPC over HTTP."""
    global _grpc
    _grpc = enabled


@asynccontextmanager
async def coordinator(url: str, *, streaming: bool = False, wait_long: bool = False) -> AsyncIterator[Client]:
    """An a2a-sdk client on the coordinator's card. `wait_long` lifts the read timeout (blocking sends and
    streams last as long as the task does; the coordinator bounds them). With --grpc the SDK's gRPC transport
    is chosen from the card (the card itself is always read over HTTP, as A2A publishes it)."""
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, read=None if wait_long else READ_TIMEOUT)
    headers = {"Authorization": f"Bearer {_api_key}"} if _api_key else {}
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as http:
        try:
            card = await A2ACardResolver(http, url).get_agent_card()
        except AgentCardResolutionError as error:
            if isinstance(error.__cause__, httpx.RequestError):
                raise _unreachable("coordinator", url, error.__cause__) from None
            raise CliError(f"no usable A2A agent card at {url}: {error.message}") from None
        config = _grpc_config(card, streaming) if _grpc else ClientConfig(httpx_client=http, streaming=streaming)
        client = ClientFactory(config).create(card)
        try:
            yield client
        except A2AError as error:
            if isinstance(error.__cause__, httpx.RequestError):
                raise _unreachable("coordinator", url, error.__cause__) from None
            raise CliError(error.message or str(error)) from None
        finally:
            if _grpc:  # the channel is the transport's own; the HTTP one shares `http`, closed below
                await client.close()


def _grpc_config(card: pb.AgentCard, streaming: bool) -> ClientConfig:
    """The SDK's gRPC transport on the card's GRPC interface, presenting the API key as call metadata."""
    if not any(interface.protocol_binding == "GRPC" for interface in card.supported_interfaces):
        raise CliError("the coordinator's card lists no gRPC interface (is MESH_GRPC_PORT set?)")
    from meshctl.grpc_auth import bearer_channel  # grpcio: only for --grpc

    return ClientConfig(
        streaming=streaming,
        supported_protocol_bindings=["GRPC"],
        grpc_channel_factory=lambda target: bearer_channel(target, _api_key),
    )


async def coordinator_json(url: str, path: str) -> Any:
    """GET one of the coordinator's own JSON resources (e.g. /push/dead-letters) with the API key."""
    headers = {"Authorization": f"Bearer {_api_key}"} if _api_key else {}
    async with httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT), headers=headers) as http:
        try:
            response = await http.get(url.rstrip("/") + path)
        except httpx.RequestError as error:
            raise _unreachable("coordinator", url, error) from None
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    if response.status_code != 200:
        detail = body.get("error") if isinstance(body, dict) else None
        raise CliError(f"coordinator: {detail or f'HTTP {response.status_code}'}")
    return body


def use_internal_tls(context: ssl.SSLContext | None) -> None:
    """Read the registry and the task store over the mesh's mutual TLS, as meshctl's own identity."""
    global _internal_tls
    _internal_tls = context


def _get_json(what: str, base_url: str, path: str, params: dict[str, str] | None = None) -> Any:
    url = base_url.rstrip("/") + path
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    try:
        response = httpx.get(url, params=params, timeout=timeout, verify=_internal_tls or True)
    except httpx.RequestError as error:
        raise _unreachable(what, base_url, error) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        detail = body.get("error") if isinstance(body, dict) else None
        raise CliError(f"{what}: {detail or f'HTTP {response.status_code}'}")
    return body


def list_agents(registry_url: str, *, skill: str | None, tag: str | None, status: str | None) -> list[dict[str, Any]]:
    """The registry's records, filtered as asked (online first, least loaded first)."""
    query = {key: value for key, value in (("skill", skill), ("tag", tag), ("status", status)) if value}
    return list(_get_json("registry", registry_url, "/agents", query)["agents"])


def task_record(store_url: str, task_id: str) -> dict[str, Any]:
    """The task store's record of a task: the agent that held it, every event and the status history. meshctl is
    an operator's tool, so it reads across callers (scope=all)."""
    try:
        return dict(_get_json("task store", store_url, f"/tasks/{task_id}/events", {"scope": "all"}))
    except CliError as error:
        if error.message.endswith("task not found"):
            raise CliError(f"Task {task_id} is not recorded in the task store") from None
        raise
