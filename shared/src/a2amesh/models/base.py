"""The base every A2A model shares: camelCase on the wire, snake_case in Python, unknown fields ignored."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel


def _timestamp_to_wire(value: datetime) -> str:
    """ISO-8601 UTC with `Z` and millisecond precision, as the A2A spec writes timestamps."""
    offset = value.utcoffset()
    if not offset:  # naive (taken as UTC) or already UTC, the common case: nothing to convert
        return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    # isoformat, unlike strftime("%Y"), zero-pads years before 1000 (protobuf's Timestamp starts at 0001-01-01).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _representable_in_utc(value: datetime) -> datetime:
    """Refuse what `_timestamp_to_wire` could not write: an offset that pushes the time past year 1 or 9999."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError as error:
            raise ValueError("timestamp out of range once converted to UTC") from error
    return value


Timestamp = Annotated[
    datetime,
    AfterValidator(_representable_in_utc),
    PlainSerializer(_timestamp_to_wire, return_type=str, when_used="json-unless-none"),
]
"""A datetime that serialises the way protobuf's JSON mapping (and A2A) expects."""

JsonObject = dict[str, Any]

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
"""A proto `int32`: values outside its range cannot be written to an SDK peer (ParseDict rejects them)."""


def _bytes_from_wire(value: Any) -> Any:
    if isinstance(value, str):
        padded = value + "=" * (-len(value) % 4)
        try:
            return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except binascii.Error as error:
            raise ValueError(f"not valid base64: {error}") from error
    return value


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_bytes_from_wire),
    PlainSerializer(lambda value: base64.b64encode(value).decode("ascii"), return_type=str, when_used="json"),
]
"""Bytes that travel as base64 text (standard or URL-safe alphabet accepted, standard written)."""


def utc_now() -> datetime:
    """The current time, timezone-aware, truncated to milliseconds (the precision we put on the wire)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


class A2AModel(BaseModel):
    """Base for every wire model: accepts camelCase or snake_case, emits camelCase, ignores unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        # each model's validator is built on its first use, not at import: a process builds only those of the
        # models it handles (idle memory before its first traffic, docs/benchmarks.md); validation is the same
        defer_build=True,
    )

    def to_wire(self) -> JsonObject:
        """The JSON-ready dict for this model: camelCase keys, enums by name, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """The JSON text for this model, as `to_wire` describes it."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Validate a decoded JSON value (dict) into this model."""
        return cls.model_validate(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Validate JSON text into this model."""
        return cls.model_validate_json(text)
