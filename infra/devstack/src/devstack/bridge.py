"""An edge site's broker bridged to the central one: the Mosquitto bridge section an edge broker adds to its
configuration, and the bridge identity it connects to the central broker as.

The edge broker opens the link (an edge site is usually the one behind NAT). It carries, and nothing else:
  out (edge -> central)  its agents' cards (retained, with their presence User Properties) and task events, and
                          every reply to the org's requesters;
  in  (central -> edge)  requests addressed to its own agents, and its own pools' requests.
The central broker admits the link as the bridge identity (`Role.BRIDGE`), whose role allows exactly those topics.
docs/operations.md "Past one broker" says when to bridge and when to move to a clustered broker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from a2amesh.topics import AgentAddress, PoolAddress, replies_filter
from devstack.dynsec import add_identity, remove_identity
from devstack.identities import Broker
from devstack.pki import ClientFiles, Identity, Pki, Role

QOS = 1
"""Every mesh topic is QoS 1 (docs/topics.md); the bridge keeps it."""


@dataclass(frozen=True)
class EdgeSite:
    """One edge site: its name, and the agents and pools connected to its broker."""

    name: str
    org: str
    unit: str
    agents: tuple[str, ...]
    pools: tuple[str, ...] = ()

    @property
    def identity(self) -> Identity:
        """The bridge's identity on the central broker (pinned to its username as client id, as every service)."""
        return Identity(f"bridge-{self.name}", Role.BRIDGE, site_agents=self.agents, site_pools=self.pools)

    def topics(self) -> list[tuple[str, str]]:
        """(topic, direction) for each `topic` line of the bridge, seen from the edge broker."""
        addresses = [AgentAddress(self.org, self.unit, agent) for agent in self.agents]
        out = [a.discovery_topic for a in addresses] + [a.event_topic for a in addresses]
        out.append(replies_filter(self.org))
        into = [a.request_topic for a in addresses] + [PoolAddress(self.org, self.unit, p).topic for p in self.pools]
        return [(topic, "out") for topic in out] + [(topic, "in") for topic in into]

    def bridge_config(self, address: str, ca_file: Path | str, files: ClientFiles, password: str) -> str:
        """The `connection` section of the edge broker's mosquitto.conf. It holds the bridge's password (Mosquitto
        reads it from no other place): keep the file 0600, like a key."""
        lines = [
            f"# edge site {self.name}: a bridge to the central broker (written by devstack.bridge; see",
            "# docs/operations.md). Only the topics below cross it, in the direction given.",
            f"connection {self.identity.name}",
            f"address {address}",
            "bridge_protocol_version mqttv50",
            f"bridge_cafile {ca_file}",
            f"bridge_certfile {files.cert}",
            f"bridge_keyfile {files.key}",
            "bridge_insecure false",
            f"remote_clientid {files.username}",
            f"remote_username {files.username}",
            f"remote_password {password}",
            f"local_clientid local.{self.identity.name}",
            "# a persistent session on the central broker: requests for this site wait there while the link is down",
            "cleansession false",
            "# no notification topic: the bridge identity may publish nothing but the mesh's topics",
            "notifications false",
            "start_type automatic",
            "restart_timeout 2 30",
            "keepalive_interval 30",
            "try_private false",
        ]
        lines += [f"topic {topic} {direction} {QOS}" for topic, direction in self.topics()]
        return "\n".join(lines) + "\n"


def admit_site(pki: Pki, site: EdgeSite, central: Broker | None) -> ClientFiles:
    """Issue the site's bridge identity in the central PKI, keep it across `make certs` (as an outside identity) and
    in the broker's seed, and admit it on the running central broker (None: a broker started later)."""
    files = pki.client(site.identity)
    pki.record_outside(site.identity)
    pki.update_seed(site.identity)
    if central is not None:  # replaced whole: a site whose agents changed gets its new role (its link reconnects)
        remove_identity(central.admin(pki), pki, site.identity)
        add_identity(central.admin(pki), pki, site.identity)
    return files


def write_bridge_config(path: Path, text: str) -> Path:
    """Write a bridge section 0600 (it holds the bridge's password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    os.chmod(path, 0o600)
    path.write_text(text)
    return path
