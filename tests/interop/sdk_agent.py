"""An agent nobody here wrote the runtime of: built only on the a2a-over-mqtt SDK's Responder.
Run as a script; reads the broker port and agent id from the environment."""

from __future__ import annotations

import asyncio
import os
import signal

from a2a_over_mqtt import A2ARequest, Responder, TopicSpace, build_card

from a2amesh.settings import ServiceSettings
from tests.interop.sdk_config import sdk_config


class Shouter(Responder):
    """Upper-cases what it is sent."""

    async def on_request(self, request: A2ARequest, stream) -> str:  # type: ignore[no-untyped-def]
        await stream("shouting")
        return request.text.upper()


async def main() -> None:
    mqtt = ServiceSettings().mqtt  # MESH_MQTT__*: the mesh's broker, TLS files and this agent's credentials
    agent_id = os.environ.get("MESH_AGENT_ID", "shouter")
    card = build_card(
        name="Shouter",
        description="Upper-cases text (an a2a-over-mqtt SDK agent)",
        url=f"mqtts://{mqtt.host}:{mqtt.port}",
        skills=[{"id": "shout", "name": "Shout", "description": "Upper-cases the text it receives"}],
    )
    agent = Shouter(agent_id=agent_id, mqtt=sdk_config(mqtt), topics=TopicSpace("acme", "default"), card=card)
    runner = asyncio.create_task(agent.run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
