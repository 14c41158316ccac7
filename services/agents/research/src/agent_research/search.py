"""Okapi BM25 over paragraph-level passages of a small bundled corpus.

Pure and synchronous (no I/O except `Corpus.bundled()`), so the ranking is unit-testable without a broker.
Passages are paragraphs, not whole documents, so a hit can be quoted and cited as-is; each passage is
indexed together with its document's title, so a paragraph that never repeats its topic's name still
belongs to that topic. Ordering is fully deterministic: score descending, then source id, then the
passage's position in its document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

from a2amesh.text import STOP_WORDS, Bm25, stem, tokenize

__all__ = ["STOP_WORDS", "BM25Index", "Corpus", "Document", "Hit", "Passage", "stem", "tokenize"]

CORPUS_PACKAGE = "agent_research"
CORPUS_DIR = "corpus"
CORPUS_SUFFIXES = (".md", ".txt")


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
    """Okapi BM25 (`a2amesh.text.Bm25`) over passages, each indexed with its document's title."""

    passages: list[Passage]
    k1: float = 1.5
    b: float = 0.75
    _bm25: Bm25 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._bm25 = Bm25([tokenize(f"{p.title}\n{p.text}") for p in self.passages], self.k1, self.b)

    @classmethod
    def of(cls, corpus: Corpus, **params: float) -> BM25Index:
        return cls(corpus.passages, **params)

    def __len__(self) -> int:
        return len(self.passages)

    @property
    def vocabulary(self) -> frozenset[str]:
        return self._bm25.vocabulary

    def idf(self, term: str) -> float:
        return self._bm25.idf(term)

    def score(self, terms: Iterable[str], position: int) -> float:
        """BM25 of already-tokenized `terms` against the passage at `position`."""
        return self._bm25.score(terms, position)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The top `k` passages with a positive score; empty if no query term occurs in the corpus."""
        if k < 1:
            raise ValueError("k must be at least 1")
        terms = [term for term in dict.fromkeys(tokenize(query)) if term in self._bm25.doc_freq]
        if not terms:
            return []
        scored = [(self.score(terms, position), position) for position in range(len(self.passages))]
        scored = [(score, position) for score, position in scored if score > 0]
        scored.sort(key=lambda item: (-item[0], self.passages[item[1]].source, self.passages[item[1]].index))
        return [Hit(rank, score, self.passages[pos]) for rank, (score, pos) in enumerate(scored[:k], start=1)]
