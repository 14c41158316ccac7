"""The reviewer's logic, without a broker: Markdown structure and citations, syllables and reading ease, the
per-audience checks, score and verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_reviewer.review import (
    AUDIENCES,
    Readability,
    citation_numbers,
    parse_audience,
    parse_report,
    plain,
    readability,
    review,
    syllables,
)

GOOD = (Path(__file__).parent / "good_report.md").read_text()
ENGINEERS, EXECUTIVES, GENERAL = AUDIENCES["engineers"], AUDIENCES["executives"], AUDIENCES["general"]


def checks(markdown: str, audience_id: str = "engineers") -> dict[str, dict[str, object]]:
    result = review(markdown, AUDIENCES[audience_id]).to_data()
    return {check["id"]: check for check in result["checks"]}


# -- audiences -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("engineers", "engineers"),
        ("Engineers.", "engineers"),
        ("our backend developers", "engineers"),
        ("the executive team", "executives"),
        ("Management", "executives"),
        ("general", "general"),
        ("the general public", "general"),
        ("non-technical readers", "general"),
    ],
)
def test_parse_audience_understands_synonyms(answer: str, expected: str) -> None:
    audience = parse_audience(answer)
    assert audience is not None and audience.id == expected


@pytest.mark.parametrize("answer", ["", "I don't know", "cats", "engineers and executives"])
def test_parse_audience_needs_exactly_one(answer: str) -> None:
    assert parse_audience(answer) is None


# -- reading Markdown ----------------------------------------------------------------------------------------
def test_parse_report_headings_citations_and_sources() -> None:
    report = parse_report(GOOD)
    assert report.title is not None and report.title.text == "Reliable messaging on the mesh"
    assert [h.text for h in report.sections] == [
        "Summary",
        "Delivery levels",
        "Retries and duplicates",
        "Presence",
        "What to do next",
    ]
    assert report.has_summary and report.has_sources_section
    assert report.cited == {1, 2, 3} and report.sources == {1, 2, 3}
    assert not any("MQTT QoS Levels" in block for block in report.blocks)  # the sources list is not prose


def test_citation_forms() -> None:
    markdown = (
        "# T\n\nLists [1, 2] and ranges [4-6] and [7\u20138] count. Escaped \\[9\\] does not, nor a link [10](http://x)"
        ", nor a\n\n[11]: reference definition.\n\n```\ncode [12]\n```\n\n- a list item [13]\n"
    )
    assert parse_report(markdown).cited == {1, 2, 4, 5, 6, 7, 8, 13}


def test_citation_ranges_are_capped() -> None:
    assert citation_numbers("1-3") == {1, 2, 3}
    assert citation_numbers("1-100000") == {1, 100000}
    assert citation_numbers("3, 1; 2") == {1, 2, 3}


@pytest.mark.parametrize("heading", ["Sources", "References", "Bibliography", "Works cited"])
@pytest.mark.parametrize("entry", ["{n}. Title", "{n}) Title", "[{n}] Title", "[{n}]: Title", "- [{n}] Title"])
def test_source_list_styles(heading: str, entry: str) -> None:
    lines = "\n".join(entry.format(n=n) for n in (1, 2))
    report = parse_report(f"# T\n\nText [1] [2].\n\n## {heading}\n\n{lines}\n")
    assert report.sources == {1, 2}


def test_the_sources_list_ends_at_the_next_heading_of_its_level() -> None:
    report = parse_report("## Sources\n\n1. A\n\n### Detail\n\n2. B\n\n## Appendix\n\n3. not a source [1]\n")
    assert report.sources == {1, 2} and report.cited == {1}


def test_plain_strips_markdown() -> None:
    assert plain("**Bold** `code` [a link](http://x) see https://y.z [3] \\[4\\]") == "Bold a link see [4]"


# -- readability ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "count"),
    [
        ("cat", 1),
        ("the", 1),
        ("table", 2),
        ("message", 2),
        ("agents", 2),
        ("readability", 5),
        ("delivered", 3),
        ("MQTT", 1),
        ("2024", 1),
        ("yes", 1),
    ],
)
def test_syllable_heuristic(word: str, count: int) -> None:
    assert syllables(word) == count


def test_flesch_reading_ease_formula() -> None:
    counts = readability(["The cat sat on the mat."])
    assert counts == Readability(words=6, sentences=1, syllables=6)
    assert counts.reading_ease == pytest.approx(206.835 - 1.015 * 6 - 84.6 * 1)


def test_each_block_ends_a_sentence() -> None:
    assert readability(["A list item without a stop", "Two. Sentences here!"]).sentences == 3
    assert readability([]).reading_ease == 0.0


def test_hard_text_reads_harder_than_simple_text() -> None:
    simple = readability(["The dog ran. The cat sat. We all went home."])
    hard = readability(["Consequently, organizational interoperability necessitates comprehensive standardization."])
    assert simple.reading_ease > 80 > 0 > hard.reading_ease


# -- the review ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("audience", ["engineers", "executives", "general"])
def test_a_good_report_is_accepted_for_every_audience(audience: str) -> None:
    result = review(GOOD, AUDIENCES[audience])
    assert result.score == 100 and result.verdict == "accept"
    data = result.to_data()
    assert data["audience"] == audience and data["stats"]["cited"] == [1, 2, 3]
    assert sum(check["max"] for check in data["checks"]) == 100
    assert result.summary().endswith("every check passed.")


def test_review_is_deterministic() -> None:
    assert review(GOOD, GENERAL).to_data() == review(GOOD, GENERAL).to_data()


def test_a_citation_without_a_source_entry_forces_revise() -> None:
    markdown = GOOD.replace("[3]", "[4]", 1)
    result = review(markdown, ENGINEERS)
    by_id = {check.id: check for check in result.checks}
    assert not by_id["citations-resolve"].passed and by_id["citations-resolve"].detail == "no source entry for [4]"
    assert result.score >= ENGINEERS.accept_score and result.verdict == "revise"  # critical, whatever the score
    assert "citations-resolve (no source entry for [4])" in result.summary()


def test_no_sources_list() -> None:
    by_id = checks(GOOD.split("## Sources")[0])
    assert by_id["citations-resolve"]["detail"] == "no sources list" and by_id["citations-resolve"]["points"] == 0
    assert by_id["sources-cited"]["detail"] == "no numbered sources list"


def test_no_citations() -> None:
    markdown = GOOD
    for n in (1, 2, 3):
        markdown = markdown.replace(f"[{n}]", "")
    result = review(markdown, ENGINEERS)
    assert result.verdict == "revise"
    by_id = {check.id: check for check in result.checks}
    assert not by_id["citations-present"].passed and not by_id["citations-resolve"].passed
    assert by_id["sources-cited"].detail == "never cited: 1, 2, 3"


def test_length_thresholds_depend_on_the_audience() -> None:
    long = GOOD.replace("## Sources", "## More\n\n" + "Short words help. " * 120 + "\n\n## Sources")
    assert checks(long, "engineers")["length"]["passed"]
    executives = checks(long, "executives")["length"]
    assert not executives["passed"] and str(executives["detail"]).endswith("want at most 500")
    words = review(long, EXECUTIVES).stats["words"]
    assert executives["points"] == pytest.approx(20 * (1 - (words - 500) / 500), abs=0.1)
    short = "# T\n\n## Summary\n\nTiny [1].\n\n## Body\n\nSmall [1].\n\n## Sources\n\n1. S\n"
    length = checks(short)["length"]
    assert not length["passed"] and length["points"] == pytest.approx(20 * 2 / 200, abs=0.1)


def test_structure_checks() -> None:
    flat = "Just prose without headings [1].\n\n## Sources\n\n1. S\n"
    by_id = checks(flat)
    assert not by_id["title"]["passed"] and not by_id["sections"]["passed"] and not by_id["summary"]["passed"]
    assert by_id["sections"]["points"] == 0


def test_executives_need_a_summary_section() -> None:
    markdown = GOOD.replace("## Summary", "## Background")
    assert review(markdown, ENGINEERS).verdict == "accept"
    executives = review(markdown, EXECUTIVES)
    assert executives.verdict == "revise" and [check.id for check in executives.blocking] == ["summary"]


def test_readability_thresholds_depend_on_the_audience() -> None:
    dense = (
        "# Interoperability\n\n## Summary\n\n"
        + "Organizational interoperability necessitates comprehensive standardization of heterogeneous "
        "communication infrastructures, notwithstanding considerable implementation complexity [1]. "
        * 12
        + "\n\n## Analysis\n\nConsequently, architectural considerations predominate [1].\n\n## Sources\n\n1. S\n"
    )
    engineers, general = checks(dense, "engineers"), checks(dense, "general")
    assert not general["readability"]["passed"] and not engineers["readability"]["passed"]
    assert general["readability"]["points"] <= engineers["readability"]["points"]
    result = review(dense, GENERAL)
    assert result.score >= GENERAL.accept_score and result.verdict == "revise"  # under half the readability points
    assert [check.id for check in result.blocking] == ["readability"]


def test_empty_prose_scores_no_readability() -> None:
    by_id = checks("# Title only\n")
    assert by_id["readability"]["points"] == 0 and by_id["readability"]["detail"] == "no prose to read"
    assert by_id["sentence-length"]["points"] == 0
