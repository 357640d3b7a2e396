"""Payments (docs/rules.md, "Payments"): what a valid payment is, and what posting or reversing one does to a loan.

Pure: the service supplies today's IST date and the last completed business date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum

from chalicelib.domain.allocation import Allocation, is_fully_paid, total_unpaid_paise
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import (
    AmountOutOfRange,
    LoanNotPayable,
    Overpayment,
    PaymentDateInFuture,
    PaymentDateTooOld,
)
from chalicelib.domain.ledger import LedgerEntry, Replay, allocate, replay
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.money import format_inr

UTR_PATTERN = re.compile(r"^[A-Z0-9]{6,35}$")
MIN_PAYMENT_PAISE = 100
"""₹1."""
MAX_PAYMENT_PAISE = 1_000_000_000
"""₹1 crore: above this a payment is a data-entry error or needs a manual process."""
BACKDATE_DAYS = 7


class PaymentMode(StrEnum):
    UPI = "UPI"
    IMPS = "IMPS"
    NEFT = "NEFT"
    RTGS = "RTGS"
    NACH = "NACH"
    CHEQUE = "CHEQUE"
    CASH = "CASH"


class PaymentStatus(StrEnum):
    POSTED = "POSTED"
    REVERSED = "REVERSED"


UTR_SPACES = " \t\r\n"


def normalise_utr(raw: str) -> str:
    """Bank references arrive with stray spaces and mixed case from SMS and statements; one UTR is
    one payment however it was typed. Only ASCII is folded: ``"ß".upper()`` is ``"SS"``, so folding
    any letter would turn text that is no UTR at all into one (and claim someone else's)."""
    trimmed = raw.strip(UTR_SPACES)
    return trimmed.upper() if trimmed.isascii() else trimmed


def is_valid_utr(utr: str) -> bool:
    return bool(UTR_PATTERN.fullmatch(utr))


def check_amount(amount_paise: int, remaining_paise: int | None = None) -> None:
    """₹1 to ₹1 crore; below ₹1 only a payment of exactly ``remaining_paise`` (everything the loan
    still owes), so a residual of a few paise can always be cleared."""
    if MIN_PAYMENT_PAISE <= amount_paise <= MAX_PAYMENT_PAISE:
        return
    if 0 < amount_paise < MIN_PAYMENT_PAISE and amount_paise == remaining_paise:
        return
    raise AmountOutOfRange(
        f"amount must be between {format_inr(MIN_PAYMENT_PAISE)} and {format_inr(MAX_PAYMENT_PAISE)}"
        " (or exactly what the loan still owes, when that is less)",
        {"min_paise": MIN_PAYMENT_PAISE, "max_paise": MAX_PAYMENT_PAISE},
    )


def check_payment_date(payment_date: dt.date, today: dt.date) -> None:
    """Not after today (IST) and not before today − 7 days (today − 7 itself is accepted)."""
    if payment_date > today:
        raise PaymentDateInFuture(f"payment date {payment_date} is after today ({today}, IST)")
    earliest = today - dt.timedelta(days=BACKDATE_DAYS)
    if payment_date < earliest:
        raise PaymentDateTooOld(
            f"payment date {payment_date} is more than {BACKDATE_DAYS} days old; the earliest accepted is {earliest}",
            {"earliest": earliest.isoformat()},
        )


NO_ALLOCATION = Allocation(())


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    utr: str
    loan_id: str
    amount_paise: int
    payment_date: dt.date
    mode: PaymentMode
    status: PaymentStatus
    posted_at: str
    posted_by: Actor
    landed_on: dt.date
    """The business date the payment was recomputed for when posted (its place in the loan's history)."""
    allocation: Allocation = NO_ALLOCATION
    """Where the money sits now: for a standing payment, its share of the loan's replay (the
    service fills it from the loan); for a reversed one, what the reversal took off."""
    request_fingerprint: str | None = None
    """Hash of (caller, Idempotency-Key, body) when the client sent a key: lets a retry whose first
    attempt committed but never got its answer be recognised as the same request."""
    reversed_at: str | None = None
    reversed_by: Actor | None = None
    reversal_reason: str | None = None
    collector_id: str | None = None
    """The collector the loan was with when the payment was posted: credited with it in the
    collections figures (``domain.portfolio.payment_collections``), whoever holds the loan later."""
    branch: str | None = None
    """The loan's branch, kept with the payment for the same figures."""

    @property
    def ledger_entry(self) -> LedgerEntry:
        return LedgerEntry(self.payment_id, self.payment_date, self.landed_on, self.amount_paise)


def _ledger_allocations(loan: Loan) -> tuple[Allocation, ...]:
    """Where each of the loan's standing payments sits now, after checking that the loan's paid amounts
    are the replay of its ledger: a loan stored without its ledger (data from before the ledger
    existed) would otherwise lose its paid amounts on the next replay, so it is refused (ValueError)
    instead of silently rewritten."""
    schedule, allocations = allocate(loan.schedule, loan.payments)
    if schedule != loan.schedule:
        raise ValueError(f"loan {loan.loan_id}: paid amounts do not match its ledger; reconcile before posting")
    return allocations


def _replayed(loan: Loan, payments: tuple[LedgerEntry, ...], business_date: dt.date) -> tuple[Loan, Replay]:
    """The loan as ``payments`` make it for ``business_date``: schedule, delinquency and status.
    A written-off loan stays written off; otherwise it is CLOSED exactly when nothing is owed."""
    result = replay(loan.schedule, payments, business_date)
    status = LoanStatus.CLOSED if is_fully_paid(result.schedule) else LoanStatus.ACTIVE
    if loan.status is LoanStatus.WRITTEN_OFF:
        status = LoanStatus.WRITTEN_OFF
    updated = dataclasses.replace(
        loan, schedule=result.schedule, payments=payments, status=status, delinquency=result.delinquency
    )
    return updated, result


def payable_paise(loan: Loan) -> int | None:
    """The most one payment may be on this loan: everything it still owes, due or not, when it is
    ACTIVE; None when it takes no payments at all (closed or written off)."""
    return total_unpaid_paise(loan.schedule) if loan.status is LoanStatus.ACTIVE else None


def post_to_loan(
    loan: Loan,
    amount_paise: int,
    business_date: dt.date,
    payment_id: str = "",
    payment_date: dt.date | None = None,
) -> tuple[Loan, Allocation]:
    """Add a payment to an ACTIVE loan and replay it for ``business_date`` (the last completed
    business date, where the payment lands); a payment that clears everything closes the loan.
    Returns the loan and where this payment's money went."""
    owed = payable_paise(loan)
    if owed is None:
        raise LoanNotPayable(f"loan {loan.loan_id} is {loan.status.value}, not ACTIVE")
    if amount_paise > owed:
        raise Overpayment(
            f"amount {format_inr(amount_paise)} is more than everything still owed ({format_inr(owed)})",
            {"max_payable_paise": owed},
        )
    _ledger_allocations(loan)
    entry = LedgerEntry(payment_id, payment_date or business_date, business_date, amount_paise)
    updated, result = _replayed(loan, (*loan.payments, entry), business_date)
    return updated, result.allocations[-1]


def reverse_on_loan(loan: Loan, payment_id: str, business_date: dt.date) -> tuple[Loan, Allocation]:
    """Take a payment off its loan: the loan becomes exactly what it would be had the payment never
    been posted (the standing payments replayed without it), for ``business_date``. Returns the loan
    and what the reversal took off (the payment's allocation just before). ValueError if the loan
    does not hold that payment."""
    positions = [n for n, e in enumerate(loan.payments) if e.payment_id == payment_id]
    if len(positions) != 1:
        raise ValueError(f"loan {loan.loan_id} does not hold payment {payment_id} exactly once")
    taken_off = _ledger_allocations(loan)[positions[0]]
    standing = tuple(e for e in loan.payments if e.payment_id != payment_id)
    updated, _ = _replayed(loan, standing, business_date)
    return updated, taken_off


def allocations_now(loan: Loan) -> dict[str, Allocation]:
    """Where each standing payment's money sits on the loan now, by payment id."""
    _, allocations = allocate(loan.schedule, loan.payments)
    return {e.payment_id: a for e, a in zip(loan.payments, allocations, strict=True)}
