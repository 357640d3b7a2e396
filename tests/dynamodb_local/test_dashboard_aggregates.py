"""The dashboard (docs/dashboard.md) against an independent recount, on DynamoDB Local.

``GET /api/v1/dashboard/summary`` answers from sharded counters that every loan write updates in its
own transaction. These tests drive the API in-process (``chalice.test.Client``) and compare every
figure with a recount made here from the definitions in docs/dashboard.md, out of nothing but what
the API says about the loans (``GET /api/v1/loans``, every page, and per collector) and their payments
(``GET /api/v1/loans/{id}/payments``). The one thing the tests keep themselves is who held each loan
when each payment was posted: the API does not say whom a payment is credited to, and by definition
it is the collector holding the loan at that moment.

- A hypothesis state machine builds random books through the API: loans with generated and imported
  schedules (some long overdue, with and without a collector and a branch), partial payments and
  payoffs dated up to 7 days back, reversals, reassignments, and day-end runs as a frozen clock moves
  on. The book equals its recount after every step; every collector and every branch at the end of
  every business day and of every example.
- Processes race: distinct payments posted at one instant on many loans of two collectors (several on
  one loan, and two payoffs of one loan, of which one can land). Every accepted payment is there, the
  figures equal the recount and ``today_count`` is the number of 201s.
- The IST day boundary: today's collections start again at IST midnight without a job, the month's on
  the 1st, and a payment counts on its date, not the day it was entered.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import queue
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import app as app_module
from chalicelib import wiring
from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.delinquency import Bucket, Classification
from chalicelib.domain.roles import Role
from chalicelib.services.auth import issue_token
from chalicelib.wiring import services
from infra.provision import provision
from tests.dynamodb_local import processes

pytestmark = pytest.mark.dynamodb_local

Json = dict[str, Any]

COLLECTORS = ("collector1", "collector2", "collector3")
BRANCHES = ("PUNE", "NASHIK")
USERS: dict[str, Role] = {"admin1": Role.ADMIN, "manager1": Role.MANAGER, **dict.fromkeys(COLLECTORS, Role.COLLECTOR)}
DAY = dt.timedelta(days=1)
START = dt.datetime(2026, 3, 9, 10, 0, tzinfo=IST)
"""Monday 9 March 2026, 10:00 IST."""


# --- the API in-process, at a frozen instant --------------------------------------------------------


class Session:
    """The API through ``chalice.test.Client`` at the instant of a :class:`FixedClock`, with a token per
    user issued at that instant (moving the clock issues them again)."""

    def __init__(self, client: Client, clock: FixedClock) -> None:
        self.client = client
        self.clock = clock
        self.tokens: dict[str, str] = {}

    def add_users(self) -> None:
        for username, role in USERS.items():
            services().auth.add_user(username, "correct-horse-battery", role)
        self.mint()

    def mint(self) -> None:
        secret = services().jwt_secret()
        self.tokens = {
            name: issue_token(name, role.value, secret, 8 * 3600).access_token for name, role in USERS.items()
        }

    def move_to(self, when: dt.datetime) -> None:
        """Set the clock to ``when`` and issue fresh tokens."""
        self.clock.advance(seconds=(when - self.clock.now()).total_seconds())
        self.mint()

    def today(self) -> dt.date:
        return self.clock.now().astimezone(IST).date()

    def call(self, method: str, path: str, body: Any = None, as_: str = "admin1") -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.tokens[as_]}"}
        reply = self.client.http.request(method, path, headers=headers, body=json.dumps(body).encode() if body else b"")
        # A millisecond per request, so the ids of successive requests are time-ordered as in life.
        self.clock.advance(milliseconds=1)
        return reply.status_code, json.loads(reply.body) if reply.body else None

    def ok(self, method: str, path: str, body: Any = None, as_: str = "admin1", status: int = 200) -> Any:
        code, answer = self.call(method, path, body, as_)
        assert code == status, (method, path, body, code, answer)
        return answer

    def pages(self, path: str, as_: str = "admin1") -> list[Json]:
        """Every item of a listing, following ``next_cursor`` to the end."""
        items: list[Json] = []
        cursor: str | None = None
        sep = "&" if "?" in path else "?"
        while True:
            answer = self.ok("GET", f"{path}{sep}limit=200" + (f"&cursor={cursor}" if cursor else ""), as_=as_)
            items += answer["items"]
            cursor = answer["next_cursor"]
            if cursor is None:
                return items

    def summary(self, query: str = "", as_: str = "admin1") -> Json:
        answer: Json = self.ok("GET", f"/api/v1/dashboard/summary{query}", as_=as_)
        return answer

    def pay(self, loan_id: str, utr: str, amount: int, day: dt.date, as_: str = "admin1") -> Json:
        body = {"loan_id": loan_id, "utr": utr, "amount_paise": amount, "payment_date": day.isoformat(), "mode": "UPI"}
        answer: Json = self.ok("POST", "/api/v1/payments", body, as_=as_, status=201)
        return answer

    def create_loan(self, loan_id: str, rows: list[tuple[dt.date, int, int]], **extra: Any) -> Json:
        """A loan with an imported schedule of ``rows`` (due date, principal, interest)."""
        body: Json = {
            "loan_id": loan_id,
            "borrower": {"name": "Asha Rao", "phone": "9876543210"},
            "principal_paise": sum(p for _, p, _ in rows),
            "disbursement_date": (min(d for d, _, _ in rows) - 30 * DAY).isoformat(),
            "schedule": [{"due_date": d.isoformat(), "principal_paise": p, "interest_paise": i} for d, p, i in rows],
            **extra,
        }
        answer: Json = self.ok("POST", "/api/v1/loans", body, status=201)
        return answer


@pytest.fixture
def session(local_stack: str, tmp_path: Path) -> Iterator[Session]:
    """``local_stack`` (fresh tables in DynamoDB Local), a client, the users, and the clock frozen at
    :data:`START`."""
    clock = FixedClock(START)
    with use_clock(clock), Client(app_module.app, project_dir=str(tmp_path)) as client:
        s = Session(client, clock)
        s.add_users()
        yield s


# --- the recount, from docs/dashboard.md ------------------------------------------------------------


def recount(loans: list[Json], payments: list[Json], today: dt.date) -> Json:
    """A scope's figures computed by hand from its loans and the payments credited to it, as the API
    shows them: only ACTIVE loans count in the money, bucket, classification and dpd figures;
    collections are the standing (POSTED) payments by payment date; ``avg_dpd`` is the plain mean of
    the dpd on ``as_of`` (yesterday) of the ACTIVE loans in arrears (0 if none); ``legal_escalated``
    counts loans escalated whatever their status."""
    active = [loan for loan in loans if loan["status"] == "ACTIVE"]
    # A loan shows its dpd as of ``dpd_as_of``: the last completed run's date, or its own later
    # evaluation. Until the day-end run for yesterday has been made, that is an earlier date; in
    # arrears, and nothing paid, its dpd has grown by a day for every date since.
    as_of = today - DAY
    in_arrears = [
        loan["dpd"] + (as_of - dt.date.fromisoformat(loan["dpd_as_of"])).days for loan in active if loan["dpd"] > 0
    ]
    standing = [p for p in payments if p["status"] == "POSTED"]
    day, month = today.isoformat(), today.isoformat()[:7]
    return {
        "loans": {"total": len(loans), "active": len(active)},
        "outstanding_principal_paise": sum(loan["outstanding_principal_paise"] for loan in active),
        "overdue_paise": sum(loan["overdue_paise"] for loan in active),
        "collections": {
            "today_paise": sum(p["amount_paise"] for p in standing if p["payment_date"] == day),
            "today_count": sum(1 for p in standing if p["payment_date"] == day),
            "mtd_paise": sum(p["amount_paise"] for p in standing if p["payment_date"][:7] == month),
        },
        "buckets": {
            b.value: {
                "count": sum(1 for loan in active if loan["bucket"] == b.value),
                "outstanding_principal_paise": sum(
                    loan["outstanding_principal_paise"] for loan in active if loan["bucket"] == b.value
                ),
            }
            for b in Bucket
        },
        "classification": {
            c.value: sum(1 for loan in active if loan["classification"] == c.value) for c in Classification
        },
        "avg_dpd": sum(in_arrears) / len(in_arrears) if in_arrears else 0,
        "legal_escalated": sum(1 for loan in loans if loan["legal"]["escalated"]),
    }


def figures(summary: Json) -> Json:
    return {k: v for k, v in summary.items() if k not in ("as_of", "today", "scope")}


def owed(loan: Json) -> int:
    """Everything a loan still owes, due or not, from its schedule as the API shows it."""
    return sum(
        r["principal_paise"] + r["interest_paise"] - r["paid_principal_paise"] - r["paid_interest_paise"]
        for r in loan["schedule"]
    )


class Book:
    """What the API lists of a stage's loans and payments, and the check of the summaries against the
    recounts. ``credited``: payment id -> the collector who held its loan when it was posted (kept by
    the caller). ``payments``: a loan's payments already listed, when the caller knows that they have
    not changed since (none of them posted or reversed); listed here otherwise."""

    def __init__(
        self, s: Session, credited: dict[str, str | None], payments: dict[str, list[Json]] | None = None
    ) -> None:
        self.s = s
        self.credited = credited
        self.loans = s.pages("/api/v1/loans")
        self.payments = payments if payments is not None else {}

    def payments_of(self, loans: list[Json]) -> list[Json]:
        for loan in loans:
            if loan["loan_id"] not in self.payments:
                self.payments[loan["loan_id"]] = self.s.pages(f"/api/v1/loans/{loan['loan_id']}/payments")
        return [p for loan in loans for p in self.payments[loan["loan_id"]]]

    def check(
        self,
        collectors: Iterable[str] = COLLECTORS,
        branches: Iterable[str] = BRANCHES,
        thorough: bool = False,
    ) -> None:
        """The summary of the book, of each collector named and of each branch named equals its recount,
        as of yesterday (IST) and for today. ``thorough``: each collector's loans are also listed with
        ``?collector_id=``, and each collector's own view of the dashboard is checked too."""
        today = self.s.today()
        everything = self.payments_of(self.loans)
        assert {p["payment_id"] for p in everything} == set(self.credited), "payments the test did not post, or lost"
        self.check_scope("", "book", self.loans, everything, today)
        for collector in collectors:
            mine = [loan for loan in self.loans if loan["collector_id"] == collector]
            if thorough:  # the collector's own listing: the same loans, shown the same
                listed = self.s.pages(f"/api/v1/loans?collector_id={collector}")
                assert sorted(listed, key=lambda loan: loan["loan_id"]) == sorted(
                    mine, key=lambda loan: loan["loan_id"]
                )
                mine = listed
            credited = [p for p in everything if self.credited[p["payment_id"]] == collector]
            expected = self.check_scope(f"?collector_id={collector}", f"collector:{collector}", mine, credited, today)
            if thorough:
                assert figures(self.s.summary(as_=collector)) == expected
        for branch in branches:
            theirs = [loan for loan in self.loans if loan["branch"] == branch]
            self.check_scope(f"?branch={branch}", f"branch:{branch}", theirs, self.payments_of(theirs), today)

    def check_scope(self, query: str, scope: str, loans: list[Json], payments: list[Json], today: dt.date) -> Json:
        shown = self.s.summary(query)
        assert (shown["scope"], shown["today"], shown["as_of"]) == (scope, str(today), str(today - DAY))
        expected = recount(loans, payments, today)
        assert figures(shown) == expected, scope
        return expected


# --- random books -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CreateLoan:
    """A loan with an imported schedule (instalments ``gap`` days apart: an instalment can then fall
    due while the loan is in arrears without moving its bucket, which only the watch on its overdue
    amount catches) or generated terms (monthly), whose first instalment falls due from 130 days ago
    (an NPA from the start, escalated by the next run) to 45 days ahead."""

    imported: bool
    gap: int
    first_due: int
    amounts: tuple[tuple[int, int], ...]
    rate_bps: int
    collector: str | None
    branch: str | None


@dataclasses.dataclass(frozen=True)
class Pay:
    """A payment on an ACTIVE loan: a share (in thousandths) of what it owes, or all of it (the loan
    closes); dated up to 7 days back."""

    which: int
    share: int
    payoff: bool
    backdate: int


@dataclasses.dataclass(frozen=True)
class Reverse:
    """A standing payment bounces (a closed loan reopens)."""

    which: int


@dataclasses.dataclass(frozen=True)
class Assign:
    """A loan moves to a collector (or stays, if it is theirs already)."""

    which: int
    collector: str


@dataclasses.dataclass(frozen=True)
class Contact:
    """A loan's notes change: a write that moves no figure."""

    which: int


@dataclasses.dataclass(frozen=True)
class NextDays:
    """The clock moves on by some days, to some hour. The day-end job then brings the book to yesterday
    again (``runs``: ``each`` business date passed, or one run to ``catch_up`` on them all), or it
    runs ``later`` (a :class:`DayEnd` step): meanwhile the loans show the last completed date's
    figures and the mean dpd is already the new date's (docs/dashboard.md). A jump of over a month
    (more than the job catches up on from its watch index) makes the run scan the whole book."""

    days: int
    hour: int
    runs: str


@dataclasses.dataclass(frozen=True)
class DayEnd:
    """The day-end runs still to be made, for each date or one catching up."""

    each: bool


Operation = CreateLoan | Pay | Reverse | Assign | Contact | NextDays | DayEnd

CREATE = st.builds(
    CreateLoan,
    imported=st.booleans(),
    gap=st.integers(7, 45),
    first_due=st.integers(-130, 45),
    amounts=st.lists(st.tuples(st.integers(10_000, 2_000_000), st.integers(0, 150_000)), min_size=1, max_size=4).map(
        tuple
    ),
    rate_bps=st.integers(0, 3_000),
    collector=st.sampled_from((None, *COLLECTORS)),
    branch=st.sampled_from((None, *BRANCHES)),
)
PAY = st.builds(
    Pay, which=st.integers(0, 99), share=st.integers(1, 999), payoff=st.just(False), backdate=st.integers(0, 7)
)
OPERATIONS: st.SearchStrategy[Operation] = st.one_of(
    PAY,
    PAY,
    PAY,
    st.builds(Pay, which=st.integers(0, 99), share=st.just(0), payoff=st.just(True), backdate=st.integers(0, 7)),
    CREATE,
    st.builds(Reverse, which=st.integers(0, 99)),
    st.builds(Assign, which=st.integers(0, 99), collector=st.sampled_from(COLLECTORS)),
    st.builds(Contact, which=st.integers(0, 99)),
    st.builds(
        NextDays,
        days=st.sampled_from([1, 1, 2, 35]),
        hour=st.integers(0, 19),
        runs=st.sampled_from(["each", "catch_up", "later"]),
    ),
    st.builds(DayEnd, each=st.booleans()),
)
"""Weighted by repetition: payments come most often; a day-end run is the dearest step."""

EXAMPLES = 8
STEPS = 15
_stages = itertools.count()


class RandomBook(RuleBasedStateMachine):
    """Writes through the API in a stage of its own, and the summaries against their recounts: the
    book's after every step; every collector's and every branch's at the end of each business day
    (before the clock moves on, while "today" is still the day the payments were made) and at the end
    of the example, with everything listed afresh, each collector's loans listed with
    ``?collector_id=`` and each collector's own view of the dashboard. (Every scope after every step
    costs more than this file can afford; counters only ever add, so a write to a wrong scope stays
    wrong until the next of those checks.)

    One rule draws a weighted operation (rather than a rule per operation) so that every example mixes
    them all: hypothesis's swarm testing would otherwise spend some of the few affordable examples on
    books built by one kind of write only (say, day-end runs over an empty book)."""

    session: Session
    endpoint: str

    def __init__(self) -> None:
        super().__init__()
        stage = f"dash{os.getpid() % 10000}x{next(_stages)}"
        os.environ["STAGE"] = stage  # local_stack's monkeypatch puts the test's own stage back
        wiring.reset()
        provision(stage, boto3.client("dynamodb", endpoint_url=self.endpoint), boto3.client("ssm"), quiet=True)
        self.holder: dict[str, str | None] = {}
        """Loan id -> the collector holding it now."""
        self.credited: dict[str, str | None] = {}
        """Payment id -> the collector who held its loan when it was posted."""
        self.standing: dict[str, str] = {}
        """Standing payment id -> its loan."""
        self.listed: dict[str, list[Json]] = {}
        """Loan id -> its payments as last listed; dropped when one of them is posted or reversed."""
        self.loans: list[Json] = []
        """The loans as the API listed them after the last step."""
        self.evaluated = dt.date.min
        """The business date the book was last brought to: by the last day-end run, or at the start."""
        self.utrs = itertools.count(1)

    @initialize(start=st.integers(0, 365), loans=st.lists(CREATE, min_size=2, max_size=4))
    def open_book(self, start: int, loans: list[CreateLoan]) -> None:
        """The clock at 10:00 IST on a day of 2026 (drawn, so that an example replays exactly), the users,
        and a few loans."""
        self.session.move_to(dt.datetime(2026, 1, 1, 10, tzinfo=IST) + DAY * start)
        self.session.add_users()
        self.evaluated = self.session.today() - DAY
        for op in loans:
            self.create(op)

    @rule(op=OPERATIONS)
    def write(self, op: Operation) -> None:
        """One write through the API (or the clock moving on, with or without the day-end runs)."""
        if isinstance(op, CreateLoan):
            self.create(op)
        elif isinstance(op, Pay):
            self.pay(op)
        elif isinstance(op, Reverse):
            self.reverse(op)
        elif isinstance(op, Assign):
            self.assign(op)
        elif isinstance(op, Contact):
            loan_id = sorted(self.holder)[op.which % len(self.holder)]
            self.session.ok("PATCH", f"/api/v1/loans/{loan_id}", {"notes": f"called at {self.session.clock.now()}"})
        elif isinstance(op, NextDays):
            self.next_days(op)
        else:
            self.day_end(op.each)

    def create(self, op: CreateLoan) -> None:
        s = self.session
        today = s.today()
        due = today + DAY * op.first_due
        loan_id = f"LN-DASH-{len(self.holder) + 1:03d}"
        body: Json = {
            "loan_id": loan_id,
            "borrower": {"name": "Asha Rao", "phone": "9876543210"},
            "principal_paise": sum(p for p, _ in op.amounts),
            "disbursement_date": min(due - 30 * DAY, today - DAY).isoformat(),
        }
        if op.imported:
            body["schedule"] = [
                {"due_date": (due + DAY * op.gap * n).isoformat(), "principal_paise": p, "interest_paise": i}
                for n, (p, i) in enumerate(op.amounts)
            ]
        else:
            body.update(annual_rate_bps=op.rate_bps, tenure_months=len(op.amounts), first_due_date=due.isoformat())
        if op.collector is not None:
            body["collector_id"] = op.collector
        if op.branch is not None:
            body["branch"] = op.branch
        created = s.ok("POST", "/api/v1/loans", body, status=201)
        assert (created["collector_id"], created["branch"]) == (op.collector, op.branch)
        self.holder[loan_id] = op.collector

    def pay(self, op: Pay) -> None:
        s = self.session
        active = [loan for loan in self.loans if loan["status"] == "ACTIVE"]
        if not active:
            return
        loan = active[op.which % len(active)]
        left = owed(loan)
        amount = left if op.payoff or left < 200 else min(left - 1, max(100, left * op.share // 1000))
        paid = s.pay(loan["loan_id"], f"UTRDASH{next(self.utrs):06d}", amount, s.today() - DAY * op.backdate)
        assert (paid["loan"]["status"] == "CLOSED") == (amount == left), paid
        self.credited[paid["payment_id"]] = self.holder[loan["loan_id"]]
        self.standing[paid["payment_id"]] = loan["loan_id"]
        self.listed.pop(loan["loan_id"], None)

    def reverse(self, op: Reverse) -> None:
        if not self.standing:
            return
        payment_id = sorted(self.standing)[op.which % len(self.standing)]
        loan_id = self.standing.pop(payment_id)
        reversed_ = self.session.ok("POST", f"/api/v1/payments/{payment_id}/reverse", {"reason": "cheque bounced"})
        assert (reversed_["status"], reversed_["loan_id"]) == ("REVERSED", loan_id)
        self.listed.pop(loan_id, None)

    def assign(self, op: Assign) -> None:
        loan_id = sorted(self.holder)[op.which % len(self.holder)]
        moved = self.session.ok("POST", f"/api/v1/loans/{loan_id}/assign", {"collector_id": op.collector})
        assert moved["collector_id"] == op.collector
        self.holder[loan_id] = op.collector

    def next_days(self, op: NextDays) -> None:
        s = self.session
        Book(s, self.credited, self.listed).check()  # the day's end: every scope
        s.move_to(dt.datetime.combine(s.today() + DAY * op.days, dt.time(op.hour), tzinfo=IST))
        if op.runs != "later":
            self.day_end(op.runs == "each")

    def day_end(self, each: bool) -> None:
        s = self.session
        yesterday = s.today() - DAY
        dates = [self.evaluated + DAY * n for n in range(1, (yesterday - self.evaluated).days + 1)]
        for business_date in dates if each and len(dates) <= 3 else dates[-1:]:
            run = s.ok("POST", "/api/v1/jobs/dpd/runs", {"business_date": business_date.isoformat()})
            assert run["outcome"] == "COMPLETED", run
        self.evaluated = yesterday

    @invariant()
    def the_books_summary_equals_its_recount(self) -> None:
        if not self.holder:
            return
        book = Book(self.session, self.credited, self.listed)
        assert {loan["loan_id"]: loan["collector_id"] for loan in book.loans} == self.holder
        book.check(collectors=(), branches=())
        self.loans = book.loans

    def teardown(self) -> None:
        """Every scope once more at the end, from everything listed afresh."""
        if self.holder:
            Book(self.session, self.credited).check(thorough=True)


def test_random_books_summaries_equal_their_recounts(session: Session, dynamodb_local: str, local_stack: str) -> None:
    """Whatever sequence of loan creations, payments, payoffs, reversals, reassignments and day-end runs
    (with the clock moving on) reaches the API, the summary of the book (after every step), of every
    collector and of every branch (at the end of every business day and of the example) equals the
    recount from the loans and payments the API lists."""
    RandomBook.session = session
    RandomBook.endpoint = dynamodb_local
    run_state_machine_as_test(
        RandomBook,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# --- payments from several processes at once --------------------------------------------------------

Call = tuple[str, Json]
"""(path, body) of one POST."""


def _poster(
    env: dict[str, str], at: str, sub: str, role: str, calls: list[Call], barrier: Any, out: Any, index: int
) -> None:
    """One racing process: the API in-process at the frozen instant ``at``, as ``sub``; the n-th calls of
    all processes are released together."""
    os.environ.update(env)
    with use_clock(FixedClock(dt.datetime.fromisoformat(at))):
        token = issue_token(sub, role, env["JWT_SECRET"], 600).access_token
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        results: list[tuple[int, Json]] = []
        with tempfile.TemporaryDirectory() as empty, Client(app_module.app, project_dir=empty) as client:
            for path, body in calls:
                barrier.wait(timeout=120)
                reply = client.http.post(path, headers=headers, body=json.dumps(body).encode())
                results.append((reply.status_code, json.loads(reply.body)))
    out.put((index, results))


def race(stage: str, at: dt.datetime, workers: list[tuple[str, str, list[Call]]]) -> list[list[tuple[int, Json]]]:
    """One process per (username, role, calls); every process's n-th call starts together.
    Returns each process's answers in order."""
    ctx = processes.context()
    barrier = ctx.Barrier(len(workers))
    out = ctx.Queue()
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
    env["STAGE"] = stage
    procs = [
        ctx.Process(target=_poster, args=(env, at.isoformat(), sub, role, calls, barrier, out, n))
        for n, (sub, role, calls) in enumerate(workers)
    ]
    for p in procs:
        p.start()
    answers: dict[int, list[tuple[int, Json]]] = {}
    try:
        while len(answers) < len(procs):
            try:
                index, results = out.get(timeout=1)
            except queue.Empty:
                # A worker that died cannot report: fail now rather than wait out the others' barrier.
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"a worker died (exit codes {dead})"
                continue
            answers[index] = results
        for p in procs:
            p.join(60)
            assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    return [answers[n] for n in range(len(workers))]


def test_payments_racing_from_several_processes_all_count_once(session: Session, local_stack: str) -> None:
    """Four processes, two per collector, each posting as that collector on the collector's own loans,
    six rounds released together: first on distinct loans, then both processes of a collector on one
    loan, then both paying off one loan in full (one can land, the other finds the loan closed).
    Afterwards every 201 is a standing payment the API lists, nothing else is, and the summary of the
    book, of each collector and of each branch equals the recount, with ``today_count`` the number of
    201s."""
    s = session
    today = s.today()
    rows = [(today + 20 * DAY, 900_000, 40_000), (today + 50 * DAY, 900_000, 30_000)]
    overdue_rows = [(today - 40 * DAY, 500_000, 25_000), (today + 20 * DAY, 500_000, 20_000)]
    loans: dict[str, list[str]] = {"collector1": [], "collector2": []}
    for collector, branch in (("collector1", "PUNE"), ("collector2", "NASHIK")):
        for n in range(6):
            loan_id = f"LN-RACE-{collector[-1]}-{n}"
            s.create_loan(loan_id, overdue_rows if n % 2 else rows, collector_id=collector, branch=branch)
            loans[collector].append(loan_id)
    # One loan of collector2 in PUNE: a branch made of two collectors' loans.
    s.create_loan("LN-RACE-2-PUNE", rows, collector_id="collector2", branch="PUNE")
    loans["collector2"].append("LN-RACE-2-PUNE")
    # The same instalments everywhere, so each payoff amount is known before the race.
    payoff = sum(p + i for _, p, i in rows)

    def payment(loan_id: str, utr: str, amount: int) -> Call:
        body = {"loan_id": loan_id, "utr": utr, "amount_paise": amount, "payment_date": str(today), "mode": "UPI"}
        return "/api/v1/payments", body

    workers: list[tuple[str, str, list[Call]]] = []
    for collector in ("collector1", "collector2"):
        mine, c = loans[collector], collector[-1]
        others = mine[1:]
        for k in range(2):
            # Rounds 0-2: the two processes of a collector on two different loans (of the ones after the first).
            calls = [
                payment(others[(2 * r + k) % len(others)], f"UTRRACE{c}W{k}R{r}", 10_000 + 137 * r) for r in range(3)
            ]
            calls.append(payment(mine[1], f"UTRRACE{c}W{k}HOT", 20_000 + k))  # rounds 3 and 4: both on one loan
            calls.append(payment(mine[3], f"UTRRACE{c}W{k}HOTTER", 30_000 + k))
            calls.append(payment(mine[0], f"UTRRACE{c}W{k}PAYOFF", payoff))  # round 5: both pay it off
            workers.append((collector, Role.COLLECTOR.value, calls))

    answers = race(local_stack, s.clock.now(), workers)

    credited: dict[str, str | None] = {}
    for (collector, _, _), results in zip(workers, answers, strict=True):
        for status, body in results[:5]:
            assert status == 201, body
        for status, body in results:
            if status == 201:
                credited[body["payment_id"]] = collector
    for collector in ("collector1", "collector2"):
        offs = [results[5] for (c, _, _), results in zip(workers, answers, strict=True) if c == collector]
        assert sorted(status for status, _ in offs) == [201, 422], offs
        refused = next(body for status, body in offs if status != 201)
        assert refused["error"]["code"] in ("LOAN_NOT_PAYABLE", "OVERPAYMENT"), refused
    accepted = len(credited)
    assert accepted == 4 * 5 + 2

    book = Book(s, credited)
    listed = book.payments_of(book.loans)
    assert {p["payment_id"] for p in listed} == set(credited)
    assert all(p["status"] == "POSTED" and p["payment_date"] == str(today) for p in listed)
    assert Counter(loan["status"] for loan in book.loans) == {"ACTIVE": 11, "CLOSED": 2}
    book.check(thorough=True)
    assert s.summary()["collections"]["today_count"] == accepted
    for collector in ("collector1", "collector2"):
        theirs = sum(1 for c in credited.values() if c == collector)
        assert s.summary(f"?collector_id={collector}")["collections"]["today_count"] == theirs == accepted // 2


# --- the IST day boundary ---------------------------------------------------------------------------


def test_today_rolls_over_at_ist_midnight_and_the_month_on_the_first(session: Session) -> None:
    """On DynamoDB Local, at the instants around two IST midnights (30 April and 1 May 2026): a payment
    at 23:59 counts in today's collections; at 00:01 the next day today's figures are 0 and the month
    keeps it; a payment at 00:01 dated that day counts; on the 1st the month starts from 0, and a
    payment posted on the 1st but dated the 30th is April's money, in neither of May's figures. At each
    instant the book, the collector and the branch equal their recounts."""
    s = session
    credited: dict[str, str | None] = {}

    def pay(utr: str, amount: int, day: dt.date) -> None:
        credited[s.pay("LN-IST-1", utr, amount, day)["payment_id"]] = "collector1"

    def collections() -> tuple[Json, Json]:
        Book(s, credited).check()
        return s.summary()["collections"], s.summary("?collector_id=collector1")["collections"]

    s.move_to(dt.datetime(2026, 4, 29, 23, 58, tzinfo=IST))
    s.create_loan("LN-IST-1", [(dt.date(2026, 5, 20), 5_000_000, 50_000)], collector_id="collector1", branch="PUNE")
    s.move_to(dt.datetime(2026, 4, 29, 23, 59, tzinfo=IST))
    pay("UTRIST000001", 10_000, dt.date(2026, 4, 29))
    both = {"today_paise": 10_000, "today_count": 1, "mtd_paise": 10_000}
    assert collections() == (both, both)

    s.move_to(dt.datetime(2026, 4, 30, 0, 1, tzinfo=IST))
    assert s.summary()["today"] == "2026-04-30" and s.summary()["as_of"] == "2026-04-29"
    both = {"today_paise": 0, "today_count": 0, "mtd_paise": 10_000}
    assert collections() == (both, both)
    pay("UTRIST000002", 20_000, dt.date(2026, 4, 30))
    both = {"today_paise": 20_000, "today_count": 1, "mtd_paise": 30_000}
    assert collections() == (both, both)

    s.move_to(dt.datetime(2026, 4, 30, 23, 59, tzinfo=IST))
    pay("UTRIST000003", 5_000, dt.date(2026, 4, 30))
    both = {"today_paise": 25_000, "today_count": 2, "mtd_paise": 35_000}
    assert collections() == (both, both)

    s.move_to(dt.datetime(2026, 5, 1, 0, 1, tzinfo=IST))
    assert s.summary()["today"] == "2026-05-01"
    both = {"today_paise": 0, "today_count": 0, "mtd_paise": 0}
    assert collections() == (both, both)
    pay("UTRIST000004", 7_000, dt.date(2026, 5, 1))
    both = {"today_paise": 7_000, "today_count": 1, "mtd_paise": 7_000}
    assert collections() == (both, both)
    pay("UTRIST000005", 3_000, dt.date(2026, 4, 30))  # entered on the 1st, dated the 30th: April's
    assert collections() == (both, both)


# --- time moving without payments ----------------------------------------------------------------


def test_dpd_and_overdue_move_with_the_days_and_the_runs(session: Session) -> None:
    """A loan in arrears, nothing paid: the mean dpd grows by a day with each business date without the
    loan being written, and when another instalment falls due while the loan stays in its bucket, the
    day-end run for that date still brings its overdue amount into the counters (docs/dashboard.md,
    the watch on the overdue amount). Each day the book, the collector and the branch equal their
    recounts."""
    s = session
    rows = [(dt.date(2026, 3, 3), 100_000, 5_000), (dt.date(2026, 3, 10), 100_000, 4_000)]
    s.create_loan("LN-AGE-1", rows, collector_id="collector2", branch="NASHIK")
    credited: dict[str, str | None] = {}
    expected = [("2026-03-08", 6, 105_000), ("2026-03-09", 7, 105_000), ("2026-03-10", 8, 209_000)]
    for n, (as_of, dpd, overdue) in enumerate(expected):
        if n:
            s.move_to(START + DAY * n)
            assert s.ok("POST", "/api/v1/jobs/dpd/runs", {"business_date": as_of})["outcome"] == "COMPLETED"
        Book(s, credited).check()
        shown = s.summary("?collector_id=collector2")
        assert shown["as_of"] == as_of
        assert (shown["avg_dpd"], shown["overdue_paise"], shown["buckets"]["1-30"]["count"]) == (dpd, overdue, 1)
