"""An agent stand-in for the Will test, run as its own process so the test can SIGKILL it: it connects with
the profile's Will (its card, retained, offline/lwt), publishes the card online/agent, says so, then idles.

usage: python will_client.py HOST PORT ORG/UNIT/AGENT CARD_JSON
"""

from __future__ import annotations

import asyncio
import sys

import aiomqtt
from paho.mqtt.packettypes import PacketTypes

from a2amesh.mqtt import make_client, publish_properties
from a2amesh.mqtt_base import STATUS_PROPERTY, STATUS_SOURCE_PROPERTY
from a2amesh.settings import ServiceSettings
from a2amesh.topics import AgentAddress


async def main(host: str, port: str, address_text: str, card_json: str) -> None:
    address = AgentAddress.parse(address_text)
    will_properties = publish_properties(
        packet=PacketTypes.WILLMESSAGE, user=[(STATUS_PROPERTY, "offline"), (STATUS_SOURCE_PROPERTY, "lwt")]
    )
    will = aiomqtt.Will(address.discovery_topic, card_json, qos=1, retain=True, properties=will_properties)
    # host and port from the command line; TLS files and credentials from MESH_MQTT__* (the test passes them)
    settings = ServiceSettings().mqtt.model_copy(update={"host": host, "port": int(port), "keepalive": 5})
    async with make_client(settings, address.client_id, will=will) as client:
        online = publish_properties(user=[(STATUS_PROPERTY, "online"), (STATUS_SOURCE_PROPERTY, "agent")])
        await client.publish(address.discovery_topic, card_json, qos=1, retain=True, properties=online)
        print("published", flush=True)
        await asyncio.sleep(120)  # bounded: the test kills us long before this


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
