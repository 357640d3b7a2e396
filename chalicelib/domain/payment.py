"""Payments (SPEC §5): what a valid payment is, and what posting or reversing one does to a loan.

Pure: the service supplies today's IST date and the last completed business date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum

from chalicelib.domain.allocation import Allocation, apply_payment, is_fully_paid, total_unpaid_paise, unapply_payment
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import Classification, assess
from chalicelib.domain.errors import (
    AmountOutOfRange,
    LoanNotPayable,
    Overpayment,
    PaymentDateInFuture,
    PaymentDateTooOld,
)
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


def normalise_utr(raw: str) -> str:
    """Bank references arrive with stray spaces and mixed case from SMS and statements; one UTR is
    one payment however it was typed."""
    return raw.strip().upper()


def is_valid_utr(utr: str) -> bool:
    return bool(UTR_PATTERN.fullmatch(utr))


def check_amount(amount_paise: int) -> None:
    if not MIN_PAYMENT_PAISE <= amount_paise <= MAX_PAYMENT_PAISE:
        raise AmountOutOfRange(
            f"amount must be between {format_inr(MIN_PAYMENT_PAISE)} and {format_inr(MAX_PAYMENT_PAISE)}",
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


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    utr: str
    loan_id: str
    amount_paise: int
    payment_date: dt.date
    mode: PaymentMode
    status: PaymentStatus
    allocation: Allocation
    posted_at: str
    posted_by: Actor
    prior_classification: Classification
    """The loan's classification just before this payment: a reversal must not leave a loan upgraded
    out of NPA by money that never arrived."""
    prior_npa_since: dt.date | None
    request_fingerprint: str | None = None
    """Hash of (caller, Idempotency-Key, body) when the client sent a key: lets a retry whose first
    attempt committed but never got its answer be recognised as the same request."""
    reversed_at: str | None = None
    reversed_by: Actor | None = None
    reversal_reason: str | None = None


def post_to_loan(loan: Loan, amount_paise: int, business_date: dt.date) -> tuple[Loan, Allocation]:
    """Apply a payment to an ACTIVE loan and recompute its delinquency for ``business_date``; a
    payment that clears everything closes the loan."""
    if loan.status is not LoanStatus.ACTIVE:
        raise LoanNotPayable(f"loan {loan.loan_id} is {loan.status.value}, not ACTIVE")
    owed = total_unpaid_paise(loan.schedule)
    if amount_paise > owed:
        raise Overpayment(
            f"amount {format_inr(amount_paise)} is more than everything still owed ({format_inr(owed)})",
            {"max_payable_paise": owed},
        )
    previous = loan.delinquency
    if previous.as_of < business_date:
        # Every day-end up to business_date comes before this payment, whether or not a run has evaluated
        # the loan for it yet (a missed or late run): an NPA reached meanwhile stays NPA, with its date.
        previous = assess(loan.schedule, business_date, previous.classification, previous.npa_since)
    schedule, allocation = apply_payment(loan.schedule, amount_paise)
    status = LoanStatus.CLOSED if is_fully_paid(schedule) else LoanStatus.ACTIVE
    delinquency = assess(schedule, business_date, previous.classification, previous.npa_since)
    return dataclasses.replace(loan, schedule=schedule, status=status, delinquency=delinquency), allocation


def reverse_on_loan(loan: Loan, payment: Payment, business_date: dt.date) -> Loan:
    """Take a payment back off its loan: a closed loan reopens, and if the loan was NPA before the
    payment it is NPA again (with its original date) while anything is overdue."""
    before = loan.delinquency
    if before.as_of < business_date and loan.status is LoanStatus.ACTIVE:
        # As for a payment: every day-end up to business_date comes first (an NPA reached meanwhile stays).
        before = assess(loan.schedule, business_date, before.classification, before.npa_since)
    schedule = unapply_payment(loan.schedule, payment.allocation)
    previous, npa_since = before.classification, before.npa_since
    if payment.prior_classification is Classification.NPA and previous is not Classification.NPA:
        previous, npa_since = Classification.NPA, payment.prior_npa_since
    delinquency = assess(schedule, business_date, previous, npa_since)
    if delinquency.classification is Classification.NPA:
        # Money that bounced never arrived: the oldest instalment it had covered has been overdue all
        # along, so the true NPA date may be earlier than the one recorded while the payment stood.
        without = assess(schedule, business_date)
        if without.npa_since is not None and (
            delinquency.npa_since is None or without.npa_since < delinquency.npa_since
        ):
            delinquency = dataclasses.replace(delinquency, npa_since=without.npa_since)
    status = LoanStatus.CLOSED if is_fully_paid(schedule) else LoanStatus.ACTIVE
    if loan.status is LoanStatus.WRITTEN_OFF:
        status = LoanStatus.WRITTEN_OFF
    return dataclasses.replace(loan, schedule=schedule, status=status, delinquency=delinquency)
