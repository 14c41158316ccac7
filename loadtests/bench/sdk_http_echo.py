"""Peer: an a2a-sdk HTTP echo server doing the echo agent's work in-process (no broker, no second hop).

AgentExecutor + DefaultRequestHandler + create_jsonrpc_routes under uvicorn; per task it emits what our echo agent
emits: the Task, WORKING, the echo artifact, COMPLETED. `python -m loadtests.bench.sdk_http_echo <port>`."""

from __future__ import annotations

import sys

import uvicorn
from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as pb
from starlette.applications import Starlette


class EchoExecutor(AgentExecutor):
    """Echoes the user's text parts back as an artifact named "echo"."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        assert message is not None
        task = context.current_task or new_task_from_user_message(message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        parts = [pb.Part(text=part.text) for part in message.parts if part.HasField("text")]
        await updater.add_artifact(parts, name="echo")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def card(url: str) -> pb.AgentCard:
    return pb.AgentCard(
        name="SDK HTTP Echo",
        description="Echoes text (a2a-sdk in-process server, benchmark peer)",
        supported_interfaces=[pb.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        version="0.1.0",
        capabilities=pb.AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[pb.AgentSkill(id="echo", name="Echo", description="Returns the text it receives", tags=["echo"])],
    )


def build_app(url: str) -> Starlette:
    agent_card = card(url)
    handler = DefaultRequestHandler(EchoExecutor(), InMemoryTaskStore(), agent_card)
    routes = [*create_agent_card_routes(agent_card), *create_jsonrpc_routes(handler, rpc_url="/")]
    return Starlette(routes=routes)


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.run(build_app(f"http://127.0.0.1:{port}/"), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
