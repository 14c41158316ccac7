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

    states = {"json": {"ids": [task_id]}}
    reads: dict[str, tuple[str, str, dict[str, object]]] = {
        "store GET /tasks": ("GET", f"{store}/tasks?scope=all", {}),
        "store GET /tasks/{id}": ("GET", f"{store}/tasks/{task_id}?scope=all", {}),
        "store GET /tasks/{id}/events": ("GET", f"{store}/tasks/{task_id}/events?scope=all", {}),
        "store POST /task-states": ("POST", f"{store}/task-states?scope=all", states),  # a read, as a POST
        "registry GET /agents": ("GET", f"{registry}/agents", {}),
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
    for what, (method, url, request) in reads.items():
        code = await status(no_cert, method, url, **request)
        tally.attack(f"{what} without a certificate", "anyone", code == 401, str(code))
        code = await status(foreign, method, url, **request)
        tally.attack(f"{what} with another CA's certificate", "outsider", isinstance(code, str), str(code))
        code = await status(False, method, url.replace("https://", "http://"), **request)
        tally.attack(f"{what} over plain HTTP", "anyone", code != 200, str(code))
        for who, ctx in others.items():
            code = await status(ctx, method, url, **request)
            tally.attack(f"{what} with {who}", who, code == 403, str(code))
        for who, ctx in (
            ("coordinator", as_identity(sealed, "coordinator", Role.COORDINATOR)),
            ("meshctl", as_identity(sealed, "meshctl", Role.OBSERVER)),
        ):
            code = await status(ctx, method, url, **request)
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
    for what in ("store GET /tasks", "store GET /tasks/{id}", "store POST /task-states"):
        method, url, request = reads[what]
        code = await status(console, method, url, **request)
        tally.attack(f"{what} with the console's certificate", "console", code == 403, str(code))
    for what in ("store GET /tasks/{id}/events", "registry GET /agents"):
        method, url, request = reads[what]
        code = await status(console, method, url, **request)
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


async def test_redis_admits_only_its_acl_users_each_to_its_own_keys_and_commands(sealed: Stack) -> None:
    """Redis as it runs everywhere: started with the ACL file `make certs` writes from topology.yaml's redis_users
    (devstack.redis_users, whose file Compose mounts and k8s/secrets.sh makes the Secret redis-users of; here of the
    test's own PKI). Nobody gets in without a declared
    user's password; each service's user is refused other services' keys and every command it does not need; the
    services connect as they are configured in the deployments (the URL's user, the password from its file)."""
    from redis.asyncio import Redis
    from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

    from a2amesh.settings import read_secret
    from devstack.topology import TOPOLOGY
    from mesh_coordinator.ratelimit import KEY_PREFIX, SharedLimiter, rate_limiter

    tally = Tally()
    port = sealed.ports.redis
    refused = (AuthenticationError, NoPermissionError, ResponseError, ConnectionError)
    attempts = {
        "no password": f"redis://127.0.0.1:{port}/0",
        "the default user, any password": f"redis://default:guess@127.0.0.1:{port}/0",
        "the default user, no password": f"redis://default@127.0.0.1:{port}/0",
        **{
            f"the {user} user, a wrong password": f"redis://{user}:wrong@127.0.0.1:{port}/0"
            for user in TOPOLOGY.redis_users
        },
        **{f"the {user} user, no password": f"redis://{user}@127.0.0.1:{port}/0" for user in TOPOLOGY.redis_users},
    }
    for what, url in attempts.items():
        redis = Redis.from_url(url)
        try:
            await redis.ping()
            tally.attack(f"redis with {what}", "anyone", False, "PING answered")
        except refused as error:
            tally.attack(f"redis with {what}", "anyone", True, type(error).__name__)
        finally:
            await redis.aclose()

    foreign = {  # each user's attempts on what is not its own: other services' keys, commands it never needs
        "registry": [
            ("GET", f"{KEY_PREFIX}someone"),
            ("DEL", f"{KEY_PREFIX}someone"),
            ("EVAL", "return 1", "0"),
            ("FLUSHALL",),
            ("CONFIG", "GET", "*"),
            ("KEYS", "*"),
            ("ACL", "LIST"),
            ("DEBUG", "SLEEP", "0"),
            ("CLIENT", "KILL", "TYPE", "normal"),
            ("SET", "elsewhere", "1"),
        ],
        "coordinator": [
            ("GET", "mesh:agents"),
            ("SMEMBERS", "mesh:agents"),
            ("SET", "mesh:index:epoch", "forged"),
            ("EVAL", "return redis.call('GET', KEYS[1])", "1", "mesh:agents"),
            ("EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", f"{KEY_PREFIX}someone"),
            ("DEL", f"{KEY_PREFIX}someone"),
            ("FLUSHALL",),
            ("CONFIG", "GET", "*"),
            ("KEYS", "*"),
            ("ACL", "LIST"),
            ("CLIENT", "KILL", "TYPE", "normal"),
            ("SCRIPT", "FLUSH"),
        ],
        "health": [("GET", "mesh:agents"), ("INFO",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("SET", "x", "1")],
    }
    for user, commands in foreign.items():
        redis = Redis.from_url(sealed.redis_url_for(user))
        try:
            for command in commands:
                what = f"redis {' '.join(command[:2])} as {user}"
                try:
                    await redis.execute_command(*command)
                    tally.attack(what, user, False, "allowed")
                except refused as error:
                    tally.attack(what, user, True, type(error).__name__)
            if user == "health":
                tally.control("redis PING as health (the health checks)", user, await redis.ping() is True)
        finally:
            await redis.aclose()

    # the services' own work, connected as the deployments configure them: URL with the user, password from a file
    registry_env = sealed.redis_env("registry")
    registry = Redis.from_url(
        registry_env["MESH_REDIS_URL"], password=read_secret(Path(registry_env["MESH_REDIS_PASSWORD_FILE"]))
    )
    try:
        tally.control("redis SET/GET mesh:* as the registry", "registry", await registry.set("mesh:probe", "1") is True)
    finally:
        await registry.aclose()
    coordinator_env = sealed.redis_env("coordinator", prefix="MESH_RATE_LIMIT_REDIS_")
    limiter = rate_limiter(
        1.0,
        1,
        coordinator_env["MESH_RATE_LIMIT_REDIS_URL"],
        Path(coordinator_env["MESH_RATE_LIMIT_REDIS_PASSWORD_FILE"]),
    )
    assert isinstance(limiter, SharedLimiter)
    client = f"probe-{uuid.uuid4().hex[:8]}"
    admin = Redis.from_url(sealed.redis_url_for("mesh-admin"))
    try:
        first, second = await limiter.take(client), await limiter.take(client)
        kept = await admin.exists(KEY_PREFIX + client)  # in Redis, not in the replica's fallback buckets
        tally.control(
            "rate limits kept in Redis as the coordinators",
            "coordinator",
            (first, second > 0, kept) == (0, True, 1),
            f"{first}, {second}, {kept}",
        )
    finally:
        await limiter.redis.aclose()
        await admin.aclose()
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
