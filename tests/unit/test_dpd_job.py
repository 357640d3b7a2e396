"""The day-end DPD job (docs/day-end.md) on in-memory stores (tests/fake_dpd.py) with a frozen clock.

The last test is the key property: running the job incrementally, day by day, with gaps, skipped
and repeated runs and payments in between, shows every loan on every completed date exactly as a
slow reference that walks every day from the loan's creation computes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chalicelib import clock
from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Action, Actor, AuditEntry
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.flags import FlagName
from chalicelib.domain.loan import (
    Borrower,
    Loan,
    LoanStatus,
    delinquency_changed,
    delinquency_snapshot,
    reassess,
)
from chalicelib.domain.payment import post_to_loan
from chalicelib.domain.runs import RunOutcome, RunRecord, RunStatus, Segment, SegmentKind, SegmentState
from chalicelib.domain.schedule import Instalment, generate_schedule
from chalicelib.services.context import RequestContext
from chalicelib.services.day_end import LEASE_SECONDS, DayEndService, RunResult
from chalicelib.services.loans import LoanService, NewLoan
from tests.fake_dpd import InMemoryDelinquencyStore, InMemoryRunStore, StubFlags
from tests.fakes import InMemoryAuditLog, InMemoryLoanRepository, InMemoryUserStore, RecordingMetrics

D = dt.date
MANAGER = RequestContext(Actor("meera", "manager"), source_ip="10.0.0.2", request_id="req-1")
BORROWER = Borrower(name="Asha Rao", phone="9876543210")
TODAY = D(2025, 6, 15)
YESTERDAY = D(2025, 6, 14)
LATER = D(2025, 7, 4)
"""Twenty days on: most of the small book has moved a bucket, three loans are due for escalation."""


def at(day: dt.date, hour: int = 9) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=IST)


def days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


class Killed(BaseException):
    """The Lambda was killed mid-flight (not an exception the job can catch and record)."""


class World:
    """One book of loans, the job and its stores, and a loan service reading the same book."""

    def __init__(self, clk: FixedClock, shards: int = 4, page_size: int = 2, workers: int = 1) -> None:
        self.clock = clk
        self.audit = InMemoryAuditLog()
        self.repo = InMemoryLoanRepository(audit=self.audit)
        self.metrics = RecordingMetrics()
        self.flags = StubFlags()
        self.runs = InMemoryRunStore()
        self.store = InMemoryDelinquencyStore(self.repo, watch_shards=shards, page_size=page_size)
        self.completed: list[dt.date] = []
        self.job = DayEndService(
            store=self.store,
            runs=self.runs,
            flags=self.flags,
            metrics=self.metrics,
            watch_shards=shards,
            on_completed=self.completed.append,
            scan_segments=3,
            workers=workers,
        )
        self.service = LoanService(
            loans=self.repo,
            audit=self.audit,
            users=InMemoryUserStore(),
            metrics=self.metrics,
            evaluated_through=self.runs.latest_completed,
        )

    def add(self, loan_id: str, rows: list[tuple[dt.date, int, int]]) -> Loan:
        """An imported loan, shown as of the last completed business date (may be overdue at once)."""
        loan = self.service.create(
            MANAGER,
            NewLoan(
                loan_id=loan_id,
                borrower=BORROWER,
                principal_paise=sum(p for _, p, _ in rows),
                disbursement_date=rows[0][0] - days(30),
                imported_schedule=rows,
            ),
        )
        self.clock.advance(seconds=1)
        return loan

    def add_monthly(self, loan_id: str, first_due: dt.date, count: int = 6) -> Loan:
        return self.add(loan_id, [(first_due + days(30 * k), 10_000, 1_000) for k in range(count)])

    def run(self, business_date: dt.date, trigger: str = "test", **kw: Any) -> RunResult:
        result = self.job.run(business_date, trigger, **kw)
        self.clock.advance(seconds=1)
        return result

    def loan(self, loan_id: str) -> Loan:
        """The loan as stored."""
        return self.repo.loans[loan_id]

    def shown(self, loan_id: str) -> Loan:
        """What a reader sees (LoanService.present): stored, or derived as of the latest completed run."""
        return self.service.present(self.repo.loans[loan_id])

    def entries(self, action: Action | None = None) -> list[AuditEntry]:
        """Every audit entry (of one action), oldest first."""
        ordered = sorted(self.audit.entries.values(), key=lambda e: e.audit_id)
        return [e for e in ordered if action is None or e.action is action]

    def pay(self, loan_id: str, amount: int) -> Loan:
        """As PaymentService.post does: the loan as shown, the payment applied for yesterday (IST)."""
        loan = self.service.present(self.repo.loans[loan_id])
        updated, _ = post_to_loan(loan, amount, clock.last_completed_business_date())
        return self.write(updated, Action.PAYMENT_POSTED, {"amount": amount})

    def reverse_to(self, unpaid: Loan) -> Loan:
        """What a reversal leaves (the loan exactly as had the payment never been posted: ``unpaid``,
        the loan before it), evaluated for yesterday (IST) as PaymentService.reverse does."""
        stored = self.repo.loans[unpaid.loan_id]
        updated = dataclasses.replace(reassess(unpaid, clock.last_completed_business_date()), version=stored.version)
        return self.write(updated, Action.PAYMENT_REVERSED, {"reversed": True})

    def write(self, updated: Loan, action: Action, after: dict[str, Any]) -> Loan:
        """Store a payment's or reversal's loan with its entry and, as every write that changes the
        stored delinquency does, a DELINQUENCY_CHANGED entry (``domain.loan.delinquency_snapshot``)."""
        stored_before = self.repo.loans[updated.loan_id]
        updated = dataclasses.replace(updated, updated_at=clock.now_iso())
        stored = self.repo.update(stored_before, updated, MANAGER.loan_audit(action, updated.loan_id, None, after))
        if delinquency_changed(stored_before, stored):
            self.audit.append(
                MANAGER.loan_audit(
                    Action.DELINQUENCY_CHANGED,
                    stored.loan_id,
                    delinquency_snapshot(stored_before),
                    delinquency_snapshot(stored),
                )
            )
        self.clock.advance(seconds=1)
        return stored

    def assert_audit_chains(self, created: dict[str, Loan]) -> None:
        """For every loan, its DELINQUENCY_CHANGED entries in audit_id order chain from the loan as
        created to the loan as stored: each ``before`` is the previous ``after`` (the first ``before``
        the created loan), and the last ``after`` is the stored loan. No change is missing."""
        for loan_id, first in created.items():
            link = chain_fields(delinquency_snapshot(first))
            for entry in self.entries(Action.DELINQUENCY_CHANGED):
                if entry.entity_id != loan_id:
                    continue
                assert chain_fields(entry.before) == link, (loan_id, entry)
                link = chain_fields(entry.after)
            assert link == chain_fields(delinquency_snapshot(self.repo.loans[loan_id])), loan_id


CHAIN_FIELDS = ("dpd", "bucket", "classification", "npa_since")


def chain_fields(snapshot: Any) -> tuple[Any, ...]:
    assert isinstance(snapshot, dict), snapshot
    return tuple(snapshot[name] for name in CHAIN_FIELDS)


def state(loan: Loan) -> tuple[Any, ...]:
    """Everything the job decides about a loan (not timestamps or versions)."""
    return (
        loan.loan_id,
        loan.status,
        loan.delinquency,
        loan.legal_escalated,
        loan.legal_escalated_on,
        loan.last_job_date,
    )


def book(world: World) -> list[tuple[Any, ...]]:
    return sorted(state(x) for x in world.repo.loans.values())


def counts(record: RunRecord | None) -> tuple[int, int, int, int]:
    assert record is not None
    return (record.loans_scanned, record.loans_updated, record.escalated, record.pending_escalation)


@pytest.fixture
def world() -> Iterator[World]:
    with use_clock(FixedClock(at(TODAY))) as clk:
        assert isinstance(clk, FixedClock)
        yield World(clk)


def small_book(w: World) -> None:
    """Loans at every interesting distance from their first due date on 14 Jun 2025 (yesterday)."""
    w.add_monthly("A-current", YESTERDAY + days(10))  # nothing due yet
    w.add_monthly("B-dpd1", YESTERDAY)  # dpd 1 on 14 Jun
    w.add_monthly("C-dpd30", YESTERDAY - days(29))  # dpd 30 on 14 Jun, 31 on 15 Jun
    w.add_monthly("D-dpd89", YESTERDAY - days(88))  # dpd 89: 90 (escalation) on 15 Jun
    w.add_monthly("E-dpd90", YESTERDAY - days(89))  # dpd 90 on 14 Jun: escalate now
    w.add_monthly("F-dpd200", YESTERDAY - days(199))  # long NPA, imported


# --- refusals, skips, exactly once --------------------------------------------------------------


def test_today_or_a_future_date_is_refused(world: World) -> None:
    small_book(world)
    before = book(world)
    for date in (TODAY, TODAY + days(1), D(2030, 1, 1)):
        with pytest.raises(ValidationFailed):
            world.run(date)
    assert world.runs.records == {}
    assert book(world) == before


def test_first_run_completes_and_shows_every_loan_for_the_date(world: World) -> None:
    small_book(world)
    world.clock.advance(days=1)  # 16 Jun: yesterday is 15 Jun
    result = world.run(TODAY)
    assert result.outcome is RunOutcome.COMPLETED
    assert result.record is not None and result.record.status is RunStatus.COMPLETED
    assert result.record.mode == "scan"
    assert result.record.loans_scanned == 6
    expected = {
        "A-current": (0, "CURRENT", "STANDARD", None),
        "B-dpd1": (2, "1-30", "SMA-0", None),
        "C-dpd30": (31, "31-60", "SMA-1", None),
        "D-dpd89": (90, "61-90", "SMA-2", None),
        "E-dpd90": (91, "90+", "NPA", TODAY),
        "F-dpd200": (201, "90+", "NPA", YESTERDAY - days(199) + days(90)),
    }
    for loan_id, (dpd, bucket, classification, npa_since) in expected.items():
        shown = world.shown(loan_id)
        assert shown.delinquency.as_of == TODAY, loan_id
        d = shown.delinquency
        assert (d.dpd, d.bucket.value, d.classification.value, d.npa_since) == (dpd, bucket, classification, npa_since)
    escalated = {x.loan_id: x.legal_escalated_on for x in world.repo.loans.values() if x.legal_escalated}
    assert escalated == {"D-dpd89": TODAY, "E-dpd90": TODAY, "F-dpd200": TODAY}
    assert result.record.escalated == 3
    assert result.record.pending_escalation == 0
    assert world.completed == [TODAY]


def test_cron_off_skips_writes_nothing_and_the_date_can_run_later(world: World) -> None:
    small_book(world)
    before = book(world)
    world.flags.set("CRON_ENABLED", False)
    result = world.run(YESTERDAY, trigger="scheduler")
    assert result.outcome is RunOutcome.SKIPPED
    assert result.record is not None and result.record.status is RunStatus.SKIPPED
    assert result.record.trigger == "scheduler"
    assert counts(result.record) == (0, 0, 0, 0)
    assert book(world) == before
    assert world.store.cases == {}
    assert world.metrics.counted("DpdRunSucceeded") == 0
    assert world.runs.latest_completed() is None
    assert world.flags.reads and all(fresh for _, fresh in world.flags.reads)  # jobs read flags fresh

    world.flags.set("CRON_ENABLED", True)
    again = world.run(YESTERDAY, trigger="manual:admin1")
    assert again.outcome is RunOutcome.COMPLETED
    assert again.record is not None and again.record.status is RunStatus.COMPLETED
    assert again.record.trigger == "manual:admin1"
    assert len(world.runs.records) == 1  # one record per date, holding its latest outcome
    assert world.loan("E-dpd90").legal_escalated_on == YESTERDAY


def test_cron_off_does_not_overwrite_a_completed_run(world: World) -> None:
    small_book(world)
    assert world.run(YESTERDAY).outcome is RunOutcome.COMPLETED
    world.flags.set("CRON_ENABLED", False)
    assert world.run(YESTERDAY).outcome is RunOutcome.ALREADY_COMPLETED
    record = world.runs.get(YESTERDAY)
    assert record is not None and record.status is RunStatus.COMPLETED


def test_a_completed_date_runs_only_once(world: World) -> None:
    small_book(world)
    first = world.run(YESTERDAY)
    assert first.outcome is RunOutcome.COMPLETED
    after_first, audits, saves = book(world), len(world.audit.entries), world.store.saves
    record = world.runs.get(YESTERDAY)
    second = world.run(YESTERDAY)
    assert second.outcome is RunOutcome.ALREADY_COMPLETED
    assert book(world) == after_first
    assert len(world.audit.entries) == audits
    assert world.store.saves == saves
    assert world.runs.get(YESTERDAY) == record
    assert world.metrics.counted("DpdRunSucceeded") == 1


def test_a_live_run_is_in_progress_for_another_invocation(world: World) -> None:
    small_book(world)
    now = clock.now_epoch()
    world.runs.records[YESTERDAY] = RunRecord(
        YESTERDAY, RunStatus.RUNNING, "scheduler", "other-run", now + 30, clock.now_iso()
    )
    before = book(world)
    result = world.run(YESTERDAY)
    assert result.outcome is RunOutcome.IN_PROGRESS
    assert book(world) == before
    assert world.runs.records[YESTERDAY].run_id == "other-run"
    # The CRON switch cannot record SKIPPED over a live run either.
    world.flags.set("CRON_ENABLED", False)
    assert world.run(YESTERDAY).outcome is RunOutcome.IN_PROGRESS
    assert world.runs.records[YESTERDAY].status is RunStatus.RUNNING


def twin_books(setup: Callable[[World], None], clk: FixedClock) -> tuple[World, World]:
    """Two identical worlds (same loan ids, same clock): one to disturb, one to run cleanly."""
    a, b = World(clk), World(clk)
    setup(a)
    setup(b)
    return a, b


def crash_after(world: World, saves: int) -> None:
    """Kill the process after ``saves`` loan writes: every later store call dies too."""
    dead = threading.Event()
    seen = [0]

    def before_save(_loan: Loan) -> None:
        if dead.is_set() or seen[0] >= saves:
            dead.set()
            raise Killed()
        seen[0] += 1

    world.store.before_save = before_save

    def before_checkpoint(_segment: Segment) -> None:
        if dead.is_set():
            raise Killed()

    world.runs.before_checkpoint = before_checkpoint


def heal(world: World) -> None:
    world.store.before_save = None
    world.runs.before_checkpoint = None


def spy_fetches(world: World) -> list[tuple[Segment, Any]]:
    fetched: list[tuple[Segment, Any]] = []
    original = world.job._fetch

    def spy(segment_id: Segment, cursor: Any) -> Any:
        fetched.append((segment_id, cursor))
        return original(segment_id, cursor)

    world.job._fetch = spy  # type: ignore[method-assign]
    return fetched


def crash_then_resume(crashed: World, clean: World, business_date: dt.date, saves: int) -> RunResult:
    base = crashed.store.saves
    crash_after(crashed, saves=saves)
    with pytest.raises(Killed):
        crashed.run(business_date)
    record = crashed.runs.get(business_date)
    assert record is not None and record.status is RunStatus.RUNNING
    assert crashed.store.saves - base == saves
    checkpointed = {sid: s for sid, s in record.segments.items() if s.done or s.cursor}
    assert checkpointed, "the crashed run checkpointed some pages"
    heal(crashed)

    # Its lease is still live: another invocation does not take over.
    assert crashed.run(business_date).outcome is RunOutcome.IN_PROGRESS
    crashed.clock.advance(seconds=LEASE_SECONDS + 1)

    fetched = spy_fetches(crashed)
    resumed = crashed.run(business_date)
    assert resumed.outcome is RunOutcome.COMPLETED
    # Finished segments are not read again; a checkpointed one continues from its cursor.
    for sid, seg in checkpointed.items():
        reads = [cursor for s, cursor in fetched if s == sid]
        if seg.done:
            assert reads == []
        else:
            assert not reads or reads[0] == seg.cursor

    assert clean.run(business_date).outcome is RunOutcome.COMPLETED
    assert book(crashed) == book(clean)
    assert crashed.store.cases.keys() == clean.store.cases.keys()
    assert Counter(e.action for e in crashed.entries()) == Counter(e.action for e in clean.entries())
    return resumed


def test_a_crashed_scan_is_taken_over_after_its_lease_and_resumed_from_checkpoints(world: World) -> None:
    crashed, clean = twin_books(small_book, world.clock)
    world.clock.advance(days=20)
    resumed = crash_then_resume(crashed, clean, LATER, saves=3)
    assert resumed.record is not None and resumed.record.mode == "scan"
    assert len(clean.store.cases) == 3
    assert counts(resumed.record) == counts(clean.runs.get(LATER))


def test_a_crashed_watch_run_is_resumed_to_the_loans_and_counts_of_a_clean_run(world: World) -> None:
    crashed, clean = twin_books(small_book, world.clock)
    for w in (crashed, clean):
        assert w.run(YESTERDAY).outcome is RunOutcome.COMPLETED
    world.clock.advance(days=20)
    # Written loans leave their watch partition: the resumed run must still count them.
    resumed = crash_then_resume(crashed, clean, LATER, saves=2)
    assert resumed.record is not None and resumed.record.mode == "watch"
    assert counts(resumed.record) == counts(clean.runs.get(LATER))


def test_running_out_of_time_hands_over_and_the_continuation_finishes_like_one_run(world: World) -> None:
    interrupted, clean = twin_books(small_book, world.clock)
    for w in (interrupted, clean):
        assert w.run(YESTERDAY).outcome is RunOutcome.COMPLETED
    world.clock.advance(days=20)
    calls = [0]

    def time_left_ms() -> int:
        calls[0] += 1
        return 100_000 if calls[0] <= 5 else 10_000

    first = interrupted.run(LATER, time_left_ms=time_left_ms)
    assert first.outcome is RunOutcome.CONTINUING
    assert first.record is not None and first.record.status is RunStatus.RUNNING
    assert first.record.lease_until == 0  # handed over: the next invocation need not wait
    assert first.record.mode == "watch"
    segments = first.record.segments
    assert 1 <= sum(1 for s in segments.values() if s.done) <= 5  # at most five pages were read
    assert interrupted.metrics.counted("DpdRunSucceeded") == 1  # only the previous day's

    # The continuation (time enough now) takes over at once and finishes.
    fetched = spy_fetches(interrupted)
    second = interrupted.run(LATER, trigger="continuation", time_left_ms=lambda: 900_000)
    assert second.outcome is RunOutcome.COMPLETED
    assert not {sid for sid, _ in fetched} & {sid for sid, s in segments.items() if s.done}
    assert clean.run(LATER).outcome is RunOutcome.COMPLETED
    assert book(interrupted) == book(clean)
    assert counts(second.record) == counts(clean.runs.get(LATER))
    assert interrupted.store.cases.keys() == clean.store.cases.keys()
    assert interrupted.metrics.counted("DpdRunSucceeded") == 2


ARN = "arn:aws:dynamodb:ap-south-1:123456789012:table/loan-crm-prod-loans"


def test_an_error_in_a_segment_fails_the_run_and_a_rerun_completes_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    failing, clean = twin_books(small_book, world.clock)
    world.clock.advance(days=20)
    raised = []

    def explode(loan: Loan) -> None:
        if loan.loan_id == "C-dpd30" and not raised:
            raised.append(loan.loan_id)
            raise RuntimeError(f"An error occurred (ValidationException) when calling TransactWriteItems on {ARN}")

    failing.store.before_save = explode
    result = failing.run(LATER)
    assert raised == ["C-dpd30"]
    assert result.outcome is RunOutcome.FAILED
    assert result.record is not None
    assert result.record.status is RunStatus.FAILED
    assert result.record.errors == 1
    # The record says what happened without the internals (ARN, table name, repr); the log has them.
    run_id = result.record.run_id
    assert result.record.last_error == f"internal error (RuntimeError); see the job's logs for run {run_id}"
    logged = [r for r in caplog.records if r.exc_info and ARN in str(r.exc_info[1])]
    assert logged and all(run_id in r.getMessage() or getattr(r, "run_id", None) == run_id for r in logged)
    assert result.record.finished_at is not None
    assert failing.metrics.counted("DpdRunFailed") == 1
    assert failing.metrics.counted("DpdRunSucceeded") == 0
    assert failing.runs.latest_completed() is None
    assert failing.loan("C-dpd30").last_job_date is None  # nothing of it was written

    rerun = failing.run(LATER)
    assert rerun.outcome is RunOutcome.COMPLETED
    assert rerun.record is not None and rerun.record.errors == 1  # the history of the failure stays
    assert clean.run(LATER).outcome is RunOutcome.COMPLETED
    assert book(failing) == book(clean)
    assert counts(rerun.record) == counts(clean.runs.get(LATER))
    assert failing.metrics.counted("DpdRunSucceeded") == 1


def test_a_domain_error_is_recorded_in_its_own_words(world: World) -> None:
    small_book(world)

    def always_changed(loan: Loan) -> None:
        if loan.loan_id == "E-dpd90":  # another writer gets in first, every time
            stored = world.repo.loans[loan.loan_id]
            world.repo.loans[loan.loan_id] = dataclasses.replace(stored, version=stored.version + 1)

    world.store.before_save = always_changed
    result = world.run(YESTERDAY)
    assert result.outcome is RunOutcome.FAILED and result.record is not None
    assert result.record.last_error == "CONFLICT: loan E-dpd90 kept changing during the day-end run"


def test_a_pages_loans_are_written_at_once_and_counted_as_one_after_another(world: World) -> None:
    """docs/day-end.md, "Within a page": the loans of a page are worked ``page_workers`` at a time. Every
    write of the page waits at a barrier for the others, so a job writing them one after another would
    break it (and fail); the counts and the book are a sequential run's."""
    parallel, sequential = twin_books(small_book, world.clock)
    world.clock.advance(days=20)
    for w in (parallel, sequential):
        w.store.page_size = 6  # the whole book in one page of the first run's scan segment
        w.job.scan_segments = 1
    parallel.job.page_workers = 6
    sequential.job.page_workers = 1
    together = threading.Barrier(5, timeout=10)  # the five loans that change by LATER (A-current too)
    met: list[str] = []

    def wait_for_the_others(loan: Loan) -> None:
        together.wait()
        met.append(loan.loan_id)

    parallel.store.before_save = wait_for_the_others
    result = parallel.run(LATER)
    assert result.outcome is RunOutcome.COMPLETED and result.record is not None
    assert len(met) == 5 and not together.broken
    assert sequential.run(LATER).outcome is RunOutcome.COMPLETED
    assert book(parallel) == book(sequential)
    assert counts(result.record) == counts(sequential.runs.get(LATER))


def test_a_watch_page_is_noted_before_its_loans_are_written_in_the_previous_pages_checkpoint(world: World) -> None:
    """docs/day-end.md, "Checkpoints": a watch segment notes a page's loan ids in the run record before it
    writes any of them (a written loan leaves the partition), and after the first page it does so in the
    same write as the previous page's checkpoint: one write per page, plus the first page's note."""
    w = World(world.clock, shards=1, page_size=2)
    due = YESTERDAY + days(5)
    for n in range(7):
        w.add_monthly(f"L{n}", due)
    assert w.run(YESTERDAY).outcome is RunOutcome.COMPLETED
    w.clock.advance(days=7)
    date = due + days(1)  # every loan reaches dpd 1: all seven are watched on this date, in 4 pages
    writes: list[dict[Segment, Any]] = []
    checkpoint = w.runs.checkpoint

    def recorded(business_date: dt.date, run_id: str, states: Any, *args: Any, **kwargs: Any) -> None:
        writes.append({segment: dataclasses.replace(state) for segment, state in states.items()})
        checkpoint(business_date, run_id, states, *args, **kwargs)

    def noted_first(loan: Loan) -> None:
        noted = [states[segment].page for states in writes for segment in states if segment.kind is SegmentKind.WATCH]
        assert noted and loan.loan_id in (noted[-1] or []), f"{loan.loan_id} written before its page was noted"

    w.runs.checkpoint = recorded  # type: ignore[method-assign]
    w.store.before_save = noted_first
    result = w.run(date)
    assert result.outcome is RunOutcome.COMPLETED and result.record is not None
    assert result.record.loans_updated == 7
    mine = [states[segment] for states in writes for segment in states if segment.kind is SegmentKind.WATCH]
    mine = [state for state in mine if state.page or state.scanned]  # the gap's empty days found nothing
    assert len(mine) == 1 + 4, [(s.page, s.done) for s in mine]
    assert [len(s.page or []) for s in mine] == [2, 2, 2, 1, 0] and mine[-1].done


def test_an_error_after_another_invocation_took_the_run_over_is_not_a_failure(world: World) -> None:
    """This invocation stalled past its lease, another took the run over, then a write failed here:
    the run is not FAILED (its owner carries on), no failure alarm, and the caller hears IN_PROGRESS."""
    small_book(world)

    def taken_over_then_throttled(_loan: Loan) -> None:
        record = world.runs.records[YESTERDAY]
        record.run_id, record.lease_until = "other-invocation", clock.now_epoch() + LEASE_SECONDS
        raise RuntimeError("throttled")

    world.store.before_save = taken_over_then_throttled
    result = world.run(YESTERDAY)
    assert result.outcome is RunOutcome.IN_PROGRESS
    assert result.record is not None and result.record.status is RunStatus.RUNNING
    assert result.record.run_id == "other-invocation"
    assert (result.record.errors, result.record.last_error) == (0, None)
    assert world.metrics.counted("DpdRunFailed") == 0


def test_an_escalation_that_fails_to_write_is_counted(world: World) -> None:
    small_book(world)

    def explode(loan: Loan) -> None:
        if loan.loan_id == "E-dpd90":
            raise RuntimeError("transaction failed")

    world.store.before_save = explode
    assert world.run(YESTERDAY).outcome is RunOutcome.FAILED
    assert world.metrics.counted("EscalationFailed") == 1
    assert "E-dpd90" not in world.store.cases


def test_a_concurrent_write_to_a_loan_is_reread_and_evaluated_again(world: World) -> None:
    small_book(world)
    interfered: list[str] = []

    def concurrent_payment(loan: Loan) -> None:
        if loan.loan_id == "F-dpd200" and not interfered:
            interfered.append(loan.loan_id)
            # Another writer (a payment) gets in first: the stored version moves on.
            stored = world.repo.loans[loan.loan_id]
            world.repo.loans[loan.loan_id] = dataclasses.replace(stored, version=stored.version + 1, notes="paid")

    world.store.before_save = concurrent_payment
    assert world.run(YESTERDAY).outcome is RunOutcome.COMPLETED
    loan = world.loan("F-dpd200")
    assert interfered == ["F-dpd200"]
    assert loan.notes == "paid"  # the concurrent change survives
    assert loan.legal_escalated_on == YESTERDAY
    assert len([e for e in world.entries(Action.LEGAL_ESCALATED) if e.entity_id == "F-dpd200"]) == 1


# --- escalation ---------------------------------------------------------------------------------


def test_escalation_off_counts_pending_and_the_first_run_after_it_is_on_escalates_once(world: World) -> None:
    small_book(world)
    world.flags.set("ESCALATION_ENABLED", False)
    off = world.run(YESTERDAY)
    assert off.outcome is RunOutcome.COMPLETED
    assert off.record is not None
    assert (off.record.escalated, off.record.pending_escalation) == (0, 2)  # E (dpd 90) and F (dpd 200)
    assert world.store.cases == {}
    assert world.entries(Action.LEGAL_ESCALATED) == []
    assert world.metrics.counted("LoansEscalated") == 0

    world.clock.advance(days=1)
    still_off = world.run(TODAY)
    assert still_off.record is not None
    assert (still_off.record.escalated, still_off.record.pending_escalation) == (0, 3)  # D reached 90 on 15 Jun
    assert still_off.record.mode == "watch"

    world.flags.set("ESCALATION_ENABLED", True)
    world.clock.advance(days=1)
    on = world.run(TODAY + days(1))
    assert on.record is not None
    assert (on.record.escalated, on.record.pending_escalation) == (3, 0)
    assert {k: c.escalated_on for k, c in world.store.cases.items()} == {
        "D-dpd89": TODAY + days(1),
        "E-dpd90": TODAY + days(1),
        "F-dpd200": TODAY + days(1),
    }
    assert world.metrics.counted("LoansEscalated") == 3

    for n in range(2, 5):
        world.clock.advance(days=1)
        later = world.run(TODAY + days(n))
        assert later.record is not None and later.record.escalated == 0
    assert world.metrics.counted("LoansEscalated") == 3
    assert Counter(e.entity_id for e in world.entries(Action.LEGAL_ESCALATED)) == {
        "D-dpd89": 1,
        "E-dpd90": 1,
        "F-dpd200": 1,
    }


L = YESTERDAY
"""In the escalation-date tests, the business date whose run is still to come when a payment lands."""


def move_to(clk: FixedClock, when: dt.datetime) -> None:
    clk.advance(seconds=(when - clk.now()).total_seconds())


def night_before_the_run_for(day: dt.date) -> dt.datetime:
    """00:10 IST the next day: the day has ended (payments land on it), its 00:30 run has not fired."""
    return dt.datetime.combine(day + days(1), dt.time(0, 10), tzinfo=IST)


@pytest.fixture
def watched() -> Iterator[tuple[World, dict[str, Loan]]]:
    """13 Jun: "P" (dpd 90 on 14 Jun) and a bystander created, the runs for 12 Jun (a scan) and 13 Jun
    (watch mode: P is at dpd 89, nothing to write) done, early on 14 Jun."""
    with use_clock(FixedClock(at(L - days(1)))) as clk:
        assert isinstance(clk, FixedClock)
        w = World(clk)
        created = {"P": w.add_monthly("P", L - days(89)), "other": w.add_monthly("other", L + days(10))}
        assert w.run(L - days(2)).outcome is RunOutcome.COMPLETED
        move_to(clk, night_before_the_run_for(L - days(1)))
        thirteenth = w.run(L - days(1))
        assert thirteenth.record is not None and thirteenth.record.mode == "watch"
        assert w.loan("P").delinquency.as_of == L - days(2)  # dpd 89 on 13 Jun changed nothing: not written
        yield w, created


def test_a_payment_that_does_not_cure_before_the_run_for_its_date_does_not_delay_escalation(
    watched: tuple[World, dict[str, Loan]],
) -> None:
    w, created = watched
    move_to(w.clock, night_before_the_run_for(L))
    paid = w.pay("P", 500)  # far less than the oldest instalment: dpd 90 on 14 Jun all the same
    assert (paid.delinquency.as_of, paid.delinquency.dpd, paid.legal_escalated) == (L, 90, False)

    result = w.run(L)
    assert result.record is not None and result.record.mode == "watch"
    assert (result.record.escalated, result.record.pending_escalation) == (1, 0)
    loan = w.loan("P")
    assert (loan.legal_escalated, loan.legal_escalated_on) == (True, L)
    assert w.store.cases["P"].escalated_on == L
    assert [e.entity_id for e in w.entries(Action.LEGAL_ESCALATED)] == ["P"]
    w.assert_audit_chains(created)


def test_escalation_switched_off_keeps_the_paid_loan_pending_unwritten_until_it_is_back_on(
    watched: tuple[World, dict[str, Loan]],
) -> None:
    w, created = watched
    move_to(w.clock, night_before_the_run_for(L))
    w.pay("P", 500)
    w.flags.set("ESCALATION_ENABLED", False)
    off = w.run(L)
    assert off.record is not None and (off.record.escalated, off.record.pending_escalation) == (0, 1)
    assert not w.loan("P").legal_escalated

    # 15 Jun: dpd 91, NPA; written for that, still pending.
    move_to(w.clock, night_before_the_run_for(L + days(1)))
    npa = w.run(L + days(1))
    assert npa.record is not None and (npa.record.loans_updated, npa.record.pending_escalation) == (1, 1)
    assert w.loan("P").delinquency.classification.value == "NPA"
    # 16 and 17 Jun: nothing changes but the dpd; the pending loan is read, counted, and not written.
    stored = w.loan("P")
    for day in (L + days(2), L + days(3)):
        move_to(w.clock, night_before_the_run_for(day))
        quiet = w.run(day)
        assert quiet.record is not None
        assert (quiet.record.loans_updated, quiet.record.escalated, quiet.record.pending_escalation) == (0, 0, 1)
    assert w.loan("P") == stored

    w.flags.set("ESCALATION_ENABLED", True)
    move_to(w.clock, night_before_the_run_for(L + days(4)))
    on = w.run(L + days(4))
    assert on.record is not None and (on.record.escalated, on.record.pending_escalation) == (1, 0)
    assert w.loan("P").legal_escalated_on == L + days(4)
    w.assert_audit_chains(created)


def test_a_reversal_that_reveals_dpd_90_before_the_run_for_its_date_is_escalated_by_that_run(
    watched: tuple[World, dict[str, Loan]],
) -> None:
    w, created = watched
    move_to(w.clock, night_before_the_run_for(L - days(1)) + dt.timedelta(hours=9))  # 14 Jun, 09:10
    unpaid = w.loan("P")
    paid = w.pay("P", 11_000)  # the oldest instalment: dpd 59 on 13 Jun
    assert (paid.delinquency.as_of, paid.delinquency.dpd) == (L - days(1), 59)
    move_to(w.clock, night_before_the_run_for(L))
    bounced = w.reverse_to(unpaid)  # the cheque bounced: dpd 90 on 14 Jun
    assert (bounced.delinquency.as_of, bounced.delinquency.dpd, bounced.legal_escalated) == (L, 90, False)

    result = w.run(L)
    assert result.record is not None and result.record.escalated == 1
    assert w.loan("P").legal_escalated_on == L
    w.assert_audit_chains(created)


def test_a_loan_imported_past_dpd_90_before_the_run_for_its_date_is_escalated_by_that_run(
    watched: tuple[World, dict[str, Loan]],
) -> None:
    w, created = watched
    move_to(w.clock, night_before_the_run_for(L))
    created["imported"] = w.add("imported", [(L - days(119), 10_000, 1_000), (L + days(20), 10_000, 1_000)])
    assert (created["imported"].delinquency.as_of, created["imported"].delinquency.dpd) == (L, 120)

    result = w.run(L)
    assert result.record is not None and result.record.mode == "watch"
    assert {x.loan_id: x.legal_escalated_on for x in w.repo.loans.values() if x.legal_escalated} == {
        "P": L,
        "imported": L,
    }
    w.assert_audit_chains(created)


def test_every_delinquency_write_of_a_run_is_audited_and_the_trail_chains(world: World) -> None:
    """An escalation write moves the stored dpd without a bucket change (89 to 90): it is audited too."""
    small_book(world)
    created = {loan_id: world.loan(loan_id) for loan_id in world.repo.loans}
    assert world.run(YESTERDAY).outcome is RunOutcome.COMPLETED
    for n in range(1, 40):
        world.clock.advance(days=1)
        if n % 7 == 3:
            world.pay("B-dpd1", 3_000)
        assert world.run(YESTERDAY + days(n)).outcome is RunOutcome.COMPLETED
    first = next(e for e in world.entries(Action.DELINQUENCY_CHANGED) if e.entity_id == "D-dpd89")
    assert (first.before["dpd"], first.after["dpd"]) == (89, 90)
    assert first.before["bucket"] == first.after["bucket"] == "61-90"
    world.assert_audit_chains(created)


def test_a_skipped_date_run_after_a_later_one_changes_nothing_and_escalates_nothing(
    watched: tuple[World, dict[str, Loan]],
) -> None:
    """A pending loan is not rewritten while the switch is off, so its stored ``dpd_as_of`` stays behind
    the latest run. The run of an older, skipped date must not take it for a loan to evaluate (and
    escalate, dated before the date it is already shown for)."""
    w, _created = watched
    w.flags.set("ESCALATION_ENABLED", False)
    for day in (L, L + days(1)):  # 14 Jun: P reaches dpd 90 (pending); 15 Jun: 91, NPA
        move_to(w.clock, night_before_the_run_for(day))
        assert w.run(day).outcome is RunOutcome.COMPLETED
    move_to(w.clock, night_before_the_run_for(L + days(2)))
    w.flags.set("CRON_ENABLED", False)
    assert w.run(L + days(2)).outcome is RunOutcome.SKIPPED  # 16 Jun
    w.flags.set("CRON_ENABLED", True)
    move_to(w.clock, night_before_the_run_for(L + days(3)))
    assert w.run(L + days(3)).outcome is RunOutcome.COMPLETED  # 17 Jun, still off: P not rewritten
    assert w.loan("P").delinquency.as_of == L + days(1)

    w.flags.set("ESCALATION_ENABLED", True)
    before = book(w)
    late = w.run(L + days(2))  # the skipped 16 Jun, run now
    assert late.outcome is RunOutcome.COMPLETED and late.record is not None
    assert late.record.mode == "superseded" and counts(late.record) == (0, 0, 0, 0)
    assert book(w) == before and w.store.cases == {}

    move_to(w.clock, night_before_the_run_for(L + days(4)))
    assert w.run(L + days(4)).outcome is RunOutcome.COMPLETED
    assert w.loan("P").legal_escalated_on == L + days(4)


def test_metrics_and_audit_entries_of_a_run(world: World) -> None:
    small_book(world)
    result = world.run(YESTERDAY)
    assert result.outcome is RunOutcome.COMPLETED
    assert world.metrics.counted("DpdRunSucceeded") == 1
    assert world.metrics.counted("LoansEscalated") == 2  # E (dpd 90) and F (dpd 200)
    assert world.metrics.counted("DpdRunFailed") == 0

    escalations = world.entries(Action.LEGAL_ESCALATED)
    assert sorted(e.entity_id for e in escalations) == ["E-dpd90", "F-dpd200"]
    for e in escalations:
        assert e.actor.sub == "system:dpd_job"
        assert e.entity_type == "loan"
        assert e.after["legal"] == {"escalated": True, "escalated_on": YESTERDAY.isoformat()}
        assert e.after["case_id"] == world.store.cases[e.entity_id].case_id

    # Created yesterday as of 14 Jun, evaluated for 14 Jun: nothing changed, no delinquency audit.
    assert world.entries(Action.DELINQUENCY_CHANGED) == []

    world.clock.advance(days=1)
    world.run(TODAY)
    changes = {e.entity_id: e for e in world.entries(Action.DELINQUENCY_CHANGED)}
    # On 15 Jun C reaches dpd 31 (SMA-1) and E dpd 91 (NPA); D reaches 90 (escalated, still SMA-2: its
    # write moves the stored dpd, so it is audited too).
    assert set(changes) == {"C-dpd30", "D-dpd89", "E-dpd90"}
    assert (changes["D-dpd89"].before["dpd"], changes["D-dpd89"].after["dpd"]) == (89, 90)
    c = changes["C-dpd30"]
    assert c.actor.sub == "system:dpd_job" and c.entity_type == "loan" and c.entity_id == "C-dpd30"
    assert (c.before["bucket"], c.before["classification"]) == ("1-30", "SMA-0")
    assert (c.after["bucket"], c.after["classification"], c.after["dpd"]) == ("31-60", "SMA-1", 31)
    e = changes["E-dpd90"]
    assert (e.before["bucket"], e.before["classification"]) == ("61-90", "SMA-2")
    assert (e.after["bucket"], e.after["classification"], e.after["npa_since"]) == ("90+", "NPA", TODAY.isoformat())
    assert world.entries(Action.LEGAL_ESCALATED) != []
    assert {e.entity_id for e in world.entries(Action.LEGAL_ESCALATED)} == {"D-dpd89", "E-dpd90", "F-dpd200"}


def test_a_later_date_needs_only_the_watched_loans(world: World) -> None:
    for n in range(40):
        world.add_monthly(f"Q{n:02d}", YESTERDAY + days(3 + n))  # nothing changes for days
    world.add_monthly("due-15", TODAY)
    world.add_monthly("due-16", TODAY + days(1))
    assert world.run(YESTERDAY).record is not None  # first run: a full scan
    world.clock.advance(days=2)
    result = world.run(TODAY + days(1))  # 15 and 16 Jun
    assert result.record is not None and result.record.mode == "watch"
    # Only the loans whose first instalment fell due on 15 or 16 Jun are read (Q00 is due on 17 Jun).
    assert (result.record.loans_scanned, result.record.loans_updated) == (2, 2)
    assert world.shown("due-15").delinquency.dpd == 2
    assert world.shown("Q00").delinquency.as_of == TODAY + days(1)  # derived for the run date, not written
    assert world.loan("Q00").delinquency.as_of == YESTERDAY


def test_a_run_never_moves_a_loan_backwards(world: World) -> None:
    small_book(world)
    world.clock.advance(days=3)  # 18 Jun: a payment evaluates B for 17 Jun
    paid = world.pay("B-dpd1", 500)
    assert paid.delinquency.as_of == D(2025, 6, 17)
    before = world.loan("B-dpd1")
    assert world.run(YESTERDAY).outcome is RunOutcome.COMPLETED  # 14 Jun, run late
    assert world.loan("B-dpd1") == before
    assert world.shown("B-dpd1").delinquency.as_of == D(2025, 6, 17)


def test_a_payment_in_a_gap_keeps_an_npa_reached_in_the_gap(world: World) -> None:
    """No run for ten days; the loan turned NPA on 19 Jun meanwhile. A part-payment on the 25th
    (evaluated for the 24th) clears the oldest instalment: dpd falls to 66, but the loan stays NPA
    with its date, exactly as if every day-end had run (NPA until all overdue is paid)."""
    first_due = YESTERDAY - days(85)  # dpd 86 on 14 Jun, 91 on 19 Jun
    world.add(
        "gap",
        [(first_due, 10_000, 1_000), (first_due + days(30), 10_000, 1_000), (YESTERDAY + days(30), 10_000, 1_000)],
    )
    assert world.run(YESTERDAY).outcome is RunOutcome.COMPLETED
    assert world.shown("gap").delinquency.classification.value == "SMA-2"
    world.clock.advance(days=10)  # 25 Jun; runs for 15..24 Jun did not happen
    paid = world.pay("gap", 11_000)
    d = paid.delinquency
    assert (d.as_of, d.dpd, d.bucket.value) == (D(2025, 6, 24), 66, "61-90")
    assert (d.classification.value, d.npa_since) == ("NPA", D(2025, 6, 19))
    assert world.run(D(2025, 6, 24)).outcome is RunOutcome.COMPLETED
    shown = world.shown("gap").delinquency
    assert (shown.classification.value, shown.npa_since) == ("NPA", D(2025, 6, 19))


# --- the key property ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RefState:
    as_of: dt.date
    dpd: int
    bucket: str
    classification: str
    npa_since: dt.date | None
    overdue_paise: int


def ref_rule(schedule: tuple[Instalment, ...], day: dt.date, prev: RefState | None) -> RefState:
    """The day-end rules (docs/day-end.md) for one day, written out on their own: dpd counts from the
    oldest instalment due on or before the day and not fully paid (that due date is day 1); an NPA stays
    NPA while anything is overdue; a loan newly NPA records the date its dpd reached 91."""
    unpaid = [i for i in schedule if i.due_date <= day and i.paid_principal_paise + i.paid_interest_paise < i.due_paise]
    overdue = sum(i.due_paise - i.paid_principal_paise - i.paid_interest_paise for i in unpaid)
    dpd = (day - min(i.due_date for i in unpaid)).days + 1 if unpaid else 0
    bucket = (
        "CURRENT" if dpd == 0 else "1-30" if dpd <= 30 else "31-60" if dpd <= 60 else "61-90" if dpd <= 90 else "90+"
    )
    if prev is not None and prev.classification == "NPA" and overdue > 0:
        return RefState(day, dpd, bucket, "NPA", prev.npa_since, overdue)
    classification = {"CURRENT": "STANDARD", "1-30": "SMA-0", "31-60": "SMA-1", "61-90": "SMA-2", "90+": "NPA"}[bucket]
    npa_since = day - days(dpd - 91) if classification == "NPA" else None
    return RefState(day, dpd, bucket, classification, npa_since, overdue)


def settled(schedule: tuple[Instalment, ...]) -> bool:
    return all(i.paid_principal_paise + i.paid_interest_paise == i.due_paise for i in schedule)


@dataclass
class RefLoan:
    loan_id: str
    events: list[tuple[dt.date, tuple[Instalment, ...]]]
    """(business date, schedule from then on): the creation, then every payment, in the order made."""
    escalated_on: dt.date | None = None
    memo: dict[tuple[int, dt.date], RefState] = field(default_factory=dict)

    @property
    def closed_on(self) -> dt.date | None:
        last_day, last_schedule = self.events[-1]
        return last_day if settled(last_schedule) else None

    def at(self, upto: dt.date) -> RefState:
        """Walk every day from creation to ``upto``: each day-end with the schedule as it stood, then the
        payments dated that day (posted the next morning, after that day-end), each re-evaluated."""
        key = (len(self.events), upto)
        if key not in self.memo:
            self.memo[key] = self._walk(upto)
        return self.memo[key]

    def _walk(self, upto: dt.date) -> RefState:
        state: RefState | None = None
        schedule: tuple[Instalment, ...] | None = None
        pending = list(self.events)
        day = pending[0][0]
        while day <= upto:
            if schedule is not None:
                state = ref_rule(schedule, day, state)
            while pending and pending[0][0] == day:
                schedule = pending.pop(0)[1]
                state = ref_rule(schedule, day, state)
            assert schedule is not None and state is not None
            if settled(schedule):
                break
            day += days(1)
        assert state is not None
        return state


@dataclass(frozen=True)
class LoanSpec:
    generated: bool
    first_due_offset: int
    instalments: int
    variant: int


@dataclass(frozen=True)
class Step:
    gap: int
    run: str
    """"run" (the day-end run of yesterday, first thing in the morning), "none" (no run: a gap),
    "cron_off" (the run is recorded SKIPPED)."""
    escalation: bool
    repeat: bool
    rerun_skipped: bool
    early_payments: tuple[tuple[int, int], ...]
    """Posted after the day has ended but before its run (00:10 IST): they land on the run's own date."""
    payments: tuple[tuple[int, int], ...]
    new_loans: tuple[LoanSpec, ...]


loan_specs = st.builds(
    LoanSpec,
    generated=st.booleans(),
    first_due_offset=st.integers(-150, 40),
    instalments=st.integers(2, 6),
    variant=st.integers(0, 2),
)
steps = st.builds(
    Step,
    gap=st.one_of(st.integers(1, 3), st.integers(1, 40)),
    run=st.sampled_from(["run", "run", "run", "none", "cron_off"]),
    escalation=st.sampled_from([True, True, True, False]),
    repeat=st.booleans(),
    rerun_skipped=st.booleans(),
    early_payments=st.lists(st.tuples(st.integers(0, 20), st.sampled_from([1, 15, 50, 100])), max_size=2).map(tuple),
    payments=st.lists(st.tuples(st.integers(0, 20), st.sampled_from([1, 15, 50, 100, 140])), max_size=2).map(tuple),
    new_loans=st.lists(loan_specs, max_size=1).map(tuple),
)
START = D(2025, 3, 1)


def rows_for(spec: LoanSpec, today: dt.date) -> tuple[dt.date, list[tuple[dt.date, int, int]]]:
    """(disbursement date, rows) of a loan created today; the first instalment may be long overdue."""
    first_due = today + days(spec.first_due_offset)
    disbursed = first_due - days(30)
    if spec.generated:
        schedule = generate_schedule(
            300_000 + 12_345 * spec.variant, 1200 + 600 * spec.variant, spec.instalments, disbursed, first_due
        )
        return disbursed, [(i.due_date, i.principal_paise, i.interest_paise) for i in schedule]
    spacing = (30, 15, 45)[spec.variant]
    return disbursed, [(first_due + days(spacing * k), 20_000 + 1_000 * k, 1_500) for k in range(spec.instalments)]


class Simulation:
    def __init__(self, clk: FixedClock) -> None:
        self.clock = clk
        self.world = World(clk, shards=3, page_size=2, workers=2)
        self.refs: dict[str, RefLoan] = {}
        self.created: dict[str, Loan] = {}
        self.as_of_seen: dict[str, dt.date] = {}

    @property
    def today(self) -> dt.date:
        return clock.today_ist()

    def create(self, spec: LoanSpec) -> None:
        loan_id = f"L{len(self.refs):02d}"
        disbursed, rows = rows_for(spec, self.today)
        created = self.world.service.create(
            MANAGER,
            NewLoan(
                loan_id=loan_id,
                borrower=BORROWER,
                principal_paise=sum(p for _, p, _ in rows),
                disbursement_date=disbursed,
                imported_schedule=rows,
            ),
        )
        self.refs[loan_id] = RefLoan(loan_id, [(self.today - days(1), created.schedule)])
        self.created[loan_id] = created
        self.clock.advance(seconds=1)

    def pay(self, index: int, percent: int) -> None:
        if not self.refs:
            return
        loan_id = sorted(self.refs)[index % len(self.refs)]
        loan = self.world.service.present(self.world.repo.loans[loan_id])
        if loan.status is not LoanStatus.ACTIVE:
            return
        yesterday = self.today - days(1)
        due = sum(i.unpaid_paise for i in loan.schedule if i.due_date <= yesterday)
        base = due or next(i.unpaid_paise for i in loan.schedule if i.unpaid_paise)
        owed = sum(i.unpaid_paise for i in loan.schedule)
        amount = min(owed, max(1, base * percent // 100))
        updated, _ = post_to_loan(loan, amount, yesterday)
        stored = self.world.write(updated, Action.PAYMENT_POSTED, {"amount_paise": amount})
        self.refs[loan_id].events.append((yesterday, stored.schedule))

    def run(self, business_date: dt.date) -> RunResult:
        before = dict(self.world.repo.loans)
        newest = self.world.runs.latest_completed()
        escalation = self.world.flags.enabled[FlagName.ESCALATION_ENABLED]
        previous = self.world.runs.get(business_date)
        result = self.world.run(business_date)
        if result.outcome is RunOutcome.COMPLETED and (newest is None or business_date > newest):
            self.check_run(business_date, result.record, escalation, before)
        elif result.outcome is RunOutcome.COMPLETED:
            # An older date run after a newer one: every loan has moved past it already.
            event("an older skipped date run after a newer one")
            assert self.world.repo.loans == before
        else:
            assert result.outcome in (RunOutcome.SKIPPED, RunOutcome.ALREADY_COMPLETED), result.outcome
            assert self.world.repo.loans == before
            if result.outcome is RunOutcome.ALREADY_COMPLETED:
                event("a completed date run again")
                assert self.world.runs.get(business_date) == previous
        self.check_book()
        return result

    def check_run(
        self, business_date: dt.date, record: RunRecord | None, escalation: bool, before: dict[str, Loan]
    ) -> None:
        """The reference for escalation: a loan not yet escalated is escalated by the first completed run
        whose business date finds its dpd >= 90 (every payment posted so far counted, those that landed
        on that very date before the run included), or, the switch being off, by the first such run
        after it is back on."""
        assert record is not None and record.status is RunStatus.COMPLETED
        event(f"run in {record.mode} mode")
        newly, pending = [], []
        for ref in self.refs.values():
            closed = ref.closed_on
            if ref.escalated_on is not None or (closed is not None and closed <= business_date):
                continue
            if ref.at(business_date).dpd >= 90:
                (newly if escalation else pending).append(ref.loan_id)
                if escalation:
                    ref.escalated_on = business_date
                    event("escalated")
                    if before[ref.loan_id].delinquency.as_of == business_date:
                        event("escalated by the run for the date a payment or an import had evaluated it at")
        assert (record.escalated, record.pending_escalation) == (len(newly), len(pending))

    def check_book(self) -> None:
        through = self.world.runs.latest_completed()
        for loan_id, ref in self.refs.items():
            stored = self.world.repo.loans[loan_id]
            # A run never moves a loan backwards.
            assert stored.delinquency.as_of >= self.as_of_seen.get(loan_id, stored.delinquency.as_of)
            self.as_of_seen[loan_id] = stored.delinquency.as_of
            shown = self.world.service.present(stored)
            last_event = ref.events[-1][0]
            closed = ref.closed_on
            if closed is not None:
                expected_as_of = closed
            else:
                expected_as_of = last_event if through is None else max(through, last_event)
            expected = ref.at(expected_as_of)
            d = shown.delinquency
            got = RefState(d.as_of, d.dpd, d.bucket.value, d.classification.value, d.npa_since, d.overdue_paise)
            assert got == expected, (loan_id, through, ref.events)
            if got.classification == "NPA" and got.dpd <= 90:
                event("an NPA kept through a part-payment")
            if len(ref.events) > 1 and got.classification == "NPA":
                event("an NPA loan that was paid")
            assert shown.status is (LoanStatus.CLOSED if closed else LoanStatus.ACTIVE)
            assert (shown.legal_escalated, shown.legal_escalated_on) == (ref.escalated_on is not None, ref.escalated_on)
        escalations = Counter(e.entity_id for e in self.world.entries(Action.LEGAL_ESCALATED))
        assert all(n == 1 for n in escalations.values()), escalations
        self.world.assert_audit_chains(self.created)
        assert (
            set(escalations) == set(self.world.store.cases) == {r.loan_id for r in self.refs.values() if r.escalated_on}
        )

    def step(self, step: Step) -> None:
        self.clock.advance(days=step.gap)
        yesterday = self.today - days(1)
        for index, percent in step.early_payments:
            self.pay(index, percent)
        flags = self.world.flags
        flags.set("ESCALATION_ENABLED", step.escalation)
        if step.run != "none":
            flags.set("CRON_ENABLED", step.run == "run")
            self.run(yesterday)
            if step.repeat:
                flags.set("CRON_ENABLED", True)
                self.run(yesterday)
        flags.set("CRON_ENABLED", True)
        newest = self.world.runs.latest_completed()
        skipped = [d for d, r in self.world.runs.records.items() if r.status is RunStatus.SKIPPED]
        if step.rerun_skipped and skipped and newest is not None and max(skipped) < newest:
            self.run(max(skipped))
        for index, percent in step.payments:
            self.pay(index, percent)
        for spec in step.new_loans:
            self.create(spec)
        self.check_book()


@pytest.mark.long
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.lists(loan_specs, min_size=1, max_size=5), plan=st.lists(steps, min_size=1, max_size=14))
def test_incremental_runs_show_what_a_day_by_day_reference_computes(initial: list[LoanSpec], plan: list[Step]) -> None:
    with use_clock(FixedClock(at(START))) as clk:
        assert isinstance(clk, FixedClock)
        sim = Simulation(clk)
        for spec in initial:
            sim.create(spec)
        sim.check_book()
        for step in plan:
            sim.step(step)


def test_the_run_store_fake_copies_every_field_that_can_change() -> None:
    """tests/fake_dpd.py ``_copy`` copies a record field by field and shares what cannot change: a field
    added to either class must be looked at there (a mutable one shared would let the job change the
    stored record behind the store's back)."""
    assert [f.name for f in dataclasses.fields(RunRecord)] == [
        "business_date", "status", "trigger", "run_id", "lease_until", "started_at", "finished_at", "mode",
        "segments", "errors", "last_error", "continuations",
    ]  # fmt: skip
    assert [f.name for f in dataclasses.fields(SegmentState)] == [
        "cursor", "done", "scanned", "updated", "escalated", "pending", "reminders", "page",
    ]  # fmt: skip
