"""The reconciliation (docs/reconciliation.md): check the ledger's invariants across the whole book, and
report what does not hold. It never changes the ledger; people repair, then rebuild the counters.

A run is split like the day-end run: parallel scan segments of the loans, the payments and the UTR
claims, each checkpointed after every page, so that any time budget makes progress and a run can be
continued by another invocation. On AWS with its state machine configured, a run's segments are worked
by parallel invocations instead, one segment each, as the day-end run's are (docs/reconciliation.md,
"Fan-out"); a segment needs no claim of its own, because its checkpoint already refuses a worker that
is behind. Each page's findings and its share of the recount go into the
segment's checkpoint; the run finishes by summing the shares and comparing them with the counters.

Writes go on while a run reads, so two precautions keep a clean book reported clean:

- a per-loan or per-payment finding is read again (loan, payments and claim together) before it is
  reported: a write that landed between two reads is gone on the second look;
- the counters are compared only where they took no write during the run (each stored set counts its
  writes); the others are listed as ``unverified``, neither confirmed nor refuted.

The same pass computes the collector scores (docs/scoring.md) when ``SCORING_ENABLED`` was on as it
began: more partial sums (``score:<collector>@<month>``) from the loan and payment pages, written as
the months' rows when the run finishes. A scoring problem never makes the run fail or report a
mismatch: it is logged and counted as ``ScoringFailed``, and that run writes no scores.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chalicelib import clock
from chalicelib.domain.audit import Action
from chalicelib.domain.errors import NotFound
from chalicelib.domain.flags import FlagName
from chalicelib.domain.payment import Payment
from chalicelib.domain.portfolio import (
    CounterKey,
    CounterKind,
    recount,
    recount_collections,
)
from chalicelib.domain.reconciliation import (
    MAX_LISTED_MISMATCHES,
    Mismatch,
    MismatchKind,
    ReconciliationRun,
    ReconciliationStatus,
    SegmentProgress,
    SourceKind,
    check_claim,
    check_loan,
    check_payment,
    compare_counters,
    months_checked,
)
from chalicelib.domain.roles import ADMIN_ONLY
from chalicelib.domain.runs import MAX_CONTINUATIONS, WorkOutcome
from chalicelib.domain.scoring import (
    COLLECTED,
    FAILED_LABEL,
    MonthScores,
    Reassignment,
    is_frozen_by,
    is_score_label,
    loan_figures,
    month_rows,
    months_to_score,
    payment_credits,
    score_label,
)
from chalicelib.services.budget import Budget, failure_message, fresh_budget
from chalicelib.services.context import RequestContext
from chalicelib.services.ids import new_id
from chalicelib.services.ports import (
    AssignmentLog,
    Flags,
    LedgerReader,
    Metrics,
    PortfolioStore,
    ReconciliationRuns,
    RunDispatcher,
    ScoreStore,
    StoredLoan,
)

logger = logging.getLogger(__name__)
"""Written by the app's log handler (docs/logging.md): one line per invocation and per scoring pass."""

SEGMENTS = 8
"""Scan segments per table: 24 in all, worked by :data:`WORKERS` threads per invocation."""
WORKERS = 4
RECHECKS = 2
"""How many more looks a finding gets before it is reported (see the module's docstring)."""
RECHECK_PAUSE_S = 0.05

Reassignments = dict[str, list[Reassignment]] | None
"""The reassignments the scores need, by loan id, loaded once per invocation; None: they could not be
read, so this invocation's pages cannot score."""


class RunHere:
    """No other invocation to start: the run goes on in the caller's process."""

    def start(self, run_id: str) -> bool:
        return False

    def hand_on(self, run_id: str) -> bool:
        return False

    def fan_out(self, run_id: str, segments: list[str]) -> bool:
        return False


@dataclass(frozen=True)
class Rebuilt:
    """What ``rebuild`` did: the counter sets it corrected, and those it left because they were being
    written to while it recounted (run it again when the book is quieter)."""

    corrected: list[str]
    moving: list[str]
    unchanged: int


def _labels(counters: dict[CounterKey, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {key.label: values for key, values in counters.items()}


def _merge(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for label, values in more.items():
        target = into.setdefault(label, {})
        for name, value in values.items():
            target[name] = target.get(name, 0) + value


def loan_recount(loans: Iterable[StoredLoan]) -> dict[CounterKey, dict[str, int]]:
    return {
        CounterKey(CounterKind.COUNTERS, scope.key): values for scope, values in recount(s.loan for s in loans).items()
    }


def collections_recount(payments: Iterable[Payment], months: Iterable[str] | None) -> dict[CounterKey, dict[str, int]]:
    return {
        CounterKey(CounterKind.COLLECTIONS, scope.key, month): values
        for (scope, month), values in recount_collections(payments, months).items()
    }


@dataclass
class ReconciliationService:
    ledger: LedgerReader
    portfolio: PortfolioStore
    runs: ReconciliationRuns
    metrics: Metrics
    dispatcher: RunDispatcher = field(default_factory=RunHere)
    segments: int = SEGMENTS
    workers: int = WORKERS
    flags: Flags | None = None
    """With ``scores`` and ``assignments``: the collector scores are computed too (docs/scoring.md)."""
    scores: ScoreStore | None = None
    assignments: AssignmentLog | None = None

    # --- entry points ---------------------------------------------------------------------------------

    def start(self, trigger: str, as_of: dt.date | None = None) -> ReconciliationRun:
        """Begin a run. Where the job has its own function (AWS) it runs there and this returns the
        run as it starts; anywhere else it runs here, without a time limit, and returns it finished."""
        run = self.begin(trigger, as_of or clock.last_completed_business_date())
        if self.dispatcher.start(run.run_id):
            return run
        return self.run_invocation(run.run_id, None)

    def start_as(self, ctx: RequestContext) -> ReconciliationRun:
        ctx.require(ADMIN_ONLY)
        return self.start(f"manual:{ctx.actor.sub}")

    def after_day_end(self, business_date: dt.date) -> None:
        """Each completed day-end run is followed by a run; its failure never fails the day-end."""
        try:
            self.start(f"after-day-end:{business_date.isoformat()}", business_date)
        except Exception:
            logger.exception("reconciliation after the day-end run could not run", extra={"date": str(business_date)})
            self.metrics.count("ReconciliationFailed")

    def latest(self) -> ReconciliationRun:
        run = self.runs.latest()
        if run is None:
            raise NotFound("no reconciliation has finished yet")
        return run

    def run_invocation(self, run_id: str, time_left_ms: Callable[[], int] | None) -> ReconciliationRun:
        """One invocation's share of a run; while it stops for time and no other invocation can be
        started, carry on here with a fresh budget of the same size (as the day-end run does)."""
        budget_ms = int(time_left_ms()) if time_left_ms is not None else None
        fanned = self._fan_out(run_id)
        if fanned is not None:
            return fanned
        run, continuing = self._logged_invoke(run_id, time_left_ms)
        while continuing:
            if self.dispatcher.hand_on(run_id):
                return run
            run, continuing = self._logged_invoke(run_id, fresh_budget(budget_ms) if budget_ms is not None else None)
        return run

    def _fan_out(self, run_id: str) -> ReconciliationRun | None:
        """Hand the run's unfinished segments to parallel workers if the dispatcher can (AWS with the
        state machine); the run as it stands then, else None (the caller works it here)."""
        run = self.runs.get(run_id)
        if run is None or run.status is not ReconciliationStatus.RUNNING:
            return None
        todo = [segment.name for segment in self.runs.segments(run_id) if not segment.done]
        if not todo or not self.dispatcher.fan_out(run_id, todo):
            return None
        logger.info("reconciliation run fanned out", extra={"run_id": run_id, "segments_left": len(todo)})
        return run

    def work(
        self, run_id: str, segment_name: str, continuations: int, time_left_ms: Callable[[], int] | None
    ) -> WorkOutcome:
        """One worker's invocation in a fanned-out run: its one segment, page after page, until done or
        the budget is spent. ``STOPPED`` when the run is over or another invocation is ahead on the
        segment (its checkpoint refused this one's); an error is raised, and the state machine retries.
        ``continuations``: this segment's invocations so far, bounded like a chain of hand-overs."""
        run = self.runs.get(run_id)
        if run is None or run.status is not ReconciliationStatus.RUNNING:
            return WorkOutcome.STOPPED
        [segment] = [s for s in self.runs.segments(run_id) if s.name == segment_name]
        try:
            ahead = not self._segment(run, segment, Budget.start(time_left_ms), self._reassignments(run))
        except Exception:
            logger.exception("reconciliation segment worker failed", extra={"run_id": run_id, "segment": segment_name})
            raise
        if ahead:
            # Another invocation of this segment checkpointed first (Step Functions retried this worker while
            # the first attempt lived). The first one's answer reaches nobody, so this one must not end the
            # segment's iteration: ask to be invoked again, and carry on from the stored checkpoint.
            current = self.runs.get(run_id)
            if current is None or current.status is not ReconciliationStatus.RUNNING:
                return WorkOutcome.STOPPED
            [stored] = [s for s in self.runs.segments(run_id) if s.name == segment_name]
            if stored.done:
                return WorkOutcome.DONE
            return self._bounded(run, segment_name, continuations)
        if segment.done:
            return WorkOutcome.DONE
        return self._bounded(run, segment_name, continuations)

    def _bounded(self, run: ReconciliationRun, segment_name: str, continuations: int) -> WorkOutcome:
        """Invoke the segment again (``MORE``) within the bound a chain of hand-overs has; past it the run fails."""
        if continuations >= MAX_CONTINUATIONS:
            self._fail(
                run, f"segment {segment_name} was invoked {MAX_CONTINUATIONS} times and is not done; start a new run"
            )
            return WorkOutcome.STOPPED
        return WorkOutcome.MORE

    def settle(self, run_id: str, failure: str | None = None) -> ReconciliationRun:
        """The last step of a fanned-out run: sum the segments and finish it, or record why not.
        ``failure``: a worker kept failing after the state machine's retries (safe to show)."""
        started = time.monotonic()
        run = self.runs.get(run_id)
        if run is None:
            raise NotFound(f"reconciliation run {run_id} not found")
        if run.status is ReconciliationStatus.RUNNING:
            stored = self.runs.segments(run_id)
            left = [s for s in stored if not s.done]
            if failure is not None:
                run = self._fail(run, failure)
            elif left:
                run = self._fail(run, f"the workers stopped with {len(left)} of {len(stored)} segments still to do")
            else:
                run = self._finish(run, stored)
        self._log(run, False, started)
        return run

    def _logged_invoke(self, run_id: str, time_left_ms: Callable[[], int] | None) -> tuple[ReconciliationRun, bool]:
        """:meth:`_invoke`, with the one line it is worth to on-call: what the run stands at after it."""
        started = time.monotonic()
        run, continuing = self._invoke(run_id, time_left_ms)
        self._log(run, continuing, started)
        return run, continuing

    def _log(self, run: ReconciliationRun, continuing: bool, started: float) -> None:
        outcome = "CONTINUING" if continuing else run.status.value
        logger.log(
            logging.WARNING if run.status is ReconciliationStatus.FAILED else logging.INFO,
            "reconciliation run finished" if not continuing else "reconciliation run handed over",
            extra={
                "run_id": run.run_id,
                "trigger": run.trigger,
                "business_date": run.as_of.isoformat(),
                "outcome": outcome,
                "mismatches": run.mismatch_count,
                "unverified": len(run.unverified or []),
                "loans_checked": run.loans_checked,
                "payments_checked": run.payments_checked,
                "claims_checked": run.claims_checked,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )

    # --- a run ----------------------------------------------------------------------------------------

    def begin(self, trigger: str, as_of: dt.date) -> ReconciliationRun:
        """Record a new run and its segments, with the counters' writes as they stand now; no work yet."""
        months = months_checked(clock.today_ist())
        # Only what the run will compare: collections of older months would only grow the record.
        writes = {
            key.label: totals.writes
            for key, totals in self.portfolio.totals().items()
            if key.kind is CounterKind.COUNTERS or key.month in months
        }
        run = ReconciliationRun(
            run_id=new_id(),
            trigger=trigger,
            as_of=as_of,
            started_at=clock.now_iso(),
            months=months,
            writes_at_start=writes,
            score_months=self._score_months(as_of),
        )
        segments = [SegmentProgress(source, n, self.segments) for source in SourceKind for n in range(self.segments)]
        self.runs.create(run, segments)
        return run

    def _score_months(self, as_of: dt.date) -> tuple[str, ...]:
        """The months this run scores: none with the flag off (read fresh, once, here), else those of
        :func:`months_to_score` not frozen yet."""
        if self.flags is None or self.scores is None or self.assignments is None:
            return ()
        try:
            if not self.flags.read(FlagName.SCORING_ENABLED, fresh=True).enabled:
                return ()
            return tuple(m for m in months_to_score(as_of) if not self.scores.is_frozen(m))
        except Exception:
            logger.exception("collector scoring could not start; this run scores nothing")
            self.metrics.count("ScoringFailed")
            return ()

    def _reassignments(self, run: ReconciliationRun) -> Reassignments:
        if not run.score_months or self.assignments is None:
            return {}
        try:
            return self.assignments.reassignments_since(clock.month_days(min(run.score_months))[0])
        except Exception:
            logger.exception("reassignments for the scores could not be read", extra={"run_id": run.run_id})
            return None

    def _invoke(self, run_id: str, time_left_ms: Callable[[], int] | None) -> tuple[ReconciliationRun, bool]:
        run = self.runs.get(run_id)
        if run is None:
            raise NotFound(f"reconciliation run {run_id} not found")
        if run.status is not ReconciliationStatus.RUNNING:
            return run, False
        try:
            todo = [s for s in self.runs.segments(run_id) if not s.done]
            if todo:
                self._work(run, todo, Budget.start(time_left_ms), self._reassignments(run))
            stored = self.runs.segments(run_id)
            if all(s.done for s in stored):
                return self._finish(run, stored), False
            if self.runs.hand_over(run_id) > MAX_CONTINUATIONS:
                return self._fail(run, f"the run was handed over {MAX_CONTINUATIONS} times; start a new one"), False
            refreshed = self.runs.get(run_id)
            return (refreshed or run), True
        except Exception as exc:
            logger.exception("reconciliation run failed", extra={"run_id": run_id})
            return self._fail(run, failure_message(exc, run_id)), False

    def _fail(self, run: ReconciliationRun, error: str) -> ReconciliationRun:
        self.metrics.count("ReconciliationFailed")
        run.status, run.error, run.finished_at = ReconciliationStatus.FAILED, error, clock.now_iso()
        self.runs.finish(run)
        return self.runs.get(run.run_id) or run

    def _work(
        self, run: ReconciliationRun, todo: list[SegmentProgress], budget: Budget, reassignments: Reassignments
    ) -> None:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for future in [pool.submit(self._segment, run, segment, budget, reassignments) for segment in todo]:
                future.result()

    def _segment(
        self, run: ReconciliationRun, segment: SegmentProgress, budget: Budget, reassignments: Reassignments
    ) -> bool:
        """Page after page until done or out of time; stop at once if another invocation of the run is
        ahead on this segment (its checkpoint wins): False then."""
        while not segment.done and not budget.spent():
            found, checked, partial, cursor = self._page(run, segment, reassignments)
            segment.cursor, segment.done = cursor, cursor is None
            segment.pages += 1
            segment.checked += checked
            segment.mismatch_count += len(found)
            listed = segment.mismatches or []
            segment.mismatches = listed + [m.as_dict() for m in found][: max(0, MAX_LISTED_MISMATCHES - len(listed))]
            merged = dict(segment.partial or {})
            _merge(merged, partial)
            segment.partial = merged
            if not self.runs.checkpoint(run.run_id, segment):
                return False
            budget.progressed.set()
        return True

    def _page(
        self, run: ReconciliationRun, segment: SegmentProgress, reassignments: Reassignments
    ) -> tuple[list[Mismatch], int, dict[str, dict[str, int]], dict[str, object] | None]:
        """One page's findings, records checked, share of the recount (and of the scores) by label,
        and the next page's cursor."""
        n, total, cursor = segment.index, segment.total, segment.cursor
        if segment.source is SourceKind.LOANS:
            loans, after = self.ledger.loans_segment(n, total, cursor)
            partial = _labels(loan_recount(loans))
            partial.update(self._loan_scores(run, loans, reassignments))
            return self._check_loans(loans), len(loans), partial, after
        if segment.source is SourceKind.PAYMENTS:
            payments, after = self.ledger.payments_segment(n, total, cursor)
            partial = _labels(collections_recount(payments, run.months))
            partial.update(self._payment_scores(run, payments))
            return self._check_payments(payments), len(payments), partial, after
        claims, after = self.ledger.claims_segment(n, total, cursor)
        return self._check_claims(claims), len(claims), {}, after

    # --- the scores' share of a page (docs/scoring.md) ---------------------------------------------------

    def _loan_scores(
        self, run: ReconciliationRun, loans: list[StoredLoan], reassignments: Reassignments
    ) -> dict[str, dict[str, int]]:
        if not run.score_months:
            return {}
        if reassignments is None:
            return {FAILED_LABEL: {"pages": 1}}
        try:
            found: dict[str, dict[str, int]] = {}
            for stored in loans:
                moves = reassignments.get(stored.loan.loan_id, [])
                for month in run.score_months:
                    figures = loan_figures(stored.loan, moves, month, run.as_of)
                    _merge(found, {score_label(collector, month): values for collector, values in figures.items()})
            return found
        except Exception:
            logger.exception("a page of loans could not be scored", extra={"run_id": run.run_id})
            return {FAILED_LABEL: {"pages": 1}}

    def _payment_scores(self, run: ReconciliationRun, payments: list[Payment]) -> dict[str, dict[str, int]]:
        if not run.score_months:
            return {}
        credits = payment_credits(payments, run.score_months)
        return {score_label(collector, month): {COLLECTED: paise} for (collector, month), paise in credits.items()}

    def _write_scores(self, run: ReconciliationRun, partials: dict[str, dict[str, int]]) -> None:
        """Each scored month's rows, frozen when the run's date is the month's last day or later; a
        month frozen meanwhile is left as it is. Never raises: a failure is logged and counted."""
        if not run.score_months or self.scores is None:
            return
        started = time.monotonic()
        written: list[str] = []
        rows = 0
        try:
            if FAILED_LABEL in partials:
                raise RuntimeError("some pages could not be scored")
            for month in run.score_months:
                scores = MonthScores(
                    month, run.as_of, is_frozen_by(month, run.as_of), tuple(month_rows(partials, month))
                )
                if self.scores.write_month(scores, run.run_id):
                    self.metrics.count("ScoresComputed")
                    written.append(month)
                    rows += len(scores.rows)
        except Exception:
            logger.exception("collector scores were not written", extra={"run_id": run.run_id})
            self.metrics.count("ScoringFailed")
            outcome = "FAILED"
        else:
            outcome = "COMPLETED"
        logger.info(
            "scoring pass finished",
            extra={
                "run_id": run.run_id,
                "business_date": run.as_of.isoformat(),
                "months": list(run.score_months),
                "months_written": written,
                "rows": rows,
                "outcome": outcome,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )

    # --- the checks, with a second look before anything is reported -------------------------------------

    def _confirmed(self, found: list[Mismatch], look_again: Callable[[], list[Mismatch]]) -> list[Mismatch]:
        for _ in range(RECHECKS):
            if not found:
                return found
            time.sleep(RECHECK_PAUSE_S)
            found = look_again()
        return found

    def _loan_findings(self, stored: StoredLoan, payments: dict[str, Payment]) -> list[Mismatch]:
        ledger = {e.payment_id: payments.get(e.payment_id) for e in stored.loan.payments}
        return check_loan(stored.loan, stored.outstanding_paise, ledger)

    def _check_loans(self, loans: list[StoredLoan]) -> list[Mismatch]:
        payments = self.ledger.payments(e.payment_id for s in loans for e in s.loan.payments)
        found: list[Mismatch] = []
        for stored in loans:
            loan_id = stored.loan.loan_id

            def again(loan_id: str = loan_id) -> list[Mismatch]:
                fresh = self.ledger.loans([loan_id]).get(loan_id)
                if fresh is None:
                    return []  # not there any more: nothing to reconcile (loans are never deleted)
                return self._loan_findings(fresh, self.ledger.payments(e.payment_id for e in fresh.loan.payments))

            found += self._confirmed(self._loan_findings(stored, payments), again)
        return found

    def _payment_findings(
        self, payment: Payment, claims: dict[str, str], loans: dict[str, StoredLoan]
    ) -> list[Mismatch]:
        held = loans.get(payment.loan_id)
        return check_payment(payment, claims.get(payment.utr), held.loan if held else None)

    def _check_payments(self, payments: list[Payment]) -> list[Mismatch]:
        claims = self.ledger.claims(p.utr for p in payments)
        loans = self.ledger.loans(p.loan_id for p in payments)
        found: list[Mismatch] = []
        for payment in payments:

            def again(payment_id: str = payment.payment_id) -> list[Mismatch]:
                fresh = self.ledger.payments([payment_id]).get(payment_id)
                if fresh is None:
                    return []
                return self._payment_findings(
                    fresh, self.ledger.claims([fresh.utr]), self.ledger.loans([fresh.loan_id])
                )

            found += self._confirmed(self._payment_findings(payment, claims, loans), again)
        return found

    def _check_claims(self, claims: list[tuple[str, str]]) -> list[Mismatch]:
        payments = self.ledger.payments(payment_id for _, payment_id in claims)
        found: list[Mismatch] = []
        for utr, payment_id in claims:

            def again(utr: str = utr) -> list[Mismatch]:
                now = self.ledger.claims([utr]).get(utr)
                if now is None:
                    return []
                return check_claim(utr, now, self.ledger.payments([now]).get(now))

            found += self._confirmed(check_claim(utr, payment_id, payments.get(payment_id)), again)
        return found

    # --- the end of a run -------------------------------------------------------------------------------

    def _finish(self, run: ReconciliationRun, segments: list[SegmentProgress]) -> ReconciliationRun:
        recounted: dict[str, dict[str, int]] = {}
        scored: dict[str, dict[str, int]] = {}
        listed: list[Mismatch] = []
        for segment in segments:
            partial = segment.partial or {}
            _merge(recounted, {name: values for name, values in partial.items() if not is_score_label(name)})
            _merge(scored, {name: values for name, values in partial.items() if is_score_label(name)})
            listed += [Mismatch.from_dict(m) for m in segment.mismatches or []]
        counters, unverified = self._compare_counters(run, recounted)
        run.mismatch_count = sum(s.mismatch_count for s in segments) + len(counters)
        run.mismatches = (listed + counters)[:MAX_LISTED_MISMATCHES]
        run.unverified = unverified
        run.loans_checked = sum(s.checked for s in segments if s.source is SourceKind.LOANS)
        run.payments_checked = sum(s.checked for s in segments if s.source is SourceKind.PAYMENTS)
        run.claims_checked = sum(s.checked for s in segments if s.source is SourceKind.CLAIMS)
        run.status, run.finished_at = ReconciliationStatus.COMPLETED, clock.now_iso()
        if not self.runs.finish(run):
            return self.runs.get(run.run_id) or run  # another invocation finished it, and reported it
        if run.mismatch_count:  # every mismatch, listed or not, in one data point: the alarm sums them
            self.metrics.count("ReconciliationMismatch", times=run.mismatch_count)
        self._write_scores(run, scored)
        return run

    def _compare_counters(
        self, run: ReconciliationRun, recounted: dict[str, dict[str, int]]
    ) -> tuple[list[Mismatch], list[str]]:
        """The stored counters against the recount, where nothing wrote to them during the run."""
        stored = self.portfolio.totals()
        at_start = run.writes_at_start or {}
        keys = {key.label: key for key in stored}
        for label in recounted:
            keys.setdefault(label, _key_of(label))
        found: list[Mismatch] = []
        unverified: list[str] = []
        for label, key in sorted(keys.items()):
            if key.kind is CounterKind.COLLECTIONS and key.month not in run.months:
                continue
            now = stored.get(key)
            if (now.writes if now else 0) != at_start.get(label, 0):
                unverified.append(label)
                continue
            kind = MismatchKind.AGGREGATE if key.kind is CounterKind.COUNTERS else MismatchKind.COLLECTIONS
            mismatch = compare_counters(kind, label, recounted.get(label, {}), now.values if now else {})
            if mismatch is not None:
                found.append(mismatch)
        return found, unverified

    # --- repair's last step ------------------------------------------------------------------------------

    def rebuild(self, ctx: RequestContext) -> Rebuilt:
        """Set the counters to a recount of the loans and payments: each differing set is corrected by
        adding the difference, with an AGGREGATES_REBUILT audit entry in the same transaction. A set
        written to while the recount ran is left alone (the difference would be a guess); a write after
        the recount is harmless, because the correction is an addition, not an overwrite."""
        ctx.require(ADMIN_ONLY)
        before = self.portfolio.totals()
        recounted = self._full_recount()
        after = self.portfolio.totals()
        corrected: list[str] = []
        moving: list[str] = []
        unchanged = 0
        for key in sorted({*recounted, *after}):
            now = after.get(key)
            then = before.get(key)
            if (now.writes if now else 0) != (then.writes if then else 0):
                moving.append(key.label)
                continue
            stored = now.values if now else {}
            fresh = recounted.get(key, {})
            delta = {n: fresh.get(n, 0) - stored.get(n, 0) for n in {*fresh, *stored}}
            delta = {n: v for n, v in delta.items() if v}
            if not delta:
                unchanged += 1
                continue
            entry = ctx.audit_entry(
                Action.AGGREGATES_REBUILT,
                "portfolio",
                key.label,
                {n: stored.get(n, 0) for n in sorted(delta)},
                {n: fresh.get(n, 0) for n in sorted(delta)},
                reason="counters set to a recount of the loans and payments",
            )
            self.portfolio.correct(key, delta, entry)
            corrected.append(key.label)
        return Rebuilt(corrected, moving, unchanged)

    def _full_recount(self) -> dict[CounterKey, dict[str, int]]:
        totals: dict[CounterKey, dict[str, int]] = {}

        def add(part: dict[CounterKey, dict[str, int]]) -> None:
            for key, values in part.items():
                target = totals.setdefault(key, {})
                for name, value in values.items():
                    target[name] = target.get(name, 0) + value

        for n in range(self.segments):
            cursor = None
            while True:
                loans, cursor = self.ledger.loans_segment(n, self.segments, cursor)
                add(loan_recount(loans))
                if cursor is None:
                    break
            cursor = None
            while True:
                payments, cursor = self.ledger.payments_segment(n, self.segments, cursor)
                add(collections_recount(payments, None))
                if cursor is None:
                    break
        return totals


def _key_of(label: str) -> CounterKey:
    scope, _, month = label.partition("@")
    return CounterKey(CounterKind.COLLECTIONS, scope, month) if month else CounterKey(CounterKind.COUNTERS, scope)
