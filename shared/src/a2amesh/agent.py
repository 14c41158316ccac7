"""The agent runtime: subclass `MeshAgent`, declare each skill with `@skill` on the method that does it, and
`serve()` does the rest (card, presence with the card as Will, requests, de-duplication, task events, routing a
task to its skill's method, graceful stop)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from starlette.applications import Starlette

from a2amesh.binding.machine import Outbox, TaskMachine
from a2amesh.binding.responder import SHUTDOWN_GRACE, Responder
from a2amesh.binding.tasks import TaskContext, TaskFailedError, TaskRejectedError
from a2amesh.binding.wire import (
    MQTT_BINDING,
    POOL_EXTENSION,
    RERUN_EXTENSION,
    SKILL_METADATA_KEY,
    TASK_EVENTS_EXTENSION,
)
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

__all__ = ["MeshAgent", "TaskContext", "TaskFailedError", "TaskRejectedError", "serve", "skill"]

SkillMethod = TypeVar("SkillMethod", bound=Callable[..., Awaitable[None]])
SKILL_ATTRIBUTE = "__mesh_skill__"


def skill(
    id: str,
    name: str,
    description: str,
    *,
    tags: Sequence[str] = (),
    examples: Sequence[str] | None = None,
    input_modes: Sequence[str] | None = None,
    output_modes: Sequence[str] | None = None,
) -> Callable[[SkillMethod], SkillMethod]:
    """Declare a skill on the method that does it: the skill goes on the agent's card, and a task asking for it
    (request metadata `skill`) runs the method. The first skill declared is the one a task naming none gets."""
    declared = AgentSkill(
        id=id,
        name=name,
        description=description,
        tags=list(tags),
        examples=list(examples) if examples is not None else None,
        input_modes=list(input_modes) if input_modes is not None else None,
        output_modes=list(output_modes) if output_modes is not None else None,
    )

    def mark(method: SkillMethod) -> SkillMethod:
        setattr(method, SKILL_ATTRIBUTE, declared)
        return method

    return mark


class MeshAgent:
    """A specialist on the mesh. Class attributes describe it; each `@skill` method does one skill's tasks.

    (An agent may instead list `skills` itself and override `handle`, routing on its own.)"""

    name: ClassVar[str]
    description: ClassVar[str]
    skills: ClassVar[list[AgentSkill]]
    skill_methods: ClassVar[dict[str, str]] = {}
    """Skill id -> the name of the method that does it, in declaration order (filled from the `@skill` methods)."""
    version: ClassVar[str] = "0.1.0"
    input_modes: ClassVar[list[str]] = ["text/plain"]
    output_modes: ClassVar[list[str]] = ["text/plain"]
    rerunnable: ClassVar[bool] = False
    """Whether every skill may run again from the start under the same task id, on another replica, when the one
    running it dies (no side effect outside the task's own result). Declared on the card (RERUN_EXTENSION)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: dict[str, AgentSkill] = {}
        methods: dict[str, str] = {}
        for klass in reversed(cls.__mro__):  # a subclass's method overrides its base's, keeping the base's order
            for attribute, value in vars(klass).items():
                declaration = getattr(value, SKILL_ATTRIBUTE, None)
                if isinstance(declaration, AgentSkill):
                    declared[declaration.id] = declaration
                    methods[declaration.id] = attribute
        if methods:
            if "skills" in vars(cls):
                raise TypeError(f"{cls.__name__}: declare skills with @skill or list them in `skills`, not both")
            cls.skills = list(declared.values())
            cls.skill_methods = methods

    def __init__(self, settings: AgentSettings) -> None:
        if not self.skill_methods and type(self).handle is MeshAgent.handle:
            raise TypeError(f"{type(self).__name__}: declare at least one @skill method (or override handle)")
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
        """An agent given tokens, or the coordinator's JWKS, declares per-request Bearer authorization (the
        profile's a2a-authorization)."""
        jwt = self.settings.auth_jwks_url is not None
        if not jwt and not read_keys(self.settings.auth_tokens, self.settings.auth_tokens_file):
            return {}
        scheme = HTTPAuthSecurityScheme(
            scheme="Bearer",
            bearer_format="JWT" if jwt else None,
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

    async def handle(self, task: TaskContext) -> None:
        """Run the `@skill` method the task asks for (metadata `skill`; none named: the first skill declared).
        A skill this agent does not have is REJECTED. The method reports through `task`: raise TaskRejectedError
        for bad input; returning without ending the task completes it; any other exception fails it."""
        requested = task.metadata.get(SKILL_METADATA_KEY)
        skill_id = next(iter(self.skill_methods)) if requested is None else requested
        method = self.skill_methods.get(skill_id) if isinstance(skill_id, str) else None
        if method is None:
            offered = ", ".join(repr(known) for known in self.skill_methods)
            raise TaskRejectedError(f"unknown skill {requested!r}: this agent does {offered}")
        await getattr(self, method)(task)

    def responder(self) -> Responder:
        """The binding's responder serving this agent over MQTT: what `serve` runs."""
        return Responder(self.card(), self.handle, self.settings, on_cancel=self.on_cancel)

    def task_machine(self, outbox: Outbox) -> TaskMachine:
        """This agent's tasks run as its responder runs them, answering through `outbox` (what `a2amesh.testing`
        drives without a broker)."""
        pooled = self.settings.pool is not None
        return TaskMachine(self.card(), self.handle, self.settings, outbox, pooled=pooled, on_cancel=self.on_cancel)


def serve(agent_class: type[MeshAgent], settings: AgentSettings | None = None) -> None:
    """Run an agent process until SIGTERM/SIGINT (the body of every agent's `__main__`)."""
    settings = settings or AgentSettings()
    setup_logging(settings.log_level, settings.log_json)
    agent = agent_class(settings)

    async def main(stop: asyncio.Event) -> None:
        responder = agent.responder()
        if not settings.http_port:
            await responder.run(stop)
            return

        async def ready() -> dict[str, bool]:
            return {"broker": responder.link.connected.is_set(), "accepting": responder.accepting}

        app = Starlette(routes=health_routes(responder.metrics, ready))
        server = http_server(app, settings.http_host, settings.http_port)
        await serve_until(stop, server, responder.run(stop), grace=SHUTDOWN_GRACE + 5)  # the drain, then offline

    run(main)
