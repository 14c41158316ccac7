"""Scoring a Markdown report, without a broker: reading its structure and citations, a Flesch reading-ease estimate
with a syllable heuristic, and the per-audience checks that add up to a 0..100 score and a verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# -- audiences -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    """Who reads the report, and what that asks of it."""

    id: str
    label: str
    min_words: int
    max_words: int
    min_sections: int
    min_reading_ease: float
    max_sentence_words: float
    accept_score: int
    summary_required: bool = False
    synonyms: frozenset[str] = frozenset()


AUDIENCES: dict[str, Audience] = {
    audience.id: audience
    for audience in (
        Audience(
            id="engineers",
            label="engineers",
            min_words=200,
            max_words=4000,
            min_sections=2,
            min_reading_ease=30,
            max_sentence_words=30,
            accept_score=70,
            synonyms=frozenset(
                {"engineer", "engineers", "engineering", "developer", "developers", "dev", "devs", "technical"}
                | {"programmer", "programmers", "sre", "sres", "architect", "architects", "operators", "ops"}
            ),
        ),
        Audience(
            id="executives",
            label="executives",
            min_words=100,
            max_words=500,
            min_sections=2,
            min_reading_ease=50,
            max_sentence_words=20,
            accept_score=75,
            summary_required=True,
            synonyms=frozenset(
                {"executive", "executives", "exec", "execs", "management", "manager", "managers", "leadership"}
                | {"leaders", "board", "c-level", "cto", "ceo", "cio", "director", "directors", "stakeholders"}
            ),
        ),
        Audience(
            id="general",
            label="general readers",
            min_words=150,
            max_words=1500,
            min_sections=2,
            min_reading_ease=60,
            max_sentence_words=20,
            accept_score=70,
            synonyms=frozenset(
                {"general", "public", "everyone", "anyone", "anybody", "layperson", "laypeople", "lay"}
                | {"non-technical", "nontechnical", "beginner", "beginners", "newcomers", "customers", "users"}
            ),
        ),
    )
}
AUDIENCE_CHOICES = ", ".join(AUDIENCES)
AUDIENCE_QUESTION = (
    "Who is the audience for this report: engineers, executives or general readers? "
    "Answer with one of: " + AUDIENCE_CHOICES + "."
)


def parse_audience(answer: str) -> Audience | None:
    """The audience an answer names ("engineers", "our execs", "General readers."), or None when it names none
    or more than one."""
    words = set(re.findall(r"[a-z]+(?:-[a-z]+)*", answer.lower()))
    matches = [audience for audience in AUDIENCES.values() if words & audience.synonyms]
    return matches[0] if len(matches) == 1 else None


# -- reading the report --------------------------------------------------------------------------------------
SOURCE_HEADINGS = frozenset({"sources", "references", "bibliography", "citations", "works cited"})
SUMMARY_HEADINGS = frozenset(
    {"summary", "executive summary", "overview", "abstract", "introduction", "tl;dr", "tldr", "key points"}
)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SOURCE_ENTRY = re.compile(r"^\s*(?:(\d+)[.)]|\[(\d+)\]:?|[-*+]\s+\[(\d+)\]:?)\s+\S")
_CITATION = re.compile(r"(?<!\\)\[(\d+(?:\s*[,;\u2013-]\s*\d+)*)\](?![(:])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)*")
_SENTENCE_END = re.compile(r"[.!?]+(?=[\s\"')\]]|$)")
MAX_CITATION_RANGE = 50


@dataclass(frozen=True)
class Heading:
    level: int
    text: str

    @property
    def key(self) -> str:
        return re.sub(r"[^a-z;]+", " ", self.text.lower()).strip()


@dataclass
class ParsedReport:
    """What the checks look at."""

    headings: list[Heading] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    """Prose: paragraphs and list items outside code and the sources list, Markdown syntax removed."""
    cited: set[int] = field(default_factory=set)
    """Citation numbers used in the body."""
    sources: set[int] = field(default_factory=set)
    """Numbers with an entry in the sources list."""
    has_sources_section: bool = False

    @property
    def title(self) -> Heading | None:
        return next((heading for heading in self.headings if heading.level == 1), None)

    @property
    def sections(self) -> list[Heading]:
        """Section headings (level 2 and below), the sources list's own heading excluded."""
        return [h for h in self.headings if h.level >= 2 and h.key not in SOURCE_HEADINGS]

    @property
    def has_summary(self) -> bool:
        return any(heading.key in SUMMARY_HEADINGS for heading in self.headings)


def citation_numbers(inner: str) -> set[int]:
    """ "1", "1, 3", "2-4" as numbers (a range is capped so "[1-99999]" cannot blow up)."""
    numbers: set[int] = set()
    for piece in re.split(r"\s*[,;]\s*", inner):
        bounds = [int(bound) for bound in re.split(r"\s*[\u2013-]\s*", piece) if bound]
        if len(bounds) == 2 and 0 <= bounds[1] - bounds[0] <= MAX_CITATION_RANGE:
            numbers.update(range(bounds[0], bounds[1] + 1))
        else:
            numbers.update(bounds)
    return numbers


def plain(text: str) -> str:
    """A line of Markdown as the words a reader sees: no citations, code, links, emphasis or URLs."""
    text = _CITATION.sub("", text)
    text = re.sub(r"\\([\[\]#*_`])", r"\1", text)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"https?://\S+", "", text)
    text = re.sub(r"[*_~>|]+", " ", text)
    return " ".join(text.split())


def parse_report(markdown: str) -> ParsedReport:
    report = ParsedReport()
    in_code = False
    in_sources = False
    sources_level = 0
    block: list[str] = []

    def flush() -> None:
        if block:
            text = plain(" ".join(block))
            if text:
                report.blocks.append(text)
            block.clear()

    for line in markdown.splitlines():
        if _FENCE.match(line):
            flush()
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            found = Heading(len(heading.group(1)), " ".join(heading.group(2).split()))
            report.headings.append(found)
            if found.key in SOURCE_HEADINGS:
                in_sources, sources_level = True, found.level
                report.has_sources_section = True
            elif in_sources and found.level <= sources_level:
                in_sources = False
            continue
        if in_sources:
            entry = _SOURCE_ENTRY.match(line)
            if entry:
                report.sources.add(int(next(group for group in entry.groups() if group)))
            continue
        if not line.strip():
            flush()
            continue
        if _LIST_ITEM.match(line):
            flush()
            line = _LIST_ITEM.sub("", line)
        for match in _CITATION.finditer(line):
            report.cited |= citation_numbers(match.group(1))
        block.append(line.strip())
    flush()
    return report


# -- readability ---------------------------------------------------------------------------------------------
def syllables(word: str) -> int:
    """Syllables in an English word by the usual heuristic: vowel groups, less a silent final -e/-es/-ed;
    at least one (numbers and acronyms count as one)."""
    letters = re.sub(r"[^a-z]", "", word.lower())
    if len(letters) <= 3:
        return 1
    letters = re.sub(r"(?:[^laeiouy]es|[^laeiouy]ed|[^laeiouy]e)$", "", letters)
    letters = re.sub(r"^y", "", letters)
    return max(1, len(re.findall(r"[aeiouy]{1,2}", letters)))


@dataclass(frozen=True)
class Readability:
    words: int
    sentences: int
    syllables: int

    @property
    def words_per_sentence(self) -> float:
        return self.words / self.sentences if self.sentences else 0.0

    @property
    def syllables_per_word(self) -> float:
        return self.syllables / self.words if self.words else 0.0

    @property
    def reading_ease(self) -> float:
        """Flesch reading ease: 206.835 - 1.015 words/sentence - 84.6 syllables/word (higher is easier;
        60-70 plain English, 30-50 college level, below 30 specialist)."""
        if not self.words:
            return 0.0
        return 206.835 - 1.015 * self.words_per_sentence - 84.6 * self.syllables_per_word


def readability(blocks: list[str]) -> Readability:
    """Counts over prose blocks; each block ends a sentence even without a full stop (list items, captions)."""
    words = sentences = total_syllables = 0
    for block in blocks:
        tokens = _WORD.findall(block)
        if not tokens:
            continue
        words += len(tokens)
        total_syllables += sum(syllables(token) for token in tokens)
        pieces = [piece for piece in _SENTENCE_END.split(block) if _WORD.search(piece)]
        sentences += max(1, len(pieces))
    return Readability(words, sentences, total_syllables)


# -- the review ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    id: str
    passed: bool
    points: float
    max: int
    detail: str

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "passed": self.passed,
            "points": round(self.points, 1),
            "max": self.max,
            "detail": self.detail,
        }


CRITICAL_CHECKS = frozenset({"citations-present", "citations-resolve"})
"""Checks a report must pass to be accepted whatever its score (plus "summary" where the audience needs one)."""
GRADED_CHECKS = frozenset({"length", "sections", "readability", "sentence-length"})
"""Checks scored on a scale: a report must earn at least half the points of each to be accepted."""


@dataclass(frozen=True)
class Review:
    audience: Audience
    checks: tuple[Check, ...]
    stats: dict[str, Any]

    @property
    def score(self) -> int:
        return round(sum(check.points for check in self.checks))

    @property
    def blocking(self) -> list[Check]:
        """Failed checks that force "revise" whatever the score: a critical one, or a graded one with under half
        its points."""
        critical = CRITICAL_CHECKS | ({"summary"} if self.audience.summary_required else set())
        return [
            check
            for check in self.checks
            if not check.passed
            and (check.id in critical or (check.id in GRADED_CHECKS and check.points < check.max / 2))
        ]

    @property
    def verdict(self) -> str:
        return "accept" if self.score >= self.audience.accept_score and not self.blocking else "revise"

    def to_data(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "verdict": self.verdict,
            "audience": self.audience.id,
            "acceptScore": self.audience.accept_score,
            "checks": [check.to_data() for check in self.checks],
            "stats": self.stats,
        }

    def summary(self) -> str:
        """One or two lines for a human: score, verdict, and what to fix."""
        head = f"score {self.score}/100 for {self.audience.label}: {self.verdict}"
        failed = [check for check in self.checks if not check.passed]
        if not failed:
            return head + "; every check passed."
        return head + "; to improve: " + "; ".join(f"{check.id} ({check.detail})" for check in failed)


def _scaled(value: float, limit: float, points: int, *, at_least: bool) -> float:
    """Full points when `value` is on the right side of `limit`, else points shrinking in proportion."""
    if at_least:
        return float(points) if value >= limit else points * max(0.0, value / limit)
    return float(points) if value <= limit else points * limit / value


def review(markdown: str, audience: Audience) -> Review:
    """Score a report for an audience: nine checks worth 100 points in all."""
    report = parse_report(markdown)
    counts = readability(report.blocks)
    words, ease, per_sentence = counts.words, counts.reading_ease, counts.words_per_sentence
    checks: list[Check] = []

    # length: 20
    low, high = audience.min_words, audience.max_words
    if words < low:
        length = Check("length", False, 20 * words / low, 20, f"{words} words, want at least {low}")
    elif words > high:
        over = (words - high) / high  # no points left at twice the limit
        length = Check("length", False, 20 * max(0.0, 1 - over), 20, f"{words} words, want at most {high}")
    else:
        length = Check("length", True, 20, 20, f"{words} words (want {low}-{high})")
    checks.append(length)

    # structure: 25
    title = report.title
    checks.append(
        Check("title", True, 5, 5, f"titled {title.text!r}")
        if title
        else Check("title", False, 0, 5, "no '# ' title heading")
    )
    sections = len(report.sections)
    checks.append(
        Check(
            "sections",
            sections >= audience.min_sections,
            _scaled(sections, audience.min_sections, 15, at_least=True),
            15,
            f"{sections} section heading(s), want at least {audience.min_sections}",
        )
    )
    checks.append(
        Check("summary", True, 5, 5, "has a summary section")
        if report.has_summary
        else Check("summary", False, 0, 5, "no Summary/Overview/Introduction section")
    )

    # citations: 30
    cited, sources = report.cited, report.sources
    checks.append(
        Check("citations-present", True, 10, 10, f"{len(cited)} distinct citation(s)")
        if cited
        else Check("citations-present", False, 0, 10, "no [n] citations in the text")
    )
    dangling = sorted(cited - sources)
    if not cited:
        resolve = Check("citations-resolve", False, 0, 15, "nothing cited to resolve")
    elif dangling:
        resolved = len(cited) - len(dangling)
        missing = ", ".join(f"[{n}]" for n in dangling)
        where = "no sources list" if not report.has_sources_section else f"no source entry for {missing}"
        resolve = Check("citations-resolve", False, 15 * resolved / len(cited), 15, where)
    else:
        resolve = Check("citations-resolve", True, 15, 15, "every citation has a source entry")
    checks.append(resolve)
    unused = sorted(sources - cited)
    if not sources:
        checks.append(Check("sources-cited", False, 0, 5, "no numbered sources list"))
    elif unused:
        checks.append(
            Check(
                "sources-cited",
                False,
                5 * (len(sources) - len(unused)) / len(sources),
                5,
                "never cited: " + ", ".join(str(n) for n in unused),
            )
        )
    else:
        checks.append(Check("sources-cited", True, 5, 5, f"all {len(sources)} source(s) cited"))

    # readability: 25
    target = audience.min_reading_ease
    checks.append(
        Check(
            "readability",
            words > 0 and ease >= target,
            (15 if ease >= target else 15 * max(0.0, 1 - (target - ease) / 40)) if words else 0,
            15,
            f"Flesch reading ease {ease:.1f}, want at least {target:g}" if words else "no prose to read",
        )
    )
    limit = audience.max_sentence_words
    checks.append(
        Check(
            "sentence-length",
            words > 0 and per_sentence <= limit,
            _scaled(per_sentence, limit, 10, at_least=False) if words else 0,
            10,
            f"{per_sentence:.1f} words per sentence, want at most {limit:g}" if words else "no sentences",
        )
    )

    stats = {
        "words": words,
        "sentences": counts.sentences,
        "syllables": counts.syllables,
        "paragraphs": len(report.blocks),
        "headings": len(report.headings),
        "sections": sections,
        "readingEase": round(ease, 1),
        "wordsPerSentence": round(per_sentence, 1),
        "cited": sorted(cited),
        "sources": sorted(sources),
    }
    return Review(audience=audience, checks=tuple(checks), stats=stats)
