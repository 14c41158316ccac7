"""The responder side of the binding: serves one agent on its request topic (and pool), following the profile's
Core rules — Response Topic and Correlation Data required, requester-generated Task.id de-duplicated, contextId
checked, every stream item echoing the Correlation Data — and publishes each task event for the durable record.

Two parts, each testable alone: `AgentTransport` (binding.transport: the MQTT connection, presence, publishes) and
`TaskMachine` (binding.machine: JSON-RPC dispatch and the tasks). The `Responder` joins them and runs their life."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from a2amesh.binding.machine import SHUTDOWN_GRACE, CancelHook, Handler, TaskMachine
from a2amesh.binding.tasks import FinishedTask, TaskRecord
from a2amesh.binding.transport import AgentTransport
from a2amesh.models import AgentCard
from a2amesh.mqtt import MqttLink
from a2amesh.observability import ServiceMetrics
from a2amesh.settings import AgentSettings
from a2amesh.topics import AgentAddress, PoolAddress

__all__ = ["SHUTDOWN_GRACE", "Responder"]


class Responder:
    """Serves one agent: its card and presence, its requests, its task events."""

    def __init__(
        self,
        card: AgentCard,
        handler: Handler,
        settings: AgentSettings,
        metrics: ServiceMetrics | None = None,
        on_cancel: CancelHook | None = None,
    ) -> None:
        self.card = card
        self.settings = settings
        self.address: AgentAddress = settings.address(settings.agent_id)
        self.pool = PoolAddress(settings.org, settings.unit, settings.pool) if settings.pool else None
        self.metrics = metrics or ServiceMetrics(settings.agent_id)
        self.transport = AgentTransport(
            settings.mqtt,
            self.address,
            card.to_json().encode(),
            pool=self.pool,
            load=lambda: self.machine.load,
        )
        self.machine = TaskMachine(
            card,
            handler,
            settings,
            self.transport,
            pooled=self.pool is not None,
            metrics=self.metrics,
            on_cancel=on_cancel,
        )
        self.transport.receive = self.machine.handle  # each needs the other: the machine answers through it
        self.metrics.track_in_flight(lambda: self.machine.in_flight)
        self.metrics.track_reconnects(lambda: self.link.reconnects)

    @property
    def link(self) -> MqttLink:
        """The agent's MQTT connection (its `connected` event says whether the broker is reachable)."""
        return self.transport.link

    @property
    def tasks(self) -> OrderedDict[str, TaskRecord | FinishedTask]:
        return self.machine.tasks

    @property
    def accepting(self) -> bool:
        return self.machine.accepting

    @property
    def in_flight(self) -> int:
        return self.machine.in_flight

    @property
    def load(self) -> float:
        return self.machine.load

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop`; then drain, end what is left, and go offline gracefully."""
        link_stop = asyncio.Event()
        link_task = asyncio.create_task(self.link.run(link_stop))
        load_task = asyncio.create_task(self.transport.report_load(stop))
        keepalive_task = asyncio.create_task(self.machine.keep_alive(link_stop))  # through the drain too
        await stop.wait()
        self.machine.accepting = False
        await self.transport.leave_pool()
        await load_task
        await self.machine.drain()
        await self.transport.go_offline()
        link_stop.set()
        await keepalive_task
        await link_task
