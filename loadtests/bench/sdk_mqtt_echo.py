"""Peer: an echo agent built only on the a2a-over-mqtt SDK's Responder (like tests/interop/sdk_agent.py).

Per request the SDK sends four replies (submitted, one working update, the artifact, completed), as our echo agent
does; it publishes no task events. `python -m loadtests.bench.sdk_mqtt_echo`, with MESH_MQTT__* (broker, TLS files,
credentials) and MESH_AGENT_ID in the environment."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from typing import Any

from a2a_over_mqtt import A2ARequest, MqttConfig, Responder, TopicSpace, build_card

from a2amesh.mqtt import tls_context
from a2amesh.runtime import run_on_service_loop
from a2amesh.settings import MqttSettings, ServiceSettings


@dataclass(frozen=True)
class MeshMqttConfig(MqttConfig):
    """The SDK's MqttConfig with the mesh's TLS context and credentials (its own knows neither)."""

    mesh: MqttSettings | None = None

    def client_kwargs(self, **overrides: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().client_kwargs(**overrides)
        if self.mesh is not None:
            kwargs.update(tls_context=tls_context(self.mesh), username=self.mesh.username, password=self.mesh.secret())
        return kwargs


class SdkEcho(Responder):
    """Returns the text it is sent."""

    async def on_request(self, request: A2ARequest, stream) -> str:  # type: ignore[no-untyped-def]
        await stream("echoing")
        return request.text


async def main() -> None:
    settings = ServiceSettings()
    mqtt = settings.mqtt
    agent_id = os.environ.get("MESH_AGENT_ID", "sdk-echo")
    card = build_card(
        name="SDK Echo",
        description="Echoes text (an a2a-over-mqtt SDK agent, benchmark peer)",
        url=f"mqtts://{mqtt.host}:{mqtt.port}",
        skills=[{"id": "sdk-echo", "name": "SDK echo", "description": "Returns the text it receives"}],
    )
    config = MeshMqttConfig(host=mqtt.host, port=mqtt.port, mesh=mqtt)
    topics = TopicSpace(settings.org, settings.unit)
    agent = SdkEcho(agent_id=agent_id, mqtt=config, topics=topics, card=card, max_concurrent=8)
    runner = asyncio.create_task(agent.run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


if __name__ == "__main__":
    run_on_service_loop(main())
