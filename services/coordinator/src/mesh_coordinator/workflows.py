"""Workflows the coordinator runs across agents, served as a mesh agent of its own (`workflows`), so each parent
task gets what every task gets — de-duplication, cancellation, streaming, a durable record — and its steps are
child tasks on the mesh, linked to it by contextId and referenceTaskIds.

    workflow.pipeline   research -> write -> review. The text is the question; metadata `audience` goes to the
                        reviewer (without it the reviewer's question comes back as the parent's INPUT_REQUIRED, and
                        the answer to the parent is passed on to the reviewer); `topK` goes to research.
    workflow.fanout     several research sub-questions in parallel, merged. Sub-questions come from metadata
                        `questions` (a list of strings) or the text's lines / `?`-terminated sentences.
                        `stepSkill` fans out to another skill instead of research, with `stepMetadata` for
                        every step.

The parent reports a WORKING status per step, names every child in its artifacts' metadata, and cancels its
running children when it is canceled."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from a2amesh import tracing
from a2amesh.agent import MeshAgent, TaskContext, TaskFailedError, TaskRejectedError
from a2amesh.binding.wire import SKILL_METADATA_KEY
from a2amesh.models import AgentSkill, Part
from a2amesh.settings import AgentSettings
from mesh_coordinator.delegate import Child, Delegate

PIPELINE = "workflow.pipeline"
FANOUT = "workflow.fanout"
MAX_SUBQUESTIONS = 8
MERGED_PASSAGES = 10


class WorkflowAgent(MeshAgent):
    """Multi-agent workflows, hosted by the coordinator."""

    name = "Mesh Workflows"
    description = "Runs multi-step workflows across the mesh's specialists, each step a linked child task."
    skills: ClassVar[list[AgentSkill]] = [
        AgentSkill(
            id=PIPELINE,
            name="Research, write, review",
            description="Researches a question, writes a cited Markdown report and has it reviewed.",
            tags=["workflow", "pipeline", "research", "report", "review"],
            examples=["how does MQTT keep a session while a client is away"],
        ),
        AgentSkill(
            id=FANOUT,
            name="Parallel research",
            description="Researches several sub-questions in parallel and merges the passages found.",
            tags=["workflow", "fan-out", "research"],
            examples=["what is a retained message? what is a last will? what does QoS 1 guarantee?"],
        ),
    ]
    input_modes = ["text/plain", "application/json"]
    output_modes = ["text/markdown", "application/json", "text/plain"]

    def __init__(self, settings: AgentSettings, delegate: Delegate) -> None:
        super().__init__(settings)
        self.delegate = delegate

    async def handle(self, task: TaskContext) -> None:
        workflow = task.metadata.get(SKILL_METADATA_KEY, PIPELINE)
        try:
            if workflow == PIPELINE:
                await self.pipeline(task)
            elif workflow == FANOUT:
                await self.fanout(task)
            else:
                raise TaskRejectedError(f"unknown workflow {workflow!r}: use {PIPELINE} or {FANOUT}")
        except asyncio.CancelledError:
            await self.delegate.cancel_all(task)
            raise

    async def on_cancel(self, task: TaskContext) -> None:
        """A parent waiting for input is canceled: cancel the children it is waiting on."""
        await self.delegate.cancel_all(task)

    # -- research -> write -> review -------------------------------------------------------------------------
    async def pipeline(self, task: TaskContext) -> None:
        progress: dict[str, Child] = task.state.setdefault("pipeline", {})
        if "review" in progress:  # turn 2+: the user answered the reviewer's question, through us
            review = await self._step(
                task, "3/3 review", lambda: self.delegate.answer(task, progress["review"], [Part(text=task.text)])
            )
        else:
            question = task.text.strip()
            if not question:
                raise TaskRejectedError("empty question: send what to research as a text part")
            research = await self._step(
                task,
                "1/3 research",
                lambda: self.delegate.start(
                    task, "research", "research", [Part(text=question)], _pick(task.metadata, "topK")
                ),
            )
            passages = [value for value in research.data_parts() if isinstance(value, dict) and "passage" in value]
            if not passages:
                raise TaskFailedError(f"research found nothing on {question!r}; nothing to write about")
            written = await self._step(
                task,
                "2/3 write",
                lambda: self.delegate.start(
                    task, "write", "write-report", [Part(text=question), *(Part(data=p) for p in passages)]
                ),
            )
            report = written.text("report")
            await task.artifact(
                Part(text=report, media_type="text/markdown"), name="report", metadata={"childTaskId": written.id}
            )
            progress["report"] = written
            review = await self._step(
                task,
                "3/3 review",
                lambda: self.delegate.start(
                    task, "review", "review-report", [Part(text=report)], _pick(task.metadata, "audience")
                ),
            )
            progress["review"] = review
        if review.state.is_interrupted:
            await task.require_input(review.status_text() or "the reviewer needs more information")
            return
        await task.artifact(
            *[Part(data=value) for value in review.data_parts()],
            text=review.text("review") or None,
            name="review",
            metadata={"childTaskId": review.id},
        )
        await task.complete(f"pipeline done: {review.text('review') or 'reviewed'}")

    # -- fan-out / fan-in ------------------------------------------------------------------------------------
    async def fanout(self, task: TaskContext) -> None:
        questions = subquestions(task.text, task.metadata.get("questions"))
        skill = task.metadata.get("stepSkill", "research")
        step_metadata = task.metadata.get("stepMetadata", _pick(task.metadata, "topK"))
        if not isinstance(skill, str) or not skill or not isinstance(step_metadata, dict):
            raise TaskRejectedError("metadata.stepSkill must be a skill id and metadata.stepMetadata an object")
        await task.working(f"fan-out: {len(questions)} {skill} steps in parallel")
        children = await asyncio.gather(
            *(
                _traced_step(
                    task,
                    skill,
                    lambda index=index, question=question: self.delegate.start(
                        task, f"{skill} {index + 1}/{len(questions)}", skill, [Part(text=question)], step_metadata
                    ),
                )
                for index, question in enumerate(questions)
            )
        )
        failed = [child for child in children if child.state.name != "COMPLETED"]
        if failed:
            reasons = "; ".join(f"{child.step}: {child.state.name} {child.status_text()}".strip() for child in failed)
            raise TaskFailedError(f"fan-out steps did not complete: {reasons}")
        merged = merge_passages(children)
        await task.working(f"fan-in: merged {len(merged)} passages from {len(children)} sub-questions")
        summary = {
            "questions": questions,
            "childTaskIds": [child.id for child in children],
            "sources": sorted({passage["source"] for passage in merged if "source" in passage}),
        }
        await task.artifact(
            *(Part(data=passage) for passage in merged),
            Part(data=summary),
            text=f"{len(merged)} passages for {len(questions)} sub-questions",
            name="merged-passages",
        )
        await task.complete(f"merged {len(merged)} passages from {len(children)} research tasks")

    async def _step(self, task: TaskContext, label: str, run: Any) -> Child:
        await task.working(f"step {label}: started")
        child = await _traced_step(task, label.split()[-1], run)
        await task.working(f"step {label}: {child.state.name.lower()} on {child.agent} (task {child.id})")
        if child.state.is_terminal and child.state.name != "COMPLETED":
            raise TaskFailedError(f"step {label} ended {child.state.name}: {child.status_text() or 'no reason'}")
        return child


async def _traced_step(task: TaskContext, step: str, run: Callable[[], Awaitable[Child]]) -> Child:
    """Run one step inside a span `step {name}` (a child of the parent task's span, and the parent of the child
    task's hops), which says which agent ran it and how it ended; just the step when tracing is off."""
    with tracing.span(f"step {step}", **{"a2a.task.id": task.id, "a2a.workflow.step": step}) as span:
        child = await run()
        if span is not None:
            span.set_attributes({"a2a.child.task.id": child.id, "a2a.agent": str(child.agent or "")})
            tracing.ended(span, child.state.value, child.status_text())
        return child


def _pick(metadata: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: metadata[key] for key in keys if key in metadata}


def subquestions(text: str, given: Any = None) -> list[str]:
    """The sub-questions of a fan-out: metadata `questions`, else the text split into lines or questions."""
    if given is not None:
        if not isinstance(given, list) or not all(isinstance(q, str) and q.strip() for q in given):
            raise TaskRejectedError("metadata.questions must be a list of non-empty strings")
        questions = [q.strip() for q in given]
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        questions = lines if len(lines) > 1 else [q.strip() for q in re.findall(r"[^?]+\?|[^?]+$", text) if q.strip()]
    if not questions:
        raise TaskRejectedError("no sub-questions: send them one per line, as questions, or in metadata.questions")
    if len(questions) > MAX_SUBQUESTIONS:
        raise TaskRejectedError(f"at most {MAX_SUBQUESTIONS} sub-questions (got {len(questions)})")
    return questions


def merge_passages(children: list[Child]) -> list[dict[str, Any]]:
    """Fan-in: every child's passages, each (source, passage) once at its best score, best first."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for child in children:
        for value in child.data_parts():
            if not isinstance(value, dict) or "passage" not in value:
                continue
            key = (str(value.get("source", "")), str(value["passage"]))
            if key not in best or value.get("score", 0) > best[key].get("score", 0):
                best[key] = {**value, "question": child.step}
    ranked = sorted(best.values(), key=lambda p: (-float(p.get("score", 0)), p.get("source", ""), p["passage"]))
    return [{**passage, "rank": rank} for rank, passage in enumerate(ranked[:MERGED_PASSAGES], start=1)]
