"""The ranking logic, without a broker: tokenizer, corpus loading, BM25 scores and ordering, input checks."""

from __future__ import annotations

import itertools
import math
import re

import pytest

from a2amesh.agent import TaskRejectedError
from agent_research.agent import DEFAULT_TOP_K, MAX_TOP_K, check_query, parse_top_k, summarize
from agent_research.search import BM25Index, Corpus, Passage, parse_document, stem, tokenize


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus.bundled()


@pytest.fixture(scope="module")
def index(corpus: Corpus) -> BM25Index:
    return BM25Index.of(corpus)


# -- tokenizer -----------------------------------------------------------------------------------------------
def test_tokenize_lowercases_splits_and_drops_stop_words() -> None:
    assert tokenize("What is the Last-Will of an MQTT client?") == ["last", "will", "mqtt", "client"]


def test_tokenize_keeps_digits_and_drops_single_letters() -> None:
    assert tokenize("QoS 1 vs QoS 2: a b c") == ["qos", "1", "vs", "qos", "2"]


def test_tokenize_of_nothing_searchable_is_empty() -> None:
    assert tokenize("") == []
    assert tokenize("  ?! -- ") == []
    assert tokenize("what is the") == []


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["retained", "retains", "retaining", "retain"], "retain"),
        (["messages", "message"], "messag"),
        (["retries", "retry"], "retry"),
        (["properties", "property"], "property"),
        (["subscriptions", "subscription"], "subscription"),
        (["mapped", "map"], "map"),
    ],
)
def test_stem_folds_inflections_onto_one_stem(words: list[str], expected: str) -> None:
    assert {stem(word) for word in words} == {expected}


@pytest.mark.parametrize("word", ["qos", "tls", "redis", "status", "will", "string", "need", "process"])
def test_stem_leaves_short_and_special_words_alone(word: str) -> None:
    assert stem(word) == word


# -- corpus --------------------------------------------------------------------------------------------------
def test_parse_document_takes_title_and_paragraphs() -> None:
    document = parse_document("doc", "# The Title\n\nFirst   para\nwraps here.\n\n## Sub\n\nSecond para.\n")
    assert document.title == "The Title"
    assert [p.text for p in document.passages] == ["First para wraps here.", "Second para."]
    assert [p.index for p in document.passages] == [0, 1]
    assert all(p.source == "doc" and p.title == "The Title" for p in document.passages)


def test_parse_document_without_heading_uses_the_id_as_title() -> None:
    assert parse_document("plain", "Just text.").title == "plain"


def test_bundled_corpus_has_titled_documents_with_stable_ids(corpus: Corpus) -> None:
    assert 20 <= len(corpus.documents) <= 30
    ids = [document.id for document in corpus.documents]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9-]+", doc_id) for doc_id in ids)
    for document in corpus.documents:
        assert document.title != document.id, f"{document.id} has no '# ' title"
        assert len(document.passages) >= 3, f"{document.id} is too short"
    assert corpus.document("mqtt-retained-messages") is not None
    assert corpus.document("nope") is None


# -- ranking -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("retained messages", "mqtt-retained-messages"),
        ("how do I clear a retained message on a topic", "mqtt-retained-messages"),
        ("last will", "mqtt-last-will"),
        ("shared subscriptions load balancing", "mqtt-shared-subscriptions"),
        ("session expiry interval", "mqtt-session-expiry"),
        ("response topic correlation data", "mqtt-request-response"),
        ("exponential backoff jitter", "retries-and-backoff"),
        ("kubernetes readiness probe SIGTERM", "kubernetes-probes-and-shutdown"),
        ("idempotency key duplicates unique constraint", "idempotency"),
        ("agent card skills tags", "a2a-agent-cards"),
        ("TLS certificate verification", "broker-tls"),
        ("mosquitto ACL pattern username", "broker-acls"),
        ("artifact chunks append last chunk", "a2a-artifacts"),
    ],
)
def test_the_obvious_document_ranks_first(index: BM25Index, query: str, source: str) -> None:
    hits = index.search(query, 5)
    assert hits, query
    assert hits[0].passage.source == source, [h.passage.source for h in hits]


def test_hits_are_ranked_by_descending_score_and_limited_to_k(index: BM25Index) -> None:
    hits = index.search("mqtt broker messages", 7)
    assert len(hits) == 7
    assert [hit.rank for hit in hits] == list(range(1, 8))
    assert all(a.score >= b.score > 0 for a, b in itertools.pairwise(hits))


def test_unknown_terms_and_empty_queries_match_nothing(index: BM25Index) -> None:
    assert index.search("zebra quantum xylophone", 5) == []
    assert index.search("", 5) == []
    assert index.search("the of and", 5) == []


def test_k_must_be_positive(index: BM25Index) -> None:
    with pytest.raises(ValueError):
        index.search("mqtt", 0)


def test_search_is_deterministic(index: BM25Index) -> None:
    first = [(hit.passage.source, hit.passage.index, hit.score) for hit in index.search("agent task state", 20)]
    for _ in range(3):
        again = [
            (hit.passage.source, hit.passage.index, hit.score)
            for hit in BM25Index.of(Corpus.bundled()).search("agent task state", 20)
        ]
        assert again == first


def test_ties_are_broken_by_source_id_then_position() -> None:
    same = "# Same\n\nbroker queue\n\nbroker queue\n"
    corpus = Corpus.from_texts({"zeta": same, "alpha": same, "mid": "# Other\n\nsomething else entirely\n"})
    hits = BM25Index.of(corpus).search("broker", 10)
    assert len({hit.score for hit in hits}) == 1
    assert [(hit.passage.source, hit.passage.index) for hit in hits] == [
        ("alpha", 0),
        ("alpha", 1),
        ("zeta", 0),
        ("zeta", 1),
    ]


def test_score_matches_the_bm25_formula() -> None:
    corpus = Corpus.from_texts({"d1": "# T\n\nbroker broker queue", "d2": "# T\n\nqueue"})
    index = BM25Index.of(corpus, k1=1.5, b=0.75)
    # indexed text includes the title "t", a single letter, which the tokenizer drops
    lengths = [3, 1]
    avg = sum(lengths) / 2
    idf = math.log(1 + (2 - 1 + 0.5) / (1 + 0.5))
    tf = 2
    expected = idf * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * lengths[0] / avg))
    (hit,) = index.search("broker", 5)
    assert hit.passage == Passage("d1", "T", "broker broker queue", 0)
    assert hit.score == pytest.approx(expected)


def test_rarer_terms_weigh_more(index: BM25Index) -> None:
    assert index.idf("jitter") > index.idf("mqtt")


def test_hit_data_shape(index: BM25Index) -> None:
    data = index.search("retained messages", 1)[0].to_data()
    assert set(data) == {"rank", "score", "source", "title", "passage"}
    assert data["rank"] == 1 and data["source"] == "mqtt-retained-messages"
    assert data["title"] == "MQTT Retained Messages"


# -- request checks ------------------------------------------------------------------------------------------
def test_top_k_defaults_and_bounds() -> None:
    assert parse_top_k(None) == DEFAULT_TOP_K
    assert parse_top_k(1) == 1
    assert parse_top_k(MAX_TOP_K) == MAX_TOP_K
    assert parse_top_k(3.0) == 3


@pytest.mark.parametrize("value", [0, MAX_TOP_K + 1, -1, 2.5, "5", True, [5]])
def test_invalid_top_k_is_rejected_with_the_allowed_range(value: object) -> None:
    with pytest.raises(TaskRejectedError, match=f"from 1 to {MAX_TOP_K}"):
        parse_top_k(value)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_query_is_rejected(text: str) -> None:
    with pytest.raises(TaskRejectedError, match=r"^empty query: "):
        check_query(text)


def test_query_of_stop_words_is_rejected_as_empty() -> None:
    with pytest.raises(TaskRejectedError, match=r"^empty query: 'what is the' has no searchable terms"):
        check_query("  what is   the ")


def test_overlong_query_is_rejected() -> None:
    with pytest.raises(TaskRejectedError, match="too long"):
        check_query("mqtt " * 500)


def test_query_whitespace_is_collapsed() -> None:
    assert check_query("  retained\n messages ") == "retained messages"


def test_summary_lists_sources_in_rank_order(index: BM25Index) -> None:
    hits = index.search("redis index sets", 4)
    text, data = summarize("redis index sets", 4, len(index), hits)
    assert data["returned"] == 4 and data["searched"] == len(index)
    ranks = [rank for source in data["sources"] for rank in source["ranks"]]
    assert sorted(ranks) == [1, 2, 3, 4]
    assert data["sources"][0]["source"] == hits[0].passage.source
    assert text.startswith("4 passages from ")


def test_summary_of_no_hits_says_so() -> None:
    text, data = summarize("zebra", 5, 10, [])
    assert text.startswith("No passages matched 'zebra'")
    assert data["sources"] == [] and data["returned"] == 0
