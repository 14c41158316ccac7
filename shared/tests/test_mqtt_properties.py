"""Reply properties packed once must be byte for byte what paho packs every time, on every publish."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from a2amesh.mqtt import PackedProperties, publish_properties

mqtt_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    correlation=st.binary(max_size=64),
    user=st.lists(st.tuples(mqtt_text, mqtt_text), max_size=4),
    topic=st.none() | mqtt_text.filter(bool),
)
def test_packed_once_is_what_paho_packs_each_time(
    correlation: bytes, user: list[tuple[str, str]], topic: str | None
) -> None:
    reused = publish_properties(response_topic=topic, correlation_data=correlation, user=user, reused=True)
    fresh = publish_properties(response_topic=topic, correlation_data=correlation, user=user)
    assert isinstance(reused, PackedProperties) and not isinstance(fresh, PackedProperties)

    first = reused.pack()
    assert first == fresh.pack() == reused.pack()
    decoded = Properties(PacketTypes.PUBLISH)
    decoded.unpack(first)
    assert decoded.CorrelationData == correlation
    assert getattr(decoded, "UserProperty", []) == user
    assert getattr(decoded, "ResponseTopic", None) == topic
