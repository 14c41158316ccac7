"""Plain-text relevance: one tokenizer and one Okapi BM25, shared by the research agent (passages of its corpus)
and the coordinator's router (skills of the mesh's cards), so "how well does this text match" means the same
thing on both. Pure and deterministic: no I/O, no randomness, ties left to the caller's own order."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

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


class Bm25:
    """Okapi BM25 over documents given as token lists: score(q, d) = sum over distinct query terms t of
    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avglen)), with the non-negative
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)). Repeated query terms count once."""

    def __init__(self, documents: Sequence[Iterable[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self.term_freqs = [Counter(tokens) for tokens in documents]
        self.lengths = [sum(counts.values()) for counts in self.term_freqs]
        self.doc_freq: Counter[str] = Counter(term for counts in self.term_freqs for term in counts)
        self.avg_length = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0

    def __len__(self) -> int:
        return len(self.term_freqs)

    @property
    def vocabulary(self) -> frozenset[str]:
        return frozenset(self.doc_freq)

    def idf(self, term: str) -> float:
        df = self.doc_freq.get(term, 0)
        return math.log(1 + (len(self.term_freqs) - df + 0.5) / (df + 0.5))

    def term_scores(self, terms: Iterable[str], position: int) -> dict[str, float]:
        """Each distinct query term's share of the document's score (only the terms that occur in it)."""
        counts = self.term_freqs[position]
        norm = self.k1 * (1 - self.b + self.b * self.lengths[position] / (self.avg_length or 1.0))
        shares: dict[str, float] = {}
        for term in dict.fromkeys(terms):
            tf = counts.get(term, 0)
            if tf:
                shares[term] = self.idf(term) * tf * (self.k1 + 1) / (tf + norm)
        return shares

    def score(self, terms: Iterable[str], position: int) -> float:
        """BM25 of already-tokenized `terms` against the document at `position`."""
        return sum(self.term_scores(terms, position).values())
