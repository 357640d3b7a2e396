"""The ledger's two promises, as one property over the real services on in-memory stores: for any
sequence of payments, reversals and day-end runs (docs/rules.md, "The ledger and its replay" and
"Audit"),

- every loan equals a replay of its standing payments from scratch (schedule, delinquency, status),
  and every payment's allocation is its share of that replay;
- every loan's DELINQUENCY_CHANGED entries chain, in time order, from the loan as created to the
  loan as stored: each ``before`` is the previous ``after``; no change of the stored loan is missing.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import clock
from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Action, AuditEntry
from chalicelib.domain.errors import DomainError
from chalicelib.domain.ledger import replay
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, delinquency_snapshot
from chalicelib.domain.payment import PaymentMode, PaymentStatus
from chalicelib.services.day_end import DayEndService
from chalicelib.services.loans import LoanService, NewLoan
from chalicelib.services.payments import NewPayment, PaymentService
from chalicelib.services.ports import User
from tests.fake_dpd import InMemoryDelinquencyStore, InMemoryRunStore, StubFlags
from tests.fake_payments import InMemoryPaymentRepository
from tests.fakes import MANAGER, InMemoryAuditLog, InMemoryLoanRepository, InMemoryUserStore, RecordingMetrics

START = dt.datetime(2026, 1, 10, 11, 0, tzinfo=IST)
EMI_PRINCIPAL, EMI_INTEREST = 10_000_00, 1_500_00
EMI = EMI_PRINCIPAL + EMI_INTEREST
CHAIN_FIELDS = ("dpd", "bucket", "classification", "npa_since")


class Book:
    """Two loans, the payment and loan services, and the day-end job, all on one set of fakes."""

    def __init__(self, clk: FixedClock) -> None:
        self.clock = clk
        self.audit = InMemoryAuditLog()
        self.loan_repo = InMemoryLoanRepository(audit=self.audit)
        self.metrics = RecordingMetrics()
        self.runs = InMemoryRunStore()
        self.flags = StubFlags()
        self.loans = LoanService(
            loans=self.loan_repo,
            audit=self.audit,
            users=InMemoryUserStore([User("col1", "collector", "x")]),
            metrics=self.metrics,
            evaluated_through=self.runs.latest_completed,
        )
        self.payments = PaymentService(
            payments=InMemoryPaymentRepository(loans=self.loan_repo, audit=self.audit),
            loans=self.loans,
            metrics=self.metrics,
        )
        self.job = DayEndService(
            store=InMemoryDelinquencyStore(self.loan_repo, watch_shards=2, page_size=2),
            runs=self.runs,
            flags=self.flags,
            metrics=self.metrics,
            watch_shards=2,
            scan_segments=2,
            workers=1,
        )
        self.created: dict[str, Loan] = {}
        self.utrs = 0

    def tick(self) -> None:
        self.clock.advance(seconds=1)

    def add(self, loan_id: str, first_due: dt.date, count: int) -> None:
        rows = [(first_due + dt.timedelta(days=30 * k), EMI_PRINCIPAL, EMI_INTEREST) for k in range(count)]
        self.created[loan_id] = self.loans.create(
            MANAGER,
            NewLoan(
                loan_id=loan_id,
                borrower=Borrower("Asha Rao", "9876543210"),
                principal_paise=EMI_PRINCIPAL * count,
                disbursement_date=first_due - dt.timedelta(days=30),
                imported_schedule=rows,
            ),
        )
        self.tick()

    def pay(self, loan_id: str, amount: int, backdate: int) -> None:
        self.utrs += 1
        cmd = NewPayment(
            loan_id, f"UTR{self.utrs:08d}", amount, clock.today_ist() - dt.timedelta(days=backdate), PaymentMode.UPI
        )
        try:
            self.payments.post(MANAGER, cmd)
        except DomainError as refused:  # a closed loan or an amount above what is owed: nothing changes
            assert refused.code in {"LOAN_NOT_PAYABLE", "OVERPAYMENT", "AMOUNT_OUT_OF_RANGE"}, refused
        self.tick()

    def reverse(self, pick: int) -> None:
        standing = [p for p in self.payments.payments.payments.values() if p.status is PaymentStatus.POSTED]
        if standing:
            chosen = sorted(standing, key=lambda p: p.payment_id)[pick % len(standing)]
            self.payments.reverse(MANAGER, chosen.payment_id, "bounced")
        self.tick()

    def next_day(self, run: bool) -> None:
        self.clock.advance(days=1)
        if run:
            self.job.run(clock.last_completed_business_date(), "test")
        self.tick()

    def changes(self, loan_id: str) -> list[AuditEntry]:
        return sorted(
            (
                e
                for e in self.audit.entries.values()
                if e.entity_id == loan_id and e.action is Action.DELINQUENCY_CHANGED
            ),
            key=lambda e: e.audit_id,
        )


def chain(snapshot: Any) -> tuple[Any, ...]:
    return tuple(snapshot[name] for name in CHAIN_FIELDS)


STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("pay"),
            st.sampled_from(["A", "B"]),
            st.sampled_from([37, 100, EMI // 3, EMI, EMI + 2_000_00, 3 * EMI]),
            st.integers(0, 7),
        ),
        st.tuples(st.just("reverse"), st.integers(0, 50)),
        st.tuples(st.just("day"), st.booleans()),
        st.tuples(st.just("days"), st.integers(5, 40)),
    ),
    min_size=1,
    max_size=30,
)


@pytest.fixture
def clk() -> Iterator[FixedClock]:
    with use_clock(FixedClock(START)) as c:
        assert isinstance(c, FixedClock)
        yield c


@pytest.mark.long
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_any_history_replays_and_chains(clk: FixedClock, steps: list[tuple[Any, ...]]) -> None:
    clk._at = START  # hypothesis reuses the fixture: every example starts on the same day
    book = Book(clk)
    book.add("A", dt.date(2025, 10, 5), 6)  # three instalments already overdue: SMA-2 when created
    book.add("B", dt.date(2026, 1, 20), 4)  # current
    for step in steps:
        if step[0] == "pay":
            book.pay(step[1], step[2], step[3])
        elif step[0] == "reverse":
            book.reverse(step[1])
        elif step[0] == "day":
            book.next_day(run=step[1])
        else:
            for _ in range(step[1]):
                book.next_day(run=True)

    for loan_id, created in book.created.items():
        stored = book.loan_repo.loans[loan_id]
        # 1. The loan is the replay of its standing payments.
        standing = [
            p
            for p in book.payments.payments.payments.values()
            if p.loan_id == loan_id and p.status is PaymentStatus.POSTED
        ]
        assert sorted(e.payment_id for e in stored.payments) == sorted(p.payment_id for p in standing)
        replayed = replay(stored.schedule, stored.payments, stored.delinquency.as_of)
        assert replayed.schedule == stored.schedule
        assert replayed.delinquency == stored.delinquency
        assert (stored.status is LoanStatus.CLOSED) == all(i.unpaid_paise == 0 for i in stored.schedule)
        shown = {p.payment_id: p.allocation for p in book.payments.list_for_loan(MANAGER, loan_id, 200, None).items}
        for entry, allocation in zip(stored.payments, replayed.allocations, strict=True):
            assert shown[entry.payment_id] == allocation
        assert sum(a.total_paise for a in replayed.allocations) == sum(i.paid_paise for i in stored.schedule)

        # 2. The delinquency trail chains from the loan as created to the loan as stored.
        link = chain(delinquency_snapshot(created))
        for entry in book.changes(loan_id):
            assert chain(entry.before) == link, (loan_id, entry)
            assert chain(entry.after) != chain(entry.before), entry
            link = chain(entry.after)
        assert link == chain(delinquency_snapshot(stored)), loan_id


def test_a_reversal_that_moves_a_loan_back_a_bucket_chains_through_the_day_end(clk: FixedClock) -> None:
    book = Book(clk)
    book.add("A", dt.date(2025, 10, 5), 6)
    book.pay("A", EMI, 0)  # instalment 1: oldest unpaid moves to 4 Nov
    book.next_day(run=True)
    book.pay("A", EMI, 0)  # instalment 2: oldest unpaid 4 Dec
    book.reverse(0)  # the first bounces: the second now pays instalment 1, oldest unpaid 4 Nov again
    book.next_day(run=True)

    stored = book.loan_repo.loans["A"]
    assert stored.schedule[0].unpaid_paise == 0 and stored.schedule[1].unpaid_paise == EMI
    dpds = [(chain(e.before)[0], chain(e.after)[0]) for e in book.changes("A")]
    assert dpds[0][0] == book.created["A"].delinquency.dpd
    assert all(b[1] == a[0] for b, a in itertools.pairwise(dpds))
    assert dpds[-1][1] == stored.delinquency.dpd == (stored.delinquency.as_of - dt.date(2025, 11, 4)).days + 1
    # Still NPA (sticky: overdue remains), and shown as of the latest run with dpd counted from 4 Nov.
    shown = book.loans.get(MANAGER, "A").delinquency
    assert shown.classification.value == "NPA"
    assert shown.dpd == (clock.last_completed_business_date() - dt.date(2025, 11, 4)).days + 1
