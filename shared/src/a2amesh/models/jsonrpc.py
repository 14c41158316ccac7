"""JSON-RPC 2.0 envelopes and the error codes of A2A v1.0 and of the MQTT binding."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JsonRpcId = str | int | None


class ErrorCode(IntEnum):
    """JSON-RPC error codes used on the mesh.

    The MQTT binding's codes (-32003..-32005) collide with A2A core codes of the same numbers; they are told apart
    by `error.data.a2a_error`, which binding errors always carry.
    """

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    TASK_NOT_FOUND = -32001
    TASK_NOT_CANCELABLE = -32002
    PUSH_NOTIFICATION_NOT_SUPPORTED = -32003
    UNSUPPORTED_OPERATION = -32004
    CONTENT_TYPE_NOT_SUPPORTED = -32005
    INVALID_AGENT_RESPONSE = -32006
    EXTENDED_CARD_NOT_CONFIGURED = -32007
    EXTENSION_SUPPORT_REQUIRED = -32008
    VERSION_NOT_SUPPORTED = -32009


class BindingError(IntEnum):
    """Errors of the A2A-over-MQTT binding itself, carried with `data.a2a_error`."""

    REQUEST_EXPIRED = -32003
    RESPONDER_UNAVAILABLE = -32004
    TRANSPORT_PROTOCOL_ERROR = -32005

    @property
    def wire_name(self) -> str:
        """The `data.a2a_error` string for this error."""
        return self.name.lower()

    @property
    def retryable(self) -> bool:
        """Whether a requester may retry after this error (with new correlation data, the same task id)."""
        return self is not BindingError.TRANSPORT_PROTOCOL_ERROR


class JsonRpcErrorBody(BaseModel):
    """The `error` member of a JSON-RPC response."""

    model_config = ConfigDict(extra="ignore")

    code: int
    message: str
    data: Any = None

    @property
    def binding_error(self) -> BindingError | None:
        """The binding error this is, if `data.a2a_error` names one."""
        if isinstance(self.data, dict):
            name = self.data.get("a2a_error")
            for error in BindingError:
                if error.wire_name == name and error.value == self.code:
                    return error
        return None


class JsonRpcRequest(BaseModel):
    """A JSON-RPC 2.0 request (a notification when `id` is absent)."""

    model_config = ConfigDict(extra="forbid")

    jsonrpc: Literal["2.0"]
    id: JsonRpcId = None
    method: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _no_boolean_id(cls, value: Any) -> Any:
        if isinstance(value, bool):  # lax validation would read `true` as the id 1
            raise ValueError("id must be a string, a number or null")
        return value


class JsonRpcResponse(BaseModel):
    """A JSON-RPC 2.0 response: exactly one of `result` or `error`."""

    model_config = ConfigDict(extra="ignore")

    jsonrpc: Literal["2.0"] = "2.0"
    id: JsonRpcId = None
    result: Any = None
    error: JsonRpcErrorBody | None = None

    @model_validator(mode="after")
    def _exactly_one_of_result_or_error(self) -> JsonRpcResponse:
        if ("result" in self.model_fields_set) == (self.error is not None):
            raise ValueError("a JSON-RPC response carries exactly one of result or error")
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict, with only one of result/error present."""
        wire: dict[str, Any] = {"jsonrpc": "2.0", "id": self.id}
        if self.error is not None:
            wire["error"] = self.error.model_dump(exclude_none=True)
        else:
            wire["result"] = self.result
        return wire


def a2a_error_info(reason: str, metadata: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`error.data` for an A2A error: a list of google.rpc.ErrorInfo-shaped objects."""
    info: dict[str, Any] = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "a2a-protocol.org",
    }
    if metadata:
        info["metadata"] = metadata
    return [info]


def error_response(request_id: JsonRpcId, code: int, message: str, data: Any = None) -> JsonRpcResponse:
    """A JSON-RPC error response."""
    return JsonRpcResponse(id=request_id, error=JsonRpcErrorBody(code=code, message=message, data=data))


def binding_error_response(request_id: JsonRpcId, error: BindingError, message: str) -> JsonRpcResponse:
    """A binding error response, tagged with `data.a2a_error` so it is not mistaken for the A2A code it shares."""
    return error_response(request_id, error.value, message, {"a2a_error": error.wire_name})


def result_response(request_id: JsonRpcId, result: Any) -> JsonRpcResponse:
    """A JSON-RPC success response."""
    return JsonRpcResponse(id=request_id, result=result)
