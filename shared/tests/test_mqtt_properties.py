"""The properties the mesh publishes are built and packed its own way (LeanProperties, PackedProperties): on the
wire they must be byte for byte what paho itself packs, and read back the same."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from a2amesh import mqtt_base
from a2amesh.mqtt import (
    EVENT_ID_PROPERTY,
    JSON,
    LeanProperties,
    PackedProperties,
    event_properties,
    new_event_id,
    publish_properties,
)

mqtt_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


def paho_properties(packet: int, **values: object) -> Properties:
    """The same properties through paho's own class."""
    properties = Properties(packet)
    for name, value in values.items():
        if value is not None and value != []:
            setattr(properties, name, value)
    return properties


@settings(max_examples=300, deadline=None)
@given(
    topic=st.none() | mqtt_text.filter(bool),
    correlation=st.none() | st.binary(max_size=64),
    user=st.lists(st.tuples(mqtt_text, mqtt_text), max_size=4),
    content_type=st.none() | mqtt_text.filter(bool),
    expiry=st.none() | st.integers(min_value=1, max_value=2**32 - 1),
    reused=st.booleans(),
    packet=st.sampled_from([PacketTypes.PUBLISH, PacketTypes.WILLMESSAGE]),
)
def test_what_we_pack_is_what_paho_packs(
    topic: str | None,
    correlation: bytes | None,
    user: list[tuple[str, str]],
    content_type: str | None,
    expiry: int | None,
    reused: bool,
    packet: int,
) -> None:
    ours = publish_properties(
        response_topic=topic,
        correlation_data=correlation,
        user=user,
        content_type=content_type,
        message_expiry=expiry,
        packet=packet,
        reused=reused,
    )
    assert isinstance(ours, PackedProperties if reused else LeanProperties)
    theirs = paho_properties(
        packet,
        ResponseTopic=topic,
        CorrelationData=correlation,
        UserProperty=user,
        ContentType=content_type,
        MessageExpiryInterval=expiry,
    )

    packed = ours.pack()
    assert packed == theirs.pack()
    assert ours.pack() == packed  # again: a packed-once object must not drift
    decoded = Properties(PacketTypes.PUBLISH)
    decoded.unpack(packed)
    assert getattr(decoded, "CorrelationData", None) == correlation
    assert getattr(decoded, "UserProperty", []) == user
    assert getattr(decoded, "ResponseTopic", None) == topic


def test_paho_still_refuses_what_does_not_belong() -> None:
    """Validation is paho's own: a property that does not apply to the packet type is refused."""
    properties = LeanProperties(PacketTypes.PUBLISH)
    with pytest.raises(MQTTException, match="does not apply"):
        properties.SessionExpiryInterval = 10


def test_setting_is_checked_as_paho_checks_it() -> None:
    """Unknown names and out-of-range values are refused, a User Property set twice is added to, not replaced."""
    properties = LeanProperties(PacketTypes.PUBLISH)
    with pytest.raises(MQTTException, match="must be one of"):
        properties.NotAProperty = 1
    with pytest.raises(MQTTException, match="0 or 1"):
        properties.PayloadFormatIndicator = 2
    properties.UserProperty = ("a", "1")
    properties.UserProperty = [("b", "2")]
    properties.MessageExpiryInterval = 30
    theirs = paho_properties(PacketTypes.PUBLISH, UserProperty=("a", "1"), MessageExpiryInterval=30)
    theirs.UserProperty = [("b", "2")]
    assert properties.UserProperty == theirs.UserProperty == [("a", "1"), ("b", "2")]
    assert properties.pack() == theirs.pack()


@settings(max_examples=100, deadline=None)
@given(event_id=st.none() | mqtt_text.filter(bool))
def test_event_properties_are_what_paho_packs(event_id: str | None) -> None:
    ours = event_properties(event_id)
    [(key, value)] = ours.UserProperty
    assert key == EVENT_ID_PROPERTY and value == (event_id or value) and value
    theirs = paho_properties(PacketTypes.PUBLISH, ContentType=JSON, UserProperty=[(key, value)])
    assert ours.pack() == theirs.pack() == publish_properties(user=[(key, value)]).pack()
    assert event_properties().UserProperty != event_properties().UserProperty  # a fresh id each time


@settings(max_examples=300, deadline=None)
@given(
    topic=st.none() | mqtt_text.filter(bool),
    correlation=st.none() | st.binary(max_size=64),
    user=st.lists(st.tuples(mqtt_text, mqtt_text), max_size=4),
    content_type=st.none() | mqtt_text.filter(bool),
    expiry=st.none() | st.integers(min_value=1, max_value=2**32 - 1),
    payload_format=st.none() | st.integers(min_value=0, max_value=1),
    subscription=st.none() | st.integers(min_value=1, max_value=2**28 - 1),
)
def test_what_paho_receives_decodes_as_paho_decodes_it(
    topic: str | None,
    correlation: bytes | None,
    user: list[tuple[str, str]],
    content_type: str | None,
    expiry: int | None,
    payload_format: int | None,
    subscription: int | None,
) -> None:
    """A PUBLISH as a broker sends it, decoded by paho's own decoder once it decodes into LeanProperties (what
    a2amesh.mqtt's clients do): the same properties, read and re-packed, as paho's Properties give."""
    from paho.mqtt import _packet
    from paho.mqtt.enums import MQTTProtocolVersion

    from a2amesh.mqtt_compat import lean_incoming_properties

    sent = paho_properties(
        PacketTypes.PUBLISH,
        ResponseTopic=topic,
        CorrelationData=correlation,
        UserProperty=user,
        ContentType=content_type,
        MessageExpiryInterval=expiry,
        PayloadFormatIndicator=payload_format,
        SubscriptionIdentifier=[subscription] if subscription is not None else [],
    )
    packet = b"\x00\x03a/b" + b"\x00\x07" + sent.pack() + b'{"x":1}'  # topic, packet id (QoS 1), properties, payload
    lean_incoming_properties()
    decoded = _packet.decode_publish(0x32, packet, MQTTProtocolVersion.MQTTv5)
    assert isinstance(decoded.properties, LeanProperties)
    expected = Properties(PacketTypes.PUBLISH)
    expected.unpack(sent.pack())
    names = ("ResponseTopic", "CorrelationData", "UserProperty", "ContentType", "MessageExpiryInterval")
    for name in (*names, "PayloadFormatIndicator", "SubscriptionIdentifier"):
        assert getattr(decoded.properties, name, None) == getattr(expected, name, None), name
    assert decoded.properties.pack() == expected.pack()
    assert (decoded.topic, decoded.mid, decoded.payload) == (b"a/b", 7, b'{"x":1}')


def test_event_ids_are_unique_and_grow_with_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Event ids are 32 hex digits that begin with the millisecond they were made in (so the task store's unique
    index takes them at its end), and the random rest keeps ids of one millisecond apart."""
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(event_id) == 32 and int(event_id, 16) >= 0 for event_id in ids)
    clock = iter([1_700_000_000_000_000_000 + step * 400_000 for step in range(12)])  # 0.4 ms apart
    monkeypatch.setattr(mqtt_base, "time", SimpleNamespace(time_ns=lambda: next(clock)))
    stamped = [new_event_id() for _ in range(12)]
    milliseconds = [1_700_000_000_000 + step * 4 // 10 for step in range(12)]
    assert [int(event_id[:12], 16) for event_id in stamped] == milliseconds
    steps = [(earlier, later) for earlier, later in itertools.pairwise(stamped) if earlier[:12] != later[:12]]
    assert steps and all(later > earlier for earlier, later in steps), "a later millisecond's id sorts first"
