"""Okapi BM25 over paragraph-level passages of a small bundled corpus.

Pure and synchronous (no I/O except `Corpus.bundled()`), so the ranking is unit-testable without a broker.
Passages are paragraphs, not whole documents, so a hit can be quoted and cited as-is; each passage is
indexed together with its document's title, so a paragraph that never repeats its topic's name still
belongs to that topic. Ordering is fully deterministic: score descending, then source id, then the
passage's position in its document.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

CORPUS_PACKAGE = "agent_research"
CORPUS_DIR = "corpus"
CORPUS_SUFFIXES = (".md", ".txt")

_STOP_WORDS_TEXT = """
a about after all also an and any are as at be been before but by can could did do does done each for
from had has have how i if in into is it its just me more most my no not of on only or other our over
same should so some such than that the their them then there these they this those through to too under
up very was we were what when where which while who whom why with would you your
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
"""Words too common to rank by. "will" is deliberately absent: "last will" is a topic of the corpus."""

_SPLIT = re.compile(r"[^a-z0-9]+")
_VOWELS = frozenset("aeiou")
_UNDOUBLE = frozenset("bdgmnprt")


def stem(word: str) -> str:
    """A naive suffix stemmer: folds plurals and -ed/-ing forms onto one stem ("retained", "retains",
    "retaining" -> "retain"; "messages", "message" -> "messag"). Not linguistics, just consistent."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4 and _VOWELS & set(word[: -len(suffix)]):
            word = word[: -len(suffix)]
            if len(word) >= 4 and word[-1] == word[-2] and word[-1] in _UNDOUBLE:
                word = word[:-1]  # "mapped" -> "map", "committed" -> "commit"
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lowercase, split on anything that is not a letter or digit, drop stop words and single letters, stem."""
    tokens = []
    for raw in _SPLIT.split(text.lower()):
        if not raw or raw in STOP_WORDS or (len(raw) == 1 and not raw.isdigit()):
            continue
        tokens.append(stem(raw))
    return tokens


@dataclass(frozen=True)
class Passage:
    """One paragraph of one document: the unit that is ranked, quoted and cited."""

    source: str
    title: str
    text: str
    index: int
    """Position of the paragraph in its document (0-based), for stable ordering and citations."""


@dataclass(frozen=True)
class Document:
    """A corpus file: its stable id (the file name without suffix), title and paragraphs."""

    id: str
    title: str
    passages: tuple[Passage, ...]


def parse_document(doc_id: str, text: str) -> Document:
    """Split a Markdown/text file into a title (the first `# ` heading, else the id) and paragraphs
    (blocks separated by blank lines, whitespace collapsed; other headings are skipped)."""
    title = doc_id
    paragraphs: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if not lines:
            continue
        if lines[0].startswith("#"):
            heading = lines[0].lstrip("#").strip()
            if title == doc_id and lines[0].startswith("# ") and not paragraphs:
                title = heading or doc_id
            lines = lines[1:]
        if lines:
            paragraphs.append(" ".join(" ".join(lines).split()))
    passages = tuple(Passage(doc_id, title, paragraph, i) for i, paragraph in enumerate(paragraphs))
    return Document(doc_id, title, passages)


@dataclass(frozen=True)
class Corpus:
    """The documents the agent can search, sorted by id."""

    documents: tuple[Document, ...]

    @classmethod
    def from_texts(cls, texts: Mapping[str, str]) -> Corpus:
        """Build a corpus from `{id: markdown}` (what tests use)."""
        return cls(tuple(parse_document(doc_id, texts[doc_id]) for doc_id in sorted(texts)))

    @classmethod
    def bundled(cls) -> Corpus:
        """The corpus shipped inside the package (read through importlib.resources, so it works from a wheel)."""
        root = resources.files(CORPUS_PACKAGE).joinpath(CORPUS_DIR)
        texts = {}
        for entry in root.iterdir():
            name = entry.name
            if entry.is_file() and name.endswith(CORPUS_SUFFIXES):
                texts[name.rsplit(".", 1)[0]] = entry.read_text(encoding="utf-8")
        if not texts:
            raise FileNotFoundError(f"no corpus documents found in {CORPUS_PACKAGE}/{CORPUS_DIR}")
        return cls.from_texts(texts)

    @property
    def passages(self) -> list[Passage]:
        return [passage for document in self.documents for passage in document.passages]

    def document(self, doc_id: str) -> Document | None:
        return next((document for document in self.documents if document.id == doc_id), None)


@dataclass(frozen=True)
class Hit:
    """A ranked passage (rank is 1-based)."""

    rank: int
    score: float
    passage: Passage

    def to_data(self, digits: int = 4) -> dict[str, object]:
        """The JSON shape the agent streams: rank, score, source, title, passage."""
        return {
            "rank": self.rank,
            "score": round(self.score, digits),
            "source": self.passage.source,
            "title": self.passage.title,
            "passage": self.passage.text,
        }


@dataclass
class BM25Index:
    """Okapi BM25 over passages: score(q, p) = sum over distinct query terms t of
    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(p) / avglen)), with the non-negative
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)). Repeated query terms count once."""

    passages: list[Passage]
    k1: float = 1.5
    b: float = 0.75
    _term_freqs: list[Counter[str]] = field(init=False, repr=False)
    _lengths: list[int] = field(init=False, repr=False)
    _doc_freq: Counter[str] = field(init=False, repr=False)
    _avg_length: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._term_freqs = [Counter(tokenize(f"{p.title}\n{p.text}")) for p in self.passages]
        self._lengths = [sum(counts.values()) for counts in self._term_freqs]
        self._doc_freq = Counter(term for counts in self._term_freqs for term in counts)
        self._avg_length = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0

    @classmethod
    def of(cls, corpus: Corpus, **params: float) -> BM25Index:
        return cls(corpus.passages, **params)

    def __len__(self) -> int:
        return len(self.passages)

    @property
    def vocabulary(self) -> frozenset[str]:
        return frozenset(self._doc_freq)

    def idf(self, term: str) -> float:
        df = self._doc_freq.get(term, 0)
        return math.log(1 + (len(self.passages) - df + 0.5) / (df + 0.5))

    def score(self, terms: Iterable[str], position: int) -> float:
        """BM25 of already-tokenized `terms` against the passage at `position`."""
        counts = self._term_freqs[position]
        norm = self.k1 * (1 - self.b + self.b * self._lengths[position] / (self._avg_length or 1.0))
        total = 0.0
        for term in dict.fromkeys(terms):
            tf = counts.get(term, 0)
            if tf:
                total += self.idf(term) * tf * (self.k1 + 1) / (tf + norm)
        return total

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The top `k` passages with a positive score; empty if no query term occurs in the corpus."""
        if k < 1:
            raise ValueError("k must be at least 1")
        terms = [term for term in dict.fromkeys(tokenize(query)) if term in self._doc_freq]
        if not terms:
            return []
        scored = [(self.score(terms, position), position) for position in range(len(self.passages))]
        scored = [(score, position) for score, position in scored if score > 0]
        scored.sort(key=lambda item: (-item[0], self.passages[item[1]].source, self.passages[item[1]].index))
        return [Hit(rank, score, self.passages[pos]) for rank, (score, pos) in enumerate(scored[:k], start=1)]
