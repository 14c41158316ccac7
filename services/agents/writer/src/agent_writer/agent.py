"""Writer: turns research passages into a structured Markdown report that cites its sources.

Request
    Passages as data parts, in any shape the research agent produces:
      - one hit per data part: {"rank", "score", "source", "title", "passage"} (only "passage" is required);
      - a list of hits in one data part, or {"passages": [...]};
      - the research "passages" artifact or a whole task in wire form ({"parts": [...]}, {"artifacts": [...]});
        its summary part ({"query", "sources", ...}) supplies the topic when the text does not.
    The text of the message is the report's topic and title (blank: the research query, else the best source).
    Without data parts, the text itself is read as plain-text passages: paragraphs separated by blank lines, the
    first one the title when it is a single line of at most 200 characters; a paragraph may start with `[source-id]`
    to name its source (untagged paragraphs come from the source "message").
    Optional metadata `skill`: "write-report" (the only skill).

Outcome
    - no data parts and blank text, or nothing with passage text in them        -> REJECTED "nothing to write from: ..."
    - no data and text that is only a title line (a topic without passages)     -> REJECTED "no passages: ..."
    - a malformed hit ("passage" not a string), more than 100 passages, a passage over 10,000 characters, input
      over 200,000 characters, unknown `skill`                                    -> REJECTED, saying what is allowed
    - otherwise COMPLETED with the "report" artifact below; the same input always gives the same report.

Artifact "report" (one chunk, lastChunk=true)
    part 1  text, mediaType text/markdown: "# <title>", "## Summary" (counts and one key point per source, each
            cited), one "## <source title>" section per source in order of its best passage (its passages, best
            first, each ending with the source's citation "[n]"), and "## Sources": "n. <title> (`<source id>`)".
            A literal "[3]" inside a passage is escaped ("\\[3\\]") so every bare [n] is one of the report's citations.
    part 2  data (metadata kind=outline): {"title", "passages", "words", "sources": [{"n", "source", "title",
            "passages"}]}
"""

from __future__ import annotations

import json
from typing import Any

from a2amesh.agent import MeshAgent, TaskContext, TaskRejectedError, skill
from a2amesh.models import Part
from agent_writer.report import (
    MAX_INPUT_CHARS,
    Passage,
    Report,
    UnusableInputError,
    collect,
    default_title,
    one_line,
    parse_text,
    plural,
    write_report,
)

WRITE_SKILL = "write-report"
REPORT_ARTIFACT = "report"
MARKDOWN = "text/markdown"


def input_size(text: str, data: list[Any]) -> int:
    """Characters of input, counting data as its JSON text would."""
    return len(text) + sum(len(json.dumps(value, default=str)) for value in data)


def plan(text: str, data: list[Any]) -> tuple[str, list[Passage]]:
    """The report's title and passages from a request, or TaskRejectedError saying why there are none."""
    size = input_size(text, data)
    if size > MAX_INPUT_CHARS:
        raise TaskRejectedError(f"input too large: at most {MAX_INPUT_CHARS} characters (got {size})")
    try:
        if data:
            found = collect(data)
            if not found.passages:
                raise TaskRejectedError(
                    f"nothing to write from: {plural(len(data), 'data part')} but no passages in them "
                    f"({found.ignored} value(s) that are not passages); send research hits shaped "
                    '{"source", "title", "passage"}'
                )
            title = one_line(text) or found.query or default_title(found.passages)
            return title, found.passages
        if not text.strip():
            raise TaskRejectedError(
                "nothing to write from: send research passages as data parts (the text is the topic), "
                "or plain-text paragraphs"
            )
        title, passages = parse_text(text)
    except UnusableInputError as error:
        raise TaskRejectedError(str(error)) from None
    if not passages:
        raise TaskRejectedError(
            "no passages: the text is only a topic; send research passages as data parts, or paragraphs "
            "separated by blank lines after the title"
        )
    return title or default_title(passages), passages


class WriterAgent(MeshAgent):
    """Writes a cited Markdown report from research passages."""

    name = "Writer Agent"
    description = (
        "Turns research passages (the research agent's hits, or plain-text paragraphs) into a structured Markdown "
        "report: title, summary, one section per source and a numbered Sources list that every citation resolves to."
    )
    rerunnable = True  # its work has no effect outside the task: a pool peer may redo it
    input_modes = ["application/json", "text/plain"]
    output_modes = [MARKDOWN, "application/json"]

    @skill(
        id=WRITE_SKILL,
        name="Write report",
        description=(
            "Writes a Markdown report from passages sent as data parts ({source, title, passage}, as the "
            "research agent returns them) with the message text as the topic; groups them by source and cites "
            "each as [n] against a Sources list. Deterministic: the same passages give the same report."
        ),
        tags=["writer", "report", "markdown", "citations", "summarize"],
        examples=[
            "Write a report on MQTT retained messages from these passages",
            "# Retries in distributed systems\n\n[retries] Retry with exponential backoff and jitter.\n\n"
            "[idempotency] Make handlers idempotent so that retries are safe.",
        ],
        input_modes=["application/json", "text/plain"],
        output_modes=[MARKDOWN, "application/json"],
    )
    async def write(self, task: TaskContext) -> None:
        title, passages = plan(task.text, task.data)
        await task.working(f"writing from {plural(len(passages), 'passage')}")
        report = write_report(passages, title)
        await self.publish(task, report)

    @staticmethod
    async def publish(task: TaskContext, report: Report) -> None:
        await task.artifact(
            Part(text=report.markdown, media_type=MARKDOWN),
            Part(data=report.outline(), metadata={"kind": "outline"}),
            name=REPORT_ARTIFACT,
            last_chunk=True,
        )
        await task.complete(
            f"report {report.title!r}: {plural(report.words, 'word')}, {plural(len(report.sources), 'source')}"
        )
