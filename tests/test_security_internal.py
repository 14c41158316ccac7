"""Break-in tests for the internal HTTP APIs (registry, task store) served over the mesh's mutual TLS: no
certificate, plain HTTP, a certificate of another CA, and other services' certificates are all refused; the
coordinator (through which a real task runs end to end) and meshctl still get what they need. Prints a tally."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.pki import Identity, Pki, Role
from devstack.stack import Ports, Stack
from mesh_console.security import KEY_COOKIE
from tests.security_helpers import Tally

VERSION = {"A2A-Version": "1.0"}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("sealed"),
        ports=Ports.random(),
        agents={"echo": "agent_echo"},
        internal_tls=True,
    )
    stack.start()
    yield stack
    stack.stop()


def context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def as_identity(stack: Stack, name: str, role: Role) -> ssl.SSLContext:
    files = stack.pki.client(Identity(name, role))
    return context(stack.pki.ca_cert, files.cert, files.key)


async def status(verify: ssl.SSLContext | bool, method: str, url: str, **kwargs: object) -> int | str:
    """The HTTP status, or why no HTTP exchange happened (a TLS refusal)."""
    try:
        async with httpx.AsyncClient(verify=verify, timeout=10) as http:
            return (await http.request(method, url, **kwargs)).status_code  # type: ignore[arg-type]
    except httpx.HTTPError as error:
        return type(error).__name__


async def test_the_internal_apis_admit_only_the_mesh_identities_named_for_each_route(
    sealed: Stack, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tally = Tally()
    store, registry = sealed.taskstore_url, sealed.registry_url
    # a real task through the coordinator, which reaches both APIs with its own certificate
    async with httpx.AsyncClient(base_url=sealed.coordinator_url, timeout=30) as http:
        headers = {**VERSION, "Authorization": f"Bearer {sealed.api_key}"}
        message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [{"text": "sealed"}]}
        sent = await http.post(
            "/",
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {"message": message, "metadata": {"skill": "echo"}},
            },
            headers=headers,
        )
        task = sent.json().get("result", {}).get("task", {})
        tally.control(
            "a task through the coordinator",
            "coordinator",
            task.get("status", {}).get("state") == "TASK_STATE_COMPLETED",
            sent.text[:300],
        )
        task_id = task.get("id", "none")
        got = await http.post(
            "/", json={"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": task_id}}, headers=headers
        )
        tally.control(
            "GetTask through the coordinator",
            "coordinator",
            got.json().get("result", {}).get("id") == task_id,
            got.text[:300],
        )

    reads = {
        "store GET /tasks": ("GET", f"{store}/tasks?scope=all"),
        "store GET /tasks/{id}": ("GET", f"{store}/tasks/{task_id}?scope=all"),
        "store GET /tasks/{id}/events": ("GET", f"{store}/tasks/{task_id}/events?scope=all"),
        "registry GET /agents": ("GET", f"{registry}/agents"),
    }
    claim = ("PUT", f"{store}/tasks/{task_id}/owner")
    no_cert = context(sealed.pki.ca_cert)
    foreign_pki = Pki(tmp_path / "foreign", sealed.org, sealed.unit)
    foreign_files = foreign_pki.client(Identity("coordinator", Role.COORDINATOR))
    foreign = context(sealed.pki.ca_cert, foreign_files.cert, foreign_files.key)
    others = {
        "the registry's certificate": as_identity(sealed, "registry", Role.REGISTRY),
        "the task store's certificate": as_identity(sealed, "taskstore", Role.TASKSTORE),
        "an agent's certificate (echo)": as_identity(sealed, "echo", Role.AGENT),
    }
    for what, (method, url) in reads.items():
        code = await status(no_cert, method, url)
        tally.attack(f"{what} without a certificate", "anyone", code == 401, str(code))
        code = await status(foreign, method, url)
        tally.attack(f"{what} with another CA's certificate", "outsider", isinstance(code, str), str(code))
        code = await status(False, method, url.replace("https://", "http://"))
        tally.attack(f"{what} over plain HTTP", "anyone", code != 200, str(code))
        for who, ctx in others.items():
            code = await status(ctx, method, url)
            tally.attack(f"{what} with {who}", who, code == 403, str(code))
        for who, ctx in (
            ("coordinator", as_identity(sealed, "coordinator", Role.COORDINATOR)),
            ("meshctl", as_identity(sealed, "meshctl", Role.OBSERVER)),
        ):
            code = await status(ctx, method, url)
            tally.control(f"{what} as {who}", who, code == 200, str(code))
    body = {"json": {"principal": "key:mallory", "tenant": ""}}
    for who, ctx in {  # read-only for all: owners come over MQTT from the coordinators, not through this API
        **others,
        "coordinator": as_identity(sealed, "coordinator", Role.COORDINATOR),
        "meshctl": as_identity(sealed, "meshctl", Role.OBSERVER),
        "no certificate": no_cert,
    }.items():
        code = await status(ctx, *claim, **body)
        tally.attack(f"store PUT /tasks/{{id}}/owner with {who}", who, code in (401, 403), str(code))
    console = as_identity(sealed, "console", Role.OBSERVER)  # its certificate: what the console presents
    for what, (method, url) in {
        "store GET /tasks": reads["store GET /tasks"],
        "store GET /tasks/{id}": reads["store GET /tasks/{id}"],
    }.items():
        code = await status(console, method, url)
        tally.attack(f"{what} with the console's certificate", "console", code == 403, str(code))
    for what in ("store GET /tasks/{id}/events", "registry GET /agents"):
        code = await status(console, *reads[what])
        tally.control(f"{what} as the console", "console", code == 200, str(code))
    cookies = {KEY_COOKIE: sealed.api_key}
    async with httpx.AsyncClient(base_url=sealed.console_url, timeout=30, cookies=cookies) as http:
        health = await http.get("/healthz")  # the console reaches both APIs with its own identity
        tally.control("the console's /healthz (registry and store up)", "console", health.status_code == 200)
        page = await http.get(f"/tasks/{task_id}")
        shown = page.status_code == 200 and "echo" in page.text  # the agent comes from the store's event log
        tally.control("the console's task page (with its agent)", "console", shown, page.text[:200])
        agents = await http.get("/agents")
        tally.control("the console's agents page", "console", "echo" in agents.text, agents.text[:200])
    for what, url in (("store", store), ("registry", registry)):
        code = await status(no_cert, "GET", f"{url}/healthz")
        tally.control(f"{what} /healthz without a certificate (probes)", "probe", code == 200, str(code))
    with capsys.disabled():
        print("\n" + tally.report("internal APIs x identities"))
    assert not tally.leaks, tally.report("leaks")
    assert not tally.failures, tally.report("controls")


async def test_redis_admits_only_its_acl_users_and_the_registry_only_to_its_keys(sealed: Stack) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

    tally = Tally()
    port = sealed.ports.redis
    refused = (AuthenticationError, NoPermissionError, ResponseError, ConnectionError)
    attempts = {
        "no password": f"redis://127.0.0.1:{port}/0",
        "the default user, any password": f"redis://default:guess@127.0.0.1:{port}/0",
        "the registry user, a wrong password": f"redis://registry:wrong@127.0.0.1:{port}/0",
    }
    for what, url in attempts.items():
        redis = Redis.from_url(url)
        try:
            await redis.get("x")
            tally.attack(f"redis with {what}", "anyone", False, "GET answered")
        except refused as error:
            tally.attack(f"redis with {what}", "anyone", True, type(error).__name__)
        finally:
            await redis.aclose()
    registry = Redis.from_url(sealed.redis_url)
    try:
        for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("ACL", "LIST"), ("DEBUG", "SLEEP", "0")):
            try:
                await registry.execute_command(*command)
                tally.attack(f"redis {command[0]} as the registry", "registry", False, "allowed")
            except refused as error:
                tally.attack(f"redis {command[0]} as the registry", "registry", True, type(error).__name__)
        tally.control("redis GET/SET as the registry", "registry", await registry.set("probe", "1") is True)
    finally:
        await registry.aclose()
    print(tally.report("redis users"))
    assert not tally.leaks and not tally.failures, tally.report("redis")


def test_meshctl_reads_the_internal_apis_as_its_own_identity(sealed: Stack, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        **sealed.base_env(),
        **sealed.identity_env(Identity("meshctl", Role.OBSERVER)),
        "MESH_REGISTRY_URL": sealed.registry_url,
        "MESH_TASKSTORE_URL": sealed.taskstore_url,
    }
    listed = subprocess.run(
        [sys.executable, "-m", "meshctl", "agents", "--json"], env=env, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr.decode()
    assert f"{sealed.org}/{sealed.unit}/echo" in json.dumps(json.loads(listed.stdout))
    as_agent = {**env, **sealed.identity_env(Identity("echo", Role.AGENT))}
    refused = subprocess.run(
        [sys.executable, "-m", "meshctl", "agents"], env=as_agent, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert refused.returncode != 0 and b"may not GET /agents" in refused.stderr, refused.stderr.decode()
