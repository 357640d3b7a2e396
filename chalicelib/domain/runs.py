"""Day-end run records (SPEC §6): one per business date, holding its latest outcome and, while it
runs, a checkpoint per segment so another invocation can carry on where this one stopped."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class RunOutcome(StrEnum):
    """What one invocation did, as reported to its caller (the record keeps the run's status)."""

    COMPLETED = "COMPLETED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    IN_PROGRESS = "IN_PROGRESS"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    CONTINUING = "CONTINUING"
    """Stopped before the Lambda time limit; a fresh invocation continues from the checkpoints."""


class LostLease(Exception):
    """Another invocation owns the run now (ours let its lease lapse): stop without writing more."""


@dataclass
class SegmentState:
    cursor: dict[str, Any] | None = None
    done: bool = False
    scanned: int = 0
    updated: int = 0
    escalated: int = 0
    pending: int = 0
    page: list[str] | None = None
    """Watch segments: the loan ids of the page being worked on, recorded before any of them is written
    (``cursor`` is then the one after that page). A written loan leaves its watch partition, so a run
    resumed after a crash re-reads these by id to count what was already done."""


@dataclass
class RunRecord:
    business_date: dt.date
    status: RunStatus
    trigger: str
    run_id: str
    lease_until: int
    started_at: str
    finished_at: str | None = None
    mode: str | None = None
    segments: dict[str, SegmentState] = field(default_factory=dict)
    errors: int = 0
    last_error: str | None = None

    @property
    def loans_scanned(self) -> int:
        return sum(s.scanned for s in self.segments.values())

    @property
    def loans_updated(self) -> int:
        return sum(s.updated for s in self.segments.values())

    @property
    def escalated(self) -> int:
        return sum(s.escalated for s in self.segments.values())

    @property
    def pending_escalation(self) -> int:
        return sum(s.pending for s in self.segments.values())
