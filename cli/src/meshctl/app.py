"""The `meshctl` command line: global options, one thin function per command, and one error policy (a clear
message on stderr and an exit code, never a traceback)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from a2a.types import a2a_pb2 as pb
from pydantic import ValidationError
from rich.text import Text

from a2amesh.internal import client_ssl_context
from a2amesh.settings import MqttSettings, ServiceSettings
from meshctl import client, identity, push, render
from meshctl.events import MeshEvent, follow
from meshctl.send import EXIT_FAILED, Outcome, SendOptions, exit_code, parse_data, parse_meta, run_send

app = typer.Typer(
    name="meshctl",
    help="The A2A mesh from a terminal: agents, tasks, live events. Exit codes: 0 done, 1 failed or error, "
    "2 usage, 3 the agent needs input.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class Options:
    """The global options every command sees."""

    coordinator: str
    registry: str
    store: str
    mqtt_host: str
    mqtt_port: int
    json: bool

    def settings(self) -> ServiceSettings:
        """The mesh identity and broker settings (MESH_ORG, MESH_UNIT, MESH_MQTT__*), with host and port as given."""
        try:
            settings = ServiceSettings()
        except ValidationError as error:
            raise client.CliError(f"bad MESH_* setting: {error}", code=2) from None
        settings.mqtt = settings.mqtt.model_copy(update={"host": self.mqtt_host, "port": self.mqtt_port})
        if settings.mqtt.username is None:
            settings.mqtt = with_dev_credentials(settings.mqtt, settings.org, settings.unit)
        return settings


DEV_CREDENTIALS = Path("infra") / "broker-certs"


def dev_api_key() -> str | None:
    """The dev coordinator key that `make dev` / `make certs` wrote, when run inside the repository."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        keys = folder / DEV_CREDENTIALS / "coordinator-api-keys"
        if keys.is_file():
            return keys.read_text().split()[0]
    return None


"""Where `make dev` / `make certs` keep the dev PKI, relative to the repository."""


def with_dev_credentials(mqtt: MqttSettings, org: str, unit: str) -> MqttSettings:
    """The `meshctl` identity of the dev PKI, when run inside the repository and none is configured."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        pki = folder / DEV_CREDENTIALS
        cert = pki / "clients" / org / unit / "meshctl.crt"
        if cert.is_file():
            return mqtt.model_copy(
                update={
                    "tls": True,
                    "ca_file": pki / "ca.crt",
                    "cert_file": cert,
                    "key_file": cert.with_suffix(".key"),
                    "username": f"{org}/{unit}/meshctl",
                    "password_file": cert.with_suffix(".password"),
                }
            )
    return mqtt


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine output: JSON on stdout.")]


@app.callback()
def main_options(
    ctx: typer.Context,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="MESH_API_KEY", help="The coordinator's API key (default: the dev key, in the repo)."),
    ] = None,
    coordinator: Annotated[
        str, typer.Option(envvar="MESH_COORDINATOR_URL", help="The coordinator (A2A over HTTP).")
    ] = "http://127.0.0.1:8000",
    registry: Annotated[
        str, typer.Option(envvar="MESH_REGISTRY_URL", help="The registry (https: over the mesh's mutual TLS).")
    ] = "https://127.0.0.1:8001",
    store: Annotated[
        str, typer.Option(envvar="MESH_TASKSTORE_URL", help="The task store (https: over the mesh's mutual TLS).")
    ] = "https://127.0.0.1:8002",
    mqtt_host: Annotated[str, typer.Option(envvar="MESH_MQTT__HOST", help="The broker, for `events`.")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(envvar="MESH_MQTT__PORT", help="The broker's port.")] = 8883,
    json_out: JsonFlag = False,
    grpc: Annotated[
        bool, typer.Option("--grpc", envvar="MESH_GRPC", help="Call the coordinator over gRPC (its card's interface).")
    ] = False,
) -> None:
    ctx.obj = Options(coordinator, registry, store, mqtt_host, mqtt_port, json_out)
    client.use_api_key(api_key or dev_api_key())
    client.use_grpc(grpc)
    if registry.startswith("https:") or store.startswith("https:"):  # internal APIs over the mesh's mutual TLS
        with reported():
            settings = ctx.obj.settings()
            settings.internal = settings.internal.model_copy(update={"enabled": True})
            try:
                client.use_internal_tls(client_ssl_context(settings))
            except (ValueError, OSError) as error:
                raise client.CliError(f"internal TLS: {error}", code=2) from None


def options(ctx: typer.Context, json_out: bool) -> Options:
    opts: Options = ctx.obj
    opts.json = opts.json or json_out
    return opts


@contextmanager
def reported() -> Iterator[None]:
    """Turn a CliError into its message on stderr and its exit code."""
    try:
        yield
    except client.CliError as error:
        render.stderr().print(Text.assemble(("error: ", "bold red"), error.message))
        raise typer.Exit(error.code) from None


# -- agents ------------------------------------------------------------------------------------------------
@app.command()
def agents(
    ctx: typer.Context,
    skill: Annotated[str | None, typer.Option(help="Only agents offering this skill.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only agents with a skill tagged so.")] = None,
    status: Annotated[str | None, typer.Option(help="online or offline.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List the agents the registry knows, online and least loaded first."""
    opts = options(ctx, json_out)
    with reported():
        records = client.list_agents(opts.registry, skill=skill, tag=tag, status=status)
    if opts.json:
        render.print_json({"agents": records})
    elif not records:
        render.stderr().print("no agents match")
    else:
        render.stdout().print(render.agents_table(records))


# -- send --------------------------------------------------------------------------------------------------
@app.command()
def send(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Argument(help="The message text.")] = None,
    skill: Annotated[str | None, typer.Option(help="Route to the least-loaded agent with this skill.")] = None,
    agent: Annotated[str | None, typer.Option(help="Route to this agent (id, or org/unit/id).")] = None,
    data: Annotated[str | None, typer.Option(help="A JSON value sent as a data part.")] = None,
    meta: Annotated[
        list[str] | None, typer.Option(help="Request metadata key=value (JSON if it parses, else text); repeatable.")
    ] = None,
    task_id: Annotated[str, typer.Option(help="Continue this task (answer an agent's question).")] = "",
    context_id: Annotated[str, typer.Option(help="The context of the task or conversation.")] = "",
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Live progress, or one blocking call.")] = True,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="--no-wait: print the task id and return.")] = True,
    json_out: JsonFlag = False,
) -> None:
    """Send a task and follow it to its end (exit 0 COMPLETED, 1 FAILED/REJECTED/CANCELED, 3 INPUT_REQUIRED)."""
    opts = options(ctx, json_out)
    with reported():
        request = SendOptions(
            text=text,
            data=parse_data(data),
            skill=skill,
            agent=agent,
            metadata=parse_meta(meta or []),
            task_id=task_id,
            context_id=context_id,
            stream=stream,
            wait=wait,
        )
        printer = LivePrinter(quiet=opts.json)
        try:
            outcome = asyncio.run(run_send(opts.coordinator, request, printer.on_event))
        except KeyboardInterrupt:
            printer.interrupted()
            raise typer.Exit(130) from None
    if opts.json:
        render.print_json(outcome_json(outcome))
    elif outcome.task is not None:
        render.print_outcome(render.stdout(), outcome.task, opts.coordinator, waited=wait)
    raise typer.Exit(exit_code(outcome, waited=wait))


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    if outcome.task is not None:
        return render.as_dict(outcome.task)
    return {"message": render.as_dict(outcome.message)} if outcome.message is not None else {}


class LivePrinter:
    """Prints a send's events as they arrive: a status line per state change (or note), artifact parts."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.console = render.stdout()
        self.task: pb.Task | None = None
        self.last_state: int | None = None
        self.artifacts: set[str] = set()

    def on_event(self, event: pb.StreamResponse, task: pb.Task | None) -> None:
        self.task = task
        if self.quiet:
            return
        kind = event.WhichOneof("payload")
        if kind == "task":
            self._status(event.task.status, force=True)
            for artifact in event.task.artifacts:
                self._artifact(artifact)
        elif kind == "status_update":
            self._status(event.status_update.status)
        elif kind == "artifact_update":
            self._artifact(event.artifact_update.artifact)
        elif kind == "message":
            render.print_parts(self.console, event.message.parts)

    def _status(self, status: pb.TaskStatus, force: bool = False) -> None:
        noted = status.HasField("message") and render.message_text(status.message)
        if force or noted or status.state != self.last_state:
            render.status_line(self.console, status)
        self.last_state = status.state

    def _artifact(self, artifact: pb.Artifact) -> None:
        if artifact.artifact_id not in self.artifacts:
            self.artifacts.add(artifact.artifact_id)
            render.artifact_header(self.console, artifact)
        render.print_parts(self.console, artifact.parts)

    def interrupted(self) -> None:
        console = render.stderr()
        if self.task is None or not self.task.id:
            console.print("interrupted")
            return
        console.print(f"interrupted; task {self.task.id} goes on without you:")
        console.print(f"  meshctl get {self.task.id}    meshctl cancel {self.task.id}")


# -- tasks -------------------------------------------------------------------------------------------------
@app.command()
def get(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    history: Annotated[int | None, typer.Option(min=0, help="Show the last N messages of its history.")] = None,
    events: Annotated[bool, typer.Option("--events", help="Also show the task store's event log.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Show a task: state, the agent's last word, artifacts."""
    opts = options(ctx, json_out)
    request = pb.GetTaskRequest(id=task_id)
    if history is not None:
        request.history_length = history
    with reported():
        task = asyncio.run(_get(opts.coordinator, request))
        record = client.task_record(opts.store, task_id) if events else None
    if opts.json:
        render.print_json({"task": render.as_dict(task), "record": record} if events else render.as_dict(task))
        return
    console = render.stdout()
    render.print_task(console, task, history=history is not None)
    if record is not None:
        render.print_store_record(console, record)


async def _get(url: str, request: pb.GetTaskRequest) -> pb.Task:
    async with client.coordinator(url) as a2a:
        return await a2a.get_task(request)


def parse_state(text: str) -> int:
    name = text.upper().replace("-", "_")
    name = name if name.startswith("TASK_STATE_") else "TASK_STATE_" + name
    if name not in pb.TaskState.DESCRIPTOR.values_by_name or name == "TASK_STATE_UNSPECIFIED":
        choices = ", ".join(render.state_name(v) for v in pb.TaskState.values() if v).lower()
        raise client.CliError(f"unknown state {text!r}; one of: {choices}", code=2)
    return pb.TaskState.Value(name)


@app.command(name="list")
def list_tasks(
    ctx: typer.Context,
    context: Annotated[str | None, typer.Option(help="Only tasks of this context.")] = None,
    state: Annotated[str | None, typer.Option(help="Only tasks in this state (e.g. working, completed).")] = None,
    page_size: Annotated[int | None, typer.Option(min=1, help="Tasks per page.")] = None,
    page_token: Annotated[str | None, typer.Option(help="The page to show (from a previous listing).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List tasks, most recently updated first."""
    opts = options(ctx, json_out)
    with reported():
        request = pb.ListTasksRequest(context_id=context or "", page_token=page_token or "")
        if state:
            request.status = parse_state(state)
        if page_size:
            request.page_size = page_size
        page = asyncio.run(_list(opts.coordinator, request))
    if opts.json:
        render.print_json(render.as_dict(page))
        return
    render.stdout().print(render.tasks_table(page))
    if page.next_page_token:
        more = ["meshctl", "list", "--page-token", page.next_page_token]
        more += ["--context", context] if context else []
        more += ["--state", state] if state else []
        more += ["--page-size", str(page_size)] if page_size else []
        render.stdout().print(Text("next page:  " + " ".join(more), style="dim"))


async def _list(url: str, request: pb.ListTasksRequest) -> pb.ListTasksResponse:
    async with client.coordinator(url) as a2a:
        return await a2a.list_tasks(request)


@app.command()
def cancel(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    json_out: JsonFlag = False,
) -> None:
    """Cancel a running task (the agent holding it stops, and the task ends CANCELED)."""
    opts = options(ctx, json_out)
    with reported():
        task = asyncio.run(_cancel(opts.coordinator, task_id))
    if opts.json:
        render.print_json(render.as_dict(task))
    else:
        render.print_outcome(render.stdout(), task, opts.coordinator, waited=True)
    raise typer.Exit(0 if task.status.state == pb.TASK_STATE_CANCELED else EXIT_FAILED)


async def _cancel(url: str, task_id: str) -> pb.Task:
    async with client.coordinator(url) as a2a:
        return await a2a.cancel_task(pb.CancelTaskRequest(id=task_id))


# -- events ------------------------------------------------------------------------------------------------
@app.command()
def events(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(help="Only this agent's events (id, or org/unit/id).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after N events.")] = None,
    seconds: Annotated[float | None, typer.Option(min=0.1, help="Stop after S seconds.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Follow the mesh's task events live (one line each) until --limit, --seconds or Ctrl-C."""
    opts = options(ctx, json_out)
    console = render.stdout()
    with reported():
        settings = opts.settings()
        local = f"{settings.org}/{settings.unit}/"

        def ready(topics: list[str], client_id: str) -> None:
            where = f"{settings.mqtt.host}:{settings.mqtt.port}"
            render.stderr().print(f"following {', '.join(topics)} at {where} as {client_id} (Ctrl-C to stop)")

        def show(event: MeshEvent) -> None:
            if opts.json:
                print(json.dumps(event.to_wire(), ensure_ascii=False), flush=True)
                return
            who = event.agent.removeprefix(local)
            detail = render.styled_state(event.state) if event.state else Text(event.artifact or "-", style="cyan")
            line = Text.assemble((event.time.strftime("%H:%M:%S.%f")[:-3], "dim"), "  ", (who, "bold"), "  ")
            console.print(line + Text(f"{event.task_id}  {event.kind:<8} ") + detail)

        try:
            asyncio.run(follow(settings, agent=agent, limit=limit, seconds=seconds, on_ready=ready, on_event=show))
        except KeyboardInterrupt:
            render.stderr().print("stopped")


# -- outside identities (operators) ------------------------------------------------------------------------------
app.add_typer(identity.identity_app, name="identity")
app.add_typer(push.push_app, name="push")


def _identity_context(ctx: typer.Context, pki_dir: Path | None) -> tuple[Options, identity.Pki, identity.Broker]:
    opts: Options = ctx.find_root().obj
    settings = opts.settings()
    pki = identity.find_pki(pki_dir, settings.org, settings.unit)
    return opts, pki, identity.Broker(opts.mqtt_host, opts.mqtt_port)


@identity.identity_app.command("add")
def identity_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The participant's name: its identity is <org>/<unit>/<name>.")],
    role: Annotated[str, typer.Option(help="requester (sends requests, reads its replies) or agent (serves).")],
    pool: Annotated[str | None, typer.Option(help="An agent's pool, if it joins one.")] = None,
    pki_dir: identity.PkiOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Issue NAME's certificate and password and admit it on the running broker with its role (idempotent)."""
    with reported():
        opts, pki, broker = _identity_context(ctx, pki_dir)
        identity.show(identity.add(pki, name, role, pool, broker), opts.json or json_out)


@identity.identity_app.command("remove")
def identity_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="An identity added with `meshctl identity add` or `make identity`.")],
    pki_dir: identity.PkiOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Revoke NAME at once: its connections are dropped, it is refused from now on, its files are deleted."""
    with reported():
        opts, pki, broker = _identity_context(ctx, pki_dir)
        identity.show(identity.remove(pki, name, broker), opts.json or json_out)


@identity.identity_app.command("list")
def identity_list(ctx: typer.Context, pki_dir: identity.PkiOption = None, json_out: JsonFlag = False) -> None:
    """The outside identities admitted and not revoked."""
    with reported():
        opts, pki, _ = _identity_context(ctx, pki_dir)
        records = identity.listed(pki)
    if opts.json or json_out:
        render.print_json({"identities": records})
    elif not records:
        render.stderr().print("no outside identities")
    else:
        render.stdout().print("\n".join(f"{r['username']:<40} {r['role']:<10} {r['pool']}" for r in records))
