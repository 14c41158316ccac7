"""Reviewer: scores a Markdown report for its audience, and asks for the audience when the request leaves it out.

Request
    The report is the text of the user message (Markdown, e.g. the writer's "report" artifact). Other data parts
    (such as the writer's outline) are ignored. Metadata:
      `audience` "engineers" | "executives" | "general" (synonyms such as "developers", "management" or
                 "public" are understood); picks the thresholds below. Absent: the reviewer asks (INPUT_REQUIRED).
      `skill`    "review-report" (the only skill).

Outcome
    - a raw or url part                                       -> REJECTED "unsupported input: ..."
    - only data parts, no text                                -> REJECTED "unsupported input: ..."
    - no text at all, or only whitespace                      -> REJECTED "empty report: ..."
    - text over 200,000 characters, unknown `skill`, an `audience` that names no known audience
                                                              -> REJECTED, saying what is allowed
    - no `audience` -> INPUT_REQUIRED with the question "Who is the audience for this report: ...?". The report is
      kept with the task; the answer comes as the text of a follow-up message with the same taskId and contextId
      (or as that message's metadata `audience`). An answer that names no audience (or several) is asked again,
      at most 3 times in all, then REJECTED "no audience: ...".
    - otherwise COMPLETED with the "review" artifact below (a low score is a "revise" verdict, not a failure).

Thresholds      words       sections  reading ease  words/sentence  accept at
    engineers   200-4000    2         >= 30         <= 30           70
    executives  100-500     2         >= 50         <= 20           75 (and a summary section is required)
    general     150-1500    2         >= 60         <= 20           70

Artifact "review" (one chunk, lastChunk=true)
    part 1  text: "score 87/100 for engineers: accept; ..." naming any failed check
    part 2  data (metadata kind=review): {"score": 0..100, "verdict": "accept"|"revise", "audience", "acceptScore",
            "checks": [{"id", "passed", "points", "max", "detail"}], "stats": {"words", "sentences", "syllables",
            "paragraphs", "headings", "sections", "readingEase", "wordsPerSentence", "cited", "sources"}}
            Checks (points): length 20, title 5, sections 15, summary 5, citations-present 10, citations-resolve 15
            (every [n] has an entry in the Sources/References list), sources-cited 5, readability 15 (Flesch
            reading ease with a syllable heuristic), sentence-length 10. "accept" needs the audience's score, the
            citations-present and citations-resolve checks passed, and at least half the points of length,
            sections, readability and sentence-length.
"""

from __future__ import annotations

from typing import Any

from a2amesh.agent import MeshAgent, TaskContext, TaskRejectedError, skill
from a2amesh.models import Message, Part
from agent_reviewer.review import AUDIENCE_CHOICES, AUDIENCE_QUESTION, Audience, parse_audience, review

REVIEW_SKILL = "review-report"
REVIEW_ARTIFACT = "review"
AUDIENCE_KEY = "audience"
MAX_REPORT_CHARS = 200_000
MAX_QUESTIONS = 3
REPORT_STATE = "report"
ASKED_STATE = "asked"


def report_text(message: Message) -> str:
    """The report in a request, or TaskRejectedError saying why the request holds none the reviewer can read."""
    kinds = [part.kind for part in message.parts]
    for kind in ("raw", "url"):
        if kind in kinds:
            raise TaskRejectedError(
                f"unsupported input: {kind} parts are not read; send the report as Markdown in a text part"
            )
    text = message.text()
    if not text.strip():
        if "data" in kinds:
            raise TaskRejectedError(
                "unsupported input: only data parts and no report text; send the report as Markdown in a text part"
            )
        raise TaskRejectedError("empty report: send the report as Markdown in a text part")
    if len(text) > MAX_REPORT_CHARS:
        raise TaskRejectedError(f"report too long: at most {MAX_REPORT_CHARS} characters (got {len(text)})")
    return text


def audience_of(value: Any) -> Audience:
    """`metadata.audience` as an Audience, or TaskRejectedError naming the choices."""
    audience = parse_audience(value) if isinstance(value, str) else None
    if audience is None:
        raise TaskRejectedError(f"metadata.audience must be one of {AUDIENCE_CHOICES} (got {value!r})")
    return audience


class ReviewerAgent(MeshAgent):
    """Scores reports against per-audience thresholds; asks who the audience is when it is not given."""

    name = "Reviewer Agent"
    description = (
        "Reviews a Markdown report for a given audience: length, structure (title, sections, summary), citations "
        "present and resolvable against its Sources list, and readability (Flesch reading ease). Returns a 0-100 "
        "score, the checks and an accept/revise verdict; asks for the audience when the request does not say."
    )
    rerunnable = True  # its work has no effect outside the task: a pool peer may redo it
    input_modes = ["text/markdown", "text/plain"]
    output_modes = ["application/json", "text/plain"]

    @skill(
        id=REVIEW_SKILL,
        name="Review report",
        description=(
            "Scores the Markdown report in the message text for metadata.audience (engineers, executives or "
            "general) and returns {score, verdict, checks, stats}. Without an audience it answers "
            "INPUT_REQUIRED with a question; reply on the same task with the audience."
        ),
        tags=["reviewer", "review", "report", "markdown", "citations", "readability", "multi-turn"],
        examples=[
            "# MQTT QoS\n\n## Summary\n\nQoS 1 delivers at least once [1].\n\n## Sources\n\n1. MQTT QoS levels",
            "Review this report for executives: # Quarterly report ...",
        ],
        input_modes=["text/markdown", "text/plain"],
        output_modes=["application/json", "text/plain"],
    )
    async def review_report(self, task: TaskContext) -> None:
        if REPORT_STATE in task.state:  # a follow-up: the message answers our question
            audience = await self._answer(task)
        else:
            task.state[REPORT_STATE] = report_text(task.message)
            value = task.metadata.get(AUDIENCE_KEY)
            audience = audience_of(value) if value is not None else None
            if audience is None:
                task.state[ASKED_STATE] = 1
                await task.require_input(AUDIENCE_QUESTION)
        if audience is None:
            return  # waiting for the requester's answer
        await task.working(f"reviewing for {audience.label}")
        result = review(task.state[REPORT_STATE], audience)
        summary = result.summary()
        await task.artifact(
            Part(text=summary),
            Part(data=result.to_data(), metadata={"kind": "review"}),
            name=REVIEW_ARTIFACT,
            last_chunk=True,
        )
        await task.complete(summary)

    @staticmethod
    async def _answer(task: TaskContext) -> Audience | None:
        """The audience from the answer, or None after asking again."""
        value = task.message.metadata.get(AUDIENCE_KEY) if task.message.metadata else None
        if value is not None:
            return audience_of(value)
        answer = " ".join(task.text.split())
        audience = parse_audience(answer)
        if audience is not None:
            return audience
        asked = task.state.get(ASKED_STATE, 1)
        if asked >= MAX_QUESTIONS:
            raise TaskRejectedError(
                f"no audience: {asked} answers named none of {AUDIENCE_CHOICES} (last: {answer[:80]!r})"
            )
        task.state[ASKED_STATE] = asked + 1
        heard = f"{answer[:80]!r} does not name exactly one audience" if answer else "the answer was empty"
        await task.require_input(f"Sorry, {heard}. {AUDIENCE_QUESTION}")
        return None
