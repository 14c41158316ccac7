"""From passages to a Markdown report, without a broker: reading the input shapes, grouping by source, numbering
citations and rendering. Everything here is deterministic: the same input gives the same report, byte for byte."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_PASSAGES = 100
MAX_PASSAGE_CHARS = 10_000
MAX_INPUT_CHARS = 200_000
MAX_TITLE_CHARS = 200
MAX_DEPTH = 6
"""How deep `collect` looks into nested JSON (a task holds artifacts, which hold parts, which hold passages)."""

KEY_POINTS = 5
MAX_KEY_POINT_CHARS = 300
TEXT_SOURCE = "message"
"""The source id given to plain-text passages that do not name one."""

_SOURCE_TAG = re.compile(r"^\[([^\[\]\n]{1,80})\]\s*")
_BARE_CITATION = re.compile(r"\[(\d+)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[`*_])")


class UnusableInputError(ValueError):
    """The input holds nothing a report can be written from; the message says why."""


@dataclass(frozen=True)
class Passage:
    """One passage to cite: its text and where it came from (rank and score when a search produced it)."""

    source: str
    title: str
    text: str
    rank: int | None = None
    score: float | None = None


@dataclass
class Collected:
    """What was found in the request's data parts."""

    passages: list[Passage] = field(default_factory=list)
    query: str | None = None
    """The research query, when a research summary was among the data."""
    ignored: int = 0
    """JSON values that were neither a passage nor a container of passages."""


@dataclass(frozen=True)
class Source:
    """A cited source: its citation number and its passages, best first."""

    number: int
    id: str
    title: str
    passages: tuple[Passage, ...]


@dataclass(frozen=True)
class Report:
    title: str
    sources: tuple[Source, ...]
    markdown: str

    @property
    def passages(self) -> int:
        return sum(len(source.passages) for source in self.sources)

    @property
    def words(self) -> int:
        return len(self.markdown.split())

    def outline(self) -> dict[str, Any]:
        """The report's shape as JSON (the artifact's data part)."""
        return {
            "title": self.title,
            "passages": self.passages,
            "words": self.words,
            "sources": [
                {"n": source.number, "source": source.id, "title": source.title, "passages": len(source.passages)}
                for source in self.sources
            ],
        }


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


# -- reading the input ---------------------------------------------------------------------------------------
def passage_of(value: dict[str, Any]) -> Passage | None:
    """A research hit ({"rank", "score", "source", "title", "passage"}) as a Passage; None when the text is blank.
    Only `passage` is required; `source` defaults to the title, `title` to the source."""
    text = value.get("passage")
    if not isinstance(text, str):
        raise UnusableInputError("a passage's 'passage' must be a string")
    text = one_line(text)
    if not text:
        return None
    if len(text) > MAX_PASSAGE_CHARS:
        raise UnusableInputError(f"passage too long: at most {MAX_PASSAGE_CHARS} characters (got {len(text)})")
    source = value.get("source")
    title = value.get("title")
    source = one_line(source) if isinstance(source, str) else ""
    title = one_line(title) if isinstance(title, str) else ""
    source = source or title or "unknown"
    rank = value.get("rank")
    score = value.get("score")
    return Passage(
        source=source,
        title=title or source,
        text=text,
        rank=rank if isinstance(rank, int) and not isinstance(rank, bool) else None,
        score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
    )


def collect(values: list[Any]) -> Collected:
    """Passages from data parts in any of the shapes the research agent produces: one hit per part, a list of
    hits, {"passages": [...]}, an artifact ({"parts": [{"data": ...}]}) or a task ({"artifacts": [...]}).
    A research summary ({"query", "sources", ...}) contributes its query as the topic."""
    found = Collected()
    for value in values:
        _walk(value, found, 0)
    return found


def _walk(value: Any, found: Collected, depth: int) -> None:
    if depth > MAX_DEPTH:
        found.ignored += 1
        return
    if isinstance(value, list):
        for item in value:
            _walk(item, found, depth + 1)
        return
    if not isinstance(value, dict):
        found.ignored += 1
        return
    if "passage" in value:
        passage = passage_of(value)
        if passage is not None:
            found.passages.append(passage)
        if len(found.passages) > MAX_PASSAGES:
            raise UnusableInputError(f"too many passages: at most {MAX_PASSAGES}")
        return
    if isinstance(value.get("query"), str) and isinstance(value.get("sources"), list):  # research summary
        found.query = found.query or one_line(value["query"]) or None
        return
    containers = [key for key in ("passages", "parts", "artifacts") if isinstance(value.get(key), list)]
    if isinstance(value.get("data"), dict | list):  # a Part in wire form
        containers.append("data")
    if not containers:
        found.ignored += 1
        return
    for key in containers:
        _walk(value[key], found, depth + 1)


def parse_text(text: str) -> tuple[str | None, list[Passage]]:
    """Plain text as a title and passages: paragraphs (blank-line separated); the first one is the title when it
    is a single line of at most MAX_TITLE_CHARS (a leading '#' is dropped). A paragraph may name its source as a
    leading `[source-id]`."""
    paragraphs = [block.strip() for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]
    title: str | None = None
    if paragraphs and "\n" not in paragraphs[0] and len(paragraphs[0]) <= MAX_TITLE_CHARS:
        title = clean_title(paragraphs[0])
        paragraphs = paragraphs[1:]
    if len(paragraphs) > MAX_PASSAGES:
        raise UnusableInputError(f"too many passages: at most {MAX_PASSAGES} paragraphs")
    passages = []
    for paragraph in paragraphs:
        source = TEXT_SOURCE
        tag = _SOURCE_TAG.match(paragraph)
        if tag and not tag.group(1).isdigit():
            source = one_line(tag.group(1))
            paragraph = paragraph[tag.end() :]
        body = one_line(paragraph)
        if len(body) > MAX_PASSAGE_CHARS:
            raise UnusableInputError(f"passage too long: at most {MAX_PASSAGE_CHARS} characters (got {len(body)})")
        if body:
            passages.append(Passage(source=source, title=source, text=body))
    return title, passages


def clean_title(text: str) -> str:
    """A title safe to put after '# ': one line, no leading hashes, bounded length."""
    title = one_line(text).lstrip("#").strip()
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    return title


# -- grouping and rendering ----------------------------------------------------------------------------------
def dedupe(passages: list[Passage]) -> list[Passage]:
    """Passages in rank order (unranked ones after, in input order), each (source, text) once."""
    ordered = sorted(
        enumerate(passages), key=lambda item: (item[1].rank is None, item[1].rank or 0, item[0])
    )  # stable: input order breaks ties
    seen: set[tuple[str, str]] = set()
    kept = []
    for _, passage in ordered:
        key = (passage.source, passage.text)
        if key not in seen:
            seen.add(key)
            kept.append(passage)
    return kept


def group(passages: list[Passage]) -> tuple[Source, ...]:
    """Sources numbered 1..n in order of their best passage; each keeps its passages best first."""
    by_source: dict[str, list[Passage]] = {}
    for passage in dedupe(passages):
        by_source.setdefault(passage.source, []).append(passage)
    return tuple(
        Source(number=number, id=source_id, title=items[0].title, passages=tuple(items))
        for number, (source_id, items) in enumerate(by_source.items(), start=1)
    )


def first_sentence(text: str) -> str:
    sentence = _SENTENCE_END.split(text, maxsplit=1)[0].strip()
    if len(sentence) > MAX_KEY_POINT_CHARS:
        sentence = sentence[: MAX_KEY_POINT_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return sentence


def escape(text: str) -> str:
    """Passage text safe to cite after: a literal "[3]" in it must not read as one of our citations, and a
    line starting with '#' must not become a heading."""
    text = _BARE_CITATION.sub(r"\\[\1\\]", text)
    return "\\" + text if text.startswith("#") else text


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def render(title: str, sources: tuple[Source, ...]) -> str:
    """The report: title, summary with key points, one section per source, the numbered Sources list."""
    total = sum(len(source.passages) for source in sources)
    lines = [f"# {title}", "", "## Summary", ""]
    lines.append(
        f'This report covers "{title}" using {plural(total, "passage")} from {plural(len(sources), "source")}. '
        "Key points:"
    )
    lines.append("")
    for source in sources[:KEY_POINTS]:
        lines.append(f"- {escape(first_sentence(source.passages[0].text))} [{source.number}]")
    if len(sources) > KEY_POINTS:
        lines.append(f"- {plural(len(sources) - KEY_POINTS, 'further source')} below.")
    for source in sources:
        lines += ["", f"## {clean_title(source.title)}", ""]
        for index, passage in enumerate(source.passages):
            if index:
                lines.append("")
            lines.append(f"{escape(passage.text)} [{source.number}]")
    lines += ["", "## Sources", ""]
    for source in sources:
        label = clean_title(source.title)
        lines.append(f"{source.number}. {label} (`{source.id}`)" if source.id != label else f"{source.number}. {label}")
    return "\n".join(lines) + "\n"


def write_report(passages: list[Passage], title: str) -> Report:
    """The report for these passages under this title (both already checked non-empty)."""
    sources = group(passages)
    if not sources:
        raise UnusableInputError("no passages with text to write from")
    clean = clean_title(title)
    return Report(title=clean, sources=sources, markdown=render(clean, sources))


def default_title(passages: list[Passage]) -> str:
    """A title when the request gives none: named after the best passage's source."""
    best = dedupe(passages)[0]
    return f"Notes on {best.title}"
