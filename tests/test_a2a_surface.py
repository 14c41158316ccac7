"""The rest of the A2A surface the coordinator serves, at the root and at each agent's endpoint: signed cards
(verified with the a2a-sdk's verifier against the published JWKS), the authenticated extended card, A2A 0.3
clients, and the gRPC binding."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.compat.v0_3 import types as types_v03
from a2a.compat.v0_3.conversions import to_core_agent_card
from a2a.types import a2a_pb2 as pb
from a2a.types import a2a_pb2_grpc
from a2a.utils.errors import A2AError
from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier
from google.protobuf.json_format import MessageToDict, ParseDict
from jwt import PyJWK

from devstack.stack import Stack
from tests.conftest import auth_headers, collect, send_request, user_message

EXAMPLE_AGENTS = {"echo", "research", "writer", "reviewer", "analyst", "workflows"}
CARD_PATHS = ["/", "/agents/echo/", "/agents/workflows/"]
"""The root's card and two agents' cards (one an example agent, one the coordinator's hosted agent)."""


def jwks_verifier(jwks: dict[str, Any], expected_jku: str):
    """The SDK's verifier, finding keys in `jwks` by kid (and only for the JWKS URL the test fetched)."""
    keys = {key["kid"]: PyJWK(key) for key in jwks["keys"]}

    def key_for(kid: str | None, jku: str | None) -> PyJWK:
        assert jku == expected_jku, f"signature points at {jku}, not {expected_jku}"
        return keys[kid or ""]

    return create_signature_verifier(key_for, ["EdDSA"])


@pytest.mark.parametrize("base", CARD_PATHS)
async def test_every_served_card_is_signed_and_verifies_with_the_published_key(mesh: Stack, base: str) -> None:
    url = mesh.coordinator_url
    async with httpx.AsyncClient(timeout=30.0) as anonymous:  # both are public, like the card
        jwks_response = await anonymous.get(f"{url}/.well-known/jwks.json")
        assert jwks_response.status_code == 200
        jwks = jwks_response.json()
        assert [(key["kty"], key["crv"]) for key in jwks["keys"]] == [("OKP", "Ed25519")]
        assert "d" not in jwks["keys"][0]  # the public half only
        card = await A2ACardResolver(anonymous, f"{url}{base}").get_agent_card()
    assert len(card.signatures) == 1
    verify = jwks_verifier(jwks, f"{url}/.well-known/jwks.json")
    verify(card)  # raises when no signature verifies

    tampered = pb.AgentCard()
    tampered.CopyFrom(card)
    tampered.description += " (and it also wires money)"
    with pytest.raises(InvalidSignaturesError):
        verify(tampered)
    moved = pb.AgentCard()
    moved.CopyFrom(card)
    moved.supported_interfaces[0].url = "https://attacker.example/"
    with pytest.raises(InvalidSignaturesError):
        verify(moved)


async def test_a_card_signed_with_another_key_does_not_verify(mesh: Stack, tmp_path) -> None:
    """The verifier really checks the key: the served card against a JWKS of a fresh key with the same kid."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from jwt.algorithms import OKPAlgorithm

    async with httpx.AsyncClient(timeout=30.0) as anonymous:
        jwks = (await anonymous.get(f"{mesh.coordinator_url}/.well-known/jwks.json")).json()
        card_json = (await anonymous.get(f"{mesh.coordinator_url}/.well-known/agent-card.json")).json()
    card = ParseDict(card_json, pb.AgentCard(), ignore_unknown_fields=True)
    other = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True)
    forged = {"keys": [{**other, "kid": jwks["keys"][0]["kid"]}]}
    with pytest.raises(InvalidSignaturesError):
        jwks_verifier(forged, f"{mesh.coordinator_url}/.well-known/jwks.json")(card)


# -- the extended card --------------------------------------------------------------------------------------------
def mesh_state(card: pb.AgentCard) -> dict[str, Any]:
    """The live state the extended card carries (its mesh-status extension's params)."""
    [extension] = [e for e in card.capabilities.extensions if e.uri.endswith("/mesh-status/v1")]
    return MessageToDict(extension.params)


@pytest.mark.parametrize("transport", ["JSONRPC", "HTTP+JSON"])
async def test_the_extended_card_shows_every_agents_status_and_load_signed(
    mesh: Stack, http: httpx.AsyncClient, transport: str
) -> None:
    url = mesh.coordinator_url
    public = await A2ACardResolver(http, url).get_agent_card()
    assert public.capabilities.extended_agent_card is True
    assert not [e for e in public.capabilities.extensions if e.uri.endswith("/mesh-status/v1")]  # not in public
    jwks = (await http.get(f"{url}/.well-known/jwks.json")).json()
    config = ClientConfig(httpx_client=http, supported_protocol_bindings=[transport])
    client = ClientFactory(config).create(public)
    verify = jwks_verifier(jwks, f"{url}/.well-known/jwks.json")
    extended = await client.get_extended_agent_card(pb.GetExtendedAgentCardRequest(), signature_verifier=verify)
    assert extended.name == public.name and [s.id for s in extended.skills] == [s.id for s in public.skills]
    agents = {entry["name"]: entry for entry in mesh_state(extended)["agents"]}
    assert set(agents) >= EXAMPLE_AGENTS
    echo = agents["echo"]
    assert echo["size"] >= 1 and echo["online"] >= 1
    [instance] = [i for i in echo["instances"] if i["agent"] == f"{mesh.org}/{mesh.unit}/echo"]
    assert instance["status"] == "online" and "inFlight" in instance and "load" in instance


async def test_an_agents_extended_card_covers_only_that_agent(mesh: Stack, http: httpx.AsyncClient) -> None:
    base = f"{mesh.coordinator_url}/agents/echo"
    response = await http.get(f"{base}/extendedAgentCard", headers={"A2A-Version": "1.0"})
    assert response.status_code == 200, response.text
    card = ParseDict(response.json(), pb.AgentCard(), ignore_unknown_fields=True)
    assert [entry["name"] for entry in mesh_state(card)["agents"]] == ["echo"]
    assert card.supported_interfaces[0].url == f"{base}/"


@pytest.mark.parametrize("base", ["", "/agents/echo"])
@pytest.mark.parametrize("credentials", [{}, {"Authorization": "Bearer not-a-key"}, {"X-API-Key": "wrong"}])
async def test_the_extended_card_is_never_served_without_credentials(
    mesh: Stack, base: str, credentials: dict[str, str]
) -> None:
    url = f"{mesh.coordinator_url}{base}"
    headers = {"A2A-Version": "1.0", **credentials}
    call = {"jsonrpc": "2.0", "id": 1, "method": "GetExtendedAgentCard", "params": {}}
    async with httpx.AsyncClient(timeout=30.0, headers=headers) as anonymous:
        rest = await anonymous.get(f"{url}/extendedAgentCard")
        rpc = await anonymous.post(f"{url}/", json=call)
    for response in (rest, rpc):
        assert response.status_code == 401, response.text
        assert "mesh-status" not in response.text and "instances" not in response.text


# -- A2A 0.3 clients --------------------------------------------------------------------------------------------
async def legacy_client(http: httpx.AsyncClient, base_url: str, transport: str, streaming: bool) -> Client:
    """A client as a 0.3-era client sees the agent: the card at `/.well-known/agent.json` read as a 0.3 card (its
    `url`, `preferredTransport`, `additionalInterfaces`), so the SDK picks its 0.3 transports (0.3 method names
    and paths, 0.3 JSON with `kind`), as an a2a-sdk 0.3 client would speak."""
    response = await http.get(f"{base_url}/.well-known/agent.json")
    assert response.status_code == 200, response.text
    legacy = types_v03.AgentCard.model_validate(response.json())
    assert legacy.protocol_version == "0.3" and legacy.url == f"{base_url}/"
    card = to_core_agent_card(legacy)
    assert {i.protocol_version for i in card.supported_interfaces} == {"0.3"}  # nothing of 1.0 left in this view
    config = ClientConfig(httpx_client=http, supported_protocol_bindings=[transport], streaming=streaming)
    return ClientFactory(config).create(card)


@pytest.mark.parametrize("transport", ["JSONRPC", "HTTP+JSON"])
@pytest.mark.parametrize("base", ["", "/agents/echo"])
async def test_a_0_3_client_sends_and_gets_tasks(mesh: Stack, http: httpx.AsyncClient, base: str, transport) -> None:
    """Over JSON-RPC the 0.3 client streams (message/stream), over HTTP+JSON it sends (/v1/message:send)."""
    streaming = transport == "JSONRPC"
    client = await legacy_client(http, f"{mesh.coordinator_url}{base}", transport, streaming)
    events = await collect(client, send_request(user_message("hello from 0.3"), skill="echo"))
    assert events[0].HasField("task")
    if streaming:
        assert events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED
    else:
        assert len(events) == 1 and events[0].task.status.state == pb.TASK_STATE_COMPLETED
    fetched = await client.get_task(pb.GetTaskRequest(id=events[0].task.id))
    assert fetched.status.state == pb.TASK_STATE_COMPLETED
    assert "hello from 0.3" in repr(MessageToDict(fetched)["artifacts"])


@pytest.mark.parametrize("base", ["", "/agents/echo"])
async def test_raw_0_3_json_rpc_without_a_version_header(mesh: Stack, base: str) -> None:
    """What 0.3 clients put on the wire: 0.3 method names and `kind`s, no A2A-Version header (so not the fast
    path's 1.0 SendMessage)."""
    url = f"{mesh.coordinator_url}{base}/"
    message = {"kind": "message", "messageId": "m-03", "role": "user", "parts": [{"kind": "text", "text": "ping 03"}]}
    message["metadata"] = {"skill": "echo"}
    async with httpx.AsyncClient(timeout=60.0, headers=auth_headers(mesh)) as legacy:
        sent = await legacy.post(
            url, json={"jsonrpc": "2.0", "id": 7, "method": "message/send", "params": {"message": message}}
        )
        assert sent.status_code == 200, sent.text
        result = sent.json()["result"]
        assert result["kind"] == "task" and result["status"]["state"] == "completed", result
        got = await legacy.post(
            url, json={"jsonrpc": "2.0", "id": 8, "method": "tasks/get", "params": {"id": result["id"]}}
        )
        assert got.json()["result"]["id"] == result["id"] and got.json()["result"]["status"]["state"] == "completed"
        missing = await legacy.post(
            url, json={"jsonrpc": "2.0", "id": 9, "method": "tasks/get", "params": {"id": "nope"}}
        )
        assert missing.json()["error"]["code"] == -32001
        # a 1.0 method without the 1.0 header is still refused clearly, as the SDK does (VersionNotSupported)
        one = await legacy.post(url, json={"jsonrpc": "2.0", "id": 10, "method": "GetTask", "params": {"id": "x"}})
        assert one.json()["error"]["code"] == -32009


# -- gRPC ---------------------------------------------------------------------------------------------------------
def with_key(details: grpc.aio.ClientCallDetails, key: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), ("authorization", f"Bearer {key}"))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class UnaryBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, key: str) -> None:
        self.key = key

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(with_key(client_call_details, self.key), request)


class StreamBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, key: str) -> None:
        self.key = key

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(with_key(client_call_details, self.key), request)


def bearer(key: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that put `authorization: Bearer <key>` on every call of a channel, as a configured gRPC client
    does (grpc.aio takes one interceptor object per call shape)."""
    return [UnaryBearer(key), StreamBearer(key)]


async def grpc_client(mesh: Stack, http: httpx.AsyncClient, base: str, streaming: bool = False) -> Client:
    """The SDK's gRPC client transport, chosen from the card's GRPC interface (an agent's carries its tenant)."""
    card = await A2ACardResolver(http, f"{mesh.coordinator_url}{base}").get_agent_card()
    [interface] = [i for i in card.supported_interfaces if i.protocol_binding == "GRPC"]
    assert interface.url == f"127.0.0.1:{mesh.ports.coordinator_grpc}"
    assert interface.tenant == base.strip("/").removeprefix("agents/")
    config = ClientConfig(
        streaming=streaming,
        supported_protocol_bindings=["GRPC"],
        grpc_channel_factory=lambda url: grpc.aio.insecure_channel(url, interceptors=bearer(mesh.api_key)),
    )
    return ClientFactory(config).create(card)


@pytest.mark.parametrize("base", ["/", "/agents/echo/"])
async def test_grpc_send_stream_get_and_cancel(mesh: Stack, http: httpx.AsyncClient, base: str) -> None:
    client = await grpc_client(mesh, http, base)
    [sent] = await collect(client, send_request(user_message("over grpc"), skill="echo"))
    assert sent.task.status.state == pb.TASK_STATE_COMPLETED
    assert sent.task.artifacts[0].parts[0].text == "over grpc"
    assert (await client.get_task(pb.GetTaskRequest(id=sent.task.id))).status.state == pb.TASK_STATE_COMPLETED

    streaming = await grpc_client(mesh, http, base, streaming=True)
    events = await collect(streaming, send_request(user_message("streamed over grpc"), skill="echo"))
    assert events[0].HasField("task") and events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED

    slow_request = send_request(user_message("slow"), skill="echo", return_immediately=True, delayMs=30_000)
    [slow] = await collect(client, slow_request)
    canceled = await client.cancel_task(pb.CancelTaskRequest(id=slow.task.id))
    assert canceled.status.state == pb.TASK_STATE_CANCELED
    with pytest.raises(A2AError, match="not found"):
        await client.get_task(pb.GetTaskRequest(id="no-such-task"))


async def test_an_agents_grpc_endpoint_sees_only_its_tasks(mesh: Stack, http: httpx.AsyncClient) -> None:
    echo, research = await grpc_client(mesh, http, "/agents/echo/"), await grpc_client(mesh, http, "/agents/research/")
    [sent] = await collect(echo, send_request(user_message("mine")))
    assert sent.task.status.state == pb.TASK_STATE_COMPLETED
    with pytest.raises(A2AError, match="not found"):
        await research.get_task(pb.GetTaskRequest(id=sent.task.id))


async def test_grpc_refuses_calls_without_a_known_key(mesh: Stack) -> None:
    target = f"127.0.0.1:{mesh.ports.coordinator_grpc}"
    for interceptors in ([], bearer("not-a-key")):
        async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
            stub = a2a_pb2_grpc.A2AServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetExtendedAgentCard(pb.GetExtendedAgentCardRequest(), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            request = pb.SendMessageRequest(message=user_message("x"))
            with pytest.raises(grpc.aio.AioRpcError) as refused_stream:
                async for _ in stub.SendStreamingMessage(request, timeout=30):
                    pass
            assert refused_stream.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("base", ["/", "/agents/echo/"])
async def test_grpc_serves_the_signed_extended_card(mesh: Stack, http: httpx.AsyncClient, base: str) -> None:
    client = await grpc_client(mesh, http, base)
    jwks = (await http.get(f"{mesh.coordinator_url}/.well-known/jwks.json")).json()
    verify = jwks_verifier(jwks, f"{mesh.coordinator_url}/.well-known/jwks.json")
    card = await client.get_extended_agent_card(pb.GetExtendedAgentCardRequest(), signature_verifier=verify)
    names = [entry["name"] for entry in mesh_state(card)["agents"]]
    assert names == ["echo"] if base != "/" else set(names) >= EXAMPLE_AGENTS
