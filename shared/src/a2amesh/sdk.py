"""The bridge between our pydantic models and the official a2a-sdk's protobuf types, through their shared JSON
form. Services that sit behind `a2a-sdk` (the coordinator's HTTP face) convert here and nowhere else."""

from __future__ import annotations

from typing import TypeVar

from a2a.types import a2a_pb2
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.message import Message as ProtoMessage

from a2amesh.models import A2AModel, StreamResponse

ModelT = TypeVar("ModelT", bound=A2AModel)
ProtoT = TypeVar("ProtoT", bound=ProtoMessage)

SdkEvent = a2a_pb2.Task | a2a_pb2.Message | a2a_pb2.TaskStatusUpdateEvent | a2a_pb2.TaskArtifactUpdateEvent


def to_proto(model: A2AModel, proto_type: type[ProtoT]) -> ProtoT:
    """Our model as the SDK's protobuf message (strict: an unknown field is a bug in our model)."""
    return ParseDict(model.to_wire(), proto_type())


def from_proto(message: ProtoMessage, model_type: type[ModelT]) -> ModelT:
    """An SDK protobuf message as our model."""
    return model_type.from_wire(MessageToDict(message))


def to_sdk_event(item: StreamResponse) -> SdkEvent:
    """A stream item as the event object the SDK's request handlers yield."""
    response = to_proto(item, a2a_pb2.StreamResponse)
    field = response.WhichOneof("payload")
    if field is None:
        raise ValueError("empty StreamResponse")
    return getattr(response, field)
