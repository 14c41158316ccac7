"""The audit trail: who sent, read, cancelled or administered what, when, and with which outcome. One record per
A2A call (and per refused credential), holding the principal, tenant, method, task id and outcome, never a message,
an artifact or a credential. Appended as JSON lines to MESH_AUDIT_FILE when set (nothing here rewrites it), written
to the `mesh.audit` log, and kept in a bounded ring in memory that an operator reads at `GET /audit`."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mesh_coordinator.auth import Principal

log = logging.getLogger("mesh.audit")

MEMORY_RECORDS = 10_000
"""Records the coordinator keeps in memory for `GET /audit` (the file, when set, keeps all)."""
MAX_QUERY = 1000


@dataclass(frozen=True)
class AuditRecord:
    at: str
    principal: str
    tenant: str
    method: str
    outcome: str
    task_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The record as JSON would have it; built field by field (`dataclasses.asdict` deep-copies, once per call
        on the send path)."""
        wire: dict[str, Any] = {
            "at": self.at,
            "principal": self.principal,
            "tenant": self.tenant,
            "method": self.method,
            "outcome": self.outcome,
        }
        if self.task_id is not None:
            wire["task_id"] = self.task_id
        return wire


class AuditTrail:
    """Append-only: records are added, never changed or removed (the memory ring forgets the oldest)."""

    def __init__(self, file: Path | None = None, limit: int = MEMORY_RECORDS) -> None:
        self.file = file
        self._records: deque[AuditRecord] = deque(maxlen=limit)
        self._lock = threading.Lock()
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)

    def record(self, principal: Principal | None, method: str, outcome: str, task_id: str | None = None) -> None:
        entry = AuditRecord(
            at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            principal=principal.id if principal else "anonymous",
            tenant=principal.tenant if principal else "",
            method=method,
            outcome=outcome,
            task_id=task_id or None,
        )
        line = json.dumps(entry.to_wire(), separators=(",", ":"))
        with self._lock:
            self._records.append(entry)
            if self.file is not None:
                try:
                    with self.file.open("a", encoding="utf-8") as out:
                        out.write(line + "\n")
                except OSError as error:
                    log.error("audit file %s not written: %s", self.file, error)
        log.info(line)

    def query(
        self, principal: str | None = None, task_id: str | None = None, method: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest matching records first."""
        limit = max(1, min(limit, MAX_QUERY))
        with self._lock:
            records = list(self._records)
        found = []
        for entry in reversed(records):
            if principal and entry.principal != principal:
                continue
            if task_id and entry.task_id != task_id:
                continue
            if method and entry.method != method:
                continue
            found.append(entry.to_wire())
            if len(found) >= limit:
                break
        return found
