"""The a2a-over-mqtt SDK's MqttConfig, given the mesh's TLS and credentials (its own knows only a default TLS
context without the mesh's CA, and no client certificate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from a2a_over_mqtt import MqttConfig

from a2amesh.mqtt import tls_context
from a2amesh.settings import MqttSettings


@dataclass(frozen=True)
class MeshMqttConfig(MqttConfig):
    """MqttConfig plus the mesh's connection settings."""

    mesh: MqttSettings | None = None

    def client_kwargs(self, **overrides: Any) -> dict:
        kwargs = super().client_kwargs(**overrides)
        if self.mesh is not None:
            kwargs.update(tls_context=tls_context(self.mesh), username=self.mesh.username, password=self.mesh.secret())
        return kwargs


def sdk_config(settings: MqttSettings) -> MeshMqttConfig:
    """An SDK config reaching the broker exactly as `settings` does."""
    return MeshMqttConfig(host=settings.host, port=settings.port, mesh=settings)
