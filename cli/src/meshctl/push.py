"""`meshctl push`: a task's push-notification configs (set, get, list, delete: the A2A methods, over JSON-RPC or
with --grpc over gRPC) and the deliveries the coordinator gave up on (`dead-letters`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from a2a.client import Client
from a2a.types import a2a_pb2 as pb
from rich.table import Table
from rich.text import Text

from meshctl import client, render

push_app = typer.Typer(
    help="Push notifications: a task's webhook configs, and failed deliveries.", no_args_is_help=True
)

T = TypeVar("T")
TaskArg = Annotated[str, typer.Argument(help="The task id.")]
ConfigArg = Annotated[str, typer.Argument(help="The config id.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine output: JSON on stdout.")]


def _run(ctx: typer.Context, call: Callable[[Client], Awaitable[T]]) -> T:
    """`call` on an a2a-sdk client of the coordinator; a CliError becomes its message and exit code."""

    async def go() -> T:
        async with client.coordinator(ctx.obj.coordinator) as a2a:
            return await call(a2a)

    try:
        return asyncio.run(go())
    except client.CliError as error:
        render.stderr().print(Text.assemble(("error: ", "bold red"), error.message))
        raise typer.Exit(error.code) from None


def _show(ctx: typer.Context, json_out: bool, configs: list[pb.TaskPushNotificationConfig]) -> None:
    if ctx.obj.json or json_out:
        render.print_json({"configs": [render.as_dict(config) for config in configs]})
        return
    table = Table("task", "config", "url", "authentication", "token")
    for config in configs:
        scheme = config.authentication.scheme if config.HasField("authentication") else ""
        table.add_row(
            config.task_id, config.id, config.url, f"{scheme} ***" if scheme else "", "***" * bool(config.token)
        )
    render.stdout().print(table)


@push_app.command("set")
def set_config(
    ctx: typer.Context,
    task_id: TaskArg,
    url: Annotated[str, typer.Argument(help="The webhook (must be public unless the operator allow-lists it).")],
    config_id: Annotated[str, typer.Option("--id", help="The config's id (default: a new one).")] = "",
    scheme: Annotated[str, typer.Option(help="Authorization scheme the webhook expects, e.g. Bearer.")] = "",
    credentials: Annotated[
        str, typer.Option(envvar="MESH_PUSH_CREDENTIALS", help="The credentials sent with the scheme.")
    ] = "",
    token: Annotated[str, typer.Option(help="A token sent as X-A2A-Notification-Token.")] = "",
    json_out: JsonFlag = False,
) -> None:
    """Have every later update of a task POSTed to a webhook."""
    config = pb.TaskPushNotificationConfig(task_id=task_id, id=config_id, url=url, token=token)
    if scheme:
        config.authentication.scheme = scheme
        config.authentication.credentials = credentials
    saved = _run(ctx, lambda a2a: a2a.create_task_push_notification_config(config))
    _show(ctx, json_out, [saved])


@push_app.command("get")
def get_config(ctx: typer.Context, task_id: TaskArg, config_id: ConfigArg, json_out: JsonFlag = False) -> None:
    """One push config of a task."""
    request = pb.GetTaskPushNotificationConfigRequest(task_id=task_id, id=config_id)
    _show(ctx, json_out, [_run(ctx, lambda a2a: a2a.get_task_push_notification_config(request))])


@push_app.command("list")
def list_configs(ctx: typer.Context, task_id: TaskArg, json_out: JsonFlag = False) -> None:
    """Every push config of a task."""
    request = pb.ListTaskPushNotificationConfigsRequest(task_id=task_id)
    listed = _run(ctx, lambda a2a: a2a.list_task_push_notification_configs(request))
    _show(ctx, json_out, list(listed.configs))


@push_app.command("delete")
def delete_config(ctx: typer.Context, task_id: TaskArg, config_id: ConfigArg) -> None:
    """Stop a push config's deliveries."""
    request = pb.DeleteTaskPushNotificationConfigRequest(task_id=task_id, id=config_id)
    _run(ctx, lambda a2a: a2a.delete_task_push_notification_config(request))
    render.stdout().print(f"deleted push config {config_id} of task {task_id}")


@push_app.command("dead-letters")
def dead_letters(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Deliveries to your tasks' webhooks that ran out of retries (an operator's key: everyone's)."""
    try:
        body: Any = asyncio.run(client.coordinator_json(ctx.obj.coordinator, "/push/dead-letters"))
    except client.CliError as error:
        render.stderr().print(Text.assemble(("error: ", "bold red"), error.message))
        raise typer.Exit(error.code) from None
    if ctx.obj.json or json_out:
        render.print_json(body)
        return
    table = Table("failed at", "task", "config", "url", "attempts", "error")
    for letter in body["deadLetters"]:
        table.add_row(
            letter["failedAt"],
            letter["taskId"],
            letter["configId"],
            letter["url"],
            str(letter["attempts"]),
            letter["error"],
        )
    render.stdout().print(table)
