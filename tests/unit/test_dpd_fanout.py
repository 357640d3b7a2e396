"""A day-end run fanned out over parallel segment workers (docs/day-end.md, "Fan-out"), on the in-memory
stores: the coordinator plans and hands the shares over, the workers claim and work them, the last step
settles the run, and the result is the one of a run in one process. The guard (a claim per segment)
keeps two workers off one segment; a crashed worker's share is carried on from its checkpoints."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from chalicelib import clock
from chalicelib.clock import FixedClock, use_clock
from chalicelib.domain.flags import FlagName
from chalicelib.domain.runs import (
    MAX_CONTINUATIONS,
    FanOut,
    LostLease,
    RunOutcome,
    RunStatus,
    Segment,
    SegmentBusy,
    SegmentKind,
    WorkItem,
    WorkOutcome,
)
from chalicelib.services.day_end import LEASE_SECONDS, PHASES, SHARE_SIZES, RunResult, shares
from tests.unit.test_dpd_job import LATER, TODAY, YESTERDAY, Killed, World, at, book, counts, heal, small_book

WorkerRun = Callable[[WorkItem], WorkOutcome]


@dataclass
class StateMachineDouble:
    """The dispatcher on AWS with the state machine configured: remembers each execution it starts and
    refuses a second one of the same name, as Step Functions does."""

    started: list[FanOut] = field(default_factory=list)

    def start(self, request: object) -> bool:
        return False

    def hand_on(self, request: object) -> bool:
        return False

    def fan_out(self, plan: FanOut) -> bool:
        if all((p.business_date, p.run_id) != (plan.business_date, plan.run_id) for p in self.started):
            self.started.append(plan)
        return True


def no_time_left() -> int:
    return 0


def execute(world: World, plan: FanOut, worker: WorkerRun | None = None) -> RunResult:
    """What the state machine does with an execution: each phase's shares, the phases in order, each
    share's worker invoked until it is no longer MORE or BUSY; then the settle step."""
    work = worker or (lambda item: world.job.work(item, no_time_left))
    for phase in plan.phases:
        for share in phase:
            item = WorkItem(plan.business_date, plan.run_id, share)
            while True:
                outcome = work(item)
                item = dataclasses.replace(item, continuations=item.continuations + 1)
                if outcome is WorkOutcome.BUSY:
                    world.clock.advance(seconds=60)  # the state machine's wait
                if outcome not in (WorkOutcome.MORE, WorkOutcome.BUSY):
                    break
    return world.job.settle(plan.business_date, plan.run_id)


@pytest.fixture
def clk() -> Iterator[FixedClock]:
    with use_clock(FixedClock(at(TODAY))) as clock:
        assert isinstance(clock, FixedClock)
        yield clock


def watch_worlds(clk: FixedClock) -> tuple[World, World, StateMachineDouble]:
    """Two identical books with a completed run for yesterday, so that the run for ``LATER`` is a watch
    run (date, pending and reminder segments); the first one fans out."""
    fanned, clean = World(clk), World(clk)
    for w in (fanned, clean):
        small_book(w)
        for n in range(6):
            w.add_monthly(f"G{n}", YESTERDAY - dt.timedelta(days=20 - n))
        assert w.run(YESTERDAY).outcome is RunOutcome.COMPLETED
    clk.advance(days=20)
    double = StateMachineDouble()
    fanned.job.dispatcher = double
    return fanned, clean, double


def assert_same_as_clean(fanned: World, clean: World, business_date: dt.date) -> None:
    clean_result = clean.run(business_date)
    assert clean_result.outcome is RunOutcome.COMPLETED
    record = fanned.runs.get(business_date)
    assert record is not None and record.status is RunStatus.COMPLETED
    assert book(fanned) == book(clean)
    assert fanned.store.cases.keys() == clean.store.cases.keys()
    assert Counter(e.action for e in fanned.entries()) == Counter(e.action for e in clean.entries())
    assert counts(record) == counts(clean_result.record)


def test_the_coordinator_plans_and_hands_the_unfinished_segments_over_by_phase(clk: FixedClock) -> None:
    fanned, _clean, double = watch_worlds(clk)
    result = fanned.run(LATER)
    assert result.outcome is RunOutcome.FANNED_OUT
    assert result.record is not None and result.record.status is RunStatus.RUNNING and result.record.mode == "watch"
    [plan] = double.started
    assert (plan.business_date, plan.run_id) == (LATER, result.record.run_id)
    # Every planned segment in exactly one share, each share within one phase, the phases in order.
    planned = [segment for phase in plan.phases for share in phase for segment in share]
    assert sorted(planned) == sorted(result.record.segments) and len(set(planned)) == len(planned)
    assert [bool(phase) for phase in plan.phases] == [True, True, False]  # this world queues no reminders
    for phase, kinds, size in zip(plan.phases, PHASES, SHARE_SIZES, strict=True):
        assert all(1 <= len(share) <= size and {s.kind for s in share} <= kinds for share in phase)
    # Nothing was worked yet, and a second invocation while the execution runs is refused by the lease.
    assert counts(result.record) == (0, 0, 0, 0)
    assert fanned.run(LATER).outcome is RunOutcome.IN_PROGRESS


def test_shares_keep_only_the_unfinished_segments_in_phase_order() -> None:
    segments = [Segment.pending(1), Segment.watch(LATER, 2), Segment.scan(0, 2), Segment.pending(0)]
    plan = shares(LATER, "run-1", segments)
    assert plan.phases == (
        ((Segment.scan(0, 2),), (Segment.watch(LATER, 2),)),
        ((Segment.pending(0),), (Segment.pending(1),)),
        (),
    )


def test_a_fanned_out_run_ends_as_a_run_in_one_process(clk: FixedClock) -> None:
    fanned, clean, double = watch_worlds(clk)
    assert fanned.run(LATER).outcome is RunOutcome.FANNED_OUT
    settled = execute(fanned, double.started[0])
    assert settled.outcome is RunOutcome.COMPLETED
    assert_same_as_clean(fanned, clean, LATER)
    assert fanned.metrics.counted("DpdRunSucceeded") == 2
    assert fanned.completed == [YESTERDAY, LATER]
    # Settling again (the state machine retrying its last step) changes nothing.
    assert fanned.job.settle(LATER, double.started[0].run_id).outcome is RunOutcome.ALREADY_COMPLETED
    assert fanned.metrics.counted("DpdRunSucceeded") == 2


def test_a_full_scan_fans_out_too(clk: FixedClock) -> None:
    fanned, clean = World(clk), World(clk)
    for w in (fanned, clean):
        small_book(w)
    double = StateMachineDouble()
    fanned.job.dispatcher = double
    assert fanned.run(YESTERDAY).outcome is RunOutcome.FANNED_OUT
    [plan] = double.started
    assert {s.kind for share in plan.phases[0] for s in share} == {SegmentKind.SCAN}
    assert execute(fanned, plan).outcome is RunOutcome.COMPLETED
    assert_same_as_clean(fanned, clean, YESTERDAY)


# --- the guard ------------------------------------------------------------------------------------------


def first_share(world: World, double: StateMachineDouble) -> WorkItem:
    plan = double.started[-1]
    return WorkItem(plan.business_date, plan.run_id, plan.phases[0][0])


def test_a_segment_claimed_by_a_live_worker_is_busy_for_another(clk: FixedClock) -> None:
    fanned, _clean, double = watch_worlds(clk)
    fanned.run(LATER)
    item = first_share(fanned, double)
    now = clock.now_epoch()
    fanned.runs.claim(LATER, item.run_id, item.segments, "first", now, LEASE_SECONDS)
    # Step Functions retries the share while its first attempt still holds it: left alone.
    assert fanned.job.work(item, no_time_left) is WorkOutcome.BUSY
    with pytest.raises(SegmentBusy):
        fanned.runs.claim(LATER, item.run_id, item.segments, "second", now + LEASE_SECONDS, LEASE_SECONDS)
    # Once the claim has run out, the retry takes it; the first worker's next checkpoint is refused.
    taken = fanned.runs.claim(LATER, item.run_id, item.segments, "second", now + LEASE_SECONDS + 1, LEASE_SECONDS)
    with pytest.raises(LostLease):
        fanned.runs.checkpoint(LATER, item.run_id, {item.segments[0]: taken.segments[item.segments[0]]}, 0, "first")
    # A worker lets its claims go when it stops, so the next invocation of its share need not wait.
    fanned.runs.release_claims(LATER, item.run_id, item.segments, "second")
    assert fanned.job.work(item, lambda: 900_000) is WorkOutcome.DONE


def test_a_worker_of_an_attempt_that_was_taken_over_stops_without_writing(clk: FixedClock) -> None:
    fanned, _clean, double = watch_worlds(clk)
    fanned.run(LATER)
    stale = first_share(fanned, double)
    clk.advance(seconds=LEASE_SECONDS + 1)  # the execution died: nothing renewed the run's lease
    assert fanned.run(LATER, trigger="ops").outcome is RunOutcome.FANNED_OUT
    assert len(double.started) == 2 and double.started[1].run_id != stale.run_id
    saves = fanned.store.saves
    assert fanned.job.work(stale, no_time_left) is WorkOutcome.STOPPED
    assert fanned.store.saves == saves
    # Its settle step leaves the run to the attempt that has it.
    assert fanned.job.settle(LATER, stale.run_id).outcome is RunOutcome.IN_PROGRESS


def test_a_worker_killed_mid_page_is_carried_on_by_the_retry_from_its_checkpoint(clk: FixedClock) -> None:
    fanned, clean, double = watch_worlds(clk)
    fanned.run(LATER)
    plan = double.started[0]
    died: list[WorkItem] = []

    def worker(item: WorkItem) -> WorkOutcome:
        if died or not any(s.kind is SegmentKind.WATCH for s in item.segments):
            return fanned.job.work(item, no_time_left)
        saves = fanned.store.saves

        def before_save(_loan: object) -> None:
            if fanned.store.saves >= saves + 1:
                raise Killed()  # dies after one loan of the page is written: no checkpoint, no release

        fanned.store.before_save = before_save
        try:
            return fanned.job.work(item, lambda: 900_000)  # a share with fewer than two loans finishes
        except Killed:
            died.append(item)
        finally:
            heal(fanned)
        # The state machine's retry: the dead worker's claim holds until its lease runs out (BUSY, wait).
        return fanned.job.work(item, no_time_left)

    assert execute(fanned, plan, worker).outcome is RunOutcome.COMPLETED
    assert died, "a worker died in the middle of a page"
    assert_same_as_clean(fanned, clean, LATER)


def test_the_kill_switch_turned_off_mid_run_stops_the_workers_and_skips_the_run_for_later(clk: FixedClock) -> None:
    fanned, clean, double = watch_worlds(clk)
    fanned.run(LATER)
    plan = double.started[0]
    first = WorkItem(LATER, plan.run_id, plan.phases[0][0])
    assert fanned.job.work(first, lambda: 900_000) is WorkOutcome.DONE
    fanned.flags.set(FlagName.CRON_ENABLED.value, False)
    assert fanned.job.work(WorkItem(LATER, plan.run_id, plan.phases[0][1]), no_time_left) is WorkOutcome.STOPPED
    settled = execute(fanned, plan)
    assert settled.outcome is RunOutcome.SKIPPED
    assert settled.record is not None and settled.record.status is RunStatus.SKIPPED
    # Back on: the next attempt keeps the plan and the checkpoints, and ends as a clean run.
    fanned.flags.set(FlagName.CRON_ENABLED.value, True)
    assert fanned.run(LATER).outcome is RunOutcome.FANNED_OUT
    resumed = double.started[-1]
    assert first.segments[0] not in {s for phase in resumed.phases for share in phase for s in share}
    assert execute(fanned, resumed).outcome is RunOutcome.COMPLETED
    assert_same_as_clean(fanned, clean, LATER)


def test_a_share_invoked_past_the_bound_fails_the_run_with_a_clear_error(clk: FixedClock) -> None:
    fanned = World(clk, page_size=1)
    small_book(fanned)
    double = StateMachineDouble()
    fanned.job.dispatcher = double
    assert fanned.run(YESTERDAY).outcome is RunOutcome.FANNED_OUT  # a full scan: several loans a segment
    plan = double.started[0]
    share = max(
        (share for share in plan.phases[0]),
        key=lambda share: len(fanned.store.scan_segment(share[0].index, share[0].total, None)[0]),
    )
    item = WorkItem(YESTERDAY, plan.run_id, share, continuations=MAX_CONTINUATIONS)
    # No time: one page, and work is left after it; the share has had its last invocation.
    assert fanned.job.work(item, no_time_left) is WorkOutcome.STOPPED
    record = fanned.runs.get(YESTERDAY)
    assert record is not None and record.status is RunStatus.FAILED
    assert record.last_error is not None and f"handed over {MAX_CONTINUATIONS} times" in record.last_error
    assert not record.segments[share[0]].done
    assert fanned.job.settle(YESTERDAY, item.run_id).outcome is RunOutcome.FAILED
    assert fanned.metrics.counted("DpdRunFailed") == 1


def test_a_worker_that_kept_failing_fails_the_run_with_its_message(clk: FixedClock) -> None:
    fanned, clean, double = watch_worlds(clk)
    fanned.run(LATER)
    plan = double.started[0]
    settled = fanned.job.settle(LATER, plan.run_id, "UNAVAILABLE: the database is not answering")
    assert settled.outcome is RunOutcome.FAILED
    assert settled.record is not None and settled.record.last_error == "UNAVAILABLE: the database is not answering"
    # The next attempt resumes it.
    assert fanned.run(LATER).outcome is RunOutcome.FANNED_OUT
    assert execute(fanned, double.started[-1]).outcome is RunOutcome.COMPLETED
    assert_same_as_clean(fanned, clean, LATER)


def test_settling_with_segments_left_fails_the_run(clk: FixedClock) -> None:
    fanned, _clean, double = watch_worlds(clk)
    fanned.run(LATER)
    settled = fanned.job.settle(LATER, double.started[0].run_id)
    assert settled.outcome is RunOutcome.FAILED
    assert settled.record is not None and settled.record.last_error is not None
    assert "segments still to do" in settled.record.last_error


def test_a_run_whose_work_is_all_done_completes_even_if_the_switch_went_off_at_the_end(clk: FixedClock) -> None:
    fanned, clean, double = watch_worlds(clk)
    fanned.run(LATER)
    plan = double.started[0]
    for phase in plan.phases:
        for share in phase:
            assert fanned.job.work(WorkItem(LATER, plan.run_id, share), lambda: 900_000) is WorkOutcome.DONE
    fanned.flags.set(FlagName.CRON_ENABLED.value, False)
    assert fanned.job.settle(LATER, plan.run_id).outcome is RunOutcome.COMPLETED
    assert_same_as_clean(fanned, clean, LATER)


def test_a_later_phase_never_runs_before_an_earlier_one_is_done(clk: FixedClock) -> None:
    # The state machine moves to the next phase once every worker of one has stopped, done or not (the
    # switch turned off and on again): a later phase's worker must then refuse to work.
    fanned, clean, double = watch_worlds(clk)
    fanned.run(LATER)
    plan = double.started[0]
    before = book(fanned)
    for later_phase in plan.phases[1:]:
        for share in later_phase:
            assert fanned.job.work(WorkItem(LATER, plan.run_id, share), no_time_left) is WorkOutcome.STOPPED
    assert book(fanned) == before
    record = fanned.runs.get(LATER)
    assert record is not None and not any(state.done for state in record.segments.values())
    # Its claims were let go: the phases, in order, finish the run as one process would.
    assert execute(fanned, plan).outcome is RunOutcome.COMPLETED
    assert_same_as_clean(fanned, clean, LATER)


def test_a_run_is_finished_once_however_many_settle_steps_race(clk: FixedClock) -> None:
    fanned, _clean, double = watch_worlds(clk)
    fanned.run(LATER)
    plan = double.started[0]
    succeeded = fanned.metrics.counted("DpdRunSucceeded")
    assert execute(fanned, plan).outcome is RunOutcome.COMPLETED
    # A second settle step that read the run while it was still RUNNING gets to finish it only now.
    with pytest.raises(LostLease):
        fanned.runs.finish(LATER, plan.run_id, RunStatus.COMPLETED, "later")
    with pytest.raises(LostLease):
        fanned.runs.finish(LATER, plan.run_id, RunStatus.FAILED, "later", error="a late worker's bound")
    record = fanned.runs.get(LATER)
    assert record is not None and record.status is RunStatus.COMPLETED and record.last_error is None
    assert fanned.metrics.counted("DpdRunSucceeded") == succeeded + 1
