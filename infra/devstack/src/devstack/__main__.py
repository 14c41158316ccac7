"""`python -m devstack up`: run the whole mesh as local processes until Ctrl-C (what `make dev` does).
`python -m devstack new-agent NAME`: scaffold a new agent (what `make new-agent NAME=...` does).
`python -m devstack identity NAME --role R` / `identity-remove NAME`: admit or revoke an outside participant on the
running broker (what `make identity` / `make identity-remove` do).
`python -m devstack bridge SITE --agents a,b --central HOST:PORT`: admit an edge site's bridge on the central broker
and write the edge broker's bridge folder (what `make bridge` does)."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path

from devstack.bridge import EdgeSite, admit_site, write_bridge_config
from devstack.identities import Broker, DynsecError, IdentityError, admit, parse_identity, revoke
from devstack.pki import Pki
from devstack.processes import REPO_ROOT
from devstack.scaffold import ScaffoldError, new_agent
from devstack.stack import Ports, Stack

DEV_PKI = REPO_ROOT / "infra" / "broker-certs"
"""The dev PKI: `make certs` writes it, `make dev`, Compose and Kubernetes use it (never committed)."""

FIRST_REQUEST = (
    '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m1","role":"ROLE_USER",'
    '"parts":[{"text":"hello mesh"}]},"metadata":{"skill":"echo"}}}'
)
FIRST_COMMAND = (
    "curl -s -X POST {url}/ -H 'Content-Type: application/json' -H 'A2A-Version: 1.0' \\\n"
    "  -H 'Authorization: Bearer {key}' \\\n  -d '" + FIRST_REQUEST.replace("{", "{{").replace("}", "}}") + "'"
)


def up(run_dir: Path, coordinators: int = 1) -> int:
    """Start everything, print how to use it, and stop everything cleanly on Ctrl-C or SIGTERM."""
    stack = Stack(run_dir=run_dir, ports=Ports.fixed(), pki_dir=DEV_PKI, internal_tls=True, coordinators=coordinators)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"starting the mesh (logs in {run_dir / 'logs'}) ...", flush=True)
    try:
        stack.start()
    except Exception as error:  # a readable reason, not a traceback, for the newcomer
        print(f"\nthe mesh did not start: {error}", file=sys.stderr)
        return 1
    for name, process in stack.processes.items():
        print(f"  {name:<12} ready (pid {process.pid})")
    replicas = [p.env["MESH_PUBLIC_URL"] for name, p in stack.processes.items() if name.startswith("coordinator-")]
    if replicas:
        print(f"  coordinator replicas (same mesh, same key): {', '.join(replicas)}")
    print(
        f"""
The mesh is up.
  A2A endpoint  {stack.coordinator_url}/   agent card: {stack.coordinator_url}/.well-known/agent-card.json
  Each agent    {stack.coordinator_url}/agents/<name>/   catalogue: {stack.coordinator_url}/agents
  A2A gRPC      127.0.0.1:{stack.ports.coordinator_grpc}   (an agent: its name as the requests' tenant)
  Registry      {stack.registry_url}/agents   (mutual TLS: a mesh certificate, e.g. meshctl's, is required)
  Task store    {stack.taskstore_url}/tasks
  Console       {stack.console_url}/   (sign in with the API key below)
  Broker        mqtts://127.0.0.1:{stack.ports.mqtt}  (TLS; identities and certificates in {DEV_PKI})

Try a first task:

{FIRST_COMMAND.format(url=stack.coordinator_url, key=stack.api_key)}

Press Ctrl-C to stop.""",
        flush=True,
    )
    while not stopping.wait(1.0):
        dead = [name for name, process in stack.processes.items() if not process.running]
        if dead:
            print(f"\n{', '.join(dead)} exited; stopping the mesh (see {run_dir / 'logs'})", file=sys.stderr)
            break
    print("\nstopping ...", flush=True)
    codes = stack.stop()
    print("stopped: " + ", ".join(f"{name}={code}" for name, code in codes.items()))
    return 0


def certs_command(pki_dir: Path) -> int:
    """Create the dev PKI and every identity's credentials (idempotent)."""
    stack = Stack(run_dir=REPO_ROOT / "run", pki_dir=pki_dir)
    stack.ensure_pki()
    print(
        f"PKI ready in {pki_dir}: ca.crt, broker.crt, dynamic-security.json, Redis's users (redis/users.acl, "
        "redis/<user>.password), Compose's PostgreSQL password (postgres/taskstore.password) and, per identity, "
        "clients/<org>/<unit>/"
    )
    for identity in stack.identities():
        print(f"  {identity.username(stack.org, stack.unit):<32} {identity.role}")
    return 0


def identity_command(pki_dir: Path, name: str, role: str, pool: str | None, broker: Broker) -> int:
    """Admit an outside requester or agent and print how it connects."""
    pki = Pki(pki_dir)
    try:
        identity = parse_identity(name, role, pool)
        files = admit(pki, identity, None)  # the files first: they are kept even when the broker is down
        admit(pki, identity, broker)
    except IdentityError as error:
        print(f"identity: {error}", file=sys.stderr)
        return 2
    except DynsecError as error:
        print(f"identity: {name} issued, but not admitted on the running broker: {error}", file=sys.stderr)
        print("  start the broker (make dev) and run the same command again", file=sys.stderr)
        return 1
    client_id = files.username if identity.pinned else f"{files.username}-<anything> (or {files.username})"
    print(f"""{files.username} admitted as {identity.role.value} on mqtts://{broker.host}:{broker.port}
  CA            {pki.ca_cert}
  certificate   {files.cert}
  key           {files.key}
  username      {files.username}
  password      in {files.password_file}
  client id     {client_id}""")
    if identity.pinned:
        print(f"  serves        $a2a/v1/request/{files.username} (card on $a2a/v1/discovery/{files.username})")
    else:
        print(f"  requester id  {identity.name} (replies under $a2a/v1/reply/{files.username}/<session>)")
    print(f"Revoke with: make identity-remove NAME={identity.name}")
    return 0


def identity_remove_command(pki_dir: Path, name: str, broker: Broker) -> int:
    """Revoke an outside identity at once."""
    try:
        identity = revoke(Pki(pki_dir), name, broker)
    except IdentityError as error:
        print(f"identity-remove: {error}", file=sys.stderr)
        return 2
    except DynsecError as error:
        print(f"identity-remove: {name} not revoked: {error}", file=sys.stderr)
        print("  the broker keeps it in its own file: start the broker and run the same command again", file=sys.stderr)
        return 1
    print(f"{name} ({identity.role.value}) revoked: disconnected, refused from now on, its files deleted")
    return 0


def bridge_command(pki_dir: Path, site: EdgeSite, central: str, out: Path, mount: Path | None, broker: Broker) -> int:
    """Admit an edge site's bridge identity centrally and write what the edge broker mounts: the bridge section and
    the files it names (CA, the bridge's certificate and key), all 0600."""
    pki = Pki(pki_dir, site.org, site.unit)
    try:
        files = admit_site(pki, site, None)
        admit_site(pki, site, broker)
    except DynsecError as error:
        print(f"bridge: {site.identity.name} issued, but not admitted on the central broker: {error}", file=sys.stderr)
        print("  start the central broker and run the same command again", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for source, name in ((pki.ca_cert, "ca.crt"), (files.cert, "bridge.crt"), (files.key, "bridge.key")):
        shutil.copyfile(source, out / name)
        (out / name).chmod(0o600)
    at = mount or out.resolve()
    config = site.bridge_config(central, at / "ca.crt", files, files.password)
    config = config.replace(str(files.cert), str(at / "bridge.crt")).replace(str(files.key), str(at / "bridge.key"))
    write_bridge_config(out / "bridge.conf", config)
    print(f"{files.username} admitted on the central broker {broker.host}:{broker.port} (bridge of {site.name})")
    print(f"  edge broker files in {out}: bridge.conf (0600: it holds the password), ca.crt, bridge.crt, bridge.key")
    print(f"  carries: {len(site.topics())} topics (see bridge.conf); the edge broker includes the folder at {at}")
    return 0


def new_agent_command(name: str, skill_id: str, skill_name: str, description: str, lock: bool) -> int:
    """Scaffold an agent and say what was written and what to do next."""
    try:
        written = new_agent(name, skill_id=skill_id, skill_name=skill_name, description=description, lock=lock)
    except ScaffoldError as error:
        print(f"new-agent: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"  wrote {path.relative_to(REPO_ROOT)}")
    package = "agent_" + name.replace("-", "_")
    steps = [
        (f"make test-agent NAME={name}", "its own tests, in seconds: in memory, then its process on a real broker"),
        ("make lint", "ruff check and ruff format --check, as CI runs them"),
        ("make dev", "runs it with the others (agents are found by folder)"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    print(f"\nservices/agents/{name} is ready and wired into the workspace, compose.yaml and k8s/. Next:")
    print(f"  edit services/agents/{name}/src/{package}/agent.py (its @skill method does a task's work)")
    for command, what in steps:
        print(f"  {command.ljust(width)}# {what}")
    print("See docs/extending.md: agent id vs skill id, what the runtime does for you, returning text, data and files.")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("up", help="run the mesh until Ctrl-C")
    run_parser.add_argument("--run-dir", type=Path, default=REPO_ROOT / "run", help="logs, database, broker data")
    run_parser.add_argument(
        "--coordinators", type=int, default=1, choices=range(1, 9), help="coordinator replicas (docs/operations.md)"
    )
    certs_parser = commands.add_parser("certs", help="create the dev CA, broker certificate and identities")
    certs_parser.add_argument("--dir", type=Path, default=DEV_PKI, help="where (default infra/broker-certs)")
    scaffold_parser = commands.add_parser("new-agent", help="scaffold services/agents/NAME and wire it in")
    scaffold_parser.add_argument("name")
    scaffold_parser.add_argument("--skill", default="", help="the skill's id (default: the agent's name)")
    scaffold_parser.add_argument("--skill-name", default="", help="the skill's display name (default: from its id)")
    scaffold_parser.add_argument("--description", default="", help="what the skill does (card and pyproject)")
    scaffold_parser.add_argument("--no-lock", action="store_true", help="skip `uv lock` (the tests use it)")
    identity_parser = commands.add_parser("identity", help="admit an outside requester or agent on the broker")
    identity_parser.add_argument("name")
    identity_parser.add_argument("--role", required=True, choices=["requester", "agent"])
    identity_parser.add_argument("--pool", help="an agent's pool (its share group), if it joins one")
    remove_parser = commands.add_parser("identity-remove", help="revoke an outside identity at once")
    remove_parser.add_argument("name")
    bridge_parser = commands.add_parser("bridge", help="admit an edge site's bridge and write its config")
    bridge_parser.add_argument("site", help="the edge site's name (its identity is bridge-<site>)")
    bridge_parser.add_argument("--agents", required=True, help="comma-separated agents connected to the edge broker")
    bridge_parser.add_argument("--pools", default="", help="comma-separated pools served at the edge site")
    bridge_parser.add_argument("--central", required=True, help="the central broker as the edge reaches it, HOST:PORT")
    bridge_parser.add_argument("--out", type=Path, default=REPO_ROOT / "run" / "bridge", help="where to write")
    bridge_parser.add_argument("--mount", type=Path, help="where the edge broker sees that folder (/mosquitto/bridge)")
    for sub in (identity_parser, remove_parser, bridge_parser):
        sub.add_argument("--dir", type=Path, default=DEV_PKI, help="the PKI folder (default infra/broker-certs)")
        sub.add_argument("--host", default="127.0.0.1", help="the running broker (default: make dev's)")
        sub.add_argument("--port", type=int, default=8883)
    args = parser.parse_args()
    if args.command == "identity":
        sys.exit(identity_command(args.dir, args.name, args.role, args.pool, Broker(args.host, args.port)))
    if args.command == "identity-remove":
        sys.exit(identity_remove_command(args.dir, args.name, Broker(args.host, args.port)))
    if args.command == "bridge":
        names = [name.strip() for name in args.agents.split(",") if name.strip()]
        pools = [name.strip() for name in args.pools.split(",") if name.strip()]
        site = EdgeSite(args.site, "acme", "default", tuple(names), tuple(pools))
        broker = Broker(args.host, args.port)
        sys.exit(bridge_command(args.dir, site, args.central, args.out, args.mount, broker))
    if args.command == "up":
        sys.exit(up(args.run_dir, args.coordinators))
    if args.command == "certs":
        sys.exit(certs_command(args.dir))
    sys.exit(new_agent_command(args.name, args.skill, args.skill_name, args.description, lock=not args.no_lock))


if __name__ == "__main__":
    main()
