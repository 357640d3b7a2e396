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
    FANNED_OUT = "FANNED_OUT"
    """Planned and handed to parallel segment workers (the day-end state machine); the history shows its
    progress, and the state machine's last step completes it."""


MAX_CONTINUATIONS = 50
"""How many times one attempt at a run may hand over to a continuation. The invocation that would hand
over once more fails the run instead (a clear ``last_error``): a run that needs more is stuck, or its
invocations get far too little time, and either needs a person rather than an endless chain."""


@dataclass(frozen=True)
class RunRequest:
    """What one invocation of the day-end job is asked to do: the schedule's, ops', a manual run's, or
    a hand-over's to its continuation."""

    business_date: dt.date
    trigger: str
    """Who started the run; a continuation keeps it, so the history says who started the run."""
    full_scan: bool = False
    continuation: bool = False
    """Started by a hand-over of the same run: counts towards ``MAX_CONTINUATIONS`` instead of starting
    a new attempt."""

    def continued(self) -> RunRequest:
        """The request a hand-over makes: the same run carried on from its checkpoints, in its plan."""
        return RunRequest(self.business_date, self.trigger, full_scan=False, continuation=True)


class LostLease(Exception):
    """Another invocation owns the run now (ours let its lease lapse): stop without writing more."""


class SegmentBusy(Exception):
    """A segment worker asked for a segment that another live worker of the same run holds (a retry of a
    worker whose first attempt is still alive): it must not advance it too."""


class SegmentKind(StrEnum):
    """Which loans a segment reads (docs/day-end.md, "Exactly once", "Plan")."""

    WATCH = "w"
    """The loans watched for one day, in one shard of the watch index."""
    PENDING = "p"
    """The loans pending escalation, in one shard of the watch index."""
    SCAN = "s"
    """One part of a parallel scan of the whole loans table."""
    DUE = "d"
    """Reminders: the loans whose next unpaid instalment falls due on one day, in one shard."""
    ARREARS = "a"
    """Reminders: the loans whose arrears date from one day, in one shard."""


class ReminderAnchor(StrEnum):
    """The two loan indexes the run's reminder segments read (docs/reminders.md)."""

    DUE = "d"
    ARREARS = "a"


DATED_KINDS = frozenset({SegmentKind.WATCH, SegmentKind.DUE, SegmentKind.ARREARS})


@dataclass(frozen=True, order=True, repr=False)
class Segment:
    """One part of a run's work, checkpointed on its own so that any invocation can carry it on.

    The run record stores it as text, ``w:<day>:<shard>``, ``p:<shard>`` or ``s:<index>:<total>``
    (``str`` and :meth:`parse`): records written before this type existed must still load, so that form
    never changes. Segments order as their stored form does."""

    kind: SegmentKind
    day: dt.date | None = None
    """The watched day; only a ``WATCH`` segment has one."""
    index: int = 0
    """The watch-index shard, or the number of the scan segment."""
    total: int = 0
    """How many segments the scan has; only a ``SCAN`` segment has it (DynamoDB needs both)."""

    def __post_init__(self) -> None:
        if (self.kind in DATED_KINDS) != (self.day is not None):
            raise ValueError("a watch or reminder segment, and only those, name a day")

    @classmethod
    def watch(cls, day: dt.date, shard: int) -> Segment:
        return cls(SegmentKind.WATCH, day=day, index=shard)

    @classmethod
    def reminders(cls, anchor: ReminderAnchor, day: dt.date, shard: int) -> Segment:
        return cls(SegmentKind(anchor.value), day=day, index=shard)

    @property
    def anchor(self) -> ReminderAnchor | None:
        """The index a reminder segment reads; None for the others."""
        return ReminderAnchor(self.kind.value) if self.kind in (SegmentKind.DUE, SegmentKind.ARREARS) else None

    @classmethod
    def pending(cls, shard: int) -> Segment:
        return cls(SegmentKind.PENDING, index=shard)

    @classmethod
    def scan(cls, index: int, total: int) -> Segment:
        return cls(SegmentKind.SCAN, index=index, total=total)

    @classmethod
    def parse(cls, stored: str) -> Segment:
        kind, *parts = stored.split(":")
        match SegmentKind(kind), parts:
            case SegmentKind.WATCH | SegmentKind.DUE | SegmentKind.ARREARS as kind, [day, shard]:
                return cls(kind, day=dt.date.fromisoformat(day), index=int(shard))
            case SegmentKind.PENDING, [shard]:
                return cls.pending(int(shard))
            case SegmentKind.SCAN, [index, total]:
                return cls.scan(int(index), int(total))
        raise ValueError(f"not a segment id: {stored!r}")

    def __repr__(self) -> str:
        return f"Segment({str(self)!r})"

    def __str__(self) -> str:
        if self.day is not None:
            return f"{self.kind}:{self.day.isoformat()}:{self.index:02d}"
        if self.kind is SegmentKind.PENDING:
            return f"{self.kind}:{self.index:02d}"
        return f"{self.kind}:{self.index:03d}:{self.total}"

    @property
    def reads_watch_index(self) -> bool:
        """A loan the run writes may leave the watch-index partition such a segment is reading."""
        return self.kind in (SegmentKind.WATCH, SegmentKind.PENDING)


@dataclass
class SegmentState:
    cursor: dict[str, Any] | None = None
    done: bool = False
    scanned: int = 0
    updated: int = 0
    escalated: int = 0
    pending: int = 0
    reminders: int = 0
    """Reminders this segment queued (a loan's reminders are queued by whichever segment reads it)."""
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
    segments: dict[Segment, SegmentState] = field(default_factory=dict)
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

    @property
    def reminders_queued(self) -> int:
        return sum(s.reminders for s in self.segments.values())


class WorkOutcome(StrEnum):
    """What one segment worker's invocation did with its share of a fanned-out run (docs/day-end.md,
    "Fan-out"). The state machine reads it to decide whether to invoke the worker again."""

    DONE = "DONE"
    """Every segment of its share is done."""
    MORE = "MORE"
    """Stopped for time with work left: invoke it again, it carries on from the checkpoints."""
    BUSY = "BUSY"
    """Another live worker holds a segment of its share: wait, then try again."""
    STOPPED = "STOPPED"
    """The run is no longer this attempt's to advance (taken over, failed, or the kill switch is off)."""


@dataclass(frozen=True)
class WorkItem:
    """One segment worker's share of a fanned-out run: a few segments of one phase, worked together."""

    business_date: dt.date
    run_id: str
    """The attempt the worker joins: its claims and checkpoints hold only while the run is still this one."""
    segments: tuple[Segment, ...]
    continuations: int = 0
    """Invocations of this share so far; bounded by ``MAX_CONTINUATIONS`` like a chain of hand-overs."""


@dataclass(frozen=True)
class FanOut:
    """A planned run handed to parallel workers: per phase, in order, the shares its workers take."""

    business_date: dt.date
    run_id: str
    phases: tuple[tuple[tuple[Segment, ...], ...], ...]
