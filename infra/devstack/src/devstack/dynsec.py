"""Changing what a running broker admits, through Mosquitto's dynamic-security control topic, as its admin.
(The broker writes every change back to its configuration file, so it survives a broker restart.)"""

from __future__ import annotations

from a2amesh.dynsec import DynsecError, run_commands
from a2amesh.settings import MqttSettings
from devstack.pki import Identity, Pki

ALREADY = ("already exists",)
GONE = ("not found",)


def add_identity(admin: MqttSettings, pki: Pki, identity: Identity, timeout: float = 10.0) -> None:
    """Create the identity's role and client on the running broker (an identity that exists is left as it is)."""
    client, role = pki.dynsec_entries(identity)
    # the control API takes the password itself (the plugin hashes it); the file format holds the hash
    client = {key: value for key, value in client.items() if key not in ("password", "salt", "iterations")}
    client["password"] = pki.client(identity).password
    run_commands(admin, [{"command": "createRole", **role}, {"command": "createClient", **client}], ALREADY, timeout)


def remove_identity(admin: MqttSettings, pki: Pki, identity: Identity, timeout: float = 10.0) -> None:
    """Delete the identity's client and role on the running broker. The plugin disconnects every connection of that
    username at once, and refuses it from then on (an identity that is not there is left as it is)."""
    username = identity.username(pki.org, pki.unit)
    commands = [
        {"command": "deleteClient", "username": username},
        {"command": "deleteRole", "rolename": f"id:{username}"},
    ]
    run_commands(admin, commands, GONE, timeout)


__all__ = ["DynsecError", "add_identity", "remove_identity", "run_commands"]
