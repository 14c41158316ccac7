"""Break-in tests for callers and owners, on a real mesh (broker, task store, registry, echo agent, coordinator):
a second caller tries every operation on the first caller's tasks, forged, expired and wrong-audience JWTs are
tried, the store is read without a scope; all must be refused, while the owners' own calls (and an operator's)
still work. A JWT from a test issuer, whose JWKS a real local HTTP server serves, works through the official
a2a-sdk client. A tally of what was tried is printed, like the broker's."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as pb
from cryptography.hazmat.primitives.asymmetric import rsa

from a2amesh.models import TaskOwnerRecord, TaskOwnerRecords
from a2amesh.topics import AgentAddress
from devstack.pki import Identity, Role
from devstack.processes import free_port
from devstack.stack import Ports, Stack
from mesh_console.security import KEY_COOKIE
from tests.conftest import collect, eventually, send_request, user_message
from tests.security_helpers import Tally, admit, connected, short_id

VERSION = {"A2A-Version": "1.0"}
ISSUER = "https://issuer.test"
KEYS = {  # secret -> (id, scopes, tenant)
    "alice-secret-" + "a" * 32: ("alice", "send,read,cancel", "t1"),
    "bob-secret-" + "b" * 32: ("bob", "send,read,cancel", "t1"),
    "reader-secret-" + "r" * 32: ("reader", "read", "t1"),
    "ops-secret-" + "o" * 32: ("ops", "send,read,cancel,admin", ""),
}
ALICE, BOB, READER, OPS = (secret for secret in KEYS)


def key_lines() -> str:
    return "".join(
        f"{key_id} sha256:{hashlib.sha256(secret.encode()).hexdigest()} scopes={scopes}"
        + (f" tenant={tenant}" if tenant else "")
        + "\n"
        for secret, (key_id, scopes, tenant) in KEYS.items()
    )


class Issuer:
    """A test OAuth2 issuer: RSA keys, and their JWKS served over a real HTTP server on loopback."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        self.port = free_port()
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}).encode()

        class Jwks(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body if self.path == "/jwks.json" else b"{}")

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Jwks)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def token(self, audience: str, *, sub: str = "carol", scope: str = "send read cancel", **changes: Any) -> str:
        key = changes.pop("signing_key", None) or self.key
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": audience, "sub": sub, "iat": now, "exp": now + 300, "scope": scope}
        claims.update(changes)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def owned(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[Stack]:
    ports = Ports.random()
    env = {"MESH_JWT_ISSUER": ISSUER, "MESH_JWT_JWKS_URL": issuer.jwks_url}
    stack = Stack(run_dir=tmp_path_factory.mktemp("owned"), ports=ports, agents={"echo": "agent_echo"}, extra_env=env)
    stack.pki.api_keys_file.parent.mkdir(parents=True, exist_ok=True)
    stack.pki.api_keys_file.write_text(key_lines())
    stack.start()
    yield stack
    stack.stop()


def rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


def bearer(secret: str) -> dict[str, str]:
    return {**VERSION, "Authorization": f"Bearer {secret}"}


async def send(http: httpx.AsyncClient, secret: str, text: str = "hello") -> dict[str, Any]:
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": text}]}
    response = await http.post("/", json=rpc("SendMessage", {"message": message}), headers=bearer(secret))
    body = response.json()
    assert "result" in body, body
    return body["result"]["task"]


async def claim_over_mqtt(stack: Stack, task_id: str, tally: Tally) -> None:
    """A compromised agent, and an outside requester, publish owner records naming bob: the broker refuses both
    (PUBACK 0x87), on the coordinator's owner topic and on their own."""
    coordinator = AgentAddress(stack.org, stack.unit, "coordinator").owner_topic
    record = TaskOwnerRecords(owners=[TaskOwnerRecord(task_id=task_id, principal="key:bob", tenant="t1")])
    for role in (Role.AGENT, Role.REQUESTER):
        actor = admit(stack, Identity(f"mallory-{role.value}-{short_id()}", role))
        client_id = actor.client_id if role is Role.AGENT else f"{actor.client_id}-s1"
        async with connected(actor, client_id) as (_, pubacks):
            for topic in (coordinator, actor.address.owner_topic):
                code = await pubacks.publish(topic, record.to_json().encode())
                where = "the coordinator's" if topic == coordinator else "its own"
                tally.attack(f"publish owners on {where} owner topic", f"a {role.value}", code == 0x87, hex(code))


def not_found(response: httpx.Response) -> bool:
    """The JSON-RPC TaskNotFound error (HTTP 200 with error -32001), or HTTP+JSON's 404."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return "-32001" in response.text or "TaskNotFound" in response.text
    if response.status_code == 404:
        return True
    body = response.json()
    return isinstance(body, dict) and body.get("error", {}).get("code") == -32001


async def test_a_second_caller_sees_nothing_of_the_firsts_tasks(owned: Stack, capsys: pytest.CaptureFixture) -> None:
    tally = Tally()
    async with httpx.AsyncClient(base_url=owned.coordinator_url, timeout=30) as http:
        task = await send(http, ALICE, "alice's secret")
        task_id = task["id"]
        for base in ("/", "/agents/echo/"):
            attempts = {
                "GetTask": rpc("GetTask", {"id": task_id}),
                "CancelTask": rpc("CancelTask", {"id": task_id}),
                "SubscribeToTask": rpc("SubscribeToTask", {"id": task_id}),
                "SendMessage (follow-up)": rpc(
                    "SendMessage",
                    {"message": {"messageId": "m", "role": "ROLE_USER", "taskId": task_id, "parts": [{"text": "x"}]}},
                ),
            }
            for name, call in attempts.items():
                response = await http.post(base, json=call, headers=bearer(BOB))
                tally.attack(f"{name} at {base}", "bob", not_found(response), response.text[:200])
            listed = (await http.post(base, json=rpc("ListTasks", {}), headers=bearer(BOB))).json()
            ids = [t["id"] for t in listed["result"].get("tasks", [])]
            tally.attack(f"ListTasks at {base}", "bob", task_id not in ids, str(ids))
        rest_base = "/agents/echo"
        for method, path in (("GET", f"/tasks/{task_id}"), ("POST", f"/tasks/{task_id}:cancel")):
            for base in ("", rest_base):
                response = await http.request(method, base + path, headers=bearer(BOB))
                tally.attack(f"HTTP+JSON {method} {base}{path.split(task_id)[1] or ''}", "bob", not_found(response))
        # the owner's own calls, and an operator's, still work
        own = (await http.post("/", json=rpc("GetTask", {"id": task_id}), headers=bearer(ALICE))).json()
        tally.control("owner GetTask", "alice", own.get("result", {}).get("id") == task_id, str(own)[:200])
        listed = (await http.post("/", json=rpc("ListTasks", {}), headers=bearer(ALICE))).json()
        tally.control("owner ListTasks", "alice", task_id in [t["id"] for t in listed["result"].get("tasks", [])])
        rest = await http.get(f"/agents/echo/tasks/{task_id}", headers=bearer(ALICE))
        tally.control("owner HTTP+JSON GetTask at the agent", "alice", rest.status_code == 200, rest.text[:200])
        ops = (await http.post("/", json=rpc("GetTask", {"id": task_id}), headers=bearer(OPS))).json()
        tally.control("operator GetTask", "ops", ops.get("result", {}).get("id") == task_id)
        # scopes: a read-only key cannot send or cancel, even its own tenant's
        refused = await http.post("/", json=rpc("CancelTask", {"id": task_id}), headers=bearer(READER))
        tally.attack("CancelTask with a read-only key", "reader", "error" in refused.json())
        message = {"messageId": "m2", "role": "ROLE_USER", "parts": [{"text": "x"}]}
        refused = await http.post("/", json=rpc("SendMessage", {"message": message}), headers=bearer(READER))
        tally.attack("SendMessage with a read-only key", "reader", "error" in refused.json())
        audit = await http.get("/audit", headers=bearer(BOB))
        tally.attack("read the audit trail without admin", "bob", audit.status_code == 403)
        # the task store's read API: no scope is no read
        async with httpx.AsyncClient(base_url=owned.taskstore_url, timeout=10) as store:
            for path in (f"/tasks/{task_id}", f"/tasks/{task_id}/events", "/tasks"):
                label = f"store GET {path.replace(task_id, '{id}')}"
                response = await store.get(path)
                tally.attack(f"{label} unscoped", "anyone", response.status_code == 400)
                response = await store.get(path, params={"owner": "key:bob", "tenant": "t1"})
                hidden = response.status_code == 404 or task_id not in response.text
                tally.attack(f"{label} as bob", "bob", hidden)
            stolen = await store.put(f"/tasks/{task_id}/owner", json={"principal": "key:bob", "tenant": "t1"})
            tally.attack("store: claim alice's task for bob over HTTP", "bob", stolen.status_code in (404, 405))
            await claim_over_mqtt(owned, task_id, tally)

            async def owner_reads() -> bool:
                mine = await store.get(f"/tasks/{task_id}", params={"owner": "key:alice", "tenant": "t1"})
                return mine.status_code == 200

            landed = await eventually(owner_reads, what="the owner record in the store")
            tally.control("store GET as the owner (the record came over MQTT)", "alice", landed)
            bobs = await store.get(f"/tasks/{task_id}", params={"owner": "key:bob", "tenant": "t1"})
            tally.attack("store GET as bob after the forged claims", "bob", bobs.status_code == 404)
        # the audit trail saw it all, without message contents
        audit = (await http.get("/audit", params={"taskId": task_id, "limit": "500"}, headers=bearer(OPS))).json()
        methods = {(r["principal"], r["method"], r["outcome"]) for r in audit["records"]}
        tally.control("audit: alice's send", "ops", ("key:alice", "SendMessage", "ok") in methods)
        tally.control("audit: bob's refused get", "ops", ("key:bob", "GetTask", "TaskNotFoundError") in methods)
        tally.control("audit: no message contents", "ops", "alice's secret" not in json.dumps(audit))
    with capsys.disabled():
        print("\n" + tally.report("callers x tasks (the second caller must see nothing)"))
    assert not tally.leaks, tally.report("leaks")
    assert not tally.failures, tally.report("controls")


async def test_tokens_forged_expired_or_for_another_audience_are_refused(owned: Stack, issuer: Issuer) -> None:
    tally = Tally()
    audience = owned.coordinator_url
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    bad = {
        "signed by another key": issuer.token(audience, signing_key=other),
        "expired": issuer.token(audience, exp=now - 3600, iat=now - 7200),
        "another audience": issuer.token("https://elsewhere.test"),
        "another issuer": issuer.token(audience, iss="https://evil.test"),
        "alg none": jwt.encode({"iss": ISSUER, "aud": audience, "sub": "x", "exp": now + 60}, None, algorithm="none"),
        "HS256 with the public key as secret": jwt.encode(
            {"iss": ISSUER, "aud": audience, "sub": "x", "iat": now, "exp": now + 60},
            "k" * 32,
            algorithm="HS256",
            headers={"kid": issuer.kid},
        ),
    }
    async with httpx.AsyncClient(base_url=owned.coordinator_url, timeout=30) as http:
        for name, token in bad.items():
            response = await http.post("/", json=rpc("ListTasks", {}), headers=bearer(token))
            tally.attack(f"token {name}", "forger", response.status_code == 401, str(response.status_code))
        good = await http.post("/", json=rpc("ListTasks", {}), headers=bearer(issuer.token(audience)))
        tally.control("a valid token", "carol", good.status_code == 200 and "result" in good.json(), good.text[:200])
    print(tally.report("bearer tokens"))
    assert not tally.leaks and not tally.failures, tally.report("tokens")


async def test_a_jwt_works_end_to_end_through_the_official_client(owned: Stack, issuer: Issuer) -> None:
    token = issuer.token(owned.coordinator_url, sub="dave")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        card = await A2ACardResolver(http, owned.coordinator_url).get_agent_card()
        assert card.security_schemes["bearer"].http_auth_security_scheme.bearer_format == "JWT"
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        [event] = await collect(client, send_request(user_message("via a token"), skill="echo"))
        task = event.task
        assert task.status.state == pb.TASK_STATE_COMPLETED
        fetched = await client.get_task(pb.GetTaskRequest(id=task.id))
        assert fetched.id == task.id
    # dave's task is dave's: a key holder does not see it
    async with httpx.AsyncClient(base_url=owned.coordinator_url, timeout=30) as http:
        response = await http.post("/", json=rpc("GetTask", {"id": task.id}), headers=bearer(ALICE))
        assert not_found(response)


async def test_keys_rotate_without_a_restart(owned: Stack) -> None:
    new_secret = "rotated-" + uuid.uuid4().hex + uuid.uuid4().hex
    keys_file = owned.pki.api_keys_file
    before = keys_file.read_text()
    async with httpx.AsyncClient(base_url=owned.coordinator_url, timeout=30) as http:
        assert (await http.post("/", json=rpc("ListTasks", {}), headers=bearer(new_secret))).status_code == 401
        digest = hashlib.sha256(new_secret.encode()).hexdigest()
        keys_file.write_text(before + f"erin sha256:{digest} scopes=read\n")
        deadline = time.monotonic() + 15
        status = 401
        while time.monotonic() < deadline and status != 200:
            status = (await http.post("/", json=rpc("ListTasks", {}), headers=bearer(new_secret))).status_code
            if status != 200:
                await asyncio.sleep(0.3)
        assert status == 200, "an added key is accepted without a restart"
        keys_file.write_text(before)  # revoked
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and status != 401:
            status = (await http.post("/", json=rpc("ListTasks", {}), headers=bearer(new_secret))).status_code
            if status != 401:
                await asyncio.sleep(0.3)
        assert status == 401, "a removed key is refused without a restart"


async def test_the_console_shows_a_key_only_its_own_tasks(owned: Stack, capsys: pytest.CaptureFixture) -> None:
    """The console lists and reads tasks through the coordinator with the signed-in key, so the task store's
    operator reads it makes for a task's timeline never show another caller's task."""
    tally = Tally()
    async with httpx.AsyncClient(base_url=owned.coordinator_url, timeout=30) as http:
        task_id = (await send(http, ALICE, "alice's console secret"))["id"]

    def console(secret: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=owned.console_url, timeout=30, cookies={KEY_COOKIE: secret})

    async with console(BOB) as bob, console(ALICE) as alice:
        listing = await bob.get("/tasks")
        tally.attack("console Tasks page", "bob", listing.status_code == 200 and task_id not in listing.text)
        page = await bob.get(f"/tasks/{task_id}")
        tally.attack("console task page", "bob", page.status_code == 404 and "console secret" not in page.text)
        own = await alice.get("/tasks")
        tally.control("console Tasks page", "alice", task_id in own.text, own.text[:200])
        mine = await alice.get(f"/tasks/{task_id}")
        tally.control("console task page with its agent", "alice", mine.status_code == 200 and "echo" in mine.text)
    with capsys.disabled():
        print("\n" + tally.report("console x tasks (a key sees only its own)"))
    assert not tally.leaks and not tally.failures, tally.report("leaks or failed controls")


@pytest.fixture(scope="module")
def unrecorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A mesh whose task store trusts no coordinator's owner records: what every read looks like before one lands."""
    env = {"MESH_TRUSTED_RECORDERS": '["nobody"]'}
    stack = Stack(run_dir=tmp_path_factory.mktemp("unrecorded"), ports=Ports.random(), agents={"echo": "agent_echo"})
    stack.extra_env.update(env)
    stack.pki.api_keys_file.parent.mkdir(parents=True, exist_ok=True)
    stack.pki.api_keys_file.write_text(key_lines())
    stack.start()
    yield stack
    stack.stop()


async def test_the_coordinator_scopes_its_own_tasks_from_memory_before_the_owner_record_lands(
    unrecorded: Stack,
) -> None:
    """No read-your-writes gap: the owner record travels in the background, but the coordinator that accepted a task
    answers its owner (and refuses everyone else) from memory, whatever the store knows yet."""
    async with httpx.AsyncClient(base_url=unrecorded.coordinator_url, timeout=30) as http:
        task_id = (await send(http, ALICE, "before the owner lands"))["id"]
        async with httpx.AsyncClient(base_url=unrecorded.taskstore_url, timeout=10) as store:

            async def recorded_without_owner() -> bool:
                everyone = await store.get(f"/tasks/{task_id}", params={"scope": "all"})
                alices = await store.get(f"/tasks/{task_id}", params={"owner": "key:alice", "tenant": "t1"})
                return everyone.status_code == 200 and alices.status_code == 404

            await eventually(recorded_without_owner, what="the task stored, its owner not")
        own = (await http.post("/", json=rpc("GetTask", {"id": task_id}), headers=bearer(ALICE))).json()
        assert own.get("result", {}).get("id") == task_id, own
        assert not_found(await http.post("/", json=rpc("GetTask", {"id": task_id}), headers=bearer(BOB)))
        follow_up = {"messageId": "m2", "role": "ROLE_USER", "taskId": task_id, "parts": [{"text": "x"}]}
        refused = await http.post("/", json=rpc("SendMessage", {"message": follow_up}), headers=bearer(BOB))
        assert not_found(refused)


async def sdk_client(stack: Stack, secret: str) -> tuple[httpx.AsyncClient, pb.AgentCard]:
    """An HTTP client calling the coordinator with `secret`, and the card the official a2a-sdk client is made from."""
    http = httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {secret}"})
    return http, await A2ACardResolver(http, stack.coordinator_url).get_agent_card()


def sdk(http: httpx.AsyncClient, card: pb.AgentCard, streaming: bool = False) -> Any:
    return ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)


async def every_page(client: Any, request: pb.ListTasksRequest) -> list[pb.Task]:
    """Every task of a listing, page after page (bounded)."""
    tasks: list[pb.Task] = []
    for _ in range(50):
        page = await client.list_tasks(request)
        tasks.extend(page.tasks)
        if not page.next_page_token:
            return tasks
        request.page_token = page.next_page_token
    raise AssertionError("the listing never ended")


async def test_list_tasks_shows_a_callers_own_tasks_the_moment_they_are_sent(unrecorded: Stack) -> None:
    """Read-your-writes through the official client: the store here never learns who owns a task (as before an
    owner record lands), yet each caller's ListTasks lists every task it just sent, and none of another caller's;
    pages hold each task once, also for an operator, whose store read already lists them."""
    (alice_http, card), (bob_http, _), (ops_http, _) = [await sdk_client(unrecorded, s) for s in (ALICE, BOB, OPS)]
    alice, bob, ops = sdk(alice_http, card), sdk(bob_http, card), sdk(ops_http, card)
    context_id = str(uuid.uuid4())
    try:
        sent: dict[str, set[str]] = {"alice": set(), "bob": set()}
        for who, client, count in (("alice", alice, 5), ("bob", bob, 2)):
            for i in range(count):
                immediately = i % 2 == 1  # returned at once, still running or just done
                request = send_request(
                    user_message(f"{who} {i}", context_id=context_id), skill="echo", return_immediately=immediately
                )
                [event] = await collect(client, request)
                sent[who].add(event.task.id)
        streaming = sdk(alice_http, card, streaming=True)
        slow = send_request(user_message("alice streams", context_id=context_id), skill="echo", delayMs=3000)
        stream = streaming.send_message(slow)
        first = await anext(stream)  # the stream has started: the task is running
        sent["alice"].add(first.task.id)
        running = await alice.list_tasks(pb.ListTasksRequest(context_id=context_id))
        assert first.task.id in {task.id for task in running.tasks}, "a streaming task is listed while it runs"
        await stream.aclose()
        mine = await alice.list_tasks(pb.ListTasksRequest(context_id=context_id))
        assert {task.id for task in mine.tasks} == sent["alice"], "alice lists exactly her tasks, at once"
        assert mine.total_size == len(sent["alice"]) and not mine.next_page_token
        theirs = await bob.list_tasks(pb.ListTasksRequest())
        assert sent["bob"] <= {task.id for task in theirs.tasks} and not sent["alice"] & {t.id for t in theirs.tasks}
        paged = await every_page(alice, pb.ListTasksRequest(context_id=context_id, page_size=2))
        assert sorted(task.id for task in paged) == sorted(sent["alice"]), "two per page, each task once"
        done = await alice.list_tasks(pb.ListTasksRequest(context_id=context_id, status=pb.TASK_STATE_COMPLETED))
        assert {task.id for task in done.tasks} <= sent["alice"]
        assert all(task.status.state == pb.TASK_STATE_COMPLETED for task in done.tasks)
        everyone = await every_page(ops, pb.ListTasksRequest(context_id=context_id, page_size=3))
        ids = [task.id for task in everyone]
        assert sorted(ids) == sorted(sent["alice"] | sent["bob"]), "an operator sees all, each once"
    finally:
        for http in (alice_http, bob_http, ops_http):
            await http.aclose()
