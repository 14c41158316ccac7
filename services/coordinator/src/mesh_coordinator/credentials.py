"""Who a workflow acts for: its caller. The coordinator's HTTP face admits a caller and starts the parent task on
the workflows agent it hosts; each step of that workflow that goes to an agent whose card asks for per-request
authorization carries a token minted for that agent and that caller (mesh_coordinator.agent_tokens), never the
coordinator's own right nor the caller's key, so a caller reaches through a workflow only what it could reach
itself. Both sides live in the coordinator's process, so the caller is handed over here, in memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from mesh_coordinator.auth import Principal

MAX_REMEMBERED = 10_000
"""Parent tasks whose caller is kept (the oldest go first): bounded, like every cache here."""

Mint = Callable[[str, Principal | None], str | None]
"""(audience, caller) -> `Bearer <token>` or None (mesh_coordinator.agent_tokens.AgentTokens.bearer)."""


class CallerCredentials:
    """Parent task id -> the principal that started it (or answered its latest question)."""

    def __init__(
        self,
        limit: int = MAX_REMEMBERED,
        adopt: Callable[[str, str], object] | None = None,
        mint: Mint | None = None,
    ) -> None:
        self.limit = limit
        self._by_task: OrderedDict[str, Principal] = OrderedDict()
        self._adopt = adopt
        self._mint = mint

    def adopt(self, parent_id: str, child_id: str) -> None:
        """A workflow started a child task for its parent: the child belongs to the parent's owner."""
        if self._adopt is not None:
            self._adopt(parent_id, child_id)

    def remember(self, task_id: str, principal: Principal | None) -> None:
        if principal is None:
            self._by_task.pop(task_id, None)
            return
        self._by_task[task_id] = principal
        self._by_task.move_to_end(task_id)
        while len(self._by_task) > self.limit:
            self._by_task.popitem(last=False)

    def of(self, task_id: str) -> Principal | None:
        return self._by_task.get(task_id)

    def token_for(self, task_id: str, audience: str) -> str | None:
        """A token for a step published on `audience`, acting for the parent task's caller (None if unknown)."""
        principal = self.of(task_id)
        if principal is None or self._mint is None:
            return None
        return self._mint(audience, principal)
