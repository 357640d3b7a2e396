"""The day-end run fails or dies midway and is run again (docs/day-end.md: a run that crashed midway is
resumed by the next invocation and ends in the same state as an uninterrupted run; no loan is escalated
twice).

A book of about seventy loans is built once per plan; its tables are saved, the job runs cleanly once for
``RUN_DATE`` and that outcome is the reference. Then, for many k, the tables are put back as saved, a
botocore hook fails the k-th call of one kind, the job runs (FAILED), the hook goes, the job runs again (it
must take the FAILED record over and resume from its checkpoints) and the outcome must equal the reference.
``DPD_CRASH_EVERY_K=1`` tries every k instead of a spread of them (first, early, middle, late, last).

Two plans: ``scan`` (no run completed before, so the whole table is scanned) and ``watch`` (a completed run
for the day before exists, so only the loans watched for ``RUN_DATE`` are read; the baseline ran with
``ESCALATION_ENABLED`` off, so the imported NPAs are still pending and escalate on ``RUN_DATE``). Pages are
small (``PAGE_SIZE``) so that segments checkpoint several times and resume from a cursor.

What is compared with the reference (:func:`outcome`):

- every loan item, raw, attribute for attribute, including ``version`` (a loan the job wrote twice would
  show) and ``updated_at`` (all attempts run on one fixed clock); only when an invocation runs on a later
  clock (the lease take-over) is ``updated_at`` left out;
- every legal case except ``case_id`` (a fresh id per attempt; the LEGAL_ESCALATED audit entry must name
  the stored case's id) and, for the take-over only, ``created_at``;
- the job's audit entries per loan and action, by content, leaving out ``audit_id``, ``at`` and ``day``;
- the run record's status and counts (scanned, updated, escalated, pending).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from pynamodb.models import Model

from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb import delinquency as delinquency_adapter
from chalicelib.adapters.dynamodb.models import DpdRunModel, LoanModel
from chalicelib.adapters.dynamodb.sharding import logical_value
from chalicelib.clock import FixedClock, use_clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.loan import Borrower
from chalicelib.domain.runs import RunOutcome, RunStatus, Segment
from chalicelib.services.context import RequestContext
from chalicelib.services.day_end import LEASE_SECONDS, RunResult
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.wiring import services
from infra.provision import provision
from tests.dynamodb_local import processes
from tests.dynamodb_local.faults import Fault, hooked
from tests.moto_speedups import mock_aws_beside

pytestmark = pytest.mark.dynamodb_local

RUN_DATE = dt.date(2026, 3, 10)
BASELINE_DATE = RUN_DATE - dt.timedelta(days=1)
BUILT_AT = dt.datetime(2026, 3, 1, 10, 0, tzinfo=clock.IST)
"""Loans are created on 1 March, so each shows its delinquency as of 28 February."""
RUN_AT = dt.datetime(2026, 3, 11, 1, 0, tzinfo=clock.IST)
"""Half an hour after the scheduled firing that closes ``RUN_DATE``."""
PAGE_SIZE = 3
JOB_ACTOR = "system:dpd_job"
SETUP = RequestContext(actor=Actor("setup", "admin"))
TABLE_KEYS = {
    # What the job (and a payment during it) can change; put back before every attempt.
    "loans": "loan_id",
    "audit": "audit_id",
    "legal-cases": "loan_id",
    "dpd-runs": "business_date",
    "payments": "payment_id",
    "utr-claims": "utr",
}
EVERY_K = os.environ.get("DPD_CRASH_EVERY_K") == "1"
_benches = itertools.count()


def _before(days: int) -> dt.date:
    return RUN_DATE - dt.timedelta(days=days)


GENERATED: list[tuple[str, int, dt.date]] = [
    # kind, how many, first due date (monthly, 12 instalments, nothing paid)
    ("current", 10, RUN_DATE + dt.timedelta(days=5)),
    ("due-next-day", 4, RUN_DATE + dt.timedelta(days=1)),
    ("due-on-run-date", 12, RUN_DATE),  # dpd 1 on the run date: CURRENT -> 1-30
    ("dpd-6", 4, _before(5)),  # fell due after 28 Feb: 1-30 by the run date (scan plan writes it)
    ("cross-31", 8, _before(30)),  # 1-30 -> 31-60 on the run date
    ("mid-45", 4, _before(44)),  # 31-60 on 28 Feb and still on the run date: never written
    ("cross-61", 8, _before(60)),  # 31-60 -> 61-90
    ("reach-90", 6, _before(89)),  # dpd 90: escalated; bucket and classification unchanged
    ("cross-91", 5, _before(90)),  # dpd 91: NPA and escalated
]
IMPORTED_NPA = 7
"""Imported loans overdue since June 2025: NPA from their first day, escalated by the first run with
escalation on."""
ESCALATIONS = 6 + 5 + IMPORTED_NPA


def build_book() -> dict[str, str]:
    """The book, created through the loan service on ``BUILT_AT``; loan id -> kind."""
    kinds: dict[str, str] = {}
    create = services().loans.create
    with use_clock(FixedClock(BUILT_AT)):
        for kind, count, first_due in GENERATED:
            for n in range(count):
                loan_id = f"{kind}-{n:02d}"
                create(
                    SETUP,
                    NewLoan(
                        loan_id=loan_id,
                        borrower=Borrower(f"Borrower {loan_id}", "9876543210"),
                        principal_paise=12_000_000 + 10_000 * n,
                        disbursement_date=first_due - dt.timedelta(days=35),
                        terms=GeneratedTerms(1800, 12, first_due),
                        branch="BLR",
                    ),
                )
                kinds[loan_id] = kind
        for n in range(IMPORTED_NPA):
            loan_id = f"imported-npa-{n:02d}"
            create(
                SETUP,
                NewLoan(
                    loan_id=loan_id,
                    borrower=Borrower(f"Borrower {loan_id}", "9876543210"),
                    principal_paise=6_000_000,
                    disbursement_date=dt.date(2025, 5, 10),
                    imported_schedule=[(dt.date(2025, 6 + m, 15), 1_000_000, 90_000 + n) for m in range(6)],
                    branch="PUNE",
                ),
            )
            kinds[loan_id] = "imported-npa"
    return kinds


# ---------------------------------------------------------------------------------------------- tables


def ddb() -> Any:
    return boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"])


def table_name(stage: str, short: str) -> str:
    return f"loan-crm-{stage}-{short}"


def scan_table(stage: str, short: str) -> dict[str, dict[str, Any]]:
    key = TABLE_KEYS[short]
    items: dict[str, dict[str, Any]] = {}
    for page in ddb().get_paginator("scan").paginate(TableName=table_name(stage, short), ConsistentRead=True):
        for item in page["Items"]:
            items[item[key]["S"]] = item
    return items


Tables = dict[str, dict[str, dict[str, Any]]]


def save_tables(stage: str) -> Tables:
    return {short: scan_table(stage, short) for short in TABLE_KEYS}


def restore_tables(stage: str, saved: Tables) -> None:
    """Put the job's tables back exactly as saved (deleting what was added, rewriting what changed)."""
    client = ddb()
    for short, items in saved.items():
        key = TABLE_KEYS[short]
        current = scan_table(stage, short)
        requests: list[dict[str, Any]] = [
            {"DeleteRequest": {"Key": {key: {"S": k}}}} for k in current if k not in items
        ]
        requests += [{"PutRequest": {"Item": item}} for k, item in items.items() if current.get(k) != item]
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {table_name(stage, short): requests[start : start + 25]}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def set_flag(stage: str, name: str, value: str) -> None:
    boto3.client("ssm").put_parameter(
        Name=f"/loan-crm/{stage}/flags/{name}", Value=value, Type="String", Overwrite=True
    )


# -------------------------------------------------------------------------------------------- outcomes


@dataclasses.dataclass
class Outcome:
    loans: dict[str, dict[str, Any]]
    cases: dict[str, dict[str, Any]]
    audits: dict[tuple[str, str], list[str]]
    status: str
    counts: dict[str, int]

    @property
    def escalated_loans(self) -> set[str]:
        return {loan_id for loan_id, item in self.loans.items() if item.get("legal_escalated", {}).get("BOOL")}


def outcome(stage: str, later_clock: bool = False) -> Outcome:
    """The state the job leaves behind, with what legitimately differs between attempts left out."""
    loan_drop = {"updated_at"} if later_clock else set()
    case_drop = {"case_id", "created_at"} if later_clock else {"case_id"}
    raw_cases = scan_table(stage, "legal-cases")
    audits: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item in scan_table(stage, "audit").values():
        if logical_value(item["actor_sub"]["S"]) != JOB_ACTOR:
            continue
        loan_id, action = item["entity_id"]["S"], logical_value(item["action"]["S"])
        after = json.loads(item["after"]["S"])
        if action == "LEGAL_ESCALATED":
            assert after.pop("case_id") == raw_cases[loan_id]["case_id"]["S"], f"{loan_id}: audit names another case"
        audits[(loan_id, action)].append(json.dumps([json.loads(item["before"]["S"]), after], sort_keys=True))
    record = services().runs.get(RUN_DATE)
    assert record is not None
    return Outcome(
        loans={
            k: {a: v for a, v in item.items() if a not in loan_drop} for k, item in scan_table(stage, "loans").items()
        },
        cases={k: {a: v for a, v in item.items() if a not in case_drop} for k, item in raw_cases.items()},
        audits={key: sorted(entries) for key, entries in audits.items()},
        status=record.status.value,
        counts={
            "scanned": record.loans_scanned,
            "updated": record.loans_updated,
            "escalated": record.escalated,
            "pending": record.pending_escalation,
        },
    )


def assert_same(actual: Outcome, clean: Outcome, label: str) -> None:
    assert actual.status == RunStatus.COMPLETED.value, label
    differing = sorted(k for k in clean.loans.keys() | actual.loans.keys() if clean.loans.get(k) != actual.loans.get(k))
    assert not differing, f"{label}: loans differ from the clean run: {differing}"
    assert set(actual.cases) == actual.escalated_loans, f"{label}: one legal case per escalated loan"
    assert actual.cases == clean.cases, f"{label}: legal cases differ"
    escalation_audits = {loan for (loan, action) in actual.audits if action == "LEGAL_ESCALATED"}
    assert escalation_audits == actual.escalated_loans, f"{label}: one LEGAL_ESCALATED entry per escalated loan"
    # A loan may have one entry per run that wrote it (the watch plan's baseline run wrote some), but the
    # same change twice is a write repeated.
    twice = {key: len(entries) for key, entries in actual.audits.items() if len(set(entries)) != len(entries)}
    assert not twice, f"{label}: audit entries written more than once: {twice}"
    assert actual.audits == clean.audits, f"{label}: audit entries differ"
    assert actual.counts == clean.counts, f"{label}: run counts differ"


# ----------------------------------------------------------------------------------------------- hooks


def run_job(at: dt.datetime = RUN_AT) -> RunResult:
    with use_clock(FixedClock(at)):
        return services().dpd_job.run(RUN_DATE, trigger="test")


def spread(total: int, first: int = 1) -> list[int]:
    """k = first..total: all of them with ``DPD_CRASH_EVERY_K=1``, else first, early, middle, late, last."""
    if EVERY_K:
        return list(range(first, total + 1))
    span = total - first
    return sorted({first, first + 1, first + span // 4, first + span // 2, first + 3 * span // 4, total - 1, total})


# ----------------------------------------------------------------------------------------------- bench


@dataclasses.dataclass
class Bench:
    stage: str
    plan: str
    kinds: dict[str, str]
    initial: Tables
    clean: Outcome
    loan_writes: int
    """TransactWriteItems calls in the clean run (one per loan written)."""
    run_updates: int
    """UpdateItem calls on the run record in the clean run: acquire, plan, checkpoints, finish."""

    def reset(self) -> None:
        restore_tables(self.stage, self.initial)


def prepare(stage: str, plan: str) -> Bench:
    """Build the book (and for ``watch`` a completed baseline run), save it, run it cleanly once."""
    kinds = build_book()
    if plan == "watch":
        set_flag(stage, "ESCALATION_ENABLED", "false")
        with use_clock(FixedClock(RUN_AT)):
            baseline = services().dpd_job.run(BASELINE_DATE, trigger="baseline")
        assert baseline.outcome is RunOutcome.COMPLETED
        set_flag(stage, "ESCALATION_ENABLED", "true")
    initial = save_tables(stage)
    writes, updates = Fault(0), Fault(0)
    with (
        hooked(LoanModel, "after-call.dynamodb.TransactWriteItems", writes),
        hooked(DpdRunModel, "after-call.dynamodb.UpdateItem", updates),
    ):
        result = run_job()
    assert result.outcome is RunOutcome.COMPLETED
    assert result.record is not None and result.record.mode == plan
    return Bench(stage, plan, kinds, initial, outcome(stage), writes.calls, updates.calls)


@contextmanager
def own_stack(endpoint: str, stage: str) -> Iterator[None]:
    """``local_stack`` (tests/conftest.py) for a whole module: fresh tables in DynamoDB Local, SSM in moto,
    and small pages for the job's reads. As there, a completed run starts no reconciliation: these tests
    complete hundreds of runs, and the reconciliation after one has tests of its own."""
    with pytest.MonkeyPatch.context() as patch, mock_aws_beside(endpoint):
        patch.setenv("STAGE", stage)
        patch.setenv("RECONCILE_AFTER_DAY_END", "false")
        patch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        patch.setattr(delinquency_adapter, "PAGE_SIZE", PAGE_SIZE)
        wiring.reset()
        provision(stage, boto3.client("dynamodb", endpoint_url=endpoint), boto3.client("ssm"), quiet=True)
        try:
            yield
        finally:
            wiring.reset()


@pytest.fixture(scope="module", params=["scan", "watch"])
def bench(request: pytest.FixtureRequest, dynamodb_local: str) -> Iterator[Bench]:
    """One book per plan for the whole module; every test puts its tables back before each attempt."""
    # A worker can set the module up again after other modules; each setup gets tables of its own.
    stage = f"crash{os.getpid() % 10000}x{next(_benches)}{request.param}"
    with own_stack(dynamodb_local, stage):
        yield prepare(stage, request.param)


# ----------------------------------------------------------------------------------------------- tests


def test_the_book_crosses_every_boundary_and_escalates_several(bench: Bench) -> None:
    bench.reset()
    clean = bench.clean
    by_kind: dict[str, set[str]] = defaultdict(set)
    for loan_id, item in clean.loans.items():
        by_kind[bench.kinds[loan_id]].add(item["bucket"]["S"] + "/" + item["classification"]["S"])
    assert by_kind["due-on-run-date"] == {"1-30/SMA-0"}
    assert by_kind["cross-31"] == {"31-60/SMA-1"}
    assert by_kind["cross-61"] == {"61-90/SMA-2"}
    assert by_kind["reach-90"] == {"61-90/SMA-2"}
    assert by_kind["cross-91"] == {"90+/NPA"}
    assert by_kind["imported-npa"] == {"90+/NPA"}
    assert {bench.kinds[loan_id] for loan_id in clean.escalated_loans} == {"reach-90", "cross-91", "imported-npa"}
    assert len(clean.escalated_loans) == clean.counts["escalated"] == ESCALATIONS
    for loan_id in clean.escalated_loans:
        assert clean.loans[loan_id]["legal_escalated_on"]["S"] == RUN_DATE.isoformat()
    written = {k for k, item in clean.loans.items() if item.get("last_job_date", {}).get("S") == RUN_DATE.isoformat()}
    assert clean.counts["updated"] == bench.loan_writes == len(written) >= 40
    assert {bench.kinds[k] for k in clean.loans.keys() - written} >= {"current", "due-next-day", "mid-45"}
    assert bench.run_updates > 30, "small pages: several checkpoints per segment"
    assert_audit_chains(bench.stage)


CHAIN_FIELDS = ("dpd", "bucket", "classification", "npa_since")


def assert_audit_chains(stage: str) -> None:
    """For every loan, its DELINQUENCY_CHANGED entries in audit_id order chain (each ``before`` is the
    previous ``after``), and the last ``after`` is the loan as stored."""
    entries = sorted(scan_table(stage, "audit").items())
    for loan_id, item in scan_table(stage, "loans").items():
        link: tuple[Any, ...] | None = None
        for _audit_id, entry in entries:
            if entry["entity_id"]["S"] != loan_id or logical_value(entry["action"]["S"]) != "DELINQUENCY_CHANGED":
                continue
            before, after = json.loads(entry["before"]["S"]), json.loads(entry["after"]["S"])
            assert link is None or tuple(before[f] for f in CHAIN_FIELDS) == link, (loan_id, before, link)
            link = tuple(after[f] for f in CHAIN_FIELDS)
        stored = (
            int(item["dpd"]["N"]),
            item["bucket"]["S"],
            item["classification"]["S"],
            item.get("npa_since", {}).get("S"),
        )
        assert link is None or link == stored, (loan_id, link, stored)


def _fail_then_rerun(bench: Bench, model: type[Model], event: str, k: int, error: Callable[[], Exception]) -> None:
    label = f"{bench.plan} {event} k={k}"
    bench.reset()
    fault = Fault(k, error)
    with hooked(model, event, fault):
        first = run_job()
    assert fault.fired, label
    if first.outcome is RunOutcome.COMPLETED:
        # Only the final COMPLETED write whose answer was lost: it applied, and the run recognises it by its
        # own finishing time rather than recording a completed run FAILED (and its follow-ups run once).
        assert model is DpdRunModel and error is _answer_lost and k == bench.run_updates, label
        completed = services().runs.get(RUN_DATE)
        assert completed is not None and completed.status is RunStatus.COMPLETED and completed.errors == 0, label
        assert_same(outcome(bench.stage), bench.clean, label)
        return
    assert first.outcome is RunOutcome.FAILED, label
    failed = services().runs.get(RUN_DATE)
    assert failed is not None and failed.status is RunStatus.FAILED and failed.errors == 1, label
    # The record names the domain error in its own words, never a botocore repr (endpoint, table names).
    assert failed.last_error == "UNAVAILABLE: the database is not answering; nothing was changed, try again", (
        f"{label}: {failed.last_error}"
    )

    fetched: list[Segment] = []
    job = services().dpd_job
    fetch = job._fetch

    def spy(segment_id: Segment, cursor: dict[str, Any] | None) -> Any:
        fetched.append(segment_id)
        return fetch(segment_id, cursor)

    job._fetch = spy  # type: ignore[method-assign]
    try:
        second = run_job()
    finally:
        del job._fetch
    assert second.outcome is RunOutcome.COMPLETED, label
    assert second.record is not None
    # It took the FAILED record over (same start, the error kept) and resumed: no finished segment read again.
    assert second.record.errors == 1 and second.record.started_at == failed.started_at, label
    if failed.segments:
        assert set(fetched) <= {sid for sid, state in failed.segments.items() if not state.done}, label
    assert_same(outcome(bench.stage), bench.clean, label)


def _never_sent() -> Exception:
    return EndpointConnectionError(endpoint_url="http://dynamodb")


def _answer_lost() -> Exception:
    return ReadTimeoutError(endpoint_url="http://dynamodb")


PHASES = pytest.mark.parametrize(("phase", "error"), [("before", _never_sent), ("after", _answer_lost)])


@PHASES
def test_a_failed_loan_write_then_a_rerun_ends_as_a_clean_run(
    bench: Bench, phase: str, error: Callable[[], Exception]
) -> None:
    """``before``: the k-th loan transaction never reaches DynamoDB. ``after``: it commits and its answer is
    lost. Either way the run is FAILED, and the next invocation finishes it."""
    for k in spread(bench.loan_writes):
        _fail_then_rerun(bench, LoanModel, f"{phase}-call.dynamodb.TransactWriteItems", k, error)


@PHASES
def test_a_failed_run_record_write_then_a_rerun_ends_as_a_clean_run(
    bench: Bench, phase: str, error: Callable[[], Exception]
) -> None:
    """The k-th write of the run record after it was taken (k=2..): the plan, a segment checkpoint, or the
    final COMPLETED (``after``: committed, and the caller saw an error)."""
    for k in spread(bench.run_updates, first=2):
        _fail_then_rerun(bench, DpdRunModel, f"{phase}-call.dynamodb.UpdateItem", k, error)


# ------------------------------------------------------------------------------- a crash with no record

DIED = 17


def _dying_worker(env: dict[str, str], at: str, page_size: int, die_at: int) -> None:
    """Run the job and kill the process (no FAILED record, no clean-up) right after the ``die_at``-th loan
    transaction has committed. Flags come from a fresh moto (no parameters: all on)."""
    os.environ.update(env)
    delinquency_adapter.PAGE_SIZE = page_size
    commits = 0
    lock = threading.Lock()

    def die(**_kwargs: Any) -> None:
        nonlocal commits
        with lock:
            commits += 1
            if commits == die_at:
                os._exit(DIED)

    with mock_aws_beside(env["AWS_ENDPOINT_URL_DYNAMODB"]), use_clock(FixedClock(dt.datetime.fromisoformat(at))):
        job = services().dpd_job
        LoanModel._get_connection().connection.client.meta.events.register(
            "after-call.dynamodb.TransactWriteItems", die
        )
        job.run(RUN_DATE, trigger="doomed")


def settled_tables(stage: str) -> Tables:
    """The tables once the writes a killed process had already sent have landed. DynamoDB finishes a
    request whose caller died (so does AWS), and the job writes a page's loans several at a time, so
    one may still be committing when the process is gone."""
    before = save_tables(stage)
    while True:
        time.sleep(0.5)
        now = save_tables(stage)
        if now == before:
            return now
        before = now


def test_a_crash_that_records_nothing_is_taken_over_once_the_lease_has_run_out(bench: Bench) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
    env["STAGE"] = bench.stage
    ctx = processes.context()
    ks = spread(bench.loan_writes) if EVERY_K else [2, 2 * bench.loan_writes // 3]
    for k in ks:
        label = f"{bench.plan} died after write {k}"
        bench.reset()
        proc = ctx.Process(target=_dying_worker, args=(env, RUN_AT.isoformat(), PAGE_SIZE, k))
        proc.start()
        proc.join(120)
        assert proc.exitcode == DIED, f"{label}: worker exited with {proc.exitcode}"
        crashed = settled_tables(bench.stage)
        record = services().runs.get(RUN_DATE)
        assert record is not None and record.status is RunStatus.RUNNING, label

        # Within the lease: the run is someone else's, and nothing changes.
        within = run_job(RUN_AT + dt.timedelta(seconds=LEASE_SECONDS - 1))
        assert within.outcome is RunOutcome.IN_PROGRESS, label
        assert save_tables(bench.stage) == crashed, f"{label}: an invocation that was refused changed something"

        # Once the lease has run out: taken over, resumed, finished as a clean run would have.
        after = run_job(RUN_AT + dt.timedelta(seconds=LEASE_SECONDS + 1))
        assert after.outcome is RunOutcome.COMPLETED, label
        assert after.record is not None and after.record.started_at == record.started_at, label
        assert after.record.run_id != record.run_id, label
        assert_same(outcome(bench.stage, later_clock=True), without_times(bench.clean), label)


def without_times(clean: Outcome) -> Outcome:
    return dataclasses.replace(
        clean,
        loans={k: {a: v for a, v in item.items() if a != "updated_at"} for k, item in clean.loans.items()},
        cases={k: {a: v for a, v in item.items() if a != "created_at"} for k, item in clean.cases.items()},
    )
