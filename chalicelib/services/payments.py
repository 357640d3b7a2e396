"""Posting and reversing payments (SPEC §5).

Checks run in the spec's order — UTR format and JSON types (the request schema), amount range, IST
date window, loan visibility/status/overpayment, UTR uniqueness — each with its own code. The write is
one transaction; a concurrent change to the same loan (another payment) is retried here with jittered
backoff, so distinct payments arriving together all land.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from chalicelib import clock
from chalicelib.domain.audit import Action
from chalicelib.domain.errors import AlreadyReversed, Conflict, DomainError, DuplicateUtr, NotFound, Unavailable
from chalicelib.domain.loan import Loan, reassess
from chalicelib.domain.payment import (
    Payment,
    PaymentMode,
    PaymentStatus,
    check_amount,
    check_payment_date,
    post_to_loan,
    reverse_on_loan,
)
from chalicelib.domain.roles import MANAGE_LOANS, PAY_LOANS
from chalicelib.retry import backoff
from chalicelib.services.context import RequestContext
from chalicelib.services.ids import new_id
from chalicelib.services.loans import LoanService
from chalicelib.services.ports import Metrics, Page, PaymentRepository, UtrTaken
from chalicelib.services.views import loan_money_dict

POST_ATTEMPTS = 12
"""Optimistic-lock retries for one payment. Eight collectors posting to one loan in the same instant
need at most eight rounds; more than this means something is wrong, and the client gets 409."""


@dataclass(frozen=True)
class NewPayment:
    loan_id: str
    utr: str
    """Already normalised and format-checked by the request schema."""
    amount_paise: int
    payment_date: dt.date
    mode: PaymentMode


@dataclass(frozen=True)
class PostedPayment:
    payment: Payment
    loan: Loan
    replayed: bool = False


@dataclass
class PaymentService:
    payments: PaymentRepository
    loans: LoanService
    metrics: Metrics

    def _rejected(self, error: DomainError) -> DomainError:
        self.metrics.count("PaymentRejected", reason=error.code)
        return error

    def _replay_of(self, utr: str, fingerprint: str | None, ctx: RequestContext) -> PostedPayment | None:
        """An earlier attempt of this very request (same caller, key and body) that committed but whose
        answer never reached the client: answer with that payment instead of a duplicate error."""
        if fingerprint is None:
            return None
        payment_id = self.payments.payment_id_for_utr(utr)
        original = self.payments.get(payment_id) if payment_id else None
        if original is None or original.request_fingerprint != fingerprint:
            return None
        return PostedPayment(original, self.loans.get(ctx, original.loan_id), replayed=True)

    def post(self, ctx: RequestContext, cmd: NewPayment, fingerprint: str | None = None) -> PostedPayment:
        """Record one payment exactly once and apply it to its loan."""
        ctx.require(PAY_LOANS)
        try:
            check_amount(cmd.amount_paise)
            check_payment_date(cmd.payment_date, clock.today_ist())
            replay = self._replay_of(cmd.utr, fingerprint, ctx)
            if replay is not None:
                return replay
            for attempt in range(POST_ATTEMPTS):
                loan = self.loans.get(ctx, cmd.loan_id)
                business_date = clock.last_completed_business_date()
                if loan.delinquency.as_of < business_date:
                    # The state the payment lands on (and a reversal must restore): every day-end up to
                    # business_date first, even if no run has evaluated this loan for them yet.
                    loan = reassess(loan, business_date)
                updated, allocation = post_to_loan(loan, cmd.amount_paise, business_date)
                now = clock.now_iso()
                updated = dataclasses.replace(updated, updated_at=now)
                payment = Payment(
                    payment_id=new_id(),
                    utr=cmd.utr,
                    loan_id=cmd.loan_id,
                    amount_paise=cmd.amount_paise,
                    payment_date=cmd.payment_date,
                    mode=cmd.mode,
                    status=PaymentStatus.POSTED,
                    allocation=allocation,
                    posted_at=now,
                    posted_by=ctx.actor,
                    prior_classification=loan.delinquency.classification,
                    prior_npa_since=loan.delinquency.npa_since,
                    request_fingerprint=fingerprint,
                )
                audit = ctx.loan_audit(
                    Action.PAYMENT_POSTED,
                    loan.loan_id,
                    {**loan_money_dict(loan), "version": loan.version},
                    {**loan_money_dict(updated), "version": loan.version + 1, "payment": payment_summary(payment)},
                )
                try:
                    stored = self.payments.post(payment, updated, audit)
                except UtrTaken:
                    original = self.payments.payment_id_for_utr(cmd.utr)
                    self.metrics.count("DuplicateUtr")
                    raise DuplicateUtr(
                        f"UTR {cmd.utr} was already used", {"payment_id": original, "utr": cmd.utr}
                    ) from None
                except Conflict:
                    backoff(attempt, base_seconds=0.02, cap_seconds=0.5)
                    continue
                self.metrics.count("PaymentPosted")
                return PostedPayment(payment, stored)
            raise Conflict(f"loan {cmd.loan_id} is too busy right now; the payment was not recorded, try again")
        except Unavailable:
            self.metrics.count("PaymentFailed")
            raise
        except DomainError as error:
            raise self._rejected(error) from None
        except Exception:
            # Not a refusal: something broke. Nothing was half-written (one transaction), but ops must look.
            self.metrics.count("PaymentFailed")
            raise

    def reverse(self, ctx: RequestContext, payment_id: str, reason: str) -> PostedPayment:
        """Bounce: take the payment off its loan (reopening a closed loan); its UTR stays used."""
        ctx.require(MANAGE_LOANS)
        for attempt in range(POST_ATTEMPTS):
            payment = self.get(ctx, payment_id)
            if payment.status is PaymentStatus.REVERSED:
                raise AlreadyReversed(f"payment {payment_id} is already reversed", {"payment_id": payment_id})
            loan = self.loans.get(ctx, payment.loan_id)
            now = clock.now_iso()
            updated = dataclasses.replace(
                reverse_on_loan(loan, payment, clock.last_completed_business_date()), updated_at=now
            )
            reversed_payment = dataclasses.replace(
                payment,
                status=PaymentStatus.REVERSED,
                reversed_at=now,
                reversed_by=ctx.actor,
                reversal_reason=reason,
            )
            audit = ctx.loan_audit(
                Action.PAYMENT_REVERSED,
                loan.loan_id,
                {**loan_money_dict(loan), "version": loan.version},
                {**loan_money_dict(updated), "version": loan.version + 1, "payment": payment_summary(reversed_payment)},
                reason=reason,
            )
            try:
                stored = self.payments.reverse(reversed_payment, updated, audit)
            except Conflict:
                backoff(attempt, base_seconds=0.02, cap_seconds=0.5)
                continue
            self.metrics.count("PaymentReversed")
            return PostedPayment(reversed_payment, stored)
        raise Conflict(f"loan of payment {payment_id} is too busy right now; try again")

    def get(self, ctx: RequestContext, payment_id: str) -> Payment:
        """A payment on a loan the caller may see (collectors: their own loans), else 404."""
        payment = self.payments.get(payment_id)
        if payment is None:
            raise NotFound(f"payment {payment_id} not found")
        try:
            self.loans.get(ctx, payment.loan_id)
        except NotFound:
            raise NotFound(f"payment {payment_id} not found") from None
        return payment

    def list_for_loan(self, ctx: RequestContext, loan_id: str, limit: int, cursor: str | None) -> Page[Payment]:
        self.loans.get(ctx, loan_id)
        return self.payments.list_for_loan(loan_id, limit, cursor)


def payment_summary(payment: Payment) -> dict[str, object]:
    """The payment as its audit entry records it: what was paid and how it was split."""
    return {
        "payment_id": payment.payment_id,
        "utr": payment.utr,
        "amount_paise": payment.amount_paise,
        "payment_date": payment.payment_date.isoformat(),
        "mode": payment.mode.value,
        "status": payment.status.value,
        "allocation": {
            "interest_paise": payment.allocation.interest_paise,
            "principal_paise": payment.allocation.principal_paise,
        },
    }
