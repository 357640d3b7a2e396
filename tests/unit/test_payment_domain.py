"""Payment rules (docs/rules.md) and what posting or reversing a payment does to a loan (docs/day-end.md)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.allocation import Allocation
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import Bucket, Classification, dpd_on, overdue_paise
from chalicelib.domain.errors import (
    AmountOutOfRange,
    LoanNotPayable,
    Overpayment,
    PaymentDateInFuture,
    PaymentDateTooOld,
)
from chalicelib.domain.ledger import LedgerEntry, replay
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, initial_delinquency
from chalicelib.domain.payment import (
    NO_ALLOCATION,
    Payment,
    PaymentMode,
    PaymentStatus,
    allocations_now,
    check_amount,
    check_payment_date,
    is_valid_utr,
    normalise_utr,
    post_to_loan,
    reverse_on_loan,
)
from chalicelib.domain.schedule import Instalment

BUSINESS_DATE = dt.date(2026, 3, 14)
TODAY = dt.date(2026, 3, 15)

# Five instalments overdue at BUSINESS_DATE and one not yet due; each 10,000 principal + 1,000 interest.
DUES = [
    dt.date(2025, 11, 5),
    dt.date(2025, 12, 5),
    dt.date(2026, 1, 5),
    dt.date(2026, 2, 5),
    dt.date(2026, 3, 5),
    dt.date(2026, 4, 5),
]
PRINCIPAL_EACH = 10_000_00
INTEREST_EACH = 1_000_00
EMI = PRINCIPAL_EACH + INTEREST_EACH
OVERDUE_ALL = 5 * EMI
OWED_ALL = 6 * EMI
# Counted by hand: 5 Nov 2025 is day 1, 14 Mar 2026 is day 26 + 31 + 31 + 28 + 14 = 130.
DPD_FROM_NOV = 130
# The day dpd reached 91: 5 Nov + 90 days = 3 Feb 2026.
NPA_SINCE = dt.date(2026, 2, 3)

ACTOR = Actor("meera", "manager")


def instalments(dues: list[dt.date]) -> tuple[Instalment, ...]:
    return tuple(Instalment(seq, due, PRINCIPAL_EACH, INTEREST_EACH) for seq, due in enumerate(dues, start=1))


def make_loan(schedule: tuple[Instalment, ...], business_date: dt.date = BUSINESS_DATE, **kw: object) -> Loan:
    fields: dict[str, object] = {
        "loan_id": "LN-1",
        "borrower": Borrower("Asha Rao", "9876543210"),
        "status": LoanStatus.ACTIVE,
        "principal_paise": sum(i.principal_paise for i in schedule),
        "disbursement_date": dt.date(2025, 10, 1),
        "schedule": schedule,
        "delinquency": initial_delinquency(schedule, business_date),
        "version": 3,
    }
    fields.update(kw)
    return Loan(**fields)  # type: ignore[arg-type]


def npa_loan() -> Loan:
    return make_loan(instalments(DUES))


def payment_record(amount: int, allocation: Allocation, payment_id: str = "P1") -> Payment:
    """A payment record as the service builds it. It no longer remembers the loan's classification
    before it (``prior_classification`` is gone): a reversal replays the loan's standing payments, so
    what the payment found is recovered from the ledger, and ``landed_on`` places it in that history."""
    return Payment(
        payment_id=payment_id,
        utr="UTR" + payment_id,
        loan_id="LN-1",
        amount_paise=amount,
        payment_date=BUSINESS_DATE,
        mode=PaymentMode.UPI,
        status=PaymentStatus.POSTED,
        allocation=allocation,
        posted_at="2026-03-15T12:00:00.000+05:30",
        posted_by=ACTOR,
        landed_on=BUSINESS_DATE,
    )


def paid(loan: Loan) -> list[tuple[int, int]]:
    return [(i.paid_interest_paise, i.paid_principal_paise) for i in loan.schedule]


# --- UTR --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  abc123xyz  ", "ABC123XYZ"),
        ("\tsbin0001234567\n", "SBIN0001234567"),
        ("HdFc99", "HDFC99"),
        ("ALREADY1", "ALREADY1"),
    ],
)
def test_normalise_utr_strips_surrounding_whitespace_and_upper_cases(raw: str, expected: str) -> None:
    assert normalise_utr(raw) == expected


@pytest.mark.parametrize(
    ("utr", "valid"),
    [
        ("ABC12", False),  # 5
        ("ABC123", True),  # 6
        ("A" * 34 + "9", True),  # 35
        ("A" * 35 + "9", False),  # 36
        ("", False),
        ("abc123", False),  # not normalised
        ("ABC-123", False),
        ("ABC 123", False),  # inner space is not stripped
        ("ABC_123", False),
        ("ABC123.", False),
        ("ÄBC123", False),
        ("ABC１２３", False),  # full-width digits
        ("ABC123\n", False),
    ],
)
def test_utr_format_is_6_to_35_of_a_z_0_9(utr: str, valid: bool) -> None:
    assert is_valid_utr(utr) is valid


def test_whitespace_around_a_valid_utr_is_fine_once_normalised() -> None:
    assert is_valid_utr(normalise_utr("  utr12345 "))
    assert not is_valid_utr(normalise_utr("  utr12 "))  # 5 characters once stripped


# --- amount and date --------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [100, 101, 999_999_999, 1_000_000_000])
def test_amount_in_range_is_accepted(amount: int) -> None:
    check_amount(amount)


@pytest.mark.parametrize("amount", [-100, 0, 99, 1_000_000_001, 10**12])
def test_amount_out_of_range_is_refused(amount: int) -> None:
    with pytest.raises(AmountOutOfRange) as err:
        check_amount(amount)
    assert err.value.code == "AMOUNT_OUT_OF_RANGE"
    assert err.value.details == {"min_paise": 100, "max_paise": 1_000_000_000}


@pytest.mark.parametrize("days_back", [0, 1, 6, 7])
def test_payment_date_today_back_to_seven_days_is_accepted(days_back: int) -> None:
    check_payment_date(TODAY - dt.timedelta(days=days_back), TODAY)


@pytest.mark.parametrize("days_back", [8, 30, 400])
def test_payment_date_eight_or_more_days_back_is_too_old(days_back: int) -> None:
    with pytest.raises(PaymentDateTooOld) as err:
        check_payment_date(TODAY - dt.timedelta(days=days_back), TODAY)
    assert err.value.code == "PAYMENT_DATE_TOO_OLD"
    assert err.value.details == {"earliest": "2026-03-08"}


@pytest.mark.parametrize("days_ahead", [1, 2, 365])
def test_payment_date_after_today_is_in_the_future(days_ahead: int) -> None:
    with pytest.raises(PaymentDateInFuture) as err:
        check_payment_date(TODAY + dt.timedelta(days=days_ahead), TODAY)
    assert err.value.code == "PAYMENT_DATE_IN_FUTURE"


def test_payment_date_window_crosses_month_and_year_ends() -> None:
    today = dt.date(2026, 1, 3)
    check_payment_date(dt.date(2025, 12, 27), today)
    with pytest.raises(PaymentDateTooOld):
        check_payment_date(dt.date(2025, 12, 26), today)


# --- posting ----------------------------------------------------------------------------------


def test_fixture_loan_is_npa_since_the_day_dpd_reached_91() -> None:
    d = npa_loan().delinquency
    assert (d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        DPD_FROM_NOV,
        Bucket.B90_PLUS,
        Classification.NPA,
        NPA_SINCE,
        OVERDUE_ALL,
    )


@pytest.mark.parametrize("status", [LoanStatus.CLOSED, LoanStatus.WRITTEN_OFF])
def test_only_active_loans_take_payments(status: LoanStatus) -> None:
    loan = make_loan(instalments(DUES), status=status)
    with pytest.raises(LoanNotPayable) as err:
        post_to_loan(loan, 100, BUSINESS_DATE)
    assert err.value.code == "LOAN_NOT_PAYABLE"


def test_overpayment_is_measured_against_everything_unpaid_including_future_instalments() -> None:
    loan = npa_loan()
    # More than what is overdue is fine: it prepays the instalment not yet due.
    post_to_loan(loan, OVERDUE_ALL + 1, BUSINESS_DATE)
    with pytest.raises(Overpayment) as err:
        post_to_loan(loan, OWED_ALL + 1, BUSINESS_DATE)
    assert err.value.code == "OVERPAYMENT"
    assert err.value.details == {"max_payable_paise": OWED_ALL}


def test_overpayment_ceiling_shrinks_with_earlier_payments() -> None:
    loan, _ = post_to_loan(npa_loan(), 2 * EMI + 123, BUSINESS_DATE)
    with pytest.raises(Overpayment) as err:
        post_to_loan(loan, 4 * EMI, BUSINESS_DATE)
    assert err.value.details == {"max_payable_paise": 4 * EMI - 123}


def test_exact_payoff_closes_the_loan() -> None:
    loan, allocation = post_to_loan(npa_loan(), OWED_ALL, BUSINESS_DATE)
    assert loan.status is LoanStatus.CLOSED
    assert loan.outstanding_principal_paise == 0
    assert (allocation.interest_paise, allocation.principal_paise) == (6 * INTEREST_EACH, 6 * PRINCIPAL_EACH)
    d = loan.delinquency
    assert (d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        0,
        Bucket.CURRENT,
        Classification.STANDARD,
        None,
        0,
    )


def test_one_paisa_short_of_payoff_leaves_the_loan_active() -> None:
    loan, _ = post_to_loan(npa_loan(), OWED_ALL - 1, BUSINESS_DATE)
    assert loan.status is LoanStatus.ACTIVE
    assert loan.outstanding_principal_paise == 1


def test_paying_the_oldest_overdue_instalment_moves_dpd_to_the_next_unpaid_one() -> None:
    # SMA-1: oldest unpaid 5 Feb (day 38 on 14 Mar), then 5 Mar (day 10).
    loan = make_loan(instalments(DUES[3:]))
    assert (loan.delinquency.dpd, loan.delinquency.classification) == (38, Classification.SMA_1)

    updated, allocation = post_to_loan(loan, EMI, BUSINESS_DATE)

    assert [(line.seq, line.interest_paise, line.principal_paise) for line in allocation.lines] == [
        (1, INTEREST_EACH, PRINCIPAL_EACH)
    ]
    d = updated.delinquency
    assert (d.as_of, d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        BUSINESS_DATE,
        10,
        Bucket.B1_30,
        Classification.SMA_0,
        None,
        EMI,
    )
    assert updated.outstanding_principal_paise == 2 * PRINCIPAL_EACH
    # Untouched: identity, version (the repository bumps it), principal.
    assert (updated.loan_id, updated.version, updated.principal_paise) == (
        loan.loan_id,
        loan.version,
        loan.principal_paise,
    )


def test_a_partly_paid_oldest_instalment_still_counts_for_dpd() -> None:
    loan = make_loan(instalments(DUES[3:]))
    updated, allocation = post_to_loan(loan, EMI - 1, BUSINESS_DATE)
    assert (allocation.interest_paise, allocation.principal_paise) == (INTEREST_EACH, PRINCIPAL_EACH - 1)
    assert updated.delinquency.dpd == 38
    assert updated.delinquency.overdue_paise == EMI + 1


def test_delinquency_is_recomputed_for_the_given_business_date_not_the_loans_old_one() -> None:
    old = dt.date(2026, 2, 20)  # then: only 5 Feb overdue, day 16
    loan = make_loan(instalments(DUES[3:]), business_date=old)
    assert (loan.delinquency.as_of, loan.delinquency.dpd) == (old, 16)

    updated, _ = post_to_loan(loan, 100, BUSINESS_DATE)

    d = updated.delinquency
    assert (d.as_of, d.dpd, d.overdue_paise) == (BUSINESS_DATE, 38, 2 * EMI - 100)


def test_npa_stays_npa_with_a_partial_payment_even_when_dpd_falls_below_91() -> None:
    updated, _ = post_to_loan(npa_loan(), 2 * EMI, BUSINESS_DATE)
    d = updated.delinquency
    # Oldest unpaid is now 5 Jan: day 130 - 30 - 31 = 69, which alone would be SMA-2.
    assert (d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        69,
        Bucket.B61_90,
        Classification.NPA,
        NPA_SINCE,
        3 * EMI,
    )


def test_npa_is_upgraded_to_standard_once_all_overdue_is_paid() -> None:
    updated, _ = post_to_loan(npa_loan(), OVERDUE_ALL, BUSINESS_DATE)
    d = updated.delinquency
    assert (d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        0,
        Bucket.CURRENT,
        Classification.STANDARD,
        None,
        0,
    )
    assert updated.status is LoanStatus.ACTIVE


# --- reversing --------------------------------------------------------------------------------
# A reversal replays the loan's standing payments without the bounced one (docs/rules.md): the loan is
# exactly what it would be had that payment never been posted.


def test_reversing_a_payoff_reopens_the_closed_loan() -> None:
    before = npa_loan()
    closed, allocation = post_to_loan(before, OWED_ALL, BUSINESS_DATE, "P1")
    assert closed.status is LoanStatus.CLOSED
    assert closed.payments == (LedgerEntry("P1", BUSINESS_DATE, BUSINESS_DATE, OWED_ALL),)

    reopened, taken_off = reverse_on_loan(closed, "P1", BUSINESS_DATE)

    assert taken_off == allocation
    assert reopened.status is LoanStatus.ACTIVE
    assert reopened.payments == ()
    assert reopened.schedule == before.schedule
    assert reopened.outstanding_principal_paise == before.principal_paise
    assert reopened.delinquency == before.delinquency


def test_reversing_the_payment_that_upgraded_an_npa_brings_back_npa_with_its_original_date() -> None:
    before = npa_loan()
    upgraded, _ = post_to_loan(before, OVERDUE_ALL, BUSINESS_DATE, "P1")
    assert upgraded.delinquency.classification is Classification.STANDARD

    # Reversed some days later: the original NPA date comes back, not the reversal date.
    later = dt.date(2026, 3, 20)
    reverted, _ = reverse_on_loan(upgraded, "P1", later)

    d = reverted.delinquency
    assert (d.as_of, d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        later,
        DPD_FROM_NOV + 6,
        Bucket.B90_PLUS,
        Classification.NPA,
        NPA_SINCE,
        OVERDUE_ALL,
    )


def test_a_reversed_payment_of_a_loan_that_was_not_npa_does_not_make_it_npa() -> None:
    before = make_loan(instalments(DUES[3:]))
    after, _ = post_to_loan(before, 2 * EMI, BUSINESS_DATE, "P1")
    reverted, _ = reverse_on_loan(after, "P1", BUSINESS_DATE)
    assert reverted.delinquency == before.delinquency
    assert reverted.delinquency.classification is Classification.SMA_1


def test_reversing_an_upgrade_that_followed_a_partial_payment_keeps_the_loan_npa() -> None:
    loan0 = npa_loan()
    loan1, _ = post_to_loan(loan0, 2 * EMI, BUSINESS_DATE, "PA")  # still NPA, dpd 69
    loan2, _ = post_to_loan(loan1, 3 * EMI, BUSINESS_DATE, "PB")  # clears the rest: STANDARD
    assert loan2.delinquency.classification is Classification.STANDARD

    reverted, _ = reverse_on_loan(loan2, "PB", BUSINESS_DATE)

    # dpd 69 alone would be SMA-2; the loan was NPA before the bounced payment, so it is NPA again.
    d = reverted.delinquency
    assert (d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        69,
        Bucket.B61_90,
        Classification.NPA,
        NPA_SINCE,
        3 * EMI,
    )
    assert reverted == loan1


def test_reversing_an_earlier_payment_moves_a_later_payment_onto_the_oldest_instalment() -> None:
    loan0 = npa_loan()
    loan1, alloc_a = post_to_loan(loan0, 2 * EMI, BUSINESS_DATE, "PA")  # instalments 1 and 2
    loan2, alloc_b = post_to_loan(loan1, EMI + 500_00, BUSINESS_DATE, "PB")  # instalment 3 and part of 4
    assert [line.seq for line in alloc_b.lines] == [3, 4]

    reverted, taken_off = reverse_on_loan(loan2, "PA", BUSINESS_DATE)

    assert taken_off == alloc_a
    # Changed with the replay rule: the old reversal subtracted A's allocation and left B on
    # instalments 3 and 4 (dpd 130 from 5 Nov). B now covers the oldest instalment and its
    # remaining 500 goes to instalment 2's interest first, as if A had never been posted.
    assert paid(reverted) == [
        (INTEREST_EACH, PRINCIPAL_EACH),
        (500_00, 0),
        (0, 0),
        (0, 0),
        (0, 0),
        (0, 0),
    ]
    assert [
        (line.seq, line.interest_paise, line.principal_paise) for line in allocations_now(reverted)["PB"].lines
    ] == [
        (1, INTEREST_EACH, PRINCIPAL_EACH),
        (2, 500_00, 0),
    ]
    assert reverted.outstanding_principal_paise == 6 * PRINCIPAL_EACH - PRINCIPAL_EACH
    d = reverted.delinquency
    # Oldest unpaid is now 5 Dec: day 130 - 30 = 100. Still NPA (it was before B) with its date.
    assert (d.dpd, d.classification, d.npa_since, d.overdue_paise) == (
        DPD_FROM_NOV - 30,
        Classification.NPA,
        NPA_SINCE,
        OVERDUE_ALL - EMI - 500_00,
    )
    only_b, _ = post_to_loan(loan0, EMI + 500_00, BUSINESS_DATE, "PB")
    assert reverted == only_b  # exactly as if A had never been posted


def test_reversing_the_upgrading_payment_after_a_prepayment_moves_the_prepayment_to_the_oldest() -> None:
    loan0 = npa_loan()
    loan1, _ = post_to_loan(loan0, OVERDUE_ALL, BUSINESS_DATE, "PA")  # upgrade to STANDARD
    loan2, _ = post_to_loan(loan1, 3_000_00, BUSINESS_DATE, "PB")  # prepays part of instalment 6
    assert loan2.delinquency.classification is Classification.STANDARD
    assert paid(loan2)[5] == (INTEREST_EACH, 2_000_00)

    reverted, _ = reverse_on_loan(loan2, "PA", BUSINESS_DATE)

    # Changed with the replay rule: the prepayment used to stay on instalment 6; now B's money sits
    # on the oldest unpaid instalment, interest first.
    assert paid(reverted) == [(INTEREST_EACH, 2_000_00)] + [(0, 0)] * 5
    d = reverted.delinquency
    assert (d.dpd, d.classification, d.npa_since, d.overdue_paise) == (
        DPD_FROM_NOV,
        Classification.NPA,
        NPA_SINCE,
        OVERDUE_ALL - 3_000_00,
    )


def test_reversing_a_later_prepayment_leaves_an_upgraded_loan_standard() -> None:
    loan0 = npa_loan()
    loan1, _ = post_to_loan(loan0, OVERDUE_ALL, BUSINESS_DATE, "PA")
    loan2, alloc_b = post_to_loan(loan1, 3_000_00, BUSINESS_DATE, "PB")

    reverted, taken_off = reverse_on_loan(loan2, "PB", BUSINESS_DATE)

    assert taken_off == alloc_b
    assert reverted == loan1
    assert reverted.delinquency.classification is Classification.STANDARD


def test_reversal_on_a_written_off_loan_keeps_it_written_off() -> None:
    before = npa_loan()
    after, _ = post_to_loan(before, EMI, BUSINESS_DATE, "P1")
    written_off = dataclasses.replace(after, status=LoanStatus.WRITTEN_OFF)
    reverted, _ = reverse_on_loan(written_off, "P1", BUSINESS_DATE)
    assert reverted.status is LoanStatus.WRITTEN_OFF
    assert reverted.schedule == before.schedule


def test_reversing_a_payment_the_loan_does_not_hold_is_refused() -> None:
    # Was: an allocation the schedule no longer held. Now: a payment id not among the standing ones.
    loan, _ = post_to_loan(npa_loan(), EMI, BUSINESS_DATE, "P1")
    with pytest.raises(ValueError, match="P2"):
        reverse_on_loan(loan, "P2", BUSINESS_DATE)
    reverted, _ = reverse_on_loan(loan, "P1", BUSINESS_DATE)
    with pytest.raises(ValueError, match="P1"):
        reverse_on_loan(reverted, "P1", BUSINESS_DATE)


def test_a_backdated_payment_is_allocated_before_an_earlier_posted_later_dated_one() -> None:
    loan0 = npa_loan()
    loan1, alloc_a = post_to_loan(loan0, EMI, BUSINESS_DATE, "PA", payment_date=dt.date(2026, 3, 14))
    assert [line.seq for line in alloc_a.lines] == [1]
    # Posted later (a larger id) but paid earlier: it takes the oldest instalment from A.
    loan2, alloc_b = post_to_loan(loan1, EMI, BUSINESS_DATE, "PB", payment_date=dt.date(2026, 3, 9))
    assert [line.seq for line in alloc_b.lines] == [1]
    assert [line.seq for line in allocations_now(loan2)["PA"].lines] == [2]
    assert allocations_now(loan2)["PB"] == alloc_b


def test_the_payment_record_carries_its_ledger_entry() -> None:
    record = payment_record(EMI, NO_ALLOCATION, "P9")
    assert record.ledger_entry == LedgerEntry("P9", BUSINESS_DATE, BUSINESS_DATE, EMI)
    assert record.allocation.total_paise == 0


# --- property: money is conserved through any sequence of payments and reversals -------------

START = dt.date(2025, 1, 10)

rows = st.lists(
    st.tuples(st.integers(0, 2_000_000), st.integers(0, 200_000)).filter(lambda r: r[0] + r[1] > 0),
    min_size=1,
    max_size=12,
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("pay"), st.integers(1, 1000)),
        st.tuples(st.just("reverse"), st.integers(0, 50)),
    ),
    min_size=1,
    max_size=15,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, ops=operations, business_offset=st.integers(-40, 500))
def test_payments_and_reversals_conserve_principal_and_never_go_negative(
    rows: list[tuple[int, int]], ops: list[tuple[str, int]], business_offset: int
) -> None:
    schedule = tuple(
        Instalment(seq, START + dt.timedelta(days=30 * (seq - 1)), principal, interest)
        for seq, (principal, interest) in enumerate(rows, start=1)
    )
    principal = sum(p for p, _ in rows)
    business_date = START + dt.timedelta(days=business_offset)
    loan = make_loan(schedule, business_date, principal_paise=principal)
    live: list[str] = []
    posted = 0

    for kind, n in ops:
        if kind == "pay":
            owed = sum(i.unpaid_paise for i in loan.schedule)
            if loan.status is not LoanStatus.ACTIVE or owed == 0:
                continue
            amount = max(1, owed * n // 1000)
            payment_id = f"P{posted:03d}"
            posted += 1
            updated, allocation = post_to_loan(loan, amount, business_date, payment_id)
            assert allocation.total_paise == amount
            live.append(payment_id)
            loan = updated
        elif live:
            payment_id = live.pop(n % len(live))
            loan, _ = reverse_on_loan(loan, payment_id, business_date)

        assert [e.payment_id for e in loan.payments] == live
        allocations = allocations_now(loan).values()
        paid_principal = sum(a.principal_paise for a in allocations)
        paid_interest = sum(a.interest_paise for a in allocations)
        assert paid_principal + paid_interest == sum(e.amount_paise for e in loan.payments)
        assert loan.outstanding_principal_paise + paid_principal == principal
        assert sum(i.paid_principal_paise for i in loan.schedule) == paid_principal
        assert sum(i.paid_interest_paise for i in loan.schedule) == paid_interest
        for inst in loan.schedule:
            assert 0 <= inst.paid_principal_paise <= inst.principal_paise
            assert 0 <= inst.paid_interest_paise <= inst.interest_paise
        assert loan.outstanding_principal_paise >= 0
        assert (loan.status is LoanStatus.CLOSED) == all(i.unpaid_paise == 0 for i in loan.schedule)
        d = loan.delinquency
        assert d.dpd == dpd_on(loan.schedule, business_date) >= 0
        assert d.overdue_paise == overdue_paise(loan.schedule, business_date) >= 0
        assert (d.classification is Classification.NPA) == (d.npa_since is not None)
        assert replay(schedule, loan.payments, business_date).delinquency == d

    for payment_id in reversed(list(live)):
        loan, _ = reverse_on_loan(loan, payment_id, business_date)
    assert loan.schedule == schedule
    assert loan.payments == ()
    assert loan.status is LoanStatus.ACTIVE
    assert loan.outstanding_principal_paise == principal


def test_a_reversal_in_a_gap_keeps_an_npa_reached_in_the_gap() -> None:
    """Evaluated last when SMA-2 (dpd 86); no run since. Reversing the payment days after the loan
    would have crossed dpd 91 without it must not present it as SMA: with the payment never posted,
    every day-end up to the reversal's date sees instalment 1 (1 Jan) unpaid."""
    dues = [dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1), dt.date(2026, 4, 1)]
    stale = make_loan(instalments(dues), business_date=dt.date(2026, 3, 27))  # dpd 86, SMA-2
    assert stale.delinquency.classification is Classification.SMA_2
    after, _ = post_to_loan(stale, EMI, dt.date(2026, 3, 27), "P1")  # pays instalment 1: dpd 55
    assert (after.delinquency.dpd, after.delinquency.classification) == (55, Classification.SMA_1)
    later = dt.date(2026, 5, 10)  # 1 Jan unpaid: dpd 130 on 10 May, NPA since 1 Apr
    reverted, _ = reverse_on_loan(after, "P1", later)
    d = reverted.delinquency
    assert (d.as_of, d.dpd, d.classification) == (later, 130, Classification.NPA)
    assert d.npa_since == dt.date(2026, 1, 1) + dt.timedelta(days=90)
