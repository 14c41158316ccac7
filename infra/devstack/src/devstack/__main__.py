"""`python -m devstack up`: run the whole mesh as local processes until Ctrl-C (what `make dev` does).
`python -m devstack new-agent NAME`: scaffold a new agent (what `make new-agent NAME=...` does)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

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


def up(run_dir: Path) -> int:
    """Start everything, print how to use it, and stop everything cleanly on Ctrl-C or SIGTERM."""
    stack = Stack(run_dir=run_dir, ports=Ports.fixed(), pki_dir=DEV_PKI)
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
    print(
        f"""
The mesh is up.
  A2A endpoint  {stack.coordinator_url}/   agent card: {stack.coordinator_url}/.well-known/agent-card.json
  Registry      {stack.registry_url}/agents
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
    stack.pki.ensure(stack.identities())
    print(f"PKI ready in {pki_dir}: ca.crt, broker.crt, dynamic-security.json and, per identity, clients/<org>/<unit>/")
    for identity in stack.identities():
        print(f"  {identity.username(stack.org, stack.unit):<32} {identity.role}")
    return 0


def new_agent_command(name: str, lock: bool) -> int:
    """Scaffold an agent and say what was written and what to do next."""
    try:
        written = new_agent(name, lock=lock)
    except ScaffoldError as error:
        print(f"new-agent: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"  wrote {path.relative_to(REPO_ROOT)}")
    print(f"""
services/agents/{name} is ready and wired into the workspace, compose.yaml and k8s/. Next:
  edit services/agents/{name}/src/agent_{name.replace("-", "_")}/agent.py (skills on the card, work in handle)
  make dev      # runs it with the others (agents are found by folder)
  make test     # runs its tests with everything else (docs/extending.md)""")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("up", help="run the mesh until Ctrl-C")
    run_parser.add_argument("--run-dir", type=Path, default=REPO_ROOT / "run", help="logs, database, broker data")
    certs_parser = commands.add_parser("certs", help="create the dev CA, broker certificate and identities")
    certs_parser.add_argument("--dir", type=Path, default=DEV_PKI, help="where (default infra/broker-certs)")
    scaffold_parser = commands.add_parser("new-agent", help="scaffold services/agents/NAME and wire it in")
    scaffold_parser.add_argument("name")
    scaffold_parser.add_argument("--no-lock", action="store_true", help="skip `uv lock` (the tests use it)")
    args = parser.parse_args()
    if args.command == "up":
        sys.exit(up(args.run_dir))
    if args.command == "certs":
        sys.exit(certs_command(args.dir))
    sys.exit(new_agent_command(args.name, lock=not args.no_lock))


if __name__ == "__main__":
    main()
