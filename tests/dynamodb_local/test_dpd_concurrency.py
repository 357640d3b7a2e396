"""Concurrent invocations of the day-end run, a payment during a run, and an invocation that outlives its
lease (docs/day-end.md: a concurrent run reports IN_PROGRESS; exactly once per date; ``dpd_as_of`` never moves
backwards). Every actor is its own process (``processes``: its own clock, pinned to ``RUN_AT``; its own moto
for SSM, where no flag is set, so all are on) against one DynamoDB Local.

The book, the reference (one clean run) and the comparison are those of ``test_dpd_crash``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.adapters.dynamodb import delinquency as delinquency_adapter
from chalicelib.adapters.dynamodb.models import DpdRunModel, LoanModel
from chalicelib.clock import FixedClock, use_clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import dpd_on
from chalicelib.domain.payment import PaymentMode
from chalicelib.domain.runs import RunOutcome, RunStatus
from chalicelib.services.context import RequestContext
from chalicelib.services.day_end import LEASE_SECONDS
from chalicelib.services.payments import NewPayment
from chalicelib.wiring import services
from tests.dynamodb_local import processes
from tests.dynamodb_local.test_dpd_crash import (
    PAGE_SIZE,
    RUN_AT,
    RUN_DATE,
    Bench,
    assert_same,
    outcome,
    own_stack,
    prepare,
    run_job,
    save_tables,
    without_times,
)
from tests.moto_speedups import mock_aws_beside

pytestmark = pytest.mark.dynamodb_local

_benches = itertools.count()
WAIT = 120.0
"""Seconds any process waits for another before giving up (a hang becomes a failure, not a stuck suite)."""


@pytest.fixture(scope="module")
def bench(dynamodb_local: str) -> Iterator[Bench]:
    # A worker can set the module up again after other modules; each setup gets tables of its own.
    stage = f"conc{os.getpid() % 10000}x{next(_benches)}"
    with own_stack(dynamodb_local, stage):
        yield prepare(stage, "scan")


def _env(stage: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
    env["STAGE"] = stage
    return env


def _in_process(env: dict[str, str], at: str, body: Callable[[], None]) -> None:
    """The common frame of every worker: its environment, a fixed clock, small pages, SSM in moto."""
    os.environ.update(env)
    delinquency_adapter.PAGE_SIZE = PAGE_SIZE
    with mock_aws_beside(env["AWS_ENDPOINT_URL_DYNAMODB"]), use_clock(FixedClock(dt.datetime.fromisoformat(at))):
        services().runs.get(RUN_DATE)  # connections up before any race starts
        body()


def collect(out: Any, procs: list[Any], count: int) -> list[Any]:
    """``count`` reports from ``out``; fails at once if a worker dies instead of reporting."""
    reports: list[Any] = []
    deadline = time.monotonic() + 3 * WAIT
    while len(reports) < count:
        try:
            reports.append(out.get(timeout=0.5))
        except queue.Empty:
            dead = [(p.name, p.exitcode) for p in procs if p.exitcode not in (None, 0)]
            assert not dead, f"a worker died with {dead} before reporting"
            assert time.monotonic() < deadline, "the workers did not report in time"
    for p in procs:
        p.join(WAIT)
        assert p.exitcode == 0
    return reports


def _register(model: Any, event: str, handler: Callable[..., Any]) -> None:
    model._get_connection().connection.client.meta.events.register(event, handler)


# ------------------------------------------------------------------------------------- racing invocations


def _racer(env: dict[str, str], at: str, index: int, others: int, barrier: Any, returned: Any, out: Any) -> None:
    def body() -> None:
        passed = threading.Event()

        def hold(**_kwargs: Any) -> None:
            # Whoever got the run writes no loan until every other invocation has returned, so all of them
            # met a live run: none can have come late enough to find it COMPLETED.
            if passed.is_set():
                return
            deadline = time.monotonic() + WAIT
            while returned.value < others and time.monotonic() < deadline:
                time.sleep(0.01)
            passed.set()

        _register(LoanModel, "before-call.dynamodb.TransactWriteItems", hold)
        barrier.wait(timeout=WAIT)
        result = services().dpd_job.run(RUN_DATE, trigger=f"racer-{index}")
        with returned.get_lock():
            returned.value += 1
        out.put((index, result.outcome.value))

    _in_process(env, at, body)


@pytest.mark.parametrize("invocations", [2, 4])
def test_concurrent_invocations_for_one_date_one_runs_the_others_report_in_progress(
    bench: Bench, invocations: int
) -> None:
    """All released together by a barrier, so every acquire races; exactly one takes the run. The winner is
    held before its first loan write until the others have returned, which makes IN_PROGRESS (not
    ALREADY_COMPLETED) the only right answer for them, whatever the scheduling."""
    bench.reset()
    ctx = processes.context()
    barrier, returned, out = ctx.Barrier(invocations), ctx.Value("i", 0), ctx.Queue()
    procs = [
        ctx.Process(
            target=_racer,
            args=(_env(bench.stage), RUN_AT.isoformat(), i, invocations - 1, barrier, returned, out),
            name=f"racer-{i}",
        )
        for i in range(invocations)
    ]
    for p in procs:
        p.start()
    results = dict(collect(out, procs, invocations))
    outcomes = sorted(results.values())
    assert outcomes == [RunOutcome.COMPLETED.value] + [RunOutcome.IN_PROGRESS.value] * (invocations - 1)

    winner = next(i for i, o in results.items() if o == RunOutcome.COMPLETED.value)
    record = services().runs.get(RUN_DATE)
    assert record is not None and record.trigger == f"racer-{winner}" and record.errors == 0
    assert_same(outcome(bench.stage), bench.clean, f"{invocations} racing invocations")

    # A late delivery for the date changes nothing.
    done = save_tables(bench.stage)
    assert run_job().outcome is RunOutcome.ALREADY_COMPLETED
    assert save_tables(bench.stage) == done


# ------------------------------------------------------------------------------------ a payment mid-run

PAYER = RequestContext(actor=Actor("manager1", "manager"))


@dataclass(frozen=True)
class Paid:
    """A loan paid its oldest instalment during the run, and what it must show for the run date after."""

    loan_id: str
    dpd: int
    bucket: str
    classification: str
    npa_since: dt.date | None


PAID = [
    # Oldest instalment due 8 Feb: dpd 31 on the run date without the payment; with it, 8 March is the
    # oldest unpaid: dpd 3.
    Paid("cross-31-03", 3, "1-30", "SMA-0", None),
    # Oldest due 10 Dec: dpd 91 at the end of the run date, so NPA from it, paid or not the next morning
    # (the payment clears only the oldest instalment; three are overdue): NPA stays, dpd 60.
    Paid("cross-91-02", 60, "31-60", "NPA", RUN_DATE),
]


def _job_pausing_at(
    env: dict[str, str], at: str, loan_id: str, phase: str, reached: Any, resume: Any, out: Any
) -> None:
    """Run the job; at the first transaction writing ``loan_id`` (``before`` it is sent: the job read the
    loan before the payment; ``after`` it committed), signal ``reached`` and wait for ``resume``."""

    def body() -> None:
        paused = threading.Event()

        def mark(params: dict[str, Any], context: dict[str, Any], **_kwargs: Any) -> None:
            items = [entry.get("Put", {}).get("Item", {}) for entry in params.get("TransactItems", [])]
            if any(item.get("loan_id", {}).get("S") == loan_id and "schedule" in item for item in items):
                context["paused_loan"] = True

        def pause(context: dict[str, Any], **_kwargs: Any) -> None:
            if context.get("paused_loan") and not paused.is_set():
                paused.set()
                reached.set()
                assert resume.wait(WAIT)

        _register(LoanModel, "before-parameter-build.dynamodb.TransactWriteItems", mark)
        _register(LoanModel, f"{phase}-call.dynamodb.TransactWriteItems", pause)
        try:
            result = services().dpd_job.run(RUN_DATE, trigger="job")
        finally:
            reached.set()  # never leave the payer waiting
        out.put(("job", result.outcome.value, paused.is_set()))

    _in_process(env, at, body)


def _payer(env: dict[str, str], at: str, loan_id: str, amount: int, reached: Any, resume: Any, out: Any) -> None:
    def body() -> None:
        try:
            assert reached.wait(WAIT)
            posted = services().payments.post(
                PAYER,
                NewPayment(
                    loan_id,
                    f"UTR{loan_id.replace('-', '').upper()}",
                    amount,
                    dt.date.fromisoformat(at[:10]),
                    PaymentMode.UPI,
                ),
            )
            out.put(("payment", posted.payment.payment_id, None))
        finally:
            resume.set()  # never leave the job waiting

    _in_process(env, at, body)


@pytest.mark.parametrize("paid", PAID, ids=lambda p: p.loan_id)
@pytest.mark.parametrize("phase", ["before", "after"])
def test_a_payment_posted_while_the_run_is_in_progress_is_not_lost(bench: Bench, phase: str, paid: Paid) -> None:
    """``before``: the job read the loan, the payment commits, then the job's write of its stale copy
    meets the version check and the job evaluates the loan again. ``after``: the job wrote the loan, then
    the payment re-evaluates it. Either way the loan ends with the payment applied and its delinquency as
    of the run date with the payment counted; every other loan is as in a clean run.

    Escalation is the one thing the order decides: the day-end counts every payment posted so far
    (docs/day-end.md), so a payment posted before the run reaches a loan at dpd 90+ can bring it below
    90 first, and an escalation is for good once made."""
    bench.reset()
    loans = services().loans.loans
    before = loans.get(paid.loan_id)
    assert before is not None
    amount = before.schedule[0].due_paise

    ctx = processes.context()
    reached, resume, out = ctx.Event(), ctx.Event(), ctx.Queue()
    env, at = _env(bench.stage), RUN_AT.isoformat()
    procs = [
        ctx.Process(target=_job_pausing_at, args=(env, at, paid.loan_id, phase, reached, resume, out), name="job"),
        ctx.Process(target=_payer, args=(env, at, paid.loan_id, amount, reached, resume, out), name="payer"),
    ]
    for p in procs:
        p.start()
    results = {kind: (value, extra) for kind, value, extra in collect(out, procs, 2)}
    assert results["job"] == (RunOutcome.COMPLETED.value, True), "the job ran, and paused at the loan"

    # The payment is there, once, and on the loan.
    payment = services().payments.payments.get(results["payment"][0])
    assert payment is not None and payment.loan_id == paid.loan_id and payment.amount_paise == amount
    after = loans.get(paid.loan_id)
    assert after is not None
    assert sum(i.paid_paise for i in after.schedule) == amount
    assert after.schedule[0].is_settled and not after.schedule[1].is_settled

    # Its delinquency is the run date's, with the payment counted; never behind the run date.
    d = after.delinquency
    assert d.as_of == RUN_DATE
    assert d.dpd == dpd_on(after.schedule, RUN_DATE) == paid.dpd
    assert (d.bucket.value, d.classification.value, d.npa_since) == (paid.bucket, paid.classification, paid.npa_since)

    # Everything else is as in a clean run; the job counted (and escalated) the loan only if it wrote it.
    result = outcome(bench.stage)
    others = {k: v for k, v in result.loans.items() if k != paid.loan_id}
    assert others == {k: v for k, v in bench.clean.loans.items() if k != paid.loan_id}
    assert {k: v for k, v in result.cases.items() if k != paid.loan_id} == {
        k: v for k, v in bench.clean.cases.items() if k != paid.loan_id
    }
    job_wrote = after.last_job_date == RUN_DATE
    assert job_wrote == (phase == "after")
    escalated_before = paid.loan_id in bench.clean.cases
    escalated = after.legal_escalated
    assert escalated == (escalated_before and job_wrote)
    assert (paid.loan_id in result.cases) == escalated == ((paid.loan_id, "LEGAL_ESCALATED") in result.audits)
    expected = dict(
        bench.clean.counts,
        updated=bench.clean.counts["updated"] - (0 if job_wrote else 1),
        escalated=bench.clean.counts["escalated"] - (1 if escalated_before and not escalated else 0),
    )
    assert result.counts == expected

    # A second delivery changes nothing, the paid loan included.
    assert run_job().outcome is RunOutcome.ALREADY_COMPLETED
    assert loans.get(paid.loan_id) == after


# ------------------------------------------------------------------------ an invocation that outlives its lease


def _sleeper(env: dict[str, str], at: str, wake_after: int, asleep: Any, wake: Any, out: Any) -> None:
    """Run the job, and after the ``wake_after``-th loan write commits, stop every thread at its next
    DynamoDB call until ``wake`` (a Lambda frozen, or stuck on the network, past its lease)."""

    def body() -> None:
        writes = 0
        lock = threading.Lock()
        stopped = threading.Event()

        def count(**_kwargs: Any) -> None:
            nonlocal writes
            with lock:
                writes += 1
                if writes == wake_after:
                    stopped.set()
                    asleep.set()

        def stall(**_kwargs: Any) -> None:
            if stopped.is_set():
                assert wake.wait(WAIT)

        _register(LoanModel, "after-call.dynamodb.TransactWriteItems", count)
        for model in (LoanModel, DpdRunModel):
            _register(model, "before-call.dynamodb", stall)
        result = services().dpd_job.run(RUN_DATE, trigger="sleeper")
        out.put(result.outcome.value)

    _in_process(env, at, body)


def test_an_invocation_that_outlived_its_lease_stops_without_undoing_the_takeover(bench: Bench) -> None:
    bench.reset()
    ctx = processes.context()
    asleep, wake, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(
        target=_sleeper,
        args=(_env(bench.stage), RUN_AT.isoformat(), bench.loan_writes // 3, asleep, wake, out),
        name="sleeper",
    )
    proc.start()
    try:
        assert asleep.wait(WAIT)
        assert run_job(RUN_AT + dt.timedelta(seconds=30)).outcome is RunOutcome.IN_PROGRESS
        takeover = run_job(RUN_AT + dt.timedelta(seconds=LEASE_SECONDS + 1))
        assert takeover.outcome is RunOutcome.COMPLETED
    finally:
        wake.set()
    assert collect(out, [proc], 1) == [RunOutcome.IN_PROGRESS.value], "it found its lease lost and stopped"
    record = services().runs.get(RUN_DATE)
    assert record is not None and record.status is RunStatus.COMPLETED and record.trigger == "test"
    assert_same(outcome(bench.stage, later_clock=True), without_times(bench.clean), "woke after the takeover")
