"""Posting and reversing payments (docs/rules.md) with in-memory fakes and a frozen clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Action, AuditEntry, Outcome
from chalicelib.domain.delinquency import Classification
from chalicelib.domain.errors import (
    AlreadyReversed,
    Conflict,
    DomainError,
    DuplicateUtr,
    Forbidden,
    NotFound,
)
from chalicelib.domain.loan import Borrower, Loan, LoanStatus
from chalicelib.domain.payment import NO_ALLOCATION, Payment, PaymentMode, PaymentStatus
from chalicelib.retry import OPTIMISTIC_WRITE, RetryPolicy
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import LoanService, NewLoan
from chalicelib.services.payments import NewPayment, PaymentService
from chalicelib.services.ports import Answered, AuditFilter, ReceiptRecord, User
from tests.fake_payments import InMemoryPaymentRepository
from tests.fakes import (
    ADMIN,
    AUDITOR,
    COLLECTOR,
    MANAGER,
    OTHER_COLLECTOR,
    InMemoryAuditLog,
    InMemoryLoanRepository,
    InMemoryUserStore,
    MetricCall,
    RecordingMetrics,
)

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=IST)
TODAY = dt.date(2026, 3, 15)
BUSINESS_DATE = dt.date(2026, 3, 14)


PRINCIPAL_EACH = 10_000_00
INTEREST_EACH = 1_000_00
EMI = PRINCIPAL_EACH + INTEREST_EACH
# Due 5 Jan, 5 Feb, 5 Mar (overdue on 14 Mar) and 5 Apr (not yet due).
DUES = [dt.date(2026, 1, 5), dt.date(2026, 2, 5), dt.date(2026, 3, 5), dt.date(2026, 4, 5)]
OWED = len(DUES) * EMI


class World:
    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.audit = InMemoryAuditLog()
        self.loan_repo = InMemoryLoanRepository(audit=self.audit)
        self.users = InMemoryUserStore([User("col1", "collector", "x"), User("col2", "collector", "x")])
        self.metrics = RecordingMetrics()
        # As chalicelib.wiring.build does, with fakes for the adapters.
        self.loans = LoanService(loans=self.loan_repo, audit=self.audit, users=self.users, metrics=self.metrics)
        self.repo = InMemoryPaymentRepository(loans=self.loan_repo, audit=self.audit)
        self.service = PaymentService(payments=self.repo, loans=self.loans, metrics=self.metrics)

    def tick(self) -> None:
        """Ids and audit ids order by time: later writes happen at later instants."""
        self.clock.advance(seconds=1)

    def loan(self, loan_id: str = "LN-A", collector_id: str | None = "col1") -> Loan:
        loan = self.loans.create(
            MANAGER,
            NewLoan(
                loan_id=loan_id,
                borrower=Borrower("Asha Rao", "9876543210"),
                principal_paise=PRINCIPAL_EACH * len(DUES),
                disbursement_date=dt.date(2025, 12, 1),
                imported_schedule=[(due, PRINCIPAL_EACH, INTEREST_EACH) for due in DUES],
                collector_id=collector_id,
            ),
        )
        self.tick()
        return loan

    def pay(
        self,
        ctx: RequestContext = MANAGER,
        amount: int = EMI,
        utr: str = "UTR0001",
        loan_id: str = "LN-A",
        payment_date: dt.date = TODAY,
        fingerprint: str | None = None,
    ) -> Any:
        result = self.service.post(
            ctx, NewPayment(loan_id, utr, amount, payment_date, PaymentMode.UPI), fingerprint=fingerprint
        )
        self.tick()
        return result

    def entries(self, action: Action) -> list[AuditEntry]:
        return list(self.audit.list(AuditFilter(action=action.value), 1000, None).items)

    def rejected(self) -> list[str]:
        return [c.dimensions["reason"] for c in self.metrics.calls if c.name == "PaymentRejected"]

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a refusal must leave as it was (a refusal may only add a DENIED audit entry)."""
        return (
            dict(self.repo.payments),
            dict(self.repo.utr_claims),
            dict(self.loan_repo.loans),
            {k: e for k, e in self.audit.entries.items() if e.outcome is not Outcome.DENIED},
        )

    def denied(self) -> list[AuditEntry]:
        return [e for e in self.audit.entries.values() if e.outcome is Outcome.DENIED]


@pytest.fixture
def clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(NOW)) as c:
        assert isinstance(c, FixedClock)
        yield c


@pytest.fixture
def world(clock: FixedClock) -> World:
    return World(clock)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    attempts: list[int] = []
    monkeypatch.setattr(RetryPolicy, "pause", lambda _policy, attempt: attempts.append(attempt))
    return attempts


# --- success ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ctx", [ADMIN, MANAGER, COLLECTOR])
def test_posting_stores_payment_claim_loan_and_audit_together(world: World, ctx: RequestContext) -> None:
    before = world.loan()
    assert (before.delinquency.dpd, before.delinquency.overdue_paise) == (69, 3 * EMI)

    result = world.pay(ctx, amount=EMI + 2_500_00, utr="UTR0001")

    payment = result.payment
    assert not result.replayed
    # A standing payment's allocation is not stored: it is derived from the loan's ledger when read.
    assert world.repo.payments == {payment.payment_id: dataclasses.replace(payment, allocation=NO_ALLOCATION)}
    assert world.service.get(ctx, payment.payment_id) == payment
    assert world.repo.utr_claims == {"UTR0001": payment.payment_id}
    assert (payment.loan_id, payment.utr, payment.amount_paise, payment.payment_date, payment.mode) == (
        "LN-A",
        "UTR0001",
        EMI + 2_500_00,
        TODAY,
        PaymentMode.UPI,
    )
    assert payment.status is PaymentStatus.POSTED
    assert payment.posted_by == ctx.actor
    assert payment.landed_on == BUSINESS_DATE
    # Instalment 1 in full, then instalment 2: interest (1,000) before principal (1,500).
    assert [(line.seq, line.interest_paise, line.principal_paise) for line in payment.allocation.lines] == [
        (1, INTEREST_EACH, PRINCIPAL_EACH),
        (2, INTEREST_EACH, 1_500_00),
    ]

    stored = world.loan_repo.loans["LN-A"]
    assert result.loan == stored
    assert stored.version == before.version + 1
    assert stored.outstanding_principal_paise == 4 * PRINCIPAL_EACH - PRINCIPAL_EACH - 1_500_00
    # Oldest unpaid is now 5 Feb: day 38 on 14 Mar.
    assert (stored.delinquency.as_of, stored.delinquency.dpd, stored.delinquency.overdue_paise) == (
        BUSINESS_DATE,
        38,
        3 * EMI - (EMI + 2_500_00),
    )
    assert stored.delinquency.classification is Classification.SMA_1
    assert stored.payments == (payment.ledger_entry,)
    assert world.metrics.counted("PaymentPosted") == 1
    assert world.rejected() == []


def test_posting_writes_a_payment_posted_audit_entry_for_the_loan(world: World) -> None:
    before = world.loan()
    result = world.pay(COLLECTOR, amount=EMI)

    [entry] = world.entries(Action.PAYMENT_POSTED)
    [change] = world.entries(Action.DELINQUENCY_CHANGED)
    assert (entry.entity_type, entry.entity_id, entry.outcome) == ("loan", "LN-A", Outcome.SUCCESS)
    assert (entry.actor, entry.source_ip, entry.request_id) == (COLLECTOR.actor, "10.0.0.3", "req-col1")
    assert entry.at == "2026-03-15T12:00:01.000+05:30"
    assert entry.before == {
        "status": "ACTIVE",
        "outstanding_principal_paise": 4 * PRINCIPAL_EACH,
        "overdue_paise": 3 * EMI,
        "version": before.version,
    }
    after = dict(entry.after)
    summary = after.pop("payment")
    assert after == {
        "status": "ACTIVE",
        "outstanding_principal_paise": 3 * PRINCIPAL_EACH,
        "overdue_paise": 2 * EMI,
        "version": result.loan.version,
    }
    # The delinquency change goes in its own entry, in the same transaction, from the stored state.
    # Delinquency changes carry the system's name whatever caused them; the request is traceable.
    assert (change.entity_id, change.actor.sub, change.outcome) == ("LN-A", "system:dpd_job", Outcome.SUCCESS)
    assert (change.request_id, change.source_ip) == (COLLECTOR.request_id, COLLECTOR.source_ip)
    assert change.reason == f"recomputed after PAYMENT_POSTED {result.payment.payment_id} by col1"
    assert change.before == {
        "dpd": 69,
        "bucket": "61-90",
        "classification": "SMA-2",
        "npa_since": None,
        "dpd_as_of": "2026-03-14",
    }
    assert change.after == {
        "dpd": 38,
        "bucket": "31-60",
        "classification": "SMA-1",
        "npa_since": None,
        "dpd_as_of": "2026-03-14",
    }
    assert change.audit_id > entry.audit_id
    assert summary == {
        "payment_id": result.payment.payment_id,
        "utr": "UTR0001",
        "amount_paise": EMI,
        "payment_date": "2026-03-15",
        "mode": "UPI",
        "status": "POSTED",
        "allocation": {"interest_paise": INTEREST_EACH, "principal_paise": PRINCIPAL_EACH},
    }


def test_exact_payoff_closes_the_loan_and_a_further_payment_is_not_payable(world: World) -> None:
    world.loan()
    result = world.pay(amount=OWED)
    assert result.loan.status is LoanStatus.CLOSED
    assert result.loan.outstanding_principal_paise == 0

    with pytest.raises(DomainError) as err:
        world.pay(amount=100, utr="UTR0002")
    assert err.value.code == "LOAN_NOT_PAYABLE"


# --- order of checks (docs/rules.md) ----------------------------------------------------------------


def _closed_loan_with_used_utr(world: World) -> None:
    world.loan()
    world.pay(amount=OWED, utr="USEDUTR1")


def _active_loan_with_used_utr(world: World) -> None:
    world.loan()
    world.pay(amount=100, utr="USEDUTR1")


def _active_loan(world: World) -> None:
    world.loan()


TOO_OLD = TODAY - dt.timedelta(days=8)
TOMORROW = TODAY + dt.timedelta(days=1)
ACTIVE = _active_loan
ACTIVE_UTR_USED = _active_loan_with_used_utr
CLOSED_UTR_USED = _closed_loan_with_used_utr

ORDER_CASES = [
    # name: setup, ctx, amount, payment date, loan id, utr -> expected code
    ("amount-beats-date", ACTIVE, MANAGER, 99, TOO_OLD, "LN-A", "NEW00001", "AMOUNT_OUT_OF_RANGE"),
    ("amount-beats-missing-loan", ACTIVE, MANAGER, 1_000_000_001, TODAY, "NOPE", "NEW00001", "AMOUNT_OUT_OF_RANGE"),
    ("old-date-beats-missing-loan", ACTIVE, MANAGER, 100, TOO_OLD, "NOPE", "NEW00001", "PAYMENT_DATE_TOO_OLD"),
    (
        "future-date-beats-closed-loan",
        CLOSED_UTR_USED,
        MANAGER,
        100,
        TOMORROW,
        "LN-A",
        "NEW00001",
        "PAYMENT_DATE_IN_FUTURE",
    ),
    ("missing-loan-beats-used-utr", ACTIVE_UTR_USED, MANAGER, 100, TODAY, "NOPE", "USEDUTR1", "NOT_FOUND"),
    ("unassigned-beats-overpayment", ACTIVE, OTHER_COLLECTOR, OWED + 1, TODAY, "LN-A", "NEW00001", "NOT_FOUND"),
    ("closed-loan-beats-used-utr", CLOSED_UTR_USED, MANAGER, 100, TODAY, "LN-A", "USEDUTR1", "LOAN_NOT_PAYABLE"),
    ("overpayment-beats-used-utr", ACTIVE_UTR_USED, MANAGER, OWED, TODAY, "LN-A", "USEDUTR1", "OVERPAYMENT"),
    ("used-utr", ACTIVE_UTR_USED, MANAGER, 100, TODAY, "LN-A", "USEDUTR1", "DUPLICATE_UTR"),
]


@pytest.mark.parametrize(
    ("setup", "ctx", "amount", "payment_date", "loan_id", "utr", "code"),
    [case[1:] for case in ORDER_CASES],
    ids=[case[0] for case in ORDER_CASES],
)
def test_checks_run_in_the_specs_order_and_each_refusal_is_counted_with_its_code(
    world: World,
    setup: Any,
    ctx: RequestContext,
    amount: int,
    payment_date: dt.date,
    loan_id: str,
    utr: str,
    code: str,
) -> None:
    setup(world)
    snapshot = world.snapshot()
    rejected_before = world.rejected()

    with pytest.raises(DomainError) as err:
        world.pay(ctx, amount=amount, utr=utr, loan_id=loan_id, payment_date=payment_date)

    assert err.value.code == code
    assert world.rejected() == [*rejected_before, code]
    assert world.snapshot() == snapshot


def test_duplicate_utr_names_the_original_payment_and_counts_a_duplicate_metric(world: World) -> None:
    world.loan()
    world.loan("LN-B")
    original = world.pay(utr="SBIN0001").payment
    snapshot = world.snapshot()

    # The UTR is unique across all loans, not per loan.
    with pytest.raises(DuplicateUtr) as err:
        world.pay(utr="SBIN0001", loan_id="LN-B", amount=500_00)

    assert err.value.details == {"payment_id": original.payment_id, "utr": "SBIN0001"}
    assert world.metrics.counted("DuplicateUtr") == 1
    assert world.rejected() == ["DUPLICATE_UTR"]
    assert world.snapshot() == snapshot
    # The attempt itself is on the audit trail, against the loan it was meant for.
    [denied] = world.denied()
    assert (denied.action, denied.entity_id, denied.outcome) == (Action.PAYMENT_POSTED, "LN-B", Outcome.DENIED)
    assert (denied.actor, denied.source_ip) == (MANAGER.actor, MANAGER.source_ip)
    assert denied.after == {"utr": "SBIN0001", "amount_paise": 500_00, "payment_date": "2026-03-15", "mode": "UPI"}
    assert denied.reason is not None and denied.reason.startswith("DUPLICATE_UTR")


def test_a_duplicate_utr_names_the_original_payment_only_to_a_caller_who_may_read_it(world: World) -> None:
    world.loan("LN-A", collector_id="col1")
    world.loan("LN-B", collector_id="col2")
    world.pay(COLLECTOR, utr="SBIN0001", loan_id="LN-A")

    with pytest.raises(DuplicateUtr) as err:
        world.pay(OTHER_COLLECTOR, utr="SBIN0001", loan_id="LN-B", amount=500_00)

    assert err.value.details == {"utr": "SBIN0001"}
    assert [e.actor for e in world.denied()] == [OTHER_COLLECTOR.actor]


def test_an_audit_store_failure_does_not_turn_a_duplicate_into_a_server_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.loan()
    world.pay(utr="SBIN0001")

    def unavailable(entry: AuditEntry) -> None:
        raise RuntimeError("audit table unreachable")

    monkeypatch.setattr(world.audit, "append", unavailable)
    with pytest.raises(DuplicateUtr):
        world.pay(utr="SBIN0001", amount=500_00)
    assert world.metrics.counted("AuditWriteFailed") == 1


def test_payment_posted_is_counted_once_per_success_and_not_for_refusals(world: World) -> None:
    world.loan()
    world.pay(utr="UTR0001", amount=100)
    with pytest.raises(DomainError):
        world.pay(utr="UTR0001", amount=100)
    with pytest.raises(DomainError):
        world.pay(utr="UTR0002", amount=99)
    world.pay(utr="UTR0003", amount=100)
    assert world.metrics.counted("PaymentPosted") == 2
    assert world.rejected() == ["DUPLICATE_UTR", "AMOUNT_OUT_OF_RANGE"]
    assert MetricCall("DuplicateUtr", {}) in world.metrics.calls


# --- who may pay ------------------------------------------------------------------------------


def test_collector_gets_not_found_for_a_loan_not_assigned_to_them(world: World) -> None:
    world.loan(collector_id="col1")
    world.loan("LN-U", collector_id=None)
    snapshot = world.snapshot()
    for loan_id in ("LN-A", "LN-U"):
        with pytest.raises(NotFound):
            world.pay(OTHER_COLLECTOR, loan_id=loan_id)
    assert world.snapshot() == snapshot
    assert world.rejected() == ["NOT_FOUND", "NOT_FOUND"]


def test_auditor_may_not_post(world: World) -> None:
    world.loan()
    snapshot = world.snapshot()
    with pytest.raises(Forbidden):
        world.pay(AUDITOR)
    assert world.snapshot() == snapshot
    assert world.metrics.counted("PaymentPosted") == 0


# --- optimistic concurrency -------------------------------------------------------------------


def _raise_conflict(payment: Payment, loan: Loan) -> None:
    raise Conflict("simulated version conflict")


def test_a_conflict_from_the_repository_is_retried(world: World, no_backoff: list[int]) -> None:
    world.loan()
    world.repo.on_next_write(_raise_conflict)
    world.repo.on_next_write(_raise_conflict)

    result = world.pay(amount=EMI)

    assert world.repo.post_calls == 3
    assert no_backoff == [0, 1]
    assert list(world.repo.payments) == [result.payment.payment_id]
    assert len(world.entries(Action.PAYMENT_POSTED)) == 1
    assert world.loan_repo.loans["LN-A"].outstanding_principal_paise == 3 * PRINCIPAL_EACH
    assert world.metrics.counted("PaymentPosted") == 1
    assert world.rejected() == []


def test_a_retry_after_a_concurrent_payment_allocates_against_the_fresh_loan(
    world: World, no_backoff: list[int]
) -> None:
    world.loan()
    concurrent: list[Payment] = []

    def another_payment_lands_first(payment: Payment, loan: Loan) -> None:
        concurrent.append(world.pay(COLLECTOR, amount=EMI, utr="OTHER001").payment)

    world.repo.on_next_write(another_payment_lands_first)
    ours = world.pay(amount=EMI, utr="UTR0001").payment

    assert [line.seq for line in concurrent[0].allocation.lines] == [1]
    # Ours was first computed against instalment 1 too; the retry re-read the loan.
    assert [(line.seq, line.interest_paise, line.principal_paise) for line in ours.allocation.lines] == [
        (2, INTEREST_EACH, PRINCIPAL_EACH)
    ]
    stored = world.loan_repo.loans["LN-A"]
    assert stored.outstanding_principal_paise == 2 * PRINCIPAL_EACH
    assert stored.delinquency.dpd == 10  # 5 Mar is the oldest unpaid
    assert len(world.repo.payments) == 2
    assert len(world.entries(Action.PAYMENT_POSTED)) == 2


def test_persistent_conflicts_end_in_conflict_with_nothing_stored(world: World, no_backoff: list[int]) -> None:
    world.loan()
    snapshot = world.snapshot()
    for _ in range(OPTIMISTIC_WRITE.attempts):
        world.repo.on_next_write(_raise_conflict)

    with pytest.raises(Conflict):
        world.pay()

    assert world.repo.post_calls == OPTIMISTIC_WRITE.attempts
    assert world.snapshot() == snapshot
    assert world.rejected() == ["CONFLICT"]


# --- replays of an Idempotency-Key request whose answer was lost -----------------------------


def test_a_retry_with_the_same_fingerprint_replays_the_committed_payment(world: World) -> None:
    world.loan()
    first = world.pay(fingerprint="fp-1")
    snapshot = world.snapshot()

    again = world.pay(fingerprint="fp-1")

    assert again.replayed
    assert again.payment == first.payment
    assert again.loan == first.loan
    assert world.snapshot() == snapshot
    assert world.metrics.counted("PaymentPosted") == 1


@pytest.mark.parametrize("fingerprint", [None, "fp-2"])
def test_the_same_utr_without_the_same_fingerprint_is_a_duplicate(world: World, fingerprint: str | None) -> None:
    world.loan()
    first = world.pay(fingerprint="fp-1")
    with pytest.raises(DuplicateUtr) as err:
        world.pay(fingerprint=fingerprint)
    assert err.value.details["payment_id"] == first.payment.payment_id


# --- reversal ---------------------------------------------------------------------------------


def test_reversal_takes_the_payment_off_the_loan_and_audits_it(world: World) -> None:
    before = world.loan()
    posted = world.pay(amount=2 * EMI)
    after_post = world.loan_repo.loans["LN-A"]

    result = world.service.reverse(MANAGER, posted.payment.payment_id, "cheque bounced")

    reversed_payment = result.payment
    assert reversed_payment.status is PaymentStatus.REVERSED
    assert (reversed_payment.reversed_by, reversed_payment.reversal_reason) == (MANAGER.actor, "cheque bounced")
    assert reversed_payment.reversed_at == "2026-03-15T12:00:02.000+05:30"
    assert world.repo.payments[reversed_payment.payment_id] == reversed_payment
    # Apart from the reversal fields, it is the payment as posted (same id, UTR); its allocation is
    # what the reversal took off, which is where its money sat.
    unreversed = dataclasses.replace(
        reversed_payment, status=PaymentStatus.POSTED, reversed_at=None, reversed_by=None, reversal_reason=None
    )
    assert unreversed == posted.payment
    assert reversed_payment.allocation.total_paise == 2 * EMI

    stored = world.loan_repo.loans["LN-A"]
    assert result.loan == stored
    assert stored.version == after_post.version + 1
    assert stored.schedule == before.schedule
    assert stored.delinquency == before.delinquency
    assert stored.payments == ()
    assert world.metrics.counted("PaymentReversed") == 1

    [entry] = world.entries(Action.PAYMENT_REVERSED)
    assert (entry.entity_type, entry.entity_id, entry.outcome) == ("loan", "LN-A", Outcome.SUCCESS)
    assert (entry.actor, entry.request_id, entry.reason) == (MANAGER.actor, "req-manager", "cheque bounced")
    assert entry.before["outstanding_principal_paise"] == 2 * PRINCIPAL_EACH
    assert entry.after["outstanding_principal_paise"] == 4 * PRINCIPAL_EACH
    assert entry.after["payment"]["status"] == "REVERSED"
    assert entry.after["version"] == stored.version
    # The delinquency trail: posting took dpd 69 -> 10, the reversal takes it back, and the chain holds.
    changes = sorted(world.entries(Action.DELINQUENCY_CHANGED), key=lambda e: e.audit_id)
    assert [(c.before["dpd"], c.after["dpd"]) for c in changes] == [(69, 10), (10, 69)]
    assert changes[1].before == changes[0].after


def test_reversal_moves_a_later_payment_onto_the_oldest_unpaid_instalment(world: World) -> None:
    before = world.loan()
    first = world.pay(amount=EMI, utr="UTR0001").payment  # instalment 1 (due 5 Jan)
    second = world.pay(amount=EMI, utr="UTR0002").payment  # instalment 2 (due 5 Feb)
    assert [line.seq for line in world.service.get(MANAGER, second.payment_id).allocation.lines] == [2]

    result = world.service.reverse(MANAGER, first.payment_id, "cheque bounced")

    # Had the first never been posted, the second would have paid instalment 1: oldest unpaid is 5 Feb,
    # dpd 38 (SMA-1), not 5 Jan (dpd 69, SMA-2) as subtracting the bounced payment alone would leave it.
    moved = world.service.get(MANAGER, second.payment_id)
    assert [(line.seq, line.interest_paise, line.principal_paise) for line in moved.allocation.lines] == [
        (1, INTEREST_EACH, PRINCIPAL_EACH)
    ]
    assert (result.loan.delinquency.dpd, result.loan.delinquency.classification) == (38, Classification.SMA_1)
    assert result.loan.schedule[0].paid_paise == EMI and result.loan.schedule[1].paid_paise == 0
    assert result.loan.outstanding_principal_paise == before.principal_paise - PRINCIPAL_EACH
    listed = world.service.list_for_loan(MANAGER, "LN-A", 10, None).items
    assert {p.payment_id: p.allocation.total_paise for p in listed} == {second.payment_id: EMI, first.payment_id: EMI}


def test_a_failed_reversal_counts_the_same_failure_metric_as_a_failed_posting(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.loan()
    payment_id = world.pay().payment.payment_id

    def broken(*_: Any) -> Loan:
        raise RuntimeError("something broke")

    monkeypatch.setattr(world.repo, "reverse", broken)
    with pytest.raises(RuntimeError):
        world.service.reverse(MANAGER, payment_id, "bounced")
    assert world.metrics.counted("PaymentFailed") == 1


def test_a_residual_below_one_rupee_can_be_cleared_exactly(world: World) -> None:
    world.loan()
    world.pay(amount=OWED - 37, utr="UTR0001")
    snapshot = world.snapshot()
    for wrong in (36, 38, 99):  # below one rupee and not the residual: refused like any other small amount
        with pytest.raises(DomainError) as err:
            world.pay(amount=wrong, utr="UTR0002")
        assert err.value.code == "AMOUNT_OUT_OF_RANGE"
    assert world.snapshot() == snapshot

    result = world.pay(amount=37, utr="UTR0003")

    assert result.loan.status is LoanStatus.CLOSED
    assert result.payment.allocation.total_paise == 37


def test_a_sub_rupee_amount_on_a_loan_the_caller_cannot_see_is_out_of_range_not_not_found(world: World) -> None:
    world.loan(collector_id="col1")
    with pytest.raises(DomainError) as err:
        world.pay(OTHER_COLLECTOR, amount=50)
    assert err.value.code == "AMOUNT_OUT_OF_RANGE"


def test_reversal_reopens_a_closed_loan(world: World) -> None:
    before = world.loan()
    posted = world.pay(amount=OWED)
    assert world.loan_repo.loans["LN-A"].status is LoanStatus.CLOSED

    result = world.service.reverse(ADMIN, posted.payment.payment_id, "NACH return")

    assert result.loan.status is LoanStatus.ACTIVE
    assert result.loan.outstanding_principal_paise == before.principal_paise
    assert result.loan.delinquency == before.delinquency


def test_reversing_twice_is_already_reversed(world: World) -> None:
    world.loan()
    payment_id = world.pay().payment.payment_id
    world.service.reverse(MANAGER, payment_id, "bounced")
    world.tick()
    snapshot = world.snapshot()

    with pytest.raises(AlreadyReversed):
        world.service.reverse(MANAGER, payment_id, "bounced")

    assert world.snapshot() == snapshot
    assert len(world.entries(Action.PAYMENT_REVERSED)) == 1


def test_a_reversal_that_loses_the_race_to_another_reversal_is_already_reversed(world: World) -> None:
    world.loan()
    payment_id = world.pay().payment.payment_id

    def someone_else_reverses_first(payment: Payment, loan: Loan) -> None:
        world.service.reverse(ADMIN, payment_id, "first")

    world.repo.on_next_write(someone_else_reverses_first)
    with pytest.raises(AlreadyReversed):
        world.service.reverse(MANAGER, payment_id, "second")
    assert [e.reason for e in world.entries(Action.PAYMENT_REVERSED)] == ["first"]


def test_a_reversal_conflict_is_retried(world: World, no_backoff: list[int]) -> None:
    world.loan()
    payment_id = world.pay().payment.payment_id
    world.repo.on_next_write(_raise_conflict)

    result = world.service.reverse(MANAGER, payment_id, "bounced")

    assert result.payment.status is PaymentStatus.REVERSED
    assert world.repo.reverse_calls == 2
    assert len(world.entries(Action.PAYMENT_REVERSED)) == 1


@pytest.mark.parametrize("ctx", [COLLECTOR, AUDITOR])
def test_only_managers_and_admins_reverse(world: World, ctx: RequestContext) -> None:
    world.loan()
    payment_id = world.pay().payment.payment_id
    snapshot = world.snapshot()
    with pytest.raises(Forbidden):
        world.service.reverse(ctx, payment_id, "bounced")
    assert world.snapshot() == snapshot


def test_reversing_an_unknown_payment_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        world.service.reverse(MANAGER, "NOPE", "bounced")


def test_a_reversed_payment_keeps_its_utr(world: World) -> None:
    world.loan()
    original = world.pay(utr="UTR0001").payment
    world.service.reverse(MANAGER, original.payment_id, "bounced")
    world.tick()

    with pytest.raises(DuplicateUtr) as err:
        world.pay(utr="UTR0001")

    assert err.value.details["payment_id"] == original.payment_id
    assert world.repo.utr_claims == {"UTR0001": original.payment_id}


# --- reading ----------------------------------------------------------------------------------


def test_get_payment_is_scoped_like_its_loan(world: World) -> None:
    world.loan()
    payment = world.pay().payment
    assert world.service.get(COLLECTOR, payment.payment_id) == payment
    assert world.service.get(AUDITOR, payment.payment_id) == payment
    with pytest.raises(NotFound):
        world.service.get(OTHER_COLLECTOR, payment.payment_id)
    with pytest.raises(NotFound):
        world.service.get(MANAGER, "NOPE")


def test_list_for_loan_is_newest_first_paged_and_scoped(world: World) -> None:
    world.loan()
    world.loan("LN-B")
    ids = [world.pay(utr=f"UTR000{n}", amount=100 + n).payment.payment_id for n in range(5)]
    world.pay(utr="OTHERLN1", loan_id="LN-B")

    first = world.service.list_for_loan(COLLECTOR, "LN-A", 2, None)
    second = world.service.list_for_loan(COLLECTOR, "LN-A", 2, first.next_cursor)
    third = world.service.list_for_loan(COLLECTOR, "LN-A", 2, second.next_cursor)

    listed = [p.payment_id for page in (first, second, third) for p in page.items]
    assert listed == list(reversed(ids))
    assert third.next_cursor is None
    with pytest.raises(NotFound):
        world.service.list_for_loan(OTHER_COLLECTOR, "LN-A", 10, None)


# --- an Idempotency-Key's receipt (docs/api.md, step 5) ---------------------------------------------


class _Answered(Answered):
    """What the fake receipt raises when a record answers: the record it met."""


@dataclasses.dataclass
class _Receipt:
    record_id: str = "rec-1"

    def met(self, found: object | None) -> None:
        if found is not None:
            raise _Answered(found)

    def record(self, result: Any) -> ReceiptRecord:
        return ReceiptRecord(self.record_id, "v", {"payment_id": result.payment.payment_id}, 0)


def _keyed(world: World, amount: int, payment_date: dt.date = TODAY) -> Any:
    cmd = NewPayment("LN-A", "UTR0001", amount, payment_date, PaymentMode.UPI)
    return world.service.post(MANAGER, cmd, fingerprint="fp", receipt=_Receipt())


def test_a_receipt_is_written_with_the_payment_and_answers_its_repeat_before_any_check(world: World) -> None:
    world.loan()
    first = _keyed(world, OWED)
    assert world.repo.receipts["rec-1"].answer == {"payment_id": first.payment.payment_id}
    assert first.loan.status is LoanStatus.CLOSED

    # The loan is closed and the date is in the future now: the record answers before either check.
    with pytest.raises(_Answered) as answered:
        _keyed(world, OWED, TODAY + dt.timedelta(days=1))

    assert answered.value.args[0] is world.repo.receipts["rec-1"]
    assert len(world.repo.payments) == 1
    assert [c.name for c in world.metrics.calls].count("PaymentFailed") == 0
    assert world.rejected() == []


def test_a_receipt_written_meanwhile_by_a_duplicate_answers_instead_of_the_payment(world: World) -> None:
    world.loan()
    winner = ReceiptRecord("rec-1", "v", {"payment_id": "the-duplicate"}, 0)

    def duplicate_commits_first(payment: Payment, loan: Loan) -> None:
        world.repo.receipts["rec-1"] = winner

    world.repo.on_next_write(duplicate_commits_first)
    with pytest.raises(_Answered) as answered:
        _keyed(world, EMI)

    assert answered.value.args[0] is winner
    assert world.repo.payments == {}
