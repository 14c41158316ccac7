"""The credentials a workflow acts with: its caller's own. The coordinator's HTTP face admits a caller by API key and
starts the parent task on the workflows agent it hosts; each step of that workflow that goes to an agent whose
card asks for per-request authorization carries the same key (never the coordinator's own, which would let any
caller reach what only some keys may). Both sides live in the coordinator's process, so the key is handed over
here, in memory, and never published for an agent that did not ask for it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

MAX_REMEMBERED = 10_000
"""Parent tasks whose caller's credentials are kept (the oldest go first): bounded, like every cache here."""


class CallerCredentials:
    """Parent task id -> the `Bearer <key>` its caller presented (for the latest turn)."""

    def __init__(self, limit: int = MAX_REMEMBERED, adopt: Callable[[str, str], object] | None = None) -> None:
        self.limit = limit
        self._by_task: OrderedDict[str, str] = OrderedDict()
        self._adopt = adopt

    def adopt(self, parent_id: str, child_id: str) -> None:
        """A workflow started a child task for its parent: the child belongs to the parent's owner."""
        if self._adopt is not None:
            self._adopt(parent_id, child_id)

    def remember(self, task_id: str, authorization: str | None) -> None:
        if authorization is None:
            self._by_task.pop(task_id, None)
            return
        self._by_task[task_id] = authorization
        self._by_task.move_to_end(task_id)
        while len(self._by_task) > self.limit:
            self._by_task.popitem(last=False)

    def of(self, task_id: str) -> str | None:
        return self._by_task.get(task_id)
