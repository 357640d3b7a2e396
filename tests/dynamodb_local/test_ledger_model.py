"""A stateful model of the ledger, driven through the API against DynamoDB Local.

Hypothesis plays a client of the real app (``chalice.test.Client`` over the ``app`` module, tables in
DynamoDB Local, flags in moto) through random sequences of steps, each made of the HTTP calls a client
would make:

- loans created with generated and imported schedules, some already overdue when created;
- payments: valid ones, backdated ones, a duplicate UTR (409 naming the original payment to whoever
  may read it), amounts out of range, overpayments, dates too old or in the future, the exact residual
  (cleared even below ₹1), payments on a closed loan, and on a loan the caller may not see;
- ``Idempotency-Key``: a replay of the same request, the same key with another body;
- reversals (twice: 409 ``ALREADY_REVERSED``);
- the clock moving on by days, and the day-end run for the new last completed date, sometimes crashed
  at one of its DynamoDB writes and resumed by the next invocation; legal escalation switched off and
  on; a run asked again for a date already done;
- a PATCH naming a protected field (403 ``FINANCIAL_FIELD_PROTECTED``, audited, nothing changed) and
  reassignment between collectors.

After every step the app is compared with tests/reference_ledger.py, the rules of docs/rules.md and
docs/day-end.md written again without the product's code:

- each loan as the API shows it: status, dpd and its as-of date, bucket, classification, npa_since,
  overdue, outstanding (never negative, principal minus principal paid), legal escalation, the paid
  amounts of every instalment; each payment's allocation, instalment by instalment;
- money is conserved: a loan's standing payments add up to what its schedule holds, and each payment's
  allocation adds up to its amount;
- every UTR names exactly one payment, reversed ones included, and its claim names that payment;
- the stored loan is never stale against the latest completed run, and nothing is written that the
  step had no business writing;
- the dashboard equals a recount: the book's after every step that can move it, a collector's after
  an assignment or a reversal (whose the loan and the money are);
- each loan's audit trail holds exactly the entries the step should have written, and its
  DELINQUENCY_CHANGED entries chain from the loan as created to the loan as stored;
- one legal case per escalated loan, dated by the run that escalated it.

Cost. One stage per xdist worker; every example starts without loans, payments, UTR claims, run
records, legal cases, dashboard counters or audit entries (deleted by key after an example that
passed, by scanning after one that failed: cheaper than provisioning a stage per example); idempotency
records are left, as no other example uses their keys. Checks read what a step can have
changed: a scan of the loans table (one request) says which loans were written, and only when some
were, or the run date moved, are the loans fetched through the API; per-loan audit trails are queried
from the last entry seen. Scale settings are kept small: 2 watch shards instead of 16 and 4 book
counter shards instead of 32 (sums and spreads over shards are still exercised), and the day-end run
reads pages of 2 loans, not 100 (so that its cursors are too). Reminders are off
(tests/dynamodb_local/test_reminders.py is about them). Calls to DynamoDB Local bypass moto, which
serves the flags only.

Replays. Loans get ids of the model's own (``LM1``..``LM5``) and the day-end run works one segment at
a time, so that an example replayed (while Hypothesis shrinks a failure, or from its database) sends
the same requests and gets the same answers.

Sizes: ``LEDGER_MODEL_EXAMPLES`` (default 24, split over four test functions so that pytest-xdist
spreads them) and ``LEDGER_MODEL_STEPS`` (steps per example, default 50). An example costs about
2.5 s of CPU (the day-end steps about half of it), so the test command runs few, each exploring anew
on a local run; ``make ledger-long`` runs 2,000 of 100 steps, for a release or a night.

A failure prints the failing steps and a ``@reproduce_failure(...)`` decorator: put it above
``class LedgerModel`` to replay exactly that example (Hypothesis also replays it first on the next run,
from its example database). ``LEDGER_MODEL_SEED=<n>`` makes the shards' exploration repeatable;
``LEDGER_MODEL_TIMING=1`` (with ``-s``) or ``LEDGER_MODEL_TIMING=<file>`` reports where each shard's
time went, its CPU and DynamoDB Local's, and how often the examples reached each situation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from chalice.test import Client
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import app as app_module
from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb import aggregates, mapping
from chalicelib.adapters.dynamodb import delinquency as delinquency_adapter
from chalicelib.adapters.dynamodb.models import DpdRunModel, LoanModel
from chalicelib.adapters.dynamodb.sharding import logical_value
from chalicelib.clock import FixedClock, use_clock
from chalicelib.domain.portfolio import ScopeKind
from chalicelib.wiring import services
from infra.provision import provision, table_specs
from tests import reference_ledger as ref
from tests.dynamodb_local.faults import Fault, hooked
from tests.integration.api_helpers import PASSWORD, USERS, Api, Reply
from tests.moto_speedups import mock_aws_beside

pytestmark = [pytest.mark.dynamodb_local, pytest.mark.long]

EXAMPLES = int(os.environ.get("LEDGER_MODEL_EXAMPLES", "24"))
STEPS = int(os.environ.get("LEDGER_MODEL_STEPS", "50"))
SEED = os.environ.get("LEDGER_MODEL_SEED")
TIMING = os.environ.get("LEDGER_MODEL_TIMING")
"""``1``: print where each shard's time went (``pytest -s``); a file name: append it there (pytest-xdist
keeps its workers' output to itself)."""
SHARDS = 4
MAX_LOANS = 5
WATCH_SHARDS = 2
BOOK_SHARDS = 4
PAGE_SIZE = 2

START = dt.datetime(2026, 1, 10, 12, 0, tzinfo=clock.IST)
"""Noon IST, so the seconds each request moves the clock on never cross midnight within a day."""
COLLECTORS = ("collector", "collector2")
"""Aliases of the two collectors in tests/integration/api_helpers.py."""
MODES = ("UPI", "IMPS", "NEFT", "RTGS", "NACH", "CHEQUE", "CASH")
JOB_ACTOR = "system:dpd_job"
CHAIN_FIELDS = ("dpd", "bucket", "classification", "npa_since")
EMPTIED = ("loans", "payments", "utr-claims", "dpd-runs", "legal-cases", "aggregates", "audit")
"""What an example must start without. The users are the same five in every example; idempotency
records hold keys no other example uses; the model writes nothing else."""

PROTECTED_BODIES: tuple[dict[str, Any], ...] = (
    {"dpd": 0},
    {"bucket": "CURRENT"},
    {"classification": "STANDARD"},
    {"npa_since": None},
    {"status": "CLOSED"},
    {"outstanding_principal_paise": 0},
    {"borrower": {"phone": "9876543210"}, "Dpd-As-Of": "2026-01-01"},
    {"legal": {"escalated": False}},
    {"notes": "settled by phone", "overduePaise": 0},
    {"schedule": []},
    {"borrower": {"name": "Asha", "principal_paise": 1}},
)


# ------------------------------------------------------------------------------------------ the stage


def _username(alias: str) -> str:
    return USERS[alias][0]


@dataclass
class Timing:
    """Where a shard's time went: the steps' own calls, the checks after them, emptying the tables."""

    seconds: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)

    @contextmanager
    def measure(self, what: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(what, time.perf_counter() - started)

    def add(self, what: str, seconds: float) -> None:
        self.seconds[what] += seconds
        self.counts[what] += 1

    def report(self) -> str:
        lines = []
        for what in sorted(self.seconds, key=lambda w: -self.seconds[w]):
            s, n = self.seconds[what], self.counts[what]
            lines.append(f"  {what:<28} {n:>6} x {1000 * s / n:7.1f} ms = {s:7.2f} s")
        return "\n".join(lines)


@dataclass
class Bench:
    """One stage for the module (its tables emptied between examples), the test client and a DynamoDB
    client for the checks."""

    stage: str
    endpoint: str
    client: Client
    ddb: Any
    keys: dict[str, list[str]]
    """Short table name -> its key attribute names."""
    api: Api
    pool: ThreadPoolExecutor
    timing: Timing = field(default_factory=Timing)
    left: dict[str, list[str]] | None = None
    """What the last example wrote (:meth:`empty`); None: unknown, scan."""
    serial: int = 0
    """Numbers UTRs and idempotency keys across examples, so that none is used twice."""
    escalation: bool = True
    """The escalation switch as last set."""
    seen: Counter[str] = field(default_factory=Counter)
    """How often the examples reached the situations worth reaching (printed with the timing)."""

    def table(self, short: str) -> str:
        return f"loan-crm-{self.stage}-{short}"

    def scan(self, short: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table(short), "ConsistentRead": True}
        while True:
            page = self.ddb.scan(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def empty(self, known: dict[str, list[str]] | None) -> None:
        """Delete what the last example left. ``known``: the keys it is known to have written, by table
        (after an example that passed every check, nothing else is there but the counters, whose keys
        are random shards); None: scan every table (after a failure, anything may be there)."""
        if known is None:
            found = self.pool.map(self._keys_in, EMPTIED)
            doomed = [(short, key) for short, keys in zip(EMPTIED, found, strict=True) for key in keys]
        else:
            doomed = [(short, {self.keys[short][0]: {"S": k}}) for short, keys in known.items() for k in keys]
            doomed += [("aggregates", key) for key in self._keys_in("aggregates")]
            trails = self.pool.map(self._trail, known["loans"])
            doomed += [("audit", {"audit_id": {"S": audit_id}}) for trail in trails for audit_id in trail]
        batches = [doomed[n : n + 25] for n in range(0, len(doomed), 25)]
        list(self.pool.map(self._delete, batches))

    def _trail(self, loan_id: str) -> list[str]:
        """The ids of every audit entry about a loan (every entry the model causes names its loan)."""
        ids: list[str] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table("audit"),
            "IndexName": "entity-index",
            "KeyConditionExpression": "entity_id = :e",
            "ExpressionAttributeValues": {":e": {"S": loan_id}},
            "ProjectionExpression": "audit_id",
        }
        while True:
            page = self.ddb.query(**kwargs)
            ids += [item["audit_id"]["S"] for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return ids
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _keys_in(self, short: str) -> list[dict[str, Any]]:
        names = self.keys[short]
        return [{k: item[k] for k in names} for item in self.scan(short)]

    def _delete(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        pending: dict[str, Any] = {}
        for short, key in batch:
            pending.setdefault(self.table(short), []).append({"DeleteRequest": {"Key": key}})
        while pending:
            pending = self.ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    def set_flag(self, name: str, value: bool) -> None:
        boto3.client("ssm").put_parameter(
            Name=f"/loan-crm/{self.stage}/flags/{name}", Value=str(value).lower(), Type="String", Overwrite=True
        )


@pytest.fixture(scope="module")
def bench(dynamodb_local: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """The stage for the module: tables in DynamoDB Local, flags in moto (which lets the calls to DynamoDB
    Local straight through: ``tests/moto_speedups.py``)."""
    stage = f"model{os.getpid() % 10000}"
    with pytest.MonkeyPatch.context() as patch, mock_aws_beside(dynamodb_local):
        patch.setenv("STAGE", stage)
        patch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local)
        patch.setenv("RECONCILE_AFTER_DAY_END", "false")
        # The users never change here, so their state may be cached for the whole example.
        patch.setenv("USER_CACHE_SECONDS", "3600")
        # Shard counts are scale settings: with a few shards the sums and spreads are still exercised,
        # at a fraction of the reads (every dashboard reads all of the book's counter shards). Both the
        # key a loan is written under and the run's plan read the watch shard count.
        patch.setattr(mapping, "WATCH_SHARDS", WATCH_SHARDS)
        patch.setattr(wiring, "WATCH_SHARDS", WATCH_SHARDS)
        patch.setitem(aggregates.SHARDS, ScopeKind.BOOK, BOOK_SHARDS)
        # Pages of two loans: a run reads a partition in several pages and checkpoints a cursor between
        # them, which is what a crashed run resumes from.
        patch.setattr(delinquency_adapter, "PAGE_SIZE", PAGE_SIZE)
        wiring.reset()
        ddb = boto3.client("dynamodb", endpoint_url=dynamodb_local)
        provision(stage, ddb, boto3.client("ssm"), quiet=True, sns=boto3.client("sns"))
        keys = {
            spec.name.removeprefix(f"loan-crm-{stage}-"): [k["AttributeName"] for k in spec.key_schema]
            for spec in table_specs(stage)
        }
        with use_clock(FixedClock(START)):
            for username, role in USERS.values():
                services().auth.add_user(username, PASSWORD, role)
        # A scan-mode run (the first of each example) splits the table like the watch index. One segment
        # at a time, so that a run writes its loans in the same order whenever an example is replayed
        # (runs on several threads are tests/dynamodb_local/test_dpd_concurrency.py's subject).
        services().dpd_job.scan_segments = WATCH_SHARDS
        services().dpd_job.workers = 1
        project_dir = tmp_path_factory.mktemp("chalice")
        with Client(app_module.app, project_dir=str(project_dir)) as client, ThreadPoolExecutor(4) as pool:
            bench = Bench(stage, dynamodb_local, client, ddb, keys, Api(client, stage, FixedClock(START)), pool)
            bench.set_flag("REMINDERS_ENABLED", False)
            yield bench
        wiring.reset()


# ----------------------------------------------------------------------------------------- strategies


# Hypothesis sorts a state machine's rules by their number of arguments, and when the rule it draws is
# not allowed it falls back on the first allowed one: so ``create`` and ``pay`` take one argument each
# (everything they vary, drawn together), which makes an example build its loans first and then pay
# more often than it does anything else.


@dataclass(frozen=True)
class NewLoan:
    """A loan to create, its dates in days from today. ``rate`` None: an imported schedule of ``rows``
    (due in, principal, interest); else generated terms."""

    collector: str | None
    alias: str
    rate: int | None = None
    principal: int = 0
    tenure: int = 0
    first_due: int = 0
    lead: int = 0
    rows: tuple[tuple[int, int, int], ...] = ()


@st.composite
def imported_rows(draw: st.DrawFn) -> tuple[tuple[int, int, int], ...]:
    """Due dates from long past to the coming weeks; some instalments of interest only, some tiny."""
    count = draw(st.integers(1, 6))
    offsets = [draw(st.integers(-200, 30))]
    for _ in range(count - 1):
        offsets.append(offsets[-1] + draw(st.integers(1, 40)))
    rows = []
    for offset in offsets:
        principal = draw(st.one_of(st.integers(1_000, 2_000_000), st.integers(0, 300)))
        rows.append((offset, principal, draw(st.integers(0 if principal else 1, 40_000))))
    if sum(p for _, p, _ in rows) == 0:
        offset, _, interest = rows[-1]
        rows[-1] = (offset, draw(st.integers(1, 500)), interest)
    return tuple(rows)


NEW_LOANS = st.one_of(
    st.builds(
        NewLoan,
        collector=st.sampled_from([None, *COLLECTORS]),
        alias=st.sampled_from(["admin", "manager"]),
        rate=st.sampled_from([0, 900, 1800, 3600]),
        principal=st.integers(10_000, 30_000_000),
        tenure=st.integers(1, 12),
        # Some loans are overdue from the start, some have their first instalment weeks away; loans due
        # on the same days share the day-end run's pages, where a crash midway is the hardest to resume.
        first_due=st.one_of(st.sampled_from([-91, -61, -31, -1, 0, 1]), st.integers(-120, 40)),
        lead=st.integers(1, 45),
    ),
    st.builds(
        NewLoan,
        collector=st.sampled_from([None, *COLLECTORS]),
        alias=st.sampled_from(["admin", "manager"]),
        rows=imported_rows(),
    ),
)


@dataclass(frozen=True)
class Attempt:
    """A payment to try. ``kind`` picks the amount from the loan as the reference sees it (see
    :meth:`LedgerModel._amount`); ``offset`` is the payment date in days from today; ``utr`` 1 reuses a
    UTR already taken; ``payer`` ``holder`` is the loan's collector, ``other`` one who may not see it."""

    pick: int
    kind: str
    fraction: float
    small: int
    offset: int
    utr: int
    mode: str
    payer: str
    keyed: bool


AMOUNT_KINDS = (
    *["instalment"] * 3,
    *["part"] * 4,
    *["all"] * 2,
    *["all_but"] * 2,
    "over",
    "sub_rupee",
    "out_of_range",
)


@dataclass(frozen=True)
class DayEnd:
    """A day-end run: ``crash`` (a loan write or a run-record update, failed before it is sent or after,
    the n-th one) makes the first invocation fail and the next resume it; ``escalation`` is the switch
    for the run; ``rerun`` asks for a date that many days back again after the run."""

    crash: tuple[str, str, int] | None
    escalation: bool
    rerun: int | None


DAY_ENDS = st.builds(
    DayEnd,
    # About one run in six crashes (a one_of with five none() branches still gives half, measured).
    crash=st.tuples(
        st.integers(0, 5), st.sampled_from(["loan", "record"]), st.sampled_from(["before", "after"]), st.integers(1, 4)
    ).map(lambda roll: roll[1:] if roll[0] == 5 else None),
    escalation=st.sampled_from([True, True, True, True, False]),
    rerun=st.sampled_from([None, None, None, None, 0, 1, 4, 40]),
)

DAYS = (1, 1, 1, 1, 0, 2, 3, 7, 7, 31, 45, 90)
"""How far the calendar moves in one step (0: not at all, so that the run for a date the calendar reached
earlier comes after payments landed on that date). A run reads each day since the last completed run (one query
per day and watch shard) up to 31 days back, and scans the table past that: long gaps are cheap, and
the dearest (a month) is the boundary worth having."""

DATE_OFFSETS = (*[0] * 6, -1, -2, -3, -5, -7, -7, -8, -30, 1)
"""Days from today: mostly today or backdated within the week; sometimes just too old or tomorrow."""

ATTEMPTS = st.builds(
    Attempt,
    pick=st.integers(0, MAX_LOANS - 1),
    kind=st.sampled_from(AMOUNT_KINDS),
    fraction=st.floats(0, 1),
    small=st.integers(1, 99),
    offset=st.sampled_from(DATE_OFFSETS),
    utr=st.integers(0, 5),
    mode=st.sampled_from(MODES),
    payer=st.sampled_from(["admin", "manager", "holder", "admin", "manager", "holder", "other"]),
    keyed=st.booleans(),
)


# ----------------------------------------------------------------------------------------- the model


@dataclass
class Step:
    """What the last step may have done, for the checks after it."""

    name: str = "start"
    may_write: set[str] = field(default_factory=set)
    """Loans the step may have written (any loan for a day-end run: ``any_loan``)."""
    any_loan: bool = False
    audits: dict[str, Counter[tuple[str, str]]] = field(default_factory=lambda: defaultdict(Counter))
    """Loan -> (action, outcome) entries the step must have added, besides DELINQUENCY_CHANGED (which
    must come exactly with a change of the stored dpd, bucket, classification or npa_since)."""
    ledgers: set[str] = field(default_factory=set)
    """Loans whose payments changed: their payment listings are compared."""
    payments: bool = False
    """The step posted, reversed or tried to: nothing but what it did may be stored (the UTR claims are
    compared; the payments table too when a payment was posted or reversed)."""
    run: bool = False
    collectors: set[str | None] = field(default_factory=set)
    """Collectors whose dashboards are compared too (the book's always is). A collector's counters move
    with the book's, in the same transactions and by the same amounts; what only a collector's can get
    wrong is whose a loan or a payment is, which an assignment (the loan moves, the money collected
    stays) and a reversal (taken off the collector credited) show."""
    started: float = field(default_factory=time.perf_counter)

    def watch(self, loan_id: str) -> None:
        """Read the loan's audit trail after the step even if the step should have added nothing to it."""
        self.audits.setdefault(loan_id, Counter())


@dataclass
class Keyed:
    """A request sent with an Idempotency-Key, for replays."""

    alias: str
    key: str
    body: dict[str, Any]
    reply: Reply
    loan_id: str


class LedgerModel(RuleBasedStateMachine):
    bench: ClassVar[Bench]

    def __init__(self) -> None:
        super().__init__()
        with self.bench.timing.measure("isolation"):
            self.bench.empty(self.bench.left)
            # Until this example has passed its checks, it may leave anything behind.
            self.bench.left = None
            if not self.bench.escalation:
                self.bench.set_flag("ESCALATION_ENABLED", True)
                self.bench.escalation = True
            # The process caches the latest completed run date for a minute of the app's clock; the last
            # example's must not leak into this one (rebuilding every service instead costs far more).
            completed = services().completed_through
            completed.__init__(services().runs.latest_completed)  # type: ignore[misc]
        self.stack = ExitStack()
        self.clock = FixedClock(START)
        self.stack.enter_context(use_clock(self.clock))
        self.api = self.bench.api
        self.api.clock = self.clock
        self.api.mint_all()
        self.ledger = ref.Ledger()
        self.order: list[str] = []
        self.keyed: list[Keyed] = []
        self.step = Step()
        # What the checks saw last.
        self.items: dict[str, dict[str, Any]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.audit_seen: dict[str, str] = {}
        self.links: dict[str, tuple[Any, ...]] = {}
        self.checked_through: dt.date | None = None
        self.checked_today: dt.date | None = None

    def teardown(self) -> None:
        self.stack.close()

    # --- helpers ------------------------------------------------------------------------------------

    @property
    def today(self) -> dt.date:
        return clock.today_ist()

    @property
    def yesterday(self) -> dt.date:
        return self.today - dt.timedelta(days=1)

    def begin(self, name: str) -> Step:
        self.bench.left = None
        self.step = Step(name)
        return self.step

    def written(self) -> dict[str, list[str]]:
        """The keys this example has written to the tables it must not leave behind (but the counters)."""
        ledger = self.ledger
        return {
            "loans": list(ledger.loans),
            "payments": list(ledger.payments),
            "utr-claims": list(ledger.utrs),
            "dpd-runs": [d.isoformat() for d in {*ledger.runs, *ledger.superseded}],
            "legal-cases": [lo.loan_id for lo in ledger.loans.values() if lo.escalated_on],
        }

    def ended(self) -> None:
        """Book the step's own time (from :meth:`begin` to the checks after it)."""
        self.bench.timing.add(f"step {self.step.name}", time.perf_counter() - self.step.started)

    def pick_loan(self, n: int) -> ref.Loan:
        return self.ledger.loans[self.order[n % len(self.order)]]

    def serial(self) -> int:
        self.bench.serial += 1
        return self.bench.serial

    def fresh_utr(self) -> str:
        return f"MDL{self.serial():010d}"

    def sees(self, alias: str, loan: ref.Loan) -> bool:
        return alias not in COLLECTORS or loan.collector == _username(alias)

    # --- loans ----------------------------------------------------------------------------------------

    def _create(self, body: dict[str, Any], alias: str) -> None:
        step = self.begin("create")
        # Ids of its own (the same whenever an example is replayed, so its loans land in the same watch
        # shards and pages): examples do not share tables, so they may reuse them.
        body["loan_id"] = f"LM{len(self.order) + 1}"
        reply = self.api.post("/api/v1/loans", body, as_=alias)
        assert reply.status == 201, (reply.status, reply.body[:500])
        view = reply.json
        loan_id = view["loan_id"]
        rows = tuple(
            ref.Row(r["seq"], dt.date.fromisoformat(r["due_date"]), r["principal_paise"], r["interest_paise"])
            for r in view["schedule"]
        )
        assert sum(r.principal for r in rows) == body["principal_paise"], "principal parts add up to the principal"
        dues = [r.due for r in rows]
        assert dues == sorted(set(dues)) and dues[0] > dt.date.fromisoformat(body["disbursement_date"])
        if "schedule" in body:
            sent = [(s["due_date"], s["principal_paise"], s["interest_paise"]) for s in body["schedule"]]
            assert [(r.due.isoformat(), r.principal, r.interest) for r in rows] == sent
        collector = body.get("collector_id")
        loan = ref.Loan(loan_id, body["principal_paise"], rows, collector, self.yesterday, self.yesterday)
        self.ledger.add_loan(loan)
        self.order.append(loan_id)
        self.links[loan_id] = tuple(view[f] for f in CHAIN_FIELDS)
        step.may_write.add(loan_id)
        step.audits[loan_id][("LOAN_CREATED", "SUCCESS")] += 1
        self.compare_loan(view, loan, on=self.yesterday)

    @precondition(lambda self: len(self.order) < MAX_LOANS)
    @rule(new=NEW_LOANS)
    def create(self, new: NewLoan) -> None:
        if new.rate is not None:
            due = self.today + dt.timedelta(days=new.first_due)
            body: dict[str, Any] = {
                "borrower": {"name": "Model Borrower", "phone": "9876543210"},
                "principal_paise": new.principal,
                "annual_rate_bps": new.rate,
                "tenure_months": new.tenure,
                "disbursement_date": (due - dt.timedelta(days=new.lead)).isoformat(),
                "first_due_date": due.isoformat(),
            }
        else:
            dated = [(self.today + dt.timedelta(days=d), p, i) for d, p, i in new.rows]
            body = {
                "borrower": {"name": "Imported Borrower", "phone": "+919812345678"},
                "principal_paise": sum(p for _, p, _ in dated),
                "disbursement_date": (dated[0][0] - dt.timedelta(days=30)).isoformat(),
                "schedule": [
                    {"due_date": d.isoformat(), "principal_paise": p, "interest_paise": i} for d, p, i in dated
                ],
            }
        if new.collector:
            body["collector_id"] = _username(new.collector)
        self._create(body, new.alias)

    # --- payments -----------------------------------------------------------------------------------

    def _amount(self, loan: ref.Loan, kind: str, fraction: float, small: int) -> int:
        owed = loan.owed
        if kind == "part":
            return max(100, int(owed * fraction))
        if kind == "instalment":
            # What the oldest instalment still lacks (a round EMI, or the rest of a part-paid one), at
            # least a rupee unless that is more than the loan owes; on a closed loan, another EMI.
            held = loan.held()
            lacking = next(
                (
                    r.amount - h.total
                    for r, h in sorted(zip(loan.rows, held, strict=True), key=lambda rh: rh[0].due)
                    if h.total < r.amount
                ),
                owed,
            )
            return min(max(lacking, ref.MIN_PAYMENT_PAISE), owed) if owed else max(r.amount for r in loan.rows)
        if kind == "all":
            return owed
        if kind == "all_but":
            return owed - small
        if kind == "over":
            return owed + small
        if kind == "sub_rupee":
            return small
        return (0, -small, ref.MAX_PAYMENT_PAISE + small)[small % 3]

    @precondition(lambda self: self.order)
    @rule(attempt=ATTEMPTS)
    def pay(self, attempt: Attempt) -> None:
        loan = self.pick_loan(attempt.pick)
        step = self.begin("pay")
        step.payments = True
        step.watch(loan.loan_id)
        alias = self._payer(loan, attempt.payer)
        amount = self._amount(loan, attempt.kind, attempt.fraction, attempt.small)
        payment_date = self.today + dt.timedelta(days=attempt.offset)
        if attempt.utr == 1 and self.ledger.utrs:
            used = sorted(self.ledger.utrs)[attempt.small % len(self.ledger.utrs)]
            utr = f"  {used.lower()} "  # the same UTR as typed from an SMS
        else:
            utr = self.fresh_utr()
        body = {
            "loan_id": loan.loan_id,
            "utr": utr,
            "amount_paise": amount,
            "payment_date": payment_date.isoformat(),
            "mode": attempt.mode,
        }
        headers = {}
        if attempt.keyed:
            headers["Idempotency-Key"] = f"model-{self.serial()}"
        reply = self.api.post("/api/v1/payments", body, as_=alias, headers=headers)
        if attempt.keyed:
            self.keyed.append(Keyed(alias, headers["Idempotency-Key"], body, reply, loan.loan_id))
        self._judge_payment(loan, alias, body, reply, attempt.kind)

    def _payer(self, loan: ref.Loan, payer: str) -> str:
        if payer == "holder":
            holder = [a for a in COLLECTORS if _username(a) == loan.collector]
            return holder[0] if holder else "manager"
        if payer == "other":
            return next(a for a in COLLECTORS if _username(a) != loan.collector)
        return payer

    def _judge_payment(self, loan: ref.Loan, alias: str, body: dict[str, Any], reply: Reply, kind: str) -> None:
        step = self.step
        utr = body["utr"].strip().upper()
        amount, payment_date = body["amount_paise"], dt.date.fromisoformat(body["payment_date"])
        refusal = self.ledger.payment_refusal(loan, amount, payment_date, utr, self.today, self.sees(alias, loan))
        self.bench.seen[f"payment ({kind}) {refusal[1] if refusal else 'accepted'}"] += 1
        if refusal is not None:
            status, code = refusal
            assert (reply.status, _code(reply)) == (status, code), (refusal, reply.status, reply.body[:400])
            if code == "DUPLICATE_UTR":
                original = self.ledger.payments[self.ledger.utrs[utr]]
                details = reply.json["error"]["details"]
                shown = details.get("payment_id")
                # The original is named only to a caller who may read it.
                if self.sees(alias, self.ledger.loans[original.loan_id]):
                    assert shown == original.payment_id, (details, original)
                else:
                    assert shown is None, details
                assert details["utr"] == utr
                step.audits[loan.loan_id][("PAYMENT_POSTED", "DENIED")] += 1
            return
        assert reply.status == 201, (reply.status, reply.body[:500])
        got = reply.json
        payment = self.ledger.post(loan, got["payment_id"], utr, amount, payment_date, self.yesterday)
        if amount < ref.MIN_PAYMENT_PAISE:
            self.bench.seen["payment of a sub-rupee residual"] += 1
        if payment_date < self.today:
            self.bench.seen["payment backdated"] += 1
        if loan.status == ref.CLOSED:
            self.bench.seen["loan closed by a payment"] += 1
        assert got["utr"] == utr and got["amount_paise"] == amount and got["status"] == "POSTED"
        assert got["payment_date"] == payment_date.isoformat() and got["loan_id"] == loan.loan_id
        assert _lines(got["allocation"]) == loan.allocations()[payment.payment_id], (got["allocation"], loan)
        self._compare_money(got["loan"], loan)
        step.may_write.add(loan.loan_id)
        step.ledgers.add(loan.loan_id)
        step.audits[loan.loan_id][("PAYMENT_POSTED", "SUCCESS")] += 1

    def _compare_money(self, money: dict[str, Any], loan: ref.Loan) -> None:
        """The loan part of a payment's or reversal's answer: the loan as just written, for the last
        completed business date."""
        e = self.ledger.expected(loan)
        a = loan.assessment(loan.last_written, self.ledger.runs)
        want = {
            "status": e.status,
            "outstanding_principal_paise": e.outstanding,
            "overdue_paise": a.overdue,
            "dpd": a.dpd,
            "bucket": a.bucket,
            "classification": a.classification,
        }
        assert money == want, (loan.loan_id, money, want)

    @precondition(lambda self: self.keyed)
    @rule(pick=st.integers(0, 10**6), change=st.sampled_from([None, None, "amount_paise", "utr", "mode"]))
    def retry_with_key(self, pick: int, change: str | None) -> None:
        """A keyed request sent again: with the same body, the first answer marked as replayed and nothing
        new stored; with another body, 422 IDEMPOTENCY_KEY_REUSED."""
        first = self.keyed[pick % len(self.keyed)]
        step = self.begin("replay" if change is None else "reuse key")
        step.payments = True
        step.watch(first.loan_id)
        body = dict(first.body)
        if change is not None:
            body[change] = {"amount_paise": body["amount_paise"] + 1, "utr": self.fresh_utr(), "mode": "CASH"}[change]
            if body == first.body:
                body["mode"] = "UPI"
        reply = self.api.post("/api/v1/payments", body, as_=first.alias, headers={"Idempotency-Key": first.key})
        if change is not None:
            assert (reply.status, _code(reply)) == (422, "IDEMPOTENCY_KEY_REUSED"), reply.body[:300]
            return
        assert reply.status == first.reply.status, (reply.status, first.reply.status)
        assert reply.json == first.reply.json
        assert reply.header("Idempotent-Replayed") == "true"

    @precondition(lambda self: self.ledger.payments)
    @rule(pick=st.integers(0, 10**6), alias=st.sampled_from(["admin", "manager"]))
    def reverse(self, pick: int, alias: str) -> None:
        ids = sorted(self.ledger.payments, key=lambda i: self.ledger.payments[i].posted)
        payment = self.ledger.payments[ids[pick % len(ids)]]
        loan = self.ledger.loans[payment.loan_id]
        step = self.begin("reverse")
        step.payments = True
        step.watch(loan.loan_id)
        reply = self.api.post(f"/api/v1/payments/{payment.payment_id}/reverse", {"reason": "cheque bounced"}, as_=alias)
        if payment.status == ref.REVERSED:
            assert (reply.status, _code(reply)) == (409, "ALREADY_REVERSED"), reply.body[:300]
            return
        assert reply.status == 200, (reply.status, reply.body[:500])
        self.bench.seen["reversal" + (" reopening a closed loan" if loan.status == ref.CLOSED else "")] += 1
        self.ledger.reverse(payment, self.yesterday)
        step.collectors.add(payment.collector)
        got = reply.json
        assert got["status"] == "REVERSED" and got["payment_id"] == payment.payment_id
        assert _lines(got["allocation"]) == payment.taken_off, (got["allocation"], payment.taken_off)
        self._compare_money(got["loan"], loan)
        step.may_write.add(loan.loan_id)
        step.ledgers.add(loan.loan_id)
        step.audits[loan.loan_id][("PAYMENT_REVERSED", "SUCCESS")] += 1

    # --- guard and assignment -----------------------------------------------------------------------

    @precondition(lambda self: self.order)
    @rule(
        pick=st.integers(0, MAX_LOANS - 1),
        body=st.sampled_from(PROTECTED_BODIES),
        alias=st.sampled_from(["admin", "manager", "collector", "collector2", "auditor"]),
    )
    def patch_protected(self, pick: int, body: dict[str, Any], alias: str) -> None:
        loan = self.pick_loan(pick)
        step = self.begin("guard")
        reply = self.api.patch(f"/api/v1/loans/{loan.loan_id}", body, as_=alias)
        assert (reply.status, _code(reply)) == (403, "FINANCIAL_FIELD_PROTECTED"), reply.body[:300]
        step.audits[loan.loan_id][("FINANCIAL_GUARD_BLOCKED", "DENIED")] += 1

    @precondition(lambda self: self.order)
    @rule(
        pick=st.integers(0, MAX_LOANS - 1),
        to=st.sampled_from(COLLECTORS),
        alias=st.sampled_from(["admin", "manager"]),
    )
    def assign(self, pick: int, to: str, alias: str) -> None:
        loan = self.pick_loan(pick)
        step = self.begin("assign")
        username = _username(to)
        reply = self.api.post(f"/api/v1/loans/{loan.loan_id}/assign", {"collector_id": username}, as_=alias)
        assert reply.status == 200, (reply.status, reply.body[:300])
        assert reply.json["collector_id"] == username
        if loan.collector != username:
            step.collectors |= {loan.collector, username}
            loan.collector = username
            step.may_write.add(loan.loan_id)
            step.audits[loan.loan_id][("LOAN_ASSIGNED", "SUCCESS")] += 1

    # --- time and the day-end run -------------------------------------------------------------------

    @initialize(days=st.integers(0, 800))
    def start_on(self, days: int) -> None:
        """Examples start on different days: month ends, February, leap years."""
        self.begin("start")
        self._move_clock(days)

    def _move_clock(self, days: int) -> None:
        self.clock.advance(days=days)
        self.api.mint_all()

    @rule(days=st.sampled_from(DAYS), then=st.one_of(DAY_ENDS, DAY_ENDS, st.none()))
    def advance(self, days: int, then: DayEnd | None) -> None:
        """The calendar moves on (or not: ``days`` 0), usually followed by the day-end run for the last
        completed date. A date left without its run is caught up by a later one, or run later on the same
        date after payments have landed on it."""
        self._move_clock(days)
        if then is None:
            self.begin("advance")
        elif self.ledger.through is not None and self.ledger.through >= self.yesterday:
            self.begin("day-end again")
            self._run_again(self.yesterday)
        else:
            self._day_end(then)

    def _day_end(self, plan: DayEnd) -> None:
        step = self.begin("day-end" if plan.crash is None else "day-end crashed")
        step.any_loan = step.run = True
        if plan.escalation != self.bench.escalation:
            self.bench.set_flag("ESCALATION_ENABLED", plan.escalation)
            self.bench.escalation = plan.escalation
        date = self.yesterday.isoformat()
        if plan.crash is None:
            outcome = self._run(date)
        else:
            target, phase, n = plan.crash
            model, call = (LoanModel, "TransactWriteItems") if target == "loan" else (DpdRunModel, "UpdateItem")
            # The first update of the record takes the run; failing that is a refusal, not a crash midway.
            fault = Fault(n + (target == "record"), _never_sent if phase == "before" else _answer_lost)
            with hooked(model, f"{phase}-call.dynamodb.{call}", fault):
                outcome = self._run(date)
            if fault.fired and phase == "after" and target == "record" and fault.calls == fault.n:
                # The write whose answer was lost was the run's last, its finish: it landed, and the run
                # recognises its own finishing time on the record (docs/day-end.md, "Finished once").
                self.bench.seen["the answer to a run's finish lost"] += 1
            elif fault.fired:
                self.bench.seen[f"run crashed at a {target} write ({phase})"] += 1
                assert outcome == "FAILED", outcome
                outcome = self._run(date)
        assert outcome == "COMPLETED", outcome
        for loan_id in self.ledger.day_end(self.yesterday, plan.escalation):
            step.audits[loan_id][("LEGAL_ESCALATED", "SUCCESS")] += 1
            self.bench.seen["loan escalated"] += 1
        if plan.rerun is not None:
            self._run_again(self.yesterday - dt.timedelta(days=plan.rerun))

    def _run_again(self, business_date: dt.date) -> None:
        """Asked again for a date this run or an earlier one covered: done already (ALREADY_COMPLETED), or
        superseded by the later run (COMPLETED); either way nothing changes."""
        outcome = self._run(business_date.isoformat())
        done = business_date in self.ledger.runs or business_date in self.ledger.superseded
        assert outcome == ("ALREADY_COMPLETED" if done else "COMPLETED"), (business_date, outcome)
        self.ledger.superseded.add(business_date)

    def _run(self, business_date: str) -> str:
        reply = self.api.post("/api/v1/jobs/dpd/runs", {"business_date": business_date})
        assert reply.status == 200, (reply.status, reply.body[:500])
        outcome: str = reply.json["outcome"]
        return outcome

    # --- the checks -----------------------------------------------------------------------------------

    @invariant()
    def the_app_agrees_with_the_reference(self) -> None:
        self.ended()
        with self.bench.timing.measure(f"check after {self.step.name}"):
            self._check()

    def _check(self) -> None:
        step, ledger = self.step, self.ledger
        # One scan says which loans the step wrote; only those (or all, when the run date moved) are
        # fetched through the API.
        items = {item["loan_id"]["S"]: item for item in self.bench.scan("loans")}
        assert set(items) == set(ledger.loans), (sorted(items), sorted(ledger.loans))
        written = {k for k, item in items.items() if self.items.get(k) != item}
        if not step.any_loan:
            assert written <= step.may_write, f"{step.name} wrote {sorted(written - step.may_write)}"
        for loan_id, item in items.items():
            self._check_stored(item, ledger.loans[loan_id])
        if written or ledger.through != self.checked_through:
            self._check_views()
        for loan_id in step.ledgers:
            self._check_payments(ledger.loans[loan_id])
        if step.payments:
            self._check_utrs(everything=bool(step.ledgers))
        for loan_id in written | set(step.audits):
            self._check_audit(loan_id, items[loan_id])
        if written or self.today != self.checked_today:
            self._check_dashboard(sorted(c for c in step.collectors if c))
        if step.run:
            cases = {c["loan_id"]["S"]: c["escalated_on"]["S"] for c in self.bench.scan("legal-cases")}
            want = {lo.loan_id: lo.escalated_on.isoformat() for lo in ledger.loans.values() if lo.escalated_on}
            assert cases == want, (cases, want)
        self.items = items
        self.checked_through, self.checked_today = ledger.through, self.today
        self.bench.left = self.written()

    def _check_stored(self, item: dict[str, Any], loan: ref.Loan) -> None:
        """The stored figures hold for their own as-of date and are never stale against the latest
        completed run: a run writes every loan whose bucket, classification, NPA date or overdue amount
        moved (the dashboard's counters add them up)."""
        as_of = dt.date.fromisoformat(item["dpd_as_of"]["S"])
        through = self.ledger.through
        latest = loan.last_written if through is None or loan.status != ref.ACTIVE else max(loan.last_written, through)
        assert loan.last_written <= as_of <= latest, (loan.loan_id, as_of, loan.last_written, through)
        stored = loan.assessment(as_of, self.ledger.runs)
        assert _stored(item) == (stored.dpd, stored.bucket, stored.classification, stored.npa_since, stored.overdue)
        now = loan.assessment(latest, self.ledger.runs)
        assert _stored(item)[1:] == (now.bucket, now.classification, now.npa_since, now.overdue), (
            f"{loan.loan_id} stored as of {as_of} is stale for {latest}",
            _stored(item),
            now,
        )
        assert item["status"]["S"] == loan.status

    def _check_views(self) -> None:
        reply = self.api.get("/api/v1/loans?limit=200", as_="auditor")
        assert reply.status == 200, reply.body[:300]
        views = {v["loan_id"]: v for v in reply.json["items"]}
        assert set(views) == set(self.ledger.loans)
        for loan_id, view in views.items():
            self.compare_loan(view, self.ledger.loans[loan_id])
        self.views = views

    def compare_loan(self, view: dict[str, Any], loan: ref.Loan, on: dt.date | None = None) -> None:
        e = self.ledger.expected(loan)
        if on is not None:
            assert e.dpd_as_of == on
        got = {k: view[k] for k in _VIEW_FIELDS}
        want = {
            "status": e.status,
            "dpd_as_of": e.dpd_as_of.isoformat(),
            "dpd": e.dpd,
            "bucket": e.bucket,
            "classification": e.classification,
            "npa_since": e.npa_since.isoformat() if e.npa_since else None,
            "overdue_paise": e.overdue,
            "outstanding_principal_paise": e.outstanding,
            "principal_paise": loan.principal,
            "collector_id": loan.collector,
            "legal": {
                "escalated": e.escalated_on is not None,
                "escalated_on": e.escalated_on.isoformat() if e.escalated_on else None,
            },
        }
        assert got == want, (loan.loan_id, {k: (got[k], want[k]) for k in got if got[k] != want[k]})
        if e.classification == ref.NPA:
            self.bench.seen["NPA shown" + (" below dpd 91 (sticky)" if e.dpd < ref.NPA_DPD else "")] += 1
        schedule = [
            (
                r["seq"],
                r["due_date"],
                r["principal_paise"],
                r["interest_paise"],
                r["paid_interest_paise"],
                r["paid_principal_paise"],
            )
            for r in view["schedule"]
        ]
        assert schedule == [
            (r.seq, r.due.isoformat(), r.principal, r.interest, h.interest, h.principal)
            for r, h in zip(loan.rows, e.held, strict=True)
        ], loan.loan_id
        paid_principal = sum(r["paid_principal_paise"] for r in view["schedule"])
        assert view["outstanding_principal_paise"] == view["principal_paise"] - paid_principal >= 0

    def _check_payments(self, loan: ref.Loan) -> None:
        reply = self.api.get(f"/api/v1/loans/{loan.loan_id}/payments?limit=200", as_="auditor")
        assert reply.status == 200, reply.body[:300]
        listed = reply.json["items"]
        assert sorted(p["payment_id"] for p in listed) == sorted(p.payment_id for p in loan.payments)
        allocations = loan.allocations()
        for p in listed:
            mine = self.ledger.payments[p["payment_id"]]
            assert (p["utr"], p["amount_paise"], p["payment_date"], p["status"]) == (
                mine.utr,
                mine.amount,
                mine.payment_date.isoformat(),
                mine.status,
            )
            lines = _lines(p["allocation"])
            assert lines == (allocations[mine.payment_id] if mine.status == ref.POSTED else mine.taken_off), p
            a = p["allocation"]
            assert a["interest_paise"] == sum(i for _, i, _ in lines)
            assert a["principal_paise"] == sum(q for _, _, q in lines)
            assert a["interest_paise"] + a["principal_paise"] == p["amount_paise"], p
        # Money is conserved: what the standing payments brought is what the schedule holds.
        view = self.views[loan.loan_id]
        held = sum(r["paid_interest_paise"] + r["paid_principal_paise"] for r in view["schedule"])
        assert held == sum(p["amount_paise"] for p in listed if p["status"] == "POSTED"), loan.loan_id

    def _check_utrs(self, everything: bool) -> None:
        """Every UTR is claimed by exactly the payment that used it first, reversed ones included. A new
        payment is always stored with its claim, so after a refusal or a replay the claims alone show
        that nothing was stored."""
        claims = {c["utr"]["S"]: c["payment_id"]["S"] for c in self.bench.scan("utr-claims")}
        assert claims == self.ledger.utrs
        if not everything:
            return
        stored = self.bench.scan("payments")
        assert len(stored) == len(self.ledger.payments)
        by_utr = Counter(p["utr"]["S"] for p in stored)
        assert all(n == 1 for n in by_utr.values()), by_utr
        for p in stored:
            mine = self.ledger.payments[p["payment_id"]["S"]]
            assert (p["utr"]["S"], p["status"]["S"], p["loan_id"]["S"]) == (mine.utr, mine.status, mine.loan_id)

    def _check_audit(self, loan_id: str, item: dict[str, Any]) -> None:
        query: dict[str, Any] = {
            "TableName": self.bench.table("audit"),
            "IndexName": "entity-index",
            "KeyConditionExpression": "entity_id = :e AND audit_id > :a",
            "ExpressionAttributeValues": {":e": {"S": loan_id}, ":a": {"S": self.audit_seen.get(loan_id, "0")}},
        }
        answer = self.bench.ddb.query(**query)
        assert "LastEvaluatedKey" not in answer
        entries = answer["Items"]
        found: Counter[tuple[str, str]] = Counter()
        link = self.links[loan_id]
        for entry in entries:
            action, outcome = logical_value(entry["action"]["S"]), entry["outcome"]["S"]
            if action != "DELINQUENCY_CHANGED":
                found[(action, outcome)] += 1
                continue
            assert logical_value(entry["actor_sub"]["S"]) == JOB_ACTOR
            before, after = json.loads(entry["before"]["S"]), json.loads(entry["after"]["S"])
            assert tuple(before[f] for f in CHAIN_FIELDS) == link, (loan_id, before, link)
            assert tuple(before[f] for f in CHAIN_FIELDS) != tuple(after[f] for f in CHAIN_FIELDS), entry
            link = tuple(after[f] for f in CHAIN_FIELDS)
        stored = _stored(item)
        assert link == (stored[0], stored[1], stored[2], stored[3].isoformat() if stored[3] else None), (
            f"{loan_id}: the trail ends at {link}, the loan is stored as {stored}"
        )
        self.links[loan_id] = link
        want = self.step.audits.get(loan_id, Counter())
        if self.step.run:
            # The run leaves only its own entries.
            assert set(found) <= {("LEGAL_ESCALATED", "SUCCESS")}, found
        assert found == want, (self.step.name, loan_id, found, want)
        if entries:
            self.audit_seen[loan_id] = max(e["audit_id"]["S"] for e in entries)

    def _check_dashboard(self, collectors: list[str]) -> None:
        """The book, and ``collectors``' own dashboards, against a recount."""
        for collector in [None, *collectors]:
            path = "/api/v1/dashboard/summary" + (f"?collector_id={collector}" if collector else "")
            reply = self.api.get(path, as_="auditor")
            assert reply.status == 200, reply.body[:300]
            got = reply.json
            assert (got["as_of"], got["today"]) == (self.yesterday.isoformat(), self.today.isoformat())
            want = self.ledger.summary(collector, self.yesterday, self.today)
            got = {k: got[k] for k in want}
            assert got == want, (collector, {k: (got[k], want[k]) for k in want if got[k] != want[k]})


_VIEW_FIELDS = (
    "status",
    "dpd_as_of",
    "dpd",
    "bucket",
    "classification",
    "npa_since",
    "overdue_paise",
    "outstanding_principal_paise",
    "principal_paise",
    "collector_id",
    "legal",
)


def _code(reply: Reply) -> str | None:
    try:
        body = reply.json
    except ValueError:
        return None
    return body.get("error", {}).get("code") if isinstance(body, dict) else None


def _lines(allocation: dict[str, Any]) -> tuple[tuple[int, int, int], ...]:
    return tuple((line["seq"], line["interest_paise"], line["principal_paise"]) for line in allocation["instalments"])


def _stored(item: dict[str, Any]) -> tuple[int, str, str, dt.date | None, int]:
    npa = item.get("npa_since", {}).get("S")
    return (
        int(item["dpd"]["N"]),
        item["bucket"]["S"],
        item["classification"]["S"],
        dt.date.fromisoformat(npa) if npa else None,
        int(item["overdue_paise"]["N"]),
    )


def _never_sent() -> Exception:
    return EndpointConnectionError(endpoint_url="http://dynamodb")


def _answer_lost() -> Exception:
    return ReadTimeoutError(endpoint_url="http://dynamodb")


# ------------------------------------------------------------------------------------------- the tests


def _engine_cpu(endpoint: str) -> float:
    """CPU seconds DynamoDB Local (the JVM serving ``endpoint``) has used: with the process's own, what a
    run costs whatever else the machine is doing."""
    port = endpoint.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-port" in argv and argv[argv.index(b"-port") + 1 :][:1] == [port.encode()]:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=STEPS,
        deadline=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


@pytest.mark.parametrize("shard", range(SHARDS))
def test_the_ledger_behaves_as_its_rules_say(bench: Bench, shard: int) -> None:
    examples = -(-EXAMPLES // SHARDS)
    LedgerModel.bench = bench
    machine: Callable[[], LedgerModel] | type[LedgerModel] = LedgerModel
    if SEED is not None:
        machine = seed(int(SEED) * SHARDS + shard)(LedgerModel)
    started, cpu, engine = time.perf_counter(), time.process_time(), _engine_cpu(bench.endpoint)
    try:
        run_state_machine_as_test(machine, settings=_settings(examples))
    finally:
        if TIMING:
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            engine = _engine_cpu(bench.endpoint) - engine
            report = "\n".join(
                [
                    f"shard {shard}: {examples} examples x {STEPS} steps in {elapsed:.1f} s"
                    f" (CPU: this process {cpu:.1f} s, DynamoDB Local {engine:.1f} s)",
                    bench.timing.report(),
                    *(f"  {what:<44} {n:>6}" for what, n in sorted(bench.seen.items())),
                ]
            )
            if TIMING == "1":
                print("\n" + report)
            else:
                with open(TIMING, "a", encoding="utf-8") as out:
                    out.write(report + "\n")
            bench.timing = Timing()
            bench.seen.clear()
