"""The day-end run (docs/day-end.md): for one business date, bring every loan's dpd, bucket and RBI
classification to that date, and escalate loans reaching dpd 90 to legal, exactly once per date.

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
continuation (``JobDispatcher``, or this process when there is no other); at most
``MAX_CONTINUATIONS`` hand-overs, then the run fails with a clear error.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from chalicelib import clock
from chalicelib.domain.audit import DELINQUENCY_ACTOR, Action, AuditEntry
from chalicelib.domain.delinquency import Bucket
from chalicelib.domain.errors import Conflict, ValidationFailed
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
from chalicelib.domain.portfolio import BOOK, bucket_loans
from chalicelib.domain.reminders import OVERDUE_AT_DPD, PRE_DUE_DAYS_AHEAD, reminders_due
from chalicelib.domain.runs import (
    MAX_CONTINUATIONS,
    FanOut,
    LostLease,
    ReminderAnchor,
    RunOutcome,
    RunRecord,
    RunRequest,
    RunStatus,
    Segment,
    SegmentBusy,
    SegmentKind,
    SegmentState,
    WorkItem,
    WorkOutcome,
)
from chalicelib.retry import OPTIMISTIC_WRITE, retry
from chalicelib.services.budget import Budget, failure_message, fresh_budget
from chalicelib.services.context import RequestContext
from chalicelib.services.ids import new_id
from chalicelib.services.ports import (
    DelinquencyStore,
    Flags,
    JobDispatcher,
    LoansPage,
    Metrics,
    PortfolioReader,
    ReminderStore,
    RunStore,
)

logger = logging.getLogger(__name__)
"""Written by the app's log handler (docs/logging.md): one line per run step, never one per loan."""

SYSTEM = RequestContext(actor=DELINQUENCY_ACTOR)
LEASE_SECONDS = 120
"""Renewed with every checkpoint; a crashed invocation's run can be taken over this long after it died."""
UNWRITTEN_SEGMENTS = 40
"""At most this many segments finished in one page wait for their batched checkpoint (see ``_work``):
each is at most a page of work, so the lease is renewed long before it runs out."""
MAX_CATCHUP_DAYS = 31
RUN_DUE_BY = dt.time(6, 0)
"""The night's run for D must have completed by this time (IST) on D+1: the collections team starts
the day from its DPDs (docs/day-end.md, "The watchdog")."""
SCAN_SEGMENTS = 16
SEGMENT_WORKERS = 4
"""Segments processed at once in one invocation (threads: the work is waiting on DynamoDB)."""
PAGE_WORKERS = 4
"""Loans of one page worked at once, within each segment (threads, for the same reason). They are
independent (each write is conditioned on its own loan's version), and a fanned-out worker has one
segment, so this is its only parallelism (docs/day-end.md, "Within a page")."""
SUPERSEDED = "superseded"
"""The mode of a run for a date older than a completed run: it has nothing left to do (docs/day-end.md,
"A run for an older date")."""
PHASES = (
    frozenset({SegmentKind.WATCH, SegmentKind.SCAN}),
    frozenset({SegmentKind.PENDING}),
    frozenset({SegmentKind.DUE, SegmentKind.ARREARS}),
)
"""Loans pending escalation after the date segments: those move the loans reaching dpd 90 there, and a
payment landing during the run has the longest time to do so as well (docs/day-end.md, "Pending
escalation"). Reminders last, once every loan the run writes is written (docs/reminders.md)."""
PHASE_NAMES = ("loans", "pending escalation", "reminders")
"""How the log lines name the :data:`PHASES`, in the same order."""
SHARE_SIZES = (1, 1, 1)
"""Segments per worker share of a fanned-out run, by phase (docs/day-end.md, "Fan-out"). One each: any
phase can hold a night's heaviest segments (the date partitions of a peak EMI date, and in the reminder
phase the arrears partitions of that date, which hold every loan that bounced). Most reminder segments
are a single query, but batching them would put heavy ones behind each other in one worker."""


def reminder_segments(business_date: dt.date, shards: int) -> list[Segment]:
    """The index partitions holding every loan that may be owed a reminder on ``business_date`` and that
    the run's date segments did not read: next instalment due in 1 to 3 days (a loan with two
    instalments in that span is found by the first), or arrears dating from the day that makes its dpd
    1, 7, 15 or 30 today."""
    days = [(ReminderAnchor.DUE, business_date + dt.timedelta(days=n)) for n in range(1, max(PRE_DUE_DAYS_AHEAD) + 1)]
    days += [(ReminderAnchor.ARREARS, business_date - dt.timedelta(days=dpd - 1)) for dpd in OVERDUE_AT_DPD]
    return [Segment.reminders(anchor, day, shard) for anchor, day in days for shard in range(shards)]


@dataclass(frozen=True)
class RunResult:
    outcome: RunOutcome
    record: RunRecord | None


@dataclass(frozen=True)
class Dispatched:
    """A manual run handed to the job's own function: its progress shows in the history only."""

    record: RunRecord | None


def unfinished_message(left: int, total: int) -> str:
    return (
        f"the segment workers stopped with {left} of {total} segments still to do; "
        "run the date again to carry on from its checkpoints"
    )


def bound_message(left: int, total: int) -> str:
    return (
        f"the run was handed over {MAX_CONTINUATIONS} times and still had {left} of {total} segments to do; "
        "run the date again to carry on from its checkpoints"
    )


class RunHere:
    """No other invocation to start: a run and its continuations go on in the caller's process."""

    def start(self, request: RunRequest) -> bool:
        return False

    def hand_on(self, request: RunRequest) -> bool:
        return False

    def fan_out(self, plan: FanOut) -> bool:
        return False


def shares(business_date: dt.date, run_id: str, segments: list[Segment]) -> FanOut:
    """The unfinished ``segments`` of a run as its workers' shares, phase by phase in :data:`PHASES`
    order (each phase's shares of :data:`SHARE_SIZES` segments, in segment order)."""
    phases: list[tuple[tuple[Segment, ...], ...]] = []
    for kinds, size in zip(PHASES, SHARE_SIZES, strict=True):
        todo = sorted(segment for segment in segments if segment.kind in kinds)
        phases.append(tuple(tuple(todo[i : i + size]) for i in range(0, len(todo), size)))
    return FanOut(business_date, run_id, tuple(phases))


@dataclass
class _Invocation:
    """One invocation's hold on a run, handed to every step: segment threads share its budget."""

    business_date: dt.date
    run_id: str
    record: RunRecord
    escalation_enabled: bool
    budget: Budget
    reminders_enabled: bool = False
    worker: str | None = None
    """A segment worker of a fanned-out run: its checkpoints hold only while it holds their segments."""
    done_in_one_page: dict[Segment, SegmentState] = field(default_factory=dict)
    """Segments finished in their first page and not checkpointed yet (see ``_work``)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def unfinished(self) -> list[Segment]:
        return [segment for segment, state in self.record.segments.items() if not state.done]


@dataclass(frozen=True)
class _Evaluation:
    """One loan brought to the run's date, and what the run has to do about it."""

    stored: Loan
    updated: Loan
    business_date: dt.date
    eligible: bool
    """dpd 90 or more and not escalated: escalated now, or counted as pending escalation."""
    escalate: bool
    """Eligible, and the switch is on."""

    @property
    def worth_writing(self) -> bool:
        """Only a change a reader cannot derive from the schedule, or a new watch, is written; readers
        derive the rest (docs/day-end.md, "The rules for one loan"). A grown overdue amount is written
        too: the dashboard's counters add up the stored amounts (docs/dashboard.md)."""
        before, after = self.stored.delinquency, self.updated.delinquency
        reclassified = (before.bucket, before.classification, before.npa_since, before.overdue_paise) != (
            after.bucket,
            after.classification,
            after.npa_since,
            after.overdue_paise,
        )
        return reclassified or self.escalate or watch_date(self.updated) != watch_date(self.stored)


def _evaluate(loan: Loan, business_date: dt.date, escalation_enabled: bool) -> _Evaluation:
    evaluated = reassess(loan, business_date)
    eligible = evaluated.delinquency.dpd >= ESCALATION_DPD and not loan.legal_escalated
    escalate = eligible and escalation_enabled
    updated = dataclasses.replace(
        evaluated,
        legal_escalated=loan.legal_escalated or escalate,
        legal_escalated_on=business_date if escalate else loan.legal_escalated_on,
        last_job_date=business_date,
        updated_at=clock.now_iso(),
    )
    return _Evaluation(loan, updated, business_date, eligible, escalate)


@dataclass
class DayEndService:
    store: DelinquencyStore
    runs: RunStore
    flags: Flags
    metrics: Metrics
    watch_shards: int
    on_completed: Callable[[dt.date], None] = lambda _date: None
    scan_segments: int = SCAN_SEGMENTS
    workers: int = SEGMENT_WORKERS
    page_workers: int = PAGE_WORKERS
    dispatcher: JobDispatcher = field(default_factory=RunHere)
    reminders: ReminderStore | None = None
    """Where the run queues borrower reminders; None: this service queues none (docs/reminders.md)."""
    portfolio: PortfolioReader | None = None
    """The dashboard's counters, read once a run completes for the ``LoansInBucket`` metric (the run
    keeps them up to date as it writes, so nothing is scanned); None: that metric is not emitted."""

    # --- entry points ---------------------------------------------------------------------------------

    def request_run(self, request: RunRequest) -> RunResult | Dispatched:
        """A manual run goes to the job's own function when there is one: there it has the job's time
        limit and its continuations, and the API answers at once. Where there is none (local stack,
        tests) it runs here, without a time limit, and the answer carries its outcome."""
        if self.dispatcher.start(request):
            return Dispatched(self.runs.get(request.business_date))
        return self.run(request.business_date, request.trigger, full_scan=request.full_scan)

    def run_invocation(self, request: RunRequest, time_left_ms: Callable[[], int]) -> RunResult:
        """One invocation of the job's function. A run that stops for time is handed to a fresh
        invocation if the dispatcher can start one; otherwise it carries on here, each continuation with
        the budget this invocation started with, so one call answers with the finished run. The chain
        ends: every continuation does some work, and the run record bounds how many there are
        (docs/day-end.md, "Time budget and continuation")."""
        budget_ms = int(time_left_ms())
        result = self.run(request.business_date, request.trigger, time_left_ms, request.full_scan, request.continuation)
        continuation = request.continued()
        while result.outcome is RunOutcome.CONTINUING:
            if self.dispatcher.hand_on(continuation):
                return result
            result = self.run(
                continuation.business_date, continuation.trigger, fresh_budget(budget_ms), continuation=True
            )
        return result

    def check_completed(self, business_date: dt.date, at: dt.datetime) -> bool:
        """The watchdog, invoked every 15 minutes: whether the run for ``business_date`` completed.

        Each check reports ``DpdRunMissing``: 1 when the book is not closed through the last date that
        is due by ``at`` (a date is due :data:`RUN_DUE_BY` IST the next morning), 0 otherwise. Judging
        the latest completed date, not only ``business_date``, keeps the alarm in ALARM past midnight
        while an earlier date is still missing, and a completed catch-up run (which closes every date
        before it) clears it. A point every time lets the alarm treat no data at all (a watchdog that
        stopped running) as a miss too, with no clock-aware metric maths."""
        record = self.runs.get(business_date)
        completed = record is not None and record.status is RunStatus.COMPLETED
        due = at >= dt.datetime.combine(business_date + dt.timedelta(days=1), RUN_DUE_BY, tzinfo=clock.IST)
        due_through = business_date if due else business_date - dt.timedelta(days=1)
        closed_through = business_date if completed else self.runs.latest_completed()
        missing = closed_through is None or closed_through < due_through
        self.metrics.measure("DpdRunMissing", 1 if missing else 0, "Count")
        logger.info(
            "day-end watchdog",
            extra={
                "business_date": business_date.isoformat(),
                "run_id": record.run_id if record else None,
                "status": record.status.value if record else None,
                "outcome": "missing" if missing else ("completed" if completed else "not yet due"),
                "due_through": due_through.isoformat(),
            },
        )
        return completed

    def work(self, item: WorkItem, time_left_ms: Callable[[], int] | None = None) -> WorkOutcome:
        """One segment worker's invocation in a fanned-out run: claim its share, work it with the same
        code as a run in one process until done or the budget is spent, and let go of the claims.

        The kill switches are read here, fresh, as every invocation of a run reads them. A share that
        another live worker holds (Step Functions retrying a worker whose first attempt still runs) is
        left alone: ``BUSY``, and the state machine tries again later. An error is raised after the
        claims are let go, so the state machine's retry carries the share on from its checkpoints."""
        if not self.flags.read(FlagName.CRON_ENABLED, fresh=True).enabled:
            return self._worked(item, WorkOutcome.STOPPED, None, "CRON_ENABLED is off")
        escalation_enabled = self.flags.read(FlagName.ESCALATION_ENABLED, fresh=True).enabled
        reminders_enabled = (
            self.reminders is not None and self.flags.read(FlagName.REMINDERS_ENABLED, fresh=True).enabled
        )
        worker = new_id()
        try:
            record = self.runs.claim(
                item.business_date, item.run_id, item.segments, worker, clock.now_epoch(), LEASE_SECONDS
            )
        except LostLease:
            return self._worked(item, WorkOutcome.STOPPED, None, "the run is no longer this attempt's")
        except SegmentBusy:
            return self._again(item, WorkOutcome.BUSY, None)
        if _earlier_phase_unfinished(record, item.segments):
            # The state machine runs the phases in order, but a phase's workers that all stopped (the switch
            # turned off and on again) still let it move to the next. Pending escalation and reminders must
            # never run before the date segments are done (docs/day-end.md, "Fan-out"): stop, and the settle
            # step records the run as not finished; a rerun resumes it in order.
            self.runs.release_claims(item.business_date, item.run_id, item.segments, worker)
            return self._worked(item, WorkOutcome.STOPPED, None, "an earlier phase is not finished")
        invocation = _Invocation(
            item.business_date,
            item.run_id,
            record,
            escalation_enabled,
            Budget.start(time_left_ms),
            reminders_enabled=reminders_enabled,
            worker=worker,
        )
        try:
            self._work(invocation, [segment for segment in item.segments if not record.segments[segment].done])
        except LostLease:
            return self._worked(item, WorkOutcome.STOPPED, invocation, "the run or a segment was taken over")
        except Exception:
            logger.exception(
                "day-end segment worker failed",
                extra={"business_date": str(item.business_date), "run_id": item.run_id, "worker": worker},
            )
            self.runs.release_claims(item.business_date, item.run_id, item.segments, worker)
            raise
        self.runs.release_claims(item.business_date, item.run_id, item.segments, worker)
        if all(record.segments[segment].done for segment in item.segments):
            return self._worked(item, WorkOutcome.DONE, invocation)
        return self._again(item, WorkOutcome.MORE, invocation)

    def _again(self, item: WorkItem, outcome: WorkOutcome, invocation: _Invocation | None) -> WorkOutcome:
        """Invoke the share again, within the bound a chain of hand-overs has; past it the run fails."""
        if item.continuations < MAX_CONTINUATIONS:
            return self._worked(item, outcome, invocation)
        record = invocation.record if invocation is not None else self.runs.get(item.business_date)
        left = len([s for s in record.segments.values() if not s.done]) if record is not None else len(item.segments)
        total = len(record.segments) if record is not None else len(item.segments)
        self._fail(item.business_date, item.run_id, bound_message(left, total))
        return self._worked(item, WorkOutcome.STOPPED, invocation, "the bound on continuations")

    def settle(self, business_date: dt.date, run_id: str, failure: str | None = None) -> RunResult:
        """The last step of a fanned-out run, once every phase's workers have stopped: complete the run,
        or record why not. ``failure``: a worker kept failing after the state machine's retries (a
        message safe for the history). Settling a run that is no longer this attempt's changes nothing."""
        started = time.monotonic()
        result = self._settle(business_date, run_id, failure)
        if result.outcome is RunOutcome.COMPLETED and result.record is not None:
            for name, kinds in zip(PHASE_NAMES, PHASES, strict=True):
                _log_phase_totals(result.record, name, kinds, None)
        trigger = result.record.trigger if result.record is not None else "unknown"
        _log_finished(business_date, trigger, run_id, result.outcome.value, result.record, started)
        return result

    def _settle(self, business_date: dt.date, run_id: str, failure: str | None) -> RunResult:
        record = self.runs.get(business_date)
        if record is None or record.run_id != run_id:
            return RunResult(RunOutcome.IN_PROGRESS, record)  # another attempt has the run: it settles it
        if record.status is not RunStatus.RUNNING:
            # A worker already recorded its end (the bound), or this step is retried after it completed.
            already = {RunStatus.COMPLETED: RunOutcome.ALREADY_COMPLETED, RunStatus.SKIPPED: RunOutcome.SKIPPED}
            return RunResult(already.get(record.status, RunOutcome.FAILED), record)
        if failure is not None:
            return self._fail(business_date, run_id, failure)
        left = [segment for segment, state in record.segments.items() if not state.done]
        if left and not self.flags.read(FlagName.CRON_ENABLED, fresh=True).enabled:
            # Turned off mid-run: the workers stopped; the checkpoints are kept for the next attempt. (A
            # run whose work is all done completes whatever the switch says now: there is nothing to stop.)
            logger.info("day-end run skipped by CRON_ENABLED", extra={"business_date": str(business_date)})
            try:
                skipped = self.runs.finish(business_date, run_id, RunStatus.SKIPPED, clock.now_iso())
            except LostLease:
                return RunResult(RunOutcome.IN_PROGRESS, self.runs.get(business_date))
            return RunResult(RunOutcome.SKIPPED, skipped)
        if left:
            return self._fail(business_date, run_id, unfinished_message(len(left), len(record.segments)))
        try:
            final = self._finish_completed(business_date, run_id)
        except LostLease:
            return RunResult(RunOutcome.IN_PROGRESS, self.runs.get(business_date))
        return self._completed(business_date, final)

    def _worked(
        self, item: WorkItem, outcome: WorkOutcome, invocation: _Invocation | None, why: str | None = None
    ) -> WorkOutcome:
        """The worker's step line (docs/logging.md): one per invocation, with what its share did so far."""
        states = [invocation.record.segments[s] for s in item.segments] if invocation is not None else []
        logger.info(
            "day-end segments worked",
            extra={
                "run_id": item.run_id,
                "business_date": item.business_date.isoformat(),
                "segments": [str(segment) for segment in item.segments],
                "outcome": outcome.value,
                "why": why,
                "invocation": item.continuations + 1,
                "loans_scanned": sum(s.scanned for s in states),
                "loans_updated": sum(s.updated for s in states),
                "escalations": sum(s.escalated for s in states),
                "reminders_queued": sum(s.reminders for s in states),
            },
        )
        return outcome

    def run(
        self,
        business_date: dt.date,
        trigger: str,
        time_left_ms: Callable[[], int] | None = None,
        full_scan: bool = False,
        continuation: bool = False,
    ) -> RunResult:
        """One invocation's share of the run for ``business_date``: skip, refuse, run, resume or continue
        it. ``time_left_ms`` is the invocation's budget (None: no limit); ``continuation`` says that a
        hand-over of the same run started this invocation, which counts towards ``MAX_CONTINUATIONS``
        (anything else starts a new attempt)."""
        _refuse_a_date_not_ended(business_date)
        started = time.monotonic()
        run_id = new_id()
        try:
            result = self._run(business_date, trigger, run_id, time_left_ms, full_scan, continuation)
        except Exception:
            _log_finished(business_date, trigger, run_id, "ERROR", None, started)
            raise
        _log_finished(business_date, trigger, run_id, result.outcome.value, result.record, started)
        return result

    def _run(
        self,
        business_date: dt.date,
        trigger: str,
        run_id: str,
        time_left_ms: Callable[[], int] | None,
        full_scan: bool,
        continuation: bool,
    ) -> RunResult:
        if not self.flags.read(FlagName.CRON_ENABLED, fresh=True).enabled:
            return self._skip_by_kill_switch(business_date, trigger, run_id)
        escalation_enabled = self.flags.read(FlagName.ESCALATION_ENABLED, fresh=True).enabled
        acquired = self.runs.acquire(
            business_date, run_id, trigger, clock.now_epoch(), LEASE_SECONDS, clock.now_iso(), continuation
        )
        if isinstance(acquired, RunOutcome):
            return RunResult(acquired, self.runs.get(business_date))
        invocation = _Invocation(
            business_date,
            run_id,
            acquired,
            escalation_enabled,
            Budget.start(time_left_ms),
            reminders_enabled=self.reminders is not None
            and self.flags.read(FlagName.REMINDERS_ENABLED, fresh=True).enabled,
        )
        return self._carry_out(invocation, full_scan)

    # --- one invocation's share of a run --------------------------------------------------------------

    def _skip_by_kill_switch(self, business_date: dt.date, trigger: str, run_id: str) -> RunResult:
        outcome = self.runs.skip(business_date, trigger, run_id, clock.now_epoch(), clock.now_iso())
        logger.info("day-end run skipped by CRON_ENABLED", extra={"business_date": str(business_date)})
        return RunResult(outcome, self.runs.get(business_date))

    def _carry_out(self, invocation: _Invocation, full_scan: bool) -> RunResult:
        """Plan (once per run), work by phase, then hand over, finish, or fail. Losing the lease is not a
        failure: the invocation that took the run over carries on."""
        business_date, run_id = invocation.business_date, invocation.run_id
        try:
            self._plan_once(invocation, full_scan)
            _log_started(invocation)
            left = invocation.unfinished()
            if left and self.dispatcher.fan_out(shares(business_date, run_id, left)):
                logger.info(
                    "day-end run fanned out",
                    extra={"run_id": run_id, "business_date": business_date.isoformat(), "segments_left": len(left)},
                )
                return RunResult(RunOutcome.FANNED_OUT, self.runs.get(business_date))
            self._work_by_phase(invocation)
            left = invocation.unfinished()
            if not left:
                final = self._finish_completed(business_date, run_id)
            elif invocation.record.continuations < MAX_CONTINUATIONS:
                return self._hand_over(invocation)
        except LostLease:
            return RunResult(RunOutcome.IN_PROGRESS, self.runs.get(business_date))
        except Exception as exc:
            logger.exception("day-end run failed", extra={"business_date": str(business_date), "run_id": run_id})
            return self._fail(business_date, run_id, failure_message(exc, run_id))
        if left:  # the chain of continuations is at its bound
            return self._fail(business_date, run_id, bound_message(len(left), len(invocation.record.segments)))
        return self._completed(business_date, final)

    def _plan_once(self, invocation: _Invocation, full_scan: bool) -> None:
        """A resumed or continued run keeps the plan it was given, so its checkpoints still apply."""
        record = invocation.record
        if record.mode is None:
            record.mode, record.segments = self._plan(invocation.business_date, full_scan)
            self.runs.plan(invocation.business_date, invocation.run_id, record.mode, record.segments)

    def _work_by_phase(self, invocation: _Invocation) -> None:
        for name, kinds in zip(PHASE_NAMES, PHASES, strict=True):
            todo = [segment for segment in invocation.unfinished() if segment.kind in kinds]
            if todo and not invocation.budget.spent():
                started = time.monotonic()
                self._work(invocation, todo)
                if not any(segment.kind in kinds for segment in invocation.unfinished()):
                    _log_phase(invocation, name, kinds, started)

    def _finish_completed(self, business_date: dt.date, run_id: str) -> RunRecord:
        """Record the run COMPLETED. Only a running run can be finished, once, so a write whose answer was
        lost after it applied (or whose retry then found the run finished) would otherwise look like a
        failure. It is recognised by its own finishing time on the record: this invocation completed the
        run, and the completed run's metrics and follow-ups are this invocation's to do."""
        now = clock.now_iso()
        try:
            return self.runs.finish(business_date, run_id, RunStatus.COMPLETED, now)
        except Exception:
            record = self.runs.get(business_date)
            if record is not None and (record.run_id, record.status, record.finished_at) == (
                run_id,
                RunStatus.COMPLETED,
                now,
            ):
                return record
            raise

    def _hand_over(self, invocation: _Invocation) -> RunResult:
        self.runs.release(invocation.business_date, invocation.run_id)
        return RunResult(RunOutcome.CONTINUING, self.runs.get(invocation.business_date))

    def _completed(self, business_date: dt.date, final: RunRecord) -> RunResult:
        self.metrics.count("DpdRunSucceeded")
        self._report_completed(final)
        self.on_completed(business_date)
        return RunResult(RunOutcome.COMPLETED, final)

    def _report_completed(self, final: RunRecord) -> None:
        """The dashboard's figures of a completed run (docs/logging.md, "Metrics"). A figure that cannot
        be read is logged and left out: the run has completed all the same."""
        try:
            seconds = _run_seconds(final)
            if seconds is not None:
                self.metrics.measure("DayEndDuration", seconds, "Seconds")
            self.metrics.measure("LoansUpdated", final.loans_updated, "Count")
            if self.portfolio is not None:
                counters, _month = self.portfolio.read(BOOK, clock.month_of(final.business_date))
                for bucket in Bucket:
                    self.metrics.measure(
                        "LoansInBucket", counters.get(bucket_loans(bucket), 0), "Count", bucket=bucket.value
                    )
        except Exception:
            logger.exception(
                "day-end metrics could not be emitted",
                extra={"business_date": final.business_date.isoformat(), "run_id": final.run_id},
            )

    def _fail(self, business_date: dt.date, run_id: str, error: str) -> RunResult:
        try:
            final = self.runs.finish(business_date, run_id, RunStatus.FAILED, clock.now_iso(), error=error)
        except LostLease:  # another invocation took the run over meanwhile: it carries on, nothing failed
            return RunResult(RunOutcome.IN_PROGRESS, self.runs.get(business_date))
        except Exception:
            self.metrics.count("DpdRunFailed")  # not even recorded: still alarm
            raise
        logger.error(
            "day-end run recorded FAILED",
            extra={"business_date": str(business_date), "run_id": run_id, "error": error},
        )
        self.metrics.count("DpdRunFailed")
        return RunResult(RunOutcome.FAILED, final)

    def _plan(self, business_date: dt.date, full_scan: bool) -> tuple[str, dict[Segment, SegmentState]]:
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
        if self.reminders is not None:
            owed = reminder_segments(business_date, self.watch_shards)
            segments.update({segment: SegmentState() for segment in owed})
        return "watch", segments

    # --- segments and pages ---------------------------------------------------------------------------

    def _work(self, invocation: _Invocation, todo: list[Segment]) -> None:
        """Work the segments in threads. Those finished in their first page that are harmless to do again
        (they found nothing, or only queued reminders) are marked done together at the end, in as few
        writes as the store allows: most segments of a night are like that (the reminder partitions,
        quiet watch days), and each checkpoint rewrites the whole run record. Lost to a crash, such a
        mark costs the next invocation one more query (docs/day-end.md, "Checkpoints" in §4)."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [
                pool.submit(self._segment, invocation, segment, invocation.record.segments[segment]) for segment in todo
            ]
            for future in futures:
                future.result()
        self._write_noted(invocation)

    def _note_done(self, invocation: _Invocation, segment: Segment, state: SegmentState) -> None:
        """Note a segment finished in one page; write the notes once ``UNWRITTEN_SEGMENTS`` have gathered."""
        with invocation.lock:
            invocation.done_in_one_page[segment] = state
            full = len(invocation.done_in_one_page) >= UNWRITTEN_SEGMENTS
        if full:
            self._write_noted(invocation)

    def _write_noted(self, invocation: _Invocation) -> None:
        with invocation.lock:
            done, invocation.done_in_one_page = invocation.done_in_one_page, {}
        if done:
            self._checkpoint(invocation, done)

    def _fetch(self, segment: Segment, cursor: dict[str, Any] | None) -> LoansPage:
        if segment.kind is SegmentKind.WATCH:
            assert segment.day is not None
            return self.store.watched(segment.day, segment.index, cursor)
        if segment.kind is SegmentKind.PENDING:
            return self.store.pending(segment.index, cursor)
        if segment.anchor is not None:
            assert segment.day is not None
            return self.store.reminder_candidates(segment.anchor, segment.day, segment.index, cursor)
        return self.store.scan_segment(segment.index, segment.total, cursor)

    def _segment(self, invocation: _Invocation, segment: Segment, state: SegmentState) -> None:
        """Page after page until the segment is done or the budget is spent. A page's counts and the
        cursor after it are checkpointed in one write, so the run's totals are the sums of finished pages.
        A watch segment reads its next page before that write and notes the next page's ids in it
        (``_finish_page``)."""
        ahead: LoansPage | None = None
        with ThreadPoolExecutor(max_workers=self.page_workers) as pool:
            while not state.done and not invocation.budget.spent():
                loans: list[Loan]
                if ahead is not None:
                    (loans, cursor), ahead = ahead, None
                elif segment.anchor is not None and not invocation.reminders_enabled:
                    loans, cursor = [], None  # the switch is off (or no store): nothing to read for
                else:
                    loans, cursor = self._next_page(invocation, segment, state, pool)
                page = dataclasses.replace(state, page=None)
                if segment.anchor is not None:
                    self._queue_page_reminders(invocation, loans, page, pool)
                else:
                    self._bring_page_to_date(invocation, loans, page, pool)
                page.cursor = cursor
                page.done = cursor is None
                invocation.budget.progressed.set()
                if page.done and state == SegmentState() and (not loans or segment.anchor is not None):
                    # Finished in its first page, and harmless to do again: it found nothing, or it only
                    # queued reminders (conditional puts). Written with the phase's others (see _work).
                    self._note_done(invocation, segment, page)
                else:
                    ahead = self._finish_page(invocation, segment, page)
                # In memory the segment stands after this page; the record may already hold the next
                # page's claim (``_finish_page``). Nothing is written back from memory, and the next
                # checkpoint supersedes that claim.
                state.__dict__.update(page.__dict__)

    def _finish_page(self, invocation: _Invocation, segment: Segment, page: SegmentState) -> LoansPage | None:
        """Checkpoint a worked page. A watch segment with more to read and time to read it reads its next
        page first and notes that page's ids in the same write (see ``_next_page``): one write of the run
        record per page instead of two, which is what bounds a fanned-out night (docs/dpd-at-scale.md,
        "The ceiling"). The next page, if read, is returned for the segment to work."""
        if page.done or not segment.reads_watch_index or invocation.budget.spent():
            self._checkpoint(invocation, {segment: page})
            return None
        loans, cursor = self._read_page(invocation, segment, page.cursor)
        if not loans:
            # Nothing to claim: the page read is already passed over, and its cursor is the segment's.
            page.cursor, page.done = cursor, cursor is None
            self._checkpoint(invocation, {segment: page})
            return None
        self._claim(invocation, segment, page, loans, cursor)
        return loans, cursor

    def _bring_page_to_date(
        self, invocation: _Invocation, loans: list[Loan], page: SegmentState, pool: ThreadPoolExecutor
    ) -> None:
        """Every loan of the page, ``page_workers`` at a time, each counted on its own and added to the
        page only once all succeeded: a page that fails is not checkpointed, and the run that resumes it
        re-reads the page and counts the loans this one wrote (``_count_done``)."""

        def one(loan: Loan) -> SegmentState:
            counts = SegmentState()
            self._bring_to_date(loan, invocation, counts)
            return counts

        for counts in list(pool.map(one, loans)):
            _add_counts(page, counts)

    def _next_page(
        self, invocation: _Invocation, segment: Segment, state: SegmentState, pool: ThreadPoolExecutor
    ) -> LoansPage:
        if state.page is not None:  # a watch page an earlier invocation stopped in the middle of
            return [loan for loan in pool.map(self.store.get, state.page) if loan is not None], state.cursor
        loans, cursor = self._read_page(invocation, segment, state.cursor)
        if loans and segment.reads_watch_index:
            self._claim(invocation, segment, state, loans, cursor)
        return loans, cursor

    def _claim(
        self,
        invocation: _Invocation,
        segment: Segment,
        state: SegmentState,
        loans: list[Loan],
        cursor: dict[str, Any] | None,
    ) -> None:
        """Checkpoint ``state`` with the page ``loans`` noted as the one being worked, ``cursor`` after it.
        A written loan leaves its watch partition: the page is noted before any of it is written, so that
        a run resumed after a crash midway finds (and counts) what this one wrote."""
        claim = dataclasses.replace(state, cursor=cursor, page=[loan.loan_id for loan in loans])
        self._checkpoint(invocation, {segment: claim})

    def _read_page(self, invocation: _Invocation, segment: Segment, cursor: dict[str, Any] | None) -> LoansPage:
        loans, after = self._fetch(segment, cursor)
        if segment.kind is SegmentKind.PENDING:
            # Loans this run already wrote elsewhere (a date segment moved them here when they reached
            # dpd 90) are that segment's, counted there.
            loans = [loan for loan in loans if loan.last_job_date != invocation.business_date]
        return loans, after

    def _checkpoint(self, invocation: _Invocation, states: dict[Segment, SegmentState]) -> None:
        lease_until = clock.now_epoch() + LEASE_SECONDS
        self.runs.checkpoint(invocation.business_date, invocation.run_id, states, lease_until, invocation.worker)

    # --- one loan -------------------------------------------------------------------------------------

    def _bring_to_date(self, loan: Loan, invocation: _Invocation, state: SegmentState) -> None:
        """Decide and write, read again and decide again while another writer (a payment) keeps getting
        in first: the loan ends up evaluated on what is stored, never on a stale read. Then queue the
        reminders it is owed today, from the loan as written."""
        state.scanned += 1
        first_read = [loan]
        brought: list[Loan] = []

        def attempt() -> None:
            current = first_read.pop() if first_read else self.store.get(loan.loan_id)
            brought[:] = self._decide_and_write(current, invocation.business_date, invocation.escalation_enabled, state)

        retry(
            OPTIMISTIC_WRITE,
            attempt,
            retry_on=Conflict,
            exhausted=lambda: Conflict(f"loan {loan.loan_id} kept changing during the day-end run"),
        )
        for current in brought:
            self._queue_reminders(invocation, current, state)

    def _queue_reminders(self, invocation: _Invocation, loan: Loan, state: SegmentState) -> None:
        """Queue what ``loan`` is owed for the run's date, while a date segment has it in hand. Each
        reminder is stored once per loan, kind and instalment, so a re-read loan (a resumed run, two
        segments finding it) adds nothing. A failure here only counts (``RemindersFailed``): the
        delinquency work matters more, and the reminder segments at the end of the run find the loan
        again through its index (``_queue_page_reminders``)."""
        if not invocation.reminders_enabled or self.reminders is None:
            return
        if loan.delinquency.as_of > invocation.business_date:
            return  # already evaluated for a later date: that date's run speaks for it
        owed = reminders_due(loan, invocation.business_date, clock.now_ist())
        if not owed:
            return
        try:
            queued = self.reminders.queue(owed)
        except Exception:
            logger.exception(
                "reminders could not be queued", extra={"loan_id": loan.loan_id, "run_id": invocation.run_id}
            )
            self.metrics.count("RemindersFailed")
            return
        self._count_queued(state, queued)

    def _queue_page_reminders(
        self, invocation: _Invocation, loans: list[Loan], page: SegmentState, pool: ThreadPoolExecutor
    ) -> None:
        """A reminder partition's page: everything its loans are owed today that is not stored yet.

        Much of what this phase finds was queued already: by the date segments as they wrote the loans
        (every loan whose EMI bounced today is in the arrears partition of today), or by another
        partition holding the same loan (a loan at dpd 30 usually has its next instalment due within
        days). Batched reads of the page's owed reminders find those, and only the missing ones are
        put, ``page_workers`` at a time, each still on condition that it does not exist. A put refused
        for each would cost a request per reminder; the read costs one per page (docs/reminders.md,
        "The reminder phase"). A failure fails the run once every loan is brought to date, so that its
        resumption queues what is missing (docs/reminders.md, "Failures")."""
        if not invocation.reminders_enabled or self.reminders is None or not loans:
            return
        reminders = self.reminders
        now = clock.now_ist()
        owed = [
            reminder
            for loan in loans
            if loan.delinquency.as_of <= invocation.business_date  # else a later date's run speaks for it
            for reminder in reminders_due(loan, invocation.business_date, now)
        ]
        if not owed:
            return
        try:
            stored = reminders.stored_keys(owed)
            missing = [r for r in owed if (r.loan_id, r.key) not in stored]
            queued = sum(pool.map(lambda reminder: reminders.queue([reminder]), missing))
        except Exception:
            logger.exception("reminders could not be queued", extra={"loans": len(loans), "run_id": invocation.run_id})
            self.metrics.count("RemindersFailed")
            raise
        self._count_queued(page, queued)

    def _count_queued(self, state: SegmentState, queued: int) -> None:
        state.reminders += queued
        if queued:
            self.metrics.count("RemindersQueued", times=queued)

    def _decide_and_write(
        self, loan: Loan | None, business_date: dt.date, escalation_enabled: bool, state: SegmentState
    ) -> list[Loan]:
        """The loan as it now stands for ``business_date`` (none if the run has nothing to do with it)."""
        if loan is None or loan.status is not LoanStatus.ACTIVE:
            return []
        if loan.delinquency.as_of > business_date:
            return []  # evaluated for a later date already: a run never moves a loan backwards
        if loan.last_job_date == business_date:
            _count_done(loan, business_date, state)
            return [loan]
        evaluation = _evaluate(loan, business_date, escalation_enabled)
        self._write(evaluation, state)
        return [evaluation.updated]

    def _write(self, evaluation: _Evaluation, state: SegmentState) -> None:
        """Write the loan if its bucket, classification, NPA date, legal escalation or watch changes, with
        its audit entries and any legal case in one transaction; ``Conflict`` if the loan changed since
        it was read."""
        if not evaluation.worth_writing:
            if evaluation.eligible:
                state.pending += 1
            return
        audits = _delinquency_audit(evaluation)
        case = None
        if evaluation.escalate:
            case = _legal_case(evaluation)
            audits.append(_escalation_audit(evaluation, case))
        self._store(evaluation, audits, case)
        _count_written(evaluation, state)
        if evaluation.escalate:
            self.metrics.count("LoansEscalated")

    def _store(self, evaluation: _Evaluation, audits: list[AuditEntry], case: LegalCase | None) -> None:
        try:
            self.store.save_evaluation(evaluation.stored, evaluation.updated, evaluation.business_date, audits, case)
        except Conflict:
            raise  # not a failure to escalate: the loan is read and decided again
        except Exception:
            if evaluation.escalate:
                self.metrics.count("EscalationFailed")
            raise


# --- the run's log lines (docs/logging.md) -------------------------------------------------------------------


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _run_seconds(record: RunRecord) -> float | None:
    """From the run's first start (its first attempt's, kept across retries and continuations) to its
    completion, as the run record says."""
    if record.finished_at is None:
        return None
    finished, began = dt.datetime.fromisoformat(record.finished_at), dt.datetime.fromisoformat(record.started_at)
    return max(0.0, (finished - began).total_seconds())


def _log_started(invocation: _Invocation) -> None:
    record = invocation.record
    logger.info(
        "day-end run started",
        extra={
            "run_id": invocation.run_id,
            "business_date": invocation.business_date.isoformat(),
            "trigger": record.trigger,
            "mode": record.mode,
            "segments": len(record.segments),
            "segments_left": len(invocation.unfinished()),
            "continuations": record.continuations,
            "escalation_enabled": invocation.escalation_enabled,
            "reminders_enabled": invocation.reminders_enabled,
        },
    )


def _log_phase(invocation: _Invocation, name: str, kinds: frozenset[SegmentKind], started: float) -> None:
    _log_phase_totals(invocation.record, name, kinds, started)


def _log_phase_totals(record: RunRecord, name: str, kinds: frozenset[SegmentKind], started: float | None) -> None:
    """A phase's totals over all its segments, so a resumed (or fanned-out) run reports what the whole
    phase did. A fanned-out run's phases are worked by many invocations: no one duration to report."""
    states = [state for segment, state in record.segments.items() if segment.kind in kinds]
    logger.info(
        "day-end phase finished",
        extra={
            "run_id": record.run_id,
            "business_date": record.business_date.isoformat(),
            "phase": name,
            "segments": len(states),
            "loans_scanned": sum(s.scanned for s in states),
            "loans_updated": sum(s.updated for s in states),
            "escalations": sum(s.escalated for s in states),
            "reminders_queued": sum(s.reminders for s in states),
            "duration_ms": _elapsed_ms(started) if started is not None else None,
        },
    )


def _log_finished(
    business_date: dt.date, trigger: str, run_id: str, outcome: str, record: RunRecord | None, started: float
) -> None:
    """One line per invocation, whatever became of it. ``run_id`` is the run's as recorded (an
    invocation that found the date completed or taken names the run that has it)."""
    fields: dict[str, Any] = {
        "run_id": record.run_id if record is not None else run_id,
        "business_date": business_date.isoformat(),
        "trigger": trigger,
        "outcome": outcome,
        "duration_ms": _elapsed_ms(started),
    }
    if record is not None:
        fields.update(
            status=record.status.value,
            mode=record.mode,
            loans_scanned=record.loans_scanned,
            loans_updated=record.loans_updated,
            escalations=record.escalated,
            pending_escalation=record.pending_escalation,
            reminders_queued=record.reminders_queued,
            continuations=record.continuations,
        )
        if outcome == RunOutcome.COMPLETED:
            fields["run_seconds"] = _run_seconds(record)
    log = logger.warning if outcome in (RunOutcome.FAILED, "ERROR") else logger.info
    log("day-end run finished", extra=fields)


def _phase(segment: Segment) -> int:
    return next(n for n, kinds in enumerate(PHASES) if segment.kind in kinds)


def _earlier_phase_unfinished(record: RunRecord, share: tuple[Segment, ...]) -> bool:
    """Whether a segment of a phase before the share's own is still to do."""
    first = min(_phase(segment) for segment in share)
    return any(not state.done and _phase(segment) < first for segment, state in record.segments.items())


def _refuse_a_date_not_ended(business_date: dt.date) -> None:
    if business_date >= clock.today_ist():
        raise ValidationFailed(
            f"{business_date} has not ended yet (IST); the latest date that can run is "
            f"{clock.last_completed_business_date()}"
        )


def _count_done(loan: Loan, business_date: dt.date, state: SegmentState) -> None:
    """A loan this run already wrote before a crash or a hand-over: count it as this run's work, as an
    uninterrupted run would have."""
    state.updated += 1
    if loan.legal_escalated_on == business_date:
        state.escalated += 1
    elif loan.delinquency.dpd >= ESCALATION_DPD and not loan.legal_escalated:
        state.pending += 1


def _add_counts(page: SegmentState, loan: SegmentState) -> None:
    page.scanned += loan.scanned
    page.updated += loan.updated
    page.escalated += loan.escalated
    page.pending += loan.pending
    page.reminders += loan.reminders


def _count_written(evaluation: _Evaluation, state: SegmentState) -> None:
    state.updated += 1
    if evaluation.escalate:
        state.escalated += 1
    elif evaluation.eligible:
        state.pending += 1


def _delinquency_audit(evaluation: _Evaluation) -> list[AuditEntry]:
    """A write that changes the stored delinquency carries an entry from the stored loan to the written
    one, so every loan's trail chains (docs/day-end.md, "Audit")."""
    stored, updated = evaluation.stored, evaluation.updated
    if not delinquency_changed(stored, updated):
        return []
    return [
        SYSTEM.loan_audit(
            Action.DELINQUENCY_CHANGED, stored.loan_id, delinquency_snapshot(stored), delinquency_snapshot(updated)
        )
    ]


def _legal_case(evaluation: _Evaluation) -> LegalCase:
    loan, after = evaluation.stored, evaluation.updated.delinquency
    return LegalCase(
        loan_id=loan.loan_id,
        case_id=new_id(),
        escalated_on=evaluation.business_date,
        dpd=after.dpd,
        overdue_paise=after.overdue_paise,
        outstanding_principal_paise=loan.outstanding_principal_paise,
        borrower_name=loan.borrower.name,
        collector_id=loan.collector_id,
        branch=loan.branch,
        created_at=evaluation.updated.updated_at,
    )


def _escalation_audit(evaluation: _Evaluation, case: LegalCase) -> AuditEntry:
    return SYSTEM.loan_audit(
        Action.LEGAL_ESCALATED,
        case.loan_id,
        {"legal": {"escalated": False}},
        {
            "legal": {"escalated": True, "escalated_on": evaluation.business_date.isoformat()},
            "case_id": case.case_id,
            "dpd": case.dpd,
        },
    )
