"""Research: searches the corpus bundled with the agent (BM25 over paragraphs) and streams cited passages.

Request
    The query is the text of the user message. Optional metadata:
      `topK`  integer 1..20, default 5: how many passages to return.
      `skill` "research" (default) or "list-sources" (list the corpus instead of searching it).

Outcome
    - blank text, or text with no searchable terms (only stop words/punctuation) -> REJECTED "empty query: ..."
    - `topK` not an integer in 1..20, query over 1000 characters, unknown `skill`  -> REJECTED, saying what is allowed
    - terms that match no passage -> COMPLETED with a one-chunk "passages" artifact saying so. Not a failure:
      the search ran and the honest answer is "nothing in this corpus"; a planner can go elsewhere.
    - otherwise COMPLETED with the "passages" artifact below.

Artifact "passages" (one artifact id, streamed in chunks so a requester can show hits as they come)
    chunk 1..n   one data part per hit: {"rank", "score", "source", "title", "passage"} (part metadata
                 kind=passage); chunk 1 has append unset, later chunks append=true, lastChunk=false
    final chunk  append=true, lastChunk=true: a text part (human summary) and a data part (kind=summary)
                 {"query", "topK", "searched", "returned", "sources": [{"source", "title", "ranks"}]}
"""

from __future__ import annotations

import uuid
from typing import Any

from a2amesh.agent import MeshAgent, TaskContext, TaskRejectedError, skill
from a2amesh.models import Part
from a2amesh.settings import AgentSettings
from agent_research.search import BM25Index, Corpus, Hit, tokenize

DEFAULT_TOP_K = 5
MAX_TOP_K = 20
MAX_QUERY_CHARS = 1000
RESEARCH_SKILL = "research"
LIST_SOURCES_SKILL = "list-sources"
PASSAGES_ARTIFACT = "passages"
SOURCES_ARTIFACT = "sources"


def parse_top_k(value: Any) -> int:
    """`metadata.topK` as an int in 1..MAX_TOP_K (absent means the default); bools and fractions are refused
    so a mistyped value is reported instead of silently truncated."""
    if value is None:
        return DEFAULT_TOP_K
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOP_K:
        raise TaskRejectedError(f"metadata.topK must be an integer from 1 to {MAX_TOP_K} (got {value!r})")
    return value


def check_query(text: str) -> str:
    """The stripped query, or TaskRejectedError when there is nothing to search for."""
    query = " ".join(text.split())
    if not query:
        raise TaskRejectedError("empty query: send the question as a text part")
    if len(query) > MAX_QUERY_CHARS:
        raise TaskRejectedError(f"query too long: at most {MAX_QUERY_CHARS} characters (got {len(query)})")
    if not tokenize(query):
        raise TaskRejectedError(
            f"empty query: {query!r} has no searchable terms (stop words and punctuation are ignored)"
        )
    return query


def summarize(query: str, top_k: int, searched: int, hits: list[Hit]) -> tuple[str, dict[str, Any]]:
    """The closing chunk's text and data: which sources the hits came from, in order of their best rank."""
    sources: dict[str, dict[str, Any]] = {}
    for hit in hits:
        entry = sources.setdefault(
            hit.passage.source, {"source": hit.passage.source, "title": hit.passage.title, "ranks": []}
        )
        entry["ranks"].append(hit.rank)
    data = {
        "query": query,
        "topK": top_k,
        "searched": searched,
        "returned": len(hits),
        "sources": list(sources.values()),
    }
    if not hits:
        return f"No passages matched {query!r} in {searched} passages searched.", data
    cited = "; ".join(f"{s['title']} [{s['source']}]" for s in sources.values())
    passages = f"{len(hits)} passage{'s' if len(hits) != 1 else ''}"
    return f"{passages} from {len(sources)} source{'s' if len(sources) != 1 else ''}: {cited}", data


class ResearchAgent(MeshAgent):
    """Answers questions about the mesh's technologies with ranked, cited passages from its own corpus."""

    name = "Research Agent"
    description = (
        "Searches a bundled corpus on MQTT 5, A2A, broker security, Redis, SQL persistence, Kubernetes, load "
        "testing and retries with Okapi BM25, and streams the best matching passages with their sources."
    )
    rerunnable = True  # its work has no effect outside the task: a pool peer may redo it
    input_modes = ["text/plain"]
    output_modes = ["application/json", "text/plain"]

    def __init__(self, settings: AgentSettings, corpus: Corpus | None = None) -> None:
        super().__init__(settings)
        self.corpus = corpus or Corpus.bundled()
        self.index = BM25Index.of(self.corpus)  # built once at start-up: the corpus is immutable

    @skill(
        id=RESEARCH_SKILL,
        name="Research",
        description=(
            "Answers a question with cited passages: ranks paragraph-level passages of the bundled corpus "
            "(MQTT, A2A, distributed-systems testing and retries) against the message text (BM25) and streams "
            f"the top ones as data parts with rank, score, source and title. Metadata topK: 1-{MAX_TOP_K}, "
            f"default {DEFAULT_TOP_K}."
        ),
        tags=["research", "question", "answer", "search", "corpus", "bm25", "retrieval", "citations"],
        examples=[
            "How do MQTT retained messages work?",
            "What does QoS 1 guarantee?",
            "what is a last will message for",
            "how do shared subscriptions spread load",
            "exponential backoff with jitter",
            "What does the input required task state mean?",
        ],
        input_modes=["text/plain"],
        output_modes=["application/json", "text/plain"],
    )
    async def research(self, task: TaskContext) -> None:
        query = check_query(task.text)
        top_k = parse_top_k(task.metadata.get("topK"))
        searched = len(self.index)
        await task.working(f"searching {searched} passages from {len(self.corpus.documents)} documents")
        hits = self.index.search(query, top_k)
        summary_text, summary = summarize(query, top_k, searched, hits)
        artifact_id = uuid.uuid4().hex
        for hit in hits:
            await task.artifact(
                Part(data=hit.to_data(), metadata={"kind": "passage"}),
                name=PASSAGES_ARTIFACT,
                artifact_id=artifact_id,
                append=hit.rank > 1,
                last_chunk=False,
            )
        await task.artifact(
            Part(text=summary_text),
            Part(data=summary, metadata={"kind": "summary"}),
            name=PASSAGES_ARTIFACT,
            artifact_id=artifact_id,
            append=bool(hits),
            last_chunk=True,
        )
        await task.complete(summary_text if hits else "no passages matched")

    @skill(
        id=LIST_SOURCES_SKILL,
        name="List sources",
        description="Lists the corpus documents (id, title, passage count). Send metadata skill=list-sources.",
        tags=["research", "corpus", "sources"],
        examples=["list sources"],
        input_modes=["text/plain"],
        output_modes=["application/json", "text/plain"],
    )
    async def list_sources(self, task: TaskContext) -> None:
        sources = [
            {"source": document.id, "title": document.title, "passages": len(document.passages)}
            for document in self.corpus.documents
        ]
        text = "\n".join(f"{entry['source']}: {entry['title']}" for entry in sources)
        await task.artifact(text=text, data={"sources": sources}, name=SOURCES_ARTIFACT, last_chunk=True)
        await task.complete(f"{len(sources)} sources")
