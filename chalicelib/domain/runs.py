"""Day-end run records (docs/day-end.md): one per business date, holding its latest outcome and, while
it runs, a checkpoint per segment so another invocation can carry on where this one stopped."""

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


MAX_CONTINUATIONS = 50
"""How many times one attempt at a run may hand over to a continuation. The invocation that would hand
over once more fails the run instead (a clear ``last_error``): a run that needs more is stuck, or its
invocations get far too little time, and either needs a person rather than an endless chain."""


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
    """Safe to show: a domain error's code and message, or a generic text naming the run; never an
    exception's repr (it may carry ARNs, table names, request ids). The logs have the full exception."""
    continuations: int = 0
    """Hand-overs so far in the current attempt: each one adds 1; an invocation that is not itself a
    continuation starts a new attempt at 0 (see ``MAX_CONTINUATIONS``)."""

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
