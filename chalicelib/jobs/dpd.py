"""The day-end DPD job (docs/day-end.md): for one business date, bring every loan's dpd, bucket and RBI
classification to that date, escalate loans reaching dpd 90 to legal, exactly once per date.

Work grows with the loans that change, not with the book: each loan carries a *watch* (the next day its
state can change without a payment, or "pending escalation", see ``domain.loan.watch_date``) in a
sparse, sharded index. A run for date D reads only the loans watched for the days since the last
completed run and the loans pending escalation, evaluates them with the same pure rules payments use,
and writes only those whose state changed. Loans not written keep their stored values; readers derive
dpd for the latest completed date from the schedule. With no completed run to continue from (first
run, or a gap of more than ``MAX_CATCHUP_DAYS``), or on request, the run falls back to a parallel scan
of the whole table.

Exactly once: the run record is taken with a conditional write and a lease; each segment checkpoints
its cursor and counts after every page; every loan write is conditioned on its version and on
``dpd_as_of <= D``. Reruns, concurrent invocations, late deliveries and crash-resumes therefore converge
on the state of one clean run, no loan is escalated twice, and ``dpd_as_of`` never moves backwards.

Any time budget: an invocation works through at least one page before it looks at the clock, stops
when what is left of its budget falls under a margin scaled to that budget, and hands the rest to a
continuation; at most ``MAX_CONTINUATIONS`` hand-overs, then the run fails with a clear error.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from chalicelib import clock
from chalicelib.domain.audit import DELINQUENCY_ACTOR, Action, AuditEntry
from chalicelib.domain.errors import Conflict, DomainError, ValidationFailed
from chalicelib.domain.flags import FlagName
from chalicelib.domain.legal import LegalCase
from chalicelib.domain.loan import (
    ESCALATION_DPD,
    Loan,
    LoanStatus,
    delinquency_changed,
    delinquency_snapshot,
    reassess,
    watch_date,
)
from chalicelib.domain.runs import MAX_CONTINUATIONS, LostLease, RunOutcome, RunRecord, RunStatus, SegmentState
from chalicelib.services.context import RequestContext
from chalicelib.services.ids import new_id
from chalicelib.services.ports import Flags, Metrics

logger = Logger(service="loan-crm")

SYSTEM = RequestContext(actor=DELINQUENCY_ACTOR)
LEASE_SECONDS = 120
"""Renewed after every page; a crashed invocation's run can be taken over this long after it died."""
SAFETY_MARGIN_MS = 60_000
"""Hand over when less than this is left of the invocation's time (a 900 s Lambda keeps 60 s)..."""
SAFETY_MARGIN_SHARE = 5
"""... or less than a fifth of the time it started with, when that is shorter (Chalice's test client
gives 3 s: it keeps 600 ms). Either way, only after the invocation has done at least one page."""
MAX_CATCHUP_DAYS = 31
SCAN_SEGMENTS = 16
SEGMENT_WORKERS = 4
"""Segments processed at once in one invocation (threads: the work is waiting on DynamoDB)."""
LOAN_ATTEMPTS = 5
SUPERSEDED = "superseded"
"""The mode of a run for a date older than a completed run: it has nothing left to do (docs/day-end.md)."""


class RunStore(Protocol):
    def get(self, business_date: dt.date) -> RunRecord | None: ...
    def acquire(
        self,
        business_date: dt.date,
        run_id: str,
        trigger: str,
        now: int,
        lease_seconds: int,
        now_iso: str,
        continuation: bool = False,
    ) -> RunRecord | RunOutcome: ...
    def plan(self, business_date: dt.date, run_id: str, mode: str, segments: dict[str, SegmentState]) -> None: ...
    def checkpoint(
        self, business_date: dt.date, run_id: str, segment_id: str, state: SegmentState, lease_until: int
    ) -> None: ...
    def finish(
        self, business_date: dt.date, run_id: str, status: RunStatus, now_iso: str, error: str | None = None
    ) -> RunRecord: ...
    def release(self, business_date: dt.date, run_id: str) -> None: ...
    def skip(self, business_date: dt.date, trigger: str, run_id: str, now: int, now_iso: str) -> RunOutcome: ...
    def latest_completed(self, before: dt.date | None = None) -> dt.date | None: ...


LoansPage = tuple[list[Loan], dict[str, Any] | None]


class DelinquencyStore(Protocol):
    def watched(self, day: dt.date, shard: int, cursor: dict[str, Any] | None) -> LoansPage: ...
    def pending(self, shard: int, cursor: dict[str, Any] | None) -> LoansPage: ...
    def scan_segment(self, segment: int, total: int, cursor: dict[str, Any] | None) -> LoansPage: ...
    def get(self, loan_id: str) -> Loan | None: ...
    def save_evaluation(
        self, loan: Loan, business_date: dt.date, audits: list[AuditEntry], case: LegalCase | None
    ) -> None: ...


@dataclass(frozen=True)
class RunResult:
    outcome: RunOutcome
    record: RunRecord | None


@dataclass(frozen=True)
class Segment:
    """A segment id, read: ``w:<day>:<shard>`` (the loans watched for a day), ``p:<shard>`` (the loans
    pending escalation) or ``s:<index>:<total>`` (one part of a parallel scan). ``index`` is the shard,
    or the scan segment's number."""

    kind: str
    day: dt.date | None = None
    index: int = 0
    total: int = 0

    @classmethod
    def watch(cls, day: dt.date, shard: int) -> str:
        return f"w:{day.isoformat()}:{shard:02d}"

    @classmethod
    def pending(cls, shard: int) -> str:
        return f"p:{shard:02d}"

    @classmethod
    def scan(cls, index: int, total: int) -> str:
        return f"s:{index:03d}:{total}"

    @classmethod
    def parse(cls, segment_id: str) -> Segment:
        kind, *parts = segment_id.split(":")
        if kind == "w":
            return cls("w", day=dt.date.fromisoformat(parts[0]), index=int(parts[1]))
        if kind == "p":
            return cls("p", index=int(parts[0]))
        return cls("s", index=int(parts[0]), total=int(parts[1]))

    @property
    def watch_index(self) -> bool:
        """A written loan may leave a watch-index partition while its segment is being read."""
        return self.kind in ("w", "p")


@dataclass
class Budget:
    """The time one invocation may spend. ``spent()`` is never true before the invocation has finished
    a page (every invocation makes progress); after that, once less than the margin is left."""

    time_left_ms: Callable[[], int] | None
    margin_ms: int = 0
    progressed: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, time_left_ms: Callable[[], int] | None) -> Budget:
        if time_left_ms is None:
            return cls(None)
        at_start = max(0, time_left_ms())
        return cls(time_left_ms, min(SAFETY_MARGIN_MS, at_start // SAFETY_MARGIN_SHARE))

    def spent(self) -> bool:
        return self.time_left_ms is not None and self.progressed.is_set() and self.time_left_ms() <= self.margin_ms


def business_date_from_event(event: dict[str, Any]) -> dt.date:
    """``{"business_date": "YYYY-MM-DD"}`` for manual runs, or the Scheduler's
    ``{"scheduled_time": "<ISO UTC>"}``: the IST date of the firing minus one (00:30 IST on the 2nd
    closes the 1st), never the clock, so a late or repeated delivery names the same date."""
    if "business_date" in event:
        try:
            return dt.date.fromisoformat(str(event["business_date"]))
        except ValueError:
            raise ValidationFailed("business_date must be YYYY-MM-DD") from None
    if "scheduled_time" in event:
        try:
            fired = dt.datetime.fromisoformat(str(event["scheduled_time"]).replace("Z", "+00:00"))
        except ValueError:
            raise ValidationFailed("scheduled_time must be an ISO-8601 timestamp") from None
        if fired.tzinfo is None:
            raise ValidationFailed("scheduled_time must carry its offset")
        return fired.astimezone(clock.IST).date() - dt.timedelta(days=1)
    raise ValidationFailed("the event names neither business_date nor scheduled_time")


def failure_message(exc: BaseException, run_id: str) -> str:
    """What a failed run's record says about its failure: safe to show to any reader of the history.
    A domain error's code and message are written for people; anything else (a botocore or PynamoDB
    error's repr carries ARNs, table names and request ids) is named by its class only, and the log
    line written with it carries the full exception under the same run id."""
    if isinstance(exc, DomainError):
        return f"{exc.code}: {exc.message}"
    return f"internal error ({type(exc).__name__}); see the job's logs for run {run_id}"


@dataclass
class DpdJob:
    store: DelinquencyStore
    runs: RunStore
    flags: Flags
    metrics: Metrics
    watch_shards: int
    on_completed: Callable[[dt.date], None] = lambda _date: None
    scan_segments: int = SCAN_SEGMENTS
    workers: int = SEGMENT_WORKERS

    def run(
        self,
        business_date: dt.date,
        trigger: str,
        time_left_ms: Callable[[], int] | None = None,
        full_scan: bool = False,
        continuation: bool = False,
    ) -> RunResult:
        """One invocation: skip, refuse, run, resume or continue the run for ``business_date``.

        ``time_left_ms`` is the invocation's budget (None: no limit); ``continuation`` says that this
        invocation was started by a hand-over of the same run, which counts towards
        ``MAX_CONTINUATIONS`` (anything else starts a new attempt)."""
        if business_date >= clock.today_ist():
            raise ValidationFailed(
                f"{business_date} has not ended yet (IST); the latest date that can run is "
                f"{clock.last_completed_business_date()}"
            )
        run_id = new_id()
        if not self.flags.read(FlagName.CRON_ENABLED, fresh=True).enabled:
            outcome = self.runs.skip(business_date, trigger, run_id, clock.now_epoch(), clock.now_iso())
            logger.info("dpd run skipped by CRON_ENABLED", extra={"business_date": str(business_date)})
            return RunResult(outcome, self.runs.get(business_date))
        escalation_enabled = self.flags.read(FlagName.ESCALATION_ENABLED, fresh=True).enabled
        acquired = self.runs.acquire(
            business_date, run_id, trigger, clock.now_epoch(), LEASE_SECONDS, clock.now_iso(), continuation
        )
        if isinstance(acquired, RunOutcome):
            return RunResult(acquired, self.runs.get(business_date))
        record = acquired
        budget = Budget.start(time_left_ms)
        try:
            if record.mode is None:
                record.mode, record.segments = self._plan(business_date, full_scan)
                self.runs.plan(business_date, run_id, record.mode, record.segments)
            # Loans pending escalation last: the date segments move the loans reaching dpd 90 there,
            # and a payment landing during the run has the longest time to do so as well.
            for kinds in (("w", "s"), ("p",)):
                todo = [
                    sid for sid, state in record.segments.items() if not state.done and Segment.parse(sid).kind in kinds
                ]
                if todo and not budget.spent():
                    self._work(business_date, run_id, record, todo, escalation_enabled, budget)
            left = [sid for sid, state in record.segments.items() if not state.done]
            if left and record.continuations < MAX_CONTINUATIONS:
                self.runs.release(business_date, run_id)
                return RunResult(RunOutcome.CONTINUING, self.runs.get(business_date))
            final = None if left else self.runs.finish(business_date, run_id, RunStatus.COMPLETED, clock.now_iso())
        except LostLease:
            return RunResult(RunOutcome.IN_PROGRESS, self.runs.get(business_date))
        except Exception as exc:
            logger.exception("dpd run failed", extra={"business_date": str(business_date), "run_id": run_id})
            return self._fail(business_date, run_id, failure_message(exc, run_id))
        if final is None:  # work left, and the chain of continuations is at its bound
            return self._fail(
                business_date,
                run_id,
                f"the run was handed over {MAX_CONTINUATIONS} times and still had {len(left)} of "
                f"{len(record.segments)} segments to do; run the date again to carry on from its checkpoints",
            )
        self.metrics.count("DpdRunSucceeded")
        self.on_completed(business_date)
        return RunResult(RunOutcome.COMPLETED, final)

    def _fail(self, business_date: dt.date, run_id: str, error: str) -> RunResult:
        try:
            final = self.runs.finish(business_date, run_id, RunStatus.FAILED, clock.now_iso(), error=error)
        except LostLease:  # another invocation took the run over meanwhile: it carries on, nothing failed
            return RunResult(RunOutcome.IN_PROGRESS, self.runs.get(business_date))
        except Exception:
            self.metrics.count("DpdRunFailed")  # not even recorded: still alarm
            raise
        logger.error(
            "dpd run recorded FAILED", extra={"business_date": str(business_date), "run_id": run_id, "error": error}
        )
        self.metrics.count("DpdRunFailed")
        return RunResult(RunOutcome.FAILED, final)

    def _plan(self, business_date: dt.date, full_scan: bool) -> tuple[str, dict[str, SegmentState]]:
        newest = self.runs.latest_completed()
        if newest is not None and newest > business_date:
            # A later date has completed: its run covered this one (it read every day since the run
            # before it), so every loan is past this date already and there is nothing left to do.
            return SUPERSEDED, {}
        last = self.runs.latest_completed(before=business_date)
        if full_scan or last is None or (business_date - last).days > MAX_CATCHUP_DAYS:
            total = self.scan_segments
            return "scan", {Segment.scan(i, total): SegmentState() for i in range(total)}
        days = [last + dt.timedelta(days=n) for n in range(1, (business_date - last).days + 1)]
        segments = {Segment.watch(day, shard): SegmentState() for day in days for shard in range(self.watch_shards)}
        segments.update({Segment.pending(shard): SegmentState() for shard in range(self.watch_shards)})
        return "watch", segments

    def _work(
        self,
        business_date: dt.date,
        run_id: str,
        record: RunRecord,
        todo: list[str],
        escalation_enabled: bool,
        budget: Budget,
    ) -> None:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [
                pool.submit(self._segment, business_date, run_id, sid, record.segments[sid], escalation_enabled, budget)
                for sid in todo
            ]
            for future in futures:
                future.result()

    def _fetch(self, segment_id: str, cursor: dict[str, Any] | None) -> LoansPage:
        segment = Segment.parse(segment_id)
        if segment.kind == "w":
            assert segment.day is not None
            return self.store.watched(segment.day, segment.index, cursor)
        if segment.kind == "p":
            return self.store.pending(segment.index, cursor)
        return self.store.scan_segment(segment.index, segment.total, cursor)

    def _segment(
        self,
        business_date: dt.date,
        run_id: str,
        segment_id: str,
        state: SegmentState,
        escalation_enabled: bool,
        budget: Budget,
    ) -> None:
        segment = Segment.parse(segment_id)
        while not state.done and not budget.spent():
            if state.page is not None:  # a watch page an earlier invocation stopped in the middle of
                loans, cursor = [loan for loan in map(self.store.get, state.page) if loan is not None], state.cursor
            else:
                loans, cursor = self._fetch(segment_id, state.cursor)
                if segment.kind == "p":
                    # Loans this run already wrote elsewhere (a date segment moved them here when they
                    # reached dpd 90) are that segment's, counted there.
                    loans = [loan for loan in loans if loan.last_job_date != business_date]
                if loans and segment.watch_index:
                    # A written loan leaves its watch partition: note the page before writing any of it, so
                    # that a run resumed after a crash midway finds (and counts) what this one wrote.
                    claim = dataclasses.replace(state, cursor=cursor, page=[loan.loan_id for loan in loans])
                    self.runs.checkpoint(business_date, run_id, segment_id, claim, clock.now_epoch() + LEASE_SECONDS)
            page = dataclasses.replace(state, page=None)
            for loan in loans:
                self._evaluate(loan, business_date, escalation_enabled, page)
            page.cursor = cursor
            page.done = cursor is None
            self.runs.checkpoint(business_date, run_id, segment_id, page, clock.now_epoch() + LEASE_SECONDS)
            state.__dict__.update(page.__dict__)
            budget.progressed.set()

    def _evaluate(self, loan: Loan, business_date: dt.date, escalation_enabled: bool, state: SegmentState) -> None:
        state.scanned += 1
        current: Loan | None = loan
        for _attempt in range(LOAN_ATTEMPTS):
            if current is None or current.status is not LoanStatus.ACTIVE:
                return
            if current.delinquency.as_of > business_date:
                return  # evaluated for a later date already: a run never moves a loan backwards
            if current.last_job_date == business_date:
                self._count_done(current, business_date, state)
                return
            if self._write(current, business_date, escalation_enabled, state):
                return
            current = self.store.get(current.loan_id)
        raise Conflict(f"loan {loan.loan_id} kept changing during the day-end run")

    @staticmethod
    def _count_done(loan: Loan, business_date: dt.date, state: SegmentState) -> None:
        """A loan this run already wrote before a crash or a hand-over: count it as this run's work,
        as an uninterrupted run would have."""
        state.updated += 1
        if loan.legal_escalated_on == business_date:
            state.escalated += 1
        elif loan.delinquency.dpd >= ESCALATION_DPD and not loan.legal_escalated:
            state.pending += 1

    def _write(self, loan: Loan, business_date: dt.date, escalation_enabled: bool, state: SegmentState) -> bool:
        """Evaluate one loan for the date and write it if its bucket, classification, NPA date, legal
        escalation or watch changes; False on a write conflict. A write that changes the stored
        delinquency carries a DELINQUENCY_CHANGED entry from the stored loan to the written one, so the
        loan's trail chains (``domain.loan.delinquency_snapshot``)."""
        evaluated = reassess(loan, business_date)
        before, after = loan.delinquency, evaluated.delinquency
        eligible = after.dpd >= ESCALATION_DPD and not loan.legal_escalated
        escalate = eligible and escalation_enabled
        reclassified = (before.bucket, before.classification, before.npa_since) != (
            after.bucket,
            after.classification,
            after.npa_since,
        )
        now = clock.now_iso()
        updated = dataclasses.replace(
            evaluated,
            legal_escalated=loan.legal_escalated or escalate,
            legal_escalated_on=business_date if escalate else loan.legal_escalated_on,
            last_job_date=business_date,
            updated_at=now,
        )
        if not (reclassified or escalate or watch_date(updated) != watch_date(loan)):
            if eligible:
                state.pending += 1
            return True
        audits = []
        if delinquency_changed(loan, updated):
            audits.append(
                SYSTEM.loan_audit(
                    Action.DELINQUENCY_CHANGED,
                    loan.loan_id,
                    delinquency_snapshot(loan),
                    delinquency_snapshot(updated),
                )
            )
        case = None
        if escalate:
            case = LegalCase(
                loan_id=loan.loan_id,
                case_id=new_id(),
                escalated_on=business_date,
                dpd=after.dpd,
                overdue_paise=after.overdue_paise,
                outstanding_principal_paise=loan.outstanding_principal_paise,
                borrower_name=loan.borrower.name,
                collector_id=loan.collector_id,
                branch=loan.branch,
                created_at=now,
            )
            audits.append(
                SYSTEM.loan_audit(
                    Action.LEGAL_ESCALATED,
                    loan.loan_id,
                    {"legal": {"escalated": False}},
                    {
                        "legal": {"escalated": True, "escalated_on": business_date.isoformat()},
                        "case_id": case.case_id,
                        "dpd": after.dpd,
                    },
                )
            )
        try:
            self.store.save_evaluation(updated, business_date, audits, case)
        except Conflict:
            return False
        except Exception:
            if escalate:
                self.metrics.count("EscalationFailed")
            raise
        state.updated += 1
        if escalate:
            state.escalated += 1
            self.metrics.count("LoansEscalated")
        elif eligible:
            state.pending += 1
        return True
