"""The agent runtime: subclass `MeshAgent`, declare skills, implement `handle`, and `serve()` does the rest
(card, presence with the card as Will, requests, de-duplication, task events, graceful stop)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import ClassVar

from starlette.applications import Starlette

from a2amesh.binding.responder import SHUTDOWN_GRACE, Responder
from a2amesh.binding.tasks import TaskContext, TaskFailedError, TaskRejectedError
from a2amesh.binding.wire import MQTT_BINDING, POOL_EXTENSION, RERUN_EXTENSION, TASK_EVENTS_EXTENSION
from a2amesh.models import (
    AgentCapabilities,
    AgentCard,
    AgentExtension,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2amesh.observability import health_routes
from a2amesh.runtime import http_server, run, serve_until, setup_logging
from a2amesh.settings import AgentSettings, read_keys
from a2amesh.topics import PoolAddress

__all__ = ["MeshAgent", "TaskContext", "TaskFailedError", "TaskRejectedError", "serve"]


class MeshAgent(ABC):
    """A specialist on the mesh. Class attributes describe it; `handle` does one task's work."""

    name: ClassVar[str]
    description: ClassVar[str]
    skills: ClassVar[list[AgentSkill]]
    version: ClassVar[str] = "0.1.0"
    input_modes: ClassVar[list[str]] = ["text/plain"]
    output_modes: ClassVar[list[str]] = ["text/plain"]
    rerunnable: ClassVar[bool] = False
    """Whether every skill may run again from the start under the same task id, on another replica, when the one
    running it dies (no side effect outside the task's own result). Declared on the card (RERUN_EXTENSION)."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    def card(self) -> AgentCard:
        """The Agent Card published (retained) on the agent's discovery topic."""
        address = self.settings.address(self.settings.agent_id)
        mqtt = self.settings.mqtt
        scheme = "mqtts" if mqtt.tls else "mqtt"
        return AgentCard(
            name=self.name,
            description=self.description,
            supported_interfaces=[
                AgentInterface(
                    url=f"{scheme}://{mqtt.host}:{mqtt.port}/{address.request_topic}",
                    protocol_binding=MQTT_BINDING,
                    protocol_version="1.0",
                )
            ],
            provider=AgentProvider(organization=self.settings.org, url=f"urn:a2a-mesh:{self.settings.org}"),
            version=self.version,
            capabilities=AgentCapabilities(
                streaming=True,
                push_notifications=False,
                extensions=self._extensions(),
            ),
            default_input_modes=list(self.input_modes),
            default_output_modes=list(self.output_modes),
            skills=list(self.skills),
            **self._security(),
        )

    def _security(self) -> dict[str, object]:
        """An agent given tokens declares per-request Bearer authorization (the profile's a2a-authorization)."""
        if not read_keys(self.settings.auth_tokens, self.settings.auth_tokens_file):
            return {}
        scheme = HTTPAuthSecurityScheme(
            scheme="Bearer",
            description="sent per request in User Property a2a-authorization over MQTT (TLS only; never echoed)",
        )
        return {
            "security_schemes": {"bearer": SecurityScheme(http_auth_security_scheme=scheme)},
            "security_requirements": [SecurityRequirement(schemes={"bearer": StringList()})],
        }

    def _extensions(self) -> list[AgentExtension]:
        extensions = [AgentExtension(uri=TASK_EVENTS_EXTENSION, description="publishes every task event")]
        if self.settings.pool:
            pool = PoolAddress(self.settings.org, self.settings.unit, self.settings.pool)
            extensions.append(
                AgentExtension(
                    uri=POOL_EXTENSION,
                    description="serves a pool of replicas",
                    params={"pool": pool.pool, "topic": pool.topic},
                )
            )
        if self.rerunnable:
            extensions.append(
                AgentExtension(
                    uri=RERUN_EXTENSION,
                    description="skills that may run again under the same task id",
                    params={"skills": [skill.id for skill in self.skills]},
                )
            )
        return extensions

    async def on_cancel(self, task: TaskContext) -> None:
        """Called when a task waiting for input (so not running) is canceled: release what it holds.
        A running task is canceled through its handler instead (asyncio.CancelledError)."""
        return  # nothing held by default

    @abstractmethod
    async def handle(self, task: TaskContext) -> None:
        """Do the task's work, reporting through `task`. Raise TaskRejectedError for bad input; returning
        without ending the task completes it; any other exception fails it with the reason."""


def serve(agent_class: type[MeshAgent], settings: AgentSettings | None = None) -> None:
    """Run an agent process until SIGTERM/SIGINT (the body of every agent's `__main__`)."""
    settings = settings or AgentSettings()
    setup_logging(settings.log_level, settings.log_json)
    agent = agent_class(settings)

    async def main(stop: asyncio.Event) -> None:
        responder = Responder(agent.card(), agent.handle, settings, on_cancel=agent.on_cancel)
        if not settings.http_port:
            await responder.run(stop)
            return

        async def ready() -> dict[str, bool]:
            return {"broker": responder.link.connected.is_set(), "accepting": responder.accepting}

        app = Starlette(routes=health_routes(responder.metrics, ready))
        server = http_server(app, settings.http_host, settings.http_port)
        await serve_until(stop, server, responder.run(stop), grace=SHUTDOWN_GRACE + 5)  # the drain, then offline

    run(main)
