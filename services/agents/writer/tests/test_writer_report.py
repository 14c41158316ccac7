"""The writer's logic, without a broker: reading passages in every input shape, grouping, citing, rendering."""

from __future__ import annotations

import random
import re

import pytest

from agent_writer.report import (
    MAX_PASSAGE_CHARS,
    MAX_PASSAGES,
    TEXT_SOURCE,
    Passage,
    UnusableInputError,
    clean_title,
    collect,
    dedupe,
    default_title,
    escape,
    first_sentence,
    group,
    parse_text,
    passage_of,
    write_report,
)


def hit(rank: int, source: str, passage: str, title: str | None = None, score: float = 1.0) -> dict[str, object]:
    return {"rank": rank, "score": score, "source": source, "title": title or source.title(), "passage": passage}


HITS = [
    hit(1, "mqtt-qos", "QoS 1 delivers a message at least once. The sender retries until it gets a PUBACK.", "QoS"),
    hit(2, "broker-tls", "TLS encrypts the connection between client and broker. Certificates prove identity.", "TLS"),
    hit(3, "mqtt-qos", "QoS 2 delivers exactly once with a four-step handshake.", "QoS"),
]


# -- reading passages ----------------------------------------------------------------------------------------
def test_passage_of_a_research_hit() -> None:
    passage = passage_of(hit(2, "s", "  Some\n text.  ", "Title", 3.5))
    assert passage == Passage(source="s", title="Title", text="Some text.", rank=2, score=3.5)


def test_passage_of_needs_only_the_text() -> None:
    assert passage_of({"passage": "Alone."}) == Passage(source="unknown", title="unknown", text="Alone.")
    assert passage_of({"passage": "x", "title": "T"}) == Passage(source="T", title="T", text="x")
    assert passage_of({"passage": "   "}) is None


@pytest.mark.parametrize("value", [None, 3, ["a"], {"text": "a"}])
def test_passage_of_a_non_string_is_unusable(value: object) -> None:
    with pytest.raises(UnusableInputError, match="must be a string"):
        passage_of({"passage": value})


def test_passage_of_an_overlong_passage_is_unusable() -> None:
    with pytest.raises(UnusableInputError, match="passage too long"):
        passage_of({"passage": "x" * (MAX_PASSAGE_CHARS + 1)})


def test_collect_one_hit_per_part_or_a_list_or_a_passages_object() -> None:
    one_per_part = collect(HITS)
    assert [p.rank for p in one_per_part.passages] == [1, 2, 3]
    assert collect([HITS]).passages == one_per_part.passages
    assert collect([{"passages": HITS}]).passages == one_per_part.passages
    assert one_per_part.query is None and one_per_part.ignored == 0


def test_collect_reads_the_research_artifact_and_its_summary() -> None:
    summary = {"query": "mqtt  delivery", "topK": 3, "searched": 90, "returned": 3, "sources": []}
    artifact = {
        "artifactId": "a1",
        "name": "passages",
        "parts": [{"data": h, "metadata": {"kind": "passage"}} for h in HITS]
        + [{"text": "3 passages from 2 sources"}, {"data": summary, "metadata": {"kind": "summary"}}],
    }
    found = collect([artifact])
    assert len(found.passages) == 3 and found.query == "mqtt delivery"
    assert collect([{"id": "t", "artifacts": [artifact]}]).passages == found.passages


def test_collect_counts_what_it_cannot_use() -> None:
    found = collect([1, "text", {"x": 1}, [None]])
    assert found.passages == [] and found.ignored == 4


def test_collect_refuses_too_many_passages() -> None:
    with pytest.raises(UnusableInputError, match="too many passages"):
        collect([hit(i, "s", f"passage {i}") for i in range(MAX_PASSAGES + 1)])


def test_collect_does_not_recurse_forever() -> None:
    deep: object = {"passage": "deep"}
    for _ in range(20):
        deep = [deep]
    found = collect([deep])
    assert found.passages == [] and found.ignored == 1


def test_parse_text_title_then_paragraphs_with_optional_source_tags() -> None:
    title, passages = parse_text("# Retries\n\n[backoff] Back off\nexponentially.\n\nAdd jitter.\n\n[2] Not a tag.")
    assert title == "Retries"
    assert [(p.source, p.text) for p in passages] == [
        ("backoff", "Back off exponentially."),
        (TEXT_SOURCE, "Add jitter."),
        (TEXT_SOURCE, "[2] Not a tag."),
    ]


def test_parse_text_without_a_title_line() -> None:
    title, passages = parse_text("First paragraph\nspans lines.\n\nSecond.")
    assert title is None and [p.text for p in passages] == ["First paragraph spans lines.", "Second."]


def test_parse_text_of_a_lone_topic_has_no_passages() -> None:
    assert parse_text("# Just a topic") == ("Just a topic", [])
    assert parse_text("write about mqtt") == ("write about mqtt", [])
    title, passages = parse_text("word " * 60)
    assert title is None and len(passages) == 1


# -- grouping and rendering ----------------------------------------------------------------------------------
def test_dedupe_orders_by_rank_and_drops_repeats() -> None:
    a = Passage("s", "S", "a", rank=2)
    b = Passage("s", "S", "b", rank=1)
    unranked = Passage("t", "T", "c")
    assert dedupe([unranked, a, b, Passage("s", "S", "a", rank=5)]) == [b, a, unranked]


def test_group_numbers_sources_by_their_best_passage() -> None:
    sources = group(collect(HITS).passages)
    assert [(s.number, s.id, len(s.passages)) for s in sources] == [(1, "mqtt-qos", 2), (2, "broker-tls", 1)]
    assert [p.rank for p in sources[0].passages] == [1, 3]


def test_report_structure_and_citations() -> None:
    report = write_report(collect(HITS).passages, "How MQTT delivers messages")
    markdown = report.markdown
    headings = re.findall(r"^(#+) (.+)$", markdown, flags=re.MULTILINE)
    assert headings == [
        ("#", "How MQTT delivers messages"),
        ("##", "Summary"),
        ("##", "QoS"),
        ("##", "TLS"),
        ("##", "Sources"),
    ]
    assert "using 3 passages from 2 sources" in markdown
    assert "- QoS 1 delivers a message at least once. [1]" in markdown
    assert "QoS 2 delivers exactly once with a four-step handshake. [1]" in markdown
    assert markdown.rstrip().endswith("1. QoS (`mqtt-qos`)\n2. TLS (`broker-tls`)")
    body, sources = markdown.split("## Sources")
    cited = {int(n) for n in re.findall(r"(?<!\\)\[(\d+)\]", body)}
    listed = {int(n) for n in re.findall(r"^(\d+)\. ", sources, flags=re.MULTILINE)}
    assert cited == listed == {1, 2}
    assert report.outline() == {
        "title": "How MQTT delivers messages",
        "passages": 3,
        "words": len(markdown.split()),
        "sources": [
            {"n": 1, "source": "mqtt-qos", "title": "QoS", "passages": 2},
            {"n": 2, "source": "broker-tls", "title": "TLS", "passages": 1},
        ],
    }


def test_report_is_deterministic_whatever_the_input_order() -> None:
    first = write_report(collect(HITS).passages, "T").markdown
    for seed in range(5):
        shuffled = list(HITS)
        random.Random(seed).shuffle(shuffled)
        assert write_report(collect(shuffled).passages, "T").markdown == first


def test_a_source_named_like_its_title_is_listed_once() -> None:
    report = write_report(parse_text("Topic\n\nSome text.")[1], "Topic")
    assert "[1]" in report.markdown
    assert report.markdown.rstrip().endswith("## Sources\n\n1. message")


def test_key_points_are_capped_at_five() -> None:
    passages = [Passage(f"s{i}", f"S{i}", f"Point {i}.", rank=i) for i in range(1, 8)]
    markdown = write_report(passages, "Many").markdown
    summary = markdown.split("## Summary")[1].split("## S1")[0]
    assert summary.count("\n- ") == 6 and "- 2 further sources below." in summary


def test_passage_text_cannot_fake_citations_or_headings() -> None:
    assert escape("see [3] and [x]") == "see \\[3\\] and [x]"
    assert escape("# not a heading") == "\\# not a heading"
    markdown = write_report([Passage("s", "S", "as shown in [7].")], "T").markdown
    assert "as shown in \\[7\\]. [1]" in markdown


def test_first_sentence_and_titles() -> None:
    assert first_sentence("One. Two.") == "One."
    assert first_sentence("e.g. this stays whole. Next") == "e.g. this stays whole."
    long = first_sentence("word " * 200)
    assert len(long) <= 300 and long.endswith("…")
    assert clean_title("## Multi\nline   title ") == "Multi line title"
    assert len(clean_title("x" * 500)) == 200


def test_default_title_names_the_best_source() -> None:
    assert default_title(collect(HITS).passages) == "Notes on QoS"


def test_nothing_to_write_is_unusable() -> None:
    with pytest.raises(UnusableInputError, match="no passages"):
        write_report([], "T")
