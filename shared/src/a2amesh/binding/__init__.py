"""The A2A-over-MQTT binding (profile 0.1, Core level): a requester and a responder with its agent runtime."""

from a2amesh.binding.requester import (
    MeshRequester,
    RemoteError,
    ReplyStream,
    RequestTimeoutError,
    RequestTooLargeError,
    RetryProfile,
)
from a2amesh.binding.wire import MQTT_BINDING, is_mqtt_interface

__all__ = [
    "MQTT_BINDING",
    "MeshRequester",
    "RemoteError",
    "ReplyStream",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "RetryProfile",
    "is_mqtt_interface",
]
