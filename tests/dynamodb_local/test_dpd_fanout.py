"""One business date fanned out over several worker processes against one DynamoDB Local, with one worker
killed in the middle of a page, ends in exactly the state of a run in one process (docs/day-end.md,
"Fan-out"): every loan item, the legal cases, the job's audit entries, the dashboard's counters, the
reminders queued, and the run record's status and counts.

The book is ``test_dpd_crash``'s, built twice in two stages of its own: one is run in one process (the
reference), the other fanned out. The coordinator is this process (its dispatcher stands in for the
state machine and keeps the plan); each phase's shares go to a queue that three worker processes drain,
each invoking ``DayEndService.work`` on a share until it is no longer MORE, as the state machine does.
In the first phase one of them dies (``os._exit``, no clean-up) right after it wrote the first loan of
a page of two or more, holding its share's claim. A retry of that share at the same instant is refused
(BUSY); the state machine's retry once the claim has run out (a later clock) carries the share on from
its page claim. The phases run in order, then the settle step completes the run here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import queue
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.adapters.dynamodb import delinquency as delinquency_adapter
from chalicelib.clock import FixedClock, use_clock
from chalicelib.domain.runs import FanOut, RunOutcome, RunStatus, Segment, WorkItem, WorkOutcome
from chalicelib.services.day_end import LEASE_SECONDS, DayEndService
from chalicelib.wiring import services
from tests.dynamodb_local import processes
from tests.dynamodb_local.test_dpd_crash import (
    BASELINE_DATE,
    PAGE_SIZE,
    RUN_AT,
    RUN_DATE,
    Outcome,
    assert_audit_chains,
    assert_same,
    build_book,
    ddb,
    outcome,
    own_stack,
    set_flag,
    table_name,
    without_times,
)
from tests.moto_speedups import mock_aws_beside

pytestmark = pytest.mark.dynamodb_local

WORKERS = 3
DIED = 23
WAIT = 180.0
_stages = itertools.count()
RETRY_AT = RUN_AT + dt.timedelta(seconds=LEASE_SECONDS + 1)
"""When the state machine's retry of the dead worker's share finds its claim run out."""
SETTLE_AT = RETRY_AT + dt.timedelta(seconds=5)


class StateMachineDouble:
    """The coordinator's dispatcher: fanning out succeeds, and the plan is kept for the test to execute."""

    def __init__(self) -> None:
        self.plans: list[FanOut] = []

    def start(self, request: object) -> bool:
        return False

    def hand_on(self, request: object) -> bool:
        return False

    def fan_out(self, plan: FanOut) -> bool:
        self.plans.append(plan)
        return True


def prepare_book(stage: str, plan: str) -> None:
    """The book, and for ``watch`` a completed run for the day before (escalation off then), the night
    before."""
    build_book()
    if plan == "watch":
        set_flag(stage, "ESCALATION_ENABLED", "false")
        # A night earlier: its audit entries come before the run's by audit id (a ULID: time, then random)
        # whichever process writes the run's, so every loan's trail reads in order.
        with use_clock(FixedClock(RUN_AT - dt.timedelta(days=1))):
            assert services().dpd_job.run(BASELINE_DATE, trigger="baseline").outcome is RunOutcome.COMPLETED
        set_flag(stage, "ESCALATION_ENABLED", "true")


def raw_table(stage: str, short: str, keys: tuple[str, ...], drop: frozenset[str] = frozenset()) -> dict[Any, Any]:
    items = {}
    for page in ddb().get_paginator("scan").paginate(TableName=table_name(stage, short), ConsistentRead=True):
        for item in page["Items"]:
            items[tuple(item[k]["S"] for k in keys)] = {a: v for a, v in item.items() if a not in drop}
    return items


def counter_totals(stage: str) -> dict[str, dict[str, int]]:
    """The dashboard's counters per scope, summed over their shards (a write picks a shard at random)."""
    totals: dict[str, dict[str, int]] = {}
    for (pk,), item in raw_table(stage, "aggregates", ("pk",)).items():
        scope = totals.setdefault(pk.rsplit("#", 1)[0], {})
        for name, value in item.items():
            if "N" in value and name not in ("shard", "writes"):
                scope[name] = scope.get(name, 0) + int(value["N"])
    return totals


@dataclasses.dataclass
class Final:
    outcome: Outcome
    counters: dict[str, dict[str, int]]
    """The dashboard's counters (the aggregates table), per scope."""
    reminders: dict[Any, Any]
    reminders_queued: int


def final_state(stage: str, later_clock: bool) -> Final:
    assert_audit_chains(stage)
    record = services().runs.get(RUN_DATE)
    assert record is not None
    times = frozenset({"created_at", "updated_at", "queued_at"}) if later_clock else frozenset()
    return Final(
        outcome(stage, later_clock=later_clock),
        counter_totals(stage),
        raw_table(stage, "reminders", ("loan_id", "reminder_key"), times),
        record.reminders_queued,
    )


# ---------------------------------------------------------------------------------------------- workers


def _share(item: WorkItem) -> list[str]:
    return [str(segment) for segment in item.segments]


def _work_share(job: DayEndService, item: WorkItem, out: Any) -> None:
    """What one Map iteration does: the worker invoked again while it answers MORE (each invocation with
    no time to spare: one page per segment, then it stops)."""
    while True:
        worked = job.work(item, lambda: 0)
        out.put(("worked", os.getpid(), _share(item), worked.value))
        if worked is not WorkOutcome.MORE:
            return
        item = dataclasses.replace(item, continuations=item.continuations + 1)


def _worker(env: dict[str, str], at: str, shares: Any, out: Any, doomed: bool) -> None:
    """Take shares from the queue until it is empty. ``doomed``: die right after writing the first loan of
    a page of two or more loans (its page claim is in the run record; the rest of the page is not)."""
    os.environ.update(env)
    delinquency_adapter.PAGE_SIZE = PAGE_SIZE
    with mock_aws_beside(env["AWS_ENDPOINT_URL_DYNAMODB"]), use_clock(FixedClock(dt.datetime.fromisoformat(at))):
        job = services().dpd_job
        if doomed:
            page = {"loans": 0, "saved": 0}
            next_page, save = job._next_page, job.store.save_evaluation

            def noting(*args: Any) -> Any:
                loans, cursor = next_page(*args)
                page.update(loans=len(loans), saved=0)
                return loans, cursor

            def dying(*args: Any) -> None:
                save(*args)
                page["saved"] += 1
                if page["loans"] >= 2 and page["saved"] == 1:
                    out.put(("dying", os.getpid(), None, None))
                    out.close()
                    out.join_thread()  # the report reaches the test before the process is gone
                    os._exit(DIED)

            job._next_page = noting  # type: ignore[method-assign]
            job.store.save_evaluation = dying  # type: ignore[method-assign]
        while True:
            try:
                business_date, run_id, segments = shares.get(timeout=0.5)
            except queue.Empty:
                return
            item = WorkItem(dt.date.fromisoformat(business_date), run_id, tuple(Segment.parse(s) for s in segments))
            out.put(("took", os.getpid(), segments, None))
            _work_share(job, item, out)


def _retry(env: dict[str, str], at: str, share: tuple[str, str, list[str]], out: Any) -> None:
    os.environ.update(env)
    delinquency_adapter.PAGE_SIZE = PAGE_SIZE
    business_date, run_id, segments = share
    with mock_aws_beside(env["AWS_ENDPOINT_URL_DYNAMODB"]), use_clock(FixedClock(dt.datetime.fromisoformat(at))):
        item = WorkItem(dt.date.fromisoformat(business_date), run_id, tuple(Segment.parse(s) for s in segments))
        _work_share(services().dpd_job, item, out)


def _drain(out: Any) -> list[tuple[str, int, list[str] | None, str | None]]:
    reports = []
    while True:
        try:
            reports.append(out.get(timeout=0.2))
        except queue.Empty:
            return reports


def loans_in(job: DayEndService, segment: Segment) -> int:
    count, cursor = 0, None
    while True:
        loans, cursor = job._fetch(segment, cursor)
        count += len(loans)
        if cursor is None:
            return count


def run_phase(env: dict[str, str], phase: list[tuple[str, str, list[str]]], doomed: bool) -> list[Any]:
    """Every share of one phase through ``WORKERS`` processes (the first ``doomed`` if asked); the reports."""
    ctx = processes.context()
    shares, out = ctx.Queue(), ctx.Queue()
    for share in phase:
        shares.put(share)
    procs = [
        ctx.Process(target=_worker, args=(env, RUN_AT.isoformat(), shares, out, doomed and n == 0))
        for n in range(WORKERS)
    ]
    reports: list[Any] = []
    deadline = time.monotonic() + WAIT
    procs[0].start()
    if doomed:  # the doomed worker takes the first share (the one with the most loans) before the others start
        while not any(r[0] == "took" for r in reports):
            assert time.monotonic() < deadline and procs[0].is_alive(), reports
            reports += _drain(out)
    for proc in procs[1:]:
        proc.start()
    while any(proc.is_alive() for proc in procs):
        assert time.monotonic() < deadline, "the workers did not finish in time"
        reports += _drain(out)
    for proc in procs:
        proc.join(WAIT)
    reports += _drain(out)
    expected = [DIED if doomed and n == 0 else 0 for n in range(WORKERS)]
    assert [proc.exitcode for proc in procs] == expected, reports
    return reports


# ------------------------------------------------------------------------------------------------- test


@pytest.fixture(params=["watch", "scan"])
def plan(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reference(plan: str, dynamodb_local: str) -> Iterator[Final]:
    stage = f"fan{os.getpid() % 10000}x{next(_stages)}{plan}one"
    with own_stack(dynamodb_local, stage):
        prepare_book(stage, plan)
        with use_clock(FixedClock(RUN_AT)):
            result = services().dpd_job.run(RUN_DATE, trigger="test")
        assert result.outcome is RunOutcome.COMPLETED
        yield final_state(stage, later_clock=True)


def test_a_date_fanned_out_over_worker_processes_with_one_killed_mid_page_ends_as_one_process_run(
    plan: str, reference: Final, dynamodb_local: str
) -> None:
    stage = f"fan{os.getpid() % 10000}x{next(_stages)}{plan}many"
    with own_stack(dynamodb_local, stage):
        prepare_book(stage, plan)
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
        env["STAGE"] = stage

        # The coordinator: takes the run, plans it, hands it over.
        double = StateMachineDouble()
        job = services().dpd_job
        job.dispatcher = double
        with use_clock(FixedClock(RUN_AT)):
            started = job.run(RUN_DATE, trigger="test")
        assert started.outcome is RunOutcome.FANNED_OUT and started.record is not None
        assert started.record.mode == plan
        [fan_out] = double.plans
        phases = [
            [(RUN_DATE.isoformat(), fan_out.run_id, [str(s) for s in share]) for share in phase]
            for phase in fan_out.phases
        ]
        assert len(phases[0]) >= WORKERS
        # The share with the most loans first: the doomed worker takes it, and dies in one of its pages.
        phases[0].sort(key=lambda share: -sum(loans_in(job, Segment.parse(s)) for s in share[2]))

        # First phase, with one worker dying mid-page; the others take every other share.
        reports = run_phase(env, phases[0], doomed=True)
        taken = [r for r in reports if r[0] == "took"]
        dead_pid = next(r[1] for r in reports if r[0] == "dying")
        dead_share = next(tuple(r[2]) for r in reversed(taken) if r[1] == dead_pid)
        finished = {tuple(r[2]) for r in reports if r[0] == "worked" and r[3] == "DONE"}
        assert finished == {tuple(share[2]) for share in phases[0]} - {dead_share}, "the others did the rest"
        record = services().runs.get(RUN_DATE)
        assert record is not None and record.status is RunStatus.RUNNING
        dead = [Segment.parse(s) for s in dead_share]
        if plan == "watch":  # a written loan leaves its watch partition: the page was noted before writing
            assert any(record.segments[s].page for s in dead), "the dead worker's page claim is recorded"

        # The state machine's retry while the claim is live is left alone; once it has run out, it works.
        share = (RUN_DATE.isoformat(), fan_out.run_id, list(dead_share))
        with use_clock(FixedClock(RUN_AT)):
            item = WorkItem(RUN_DATE, fan_out.run_id, tuple(dead))
            assert job.work(item, lambda: 0) is WorkOutcome.BUSY
        ctx = processes.context()
        out = ctx.Queue()
        retry = ctx.Process(target=_retry, args=(env, RETRY_AT.isoformat(), share, out))
        retry.start()
        retry.join(WAIT)
        assert retry.exitcode == 0
        assert _drain(out)[-1][3] == "DONE"

        # The later phases, in order, on healthy workers; then the settle step.
        for phase in phases[1:]:
            if phase:
                reports = run_phase(env, phase, doomed=False)
                assert {r[3] for r in reports if r[0] == "worked"} <= {"DONE", "MORE"}
        with use_clock(FixedClock(SETTLE_AT)):
            settled = job.settle(RUN_DATE, fan_out.run_id)
        assert settled.outcome is RunOutcome.COMPLETED, settled
        record = services().runs.get(RUN_DATE)
        assert record is not None and record.status is RunStatus.COMPLETED and record.errors == 0

        fanned = final_state(stage, later_clock=True)
        assert_same(fanned.outcome, without_times(reference.outcome), f"{plan} fanned out")
        assert fanned.counters == reference.counters, "the dashboard's counters differ"
        assert fanned.reminders == reference.reminders, "the reminders queued differ"
        assert fanned.reminders_queued == reference.reminders_queued
        # Every share was claimed, and every claim let go except the dead worker's, which ran out.
        claims = boto3.client("dynamodb", endpoint_url=dynamodb_local).get_item(
            TableName=table_name(stage, "dpd-runs"), Key={"business_date": {"S": RUN_DATE.isoformat()}}
        )["Item"]["claims"]["M"]
        assert set(claims) == {str(s) for phase in fan_out.phases for share in phase for s in share}
        assert all(claim["M"]["until"]["N"] == "0" for claim in claims.values())
