"""The extended agent card (`GetExtendedAgentCard`, `GET /extendedAgentCard`): for an authenticated caller, the public
card plus the mesh's live state behind it, as an extension of the card's capabilities: every agent's status (online
or offline, as the registry has it), the load it reports, the tasks this coordinator is relaying to it, and each
pool's size. At the root it covers the whole mesh; at `/agents/{name}` only that agent (or pool).

Only authenticated callers get here: the HTTP guard lets no request without a valid key through to these routes,
and the gRPC server's interceptor does the same (A2A §13.3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from a2a.types import a2a_pb2 as pb
from google.protobuf.struct_pb2 import Struct

from a2amesh.topics import AgentAddress
from mesh_coordinator.cards import CardFinisher
from mesh_coordinator.router import Endpoint, MeshRouter, endpoint_name

MESH_STATUS_EXTENSION = "https://a2a-mqtt-mesh.dev/extensions/mesh-status/v1"
"""The capabilities extension the extended card carries the live state in (its `params`)."""

PublicCard = Callable[[Endpoint | None], Awaitable[pb.AgentCard]]
"""The public card as built, before it is finished (interfaces, signature), of the root (None) or an endpoint."""


def mesh_status(records: list[dict[str, Any]], in_flight: Callable[[AgentAddress], int]) -> dict[str, Any]:
    """The registry's records grouped by endpoint: each with its pool size, instances online, and per instance its
    status, reported load and tasks in flight from this coordinator."""
    endpoints: dict[str, dict[str, Any]] = {}
    for record in records:
        name = endpoint_name(record)
        address = AgentAddress.parse(record["address"])
        entry = endpoints.setdefault(name, {"name": name, "pool": address.agent != name, "instances": []})
        entry["instances"].append(
            {
                "agent": record["address"],
                "status": record.get("status"),
                "load": record.get("load"),
                "inFlight": in_flight(address),
                "updatedAt": record.get("updatedAt"),
            }
        )
    for entry in endpoints.values():
        entry["size"] = len(entry["instances"])
        entry["online"] = sum(1 for instance in entry["instances"] if instance["status"] == "online")
    return {"agents": [endpoints[name] for name in sorted(endpoints)]}


class ExtendedCards:
    """Builds the extended card of the root or of one endpoint, from the registry's current view."""

    def __init__(
        self,
        router: MeshRouter,
        public_card: PublicCard,
        finisher: CardFinisher,
        in_flight: Callable[[AgentAddress], int],
    ) -> None:
        self.router = router
        self.public_card = public_card
        self.finisher = finisher
        self.in_flight = in_flight

    async def card(self, endpoint: Endpoint | None) -> pb.AgentCard:
        records = await self.router.known()
        if endpoint is not None:
            records = [record for record in records if endpoint_name(record) == endpoint.name]
        extended = await self.public_card(endpoint)
        params = Struct()
        params.update(mesh_status(records, self.in_flight))
        extended.capabilities.extensions.add(
            uri=MESH_STATUS_EXTENSION,
            description="the mesh's live state: every agent's status, load and tasks in flight, each pool's size",
            params=params,
        )
        return self.finisher.finish(
            extended, endpoint.name if endpoint is not None else ""
        )  # signed like the public card, the extension covered
