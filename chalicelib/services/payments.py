"""Posting and reversing payments (docs/rules.md, "Payments").

Checks run in the documented order — UTR format and JSON types (the request schema), amount range, IST
date window, loan visibility/status/overpayment, UTR uniqueness — each with its own code. The write is
one transaction; a concurrent change to the same loan (another payment) is retried under the
``OPTIMISTIC_WRITE`` policy of ``chalicelib.retry`` (``services.loans.retry_loan_write``, as every loan write),
so distinct payments arriving together all land.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from chalicelib import clock
from chalicelib.domain.allocation import Allocation
from chalicelib.domain.audit import DELINQUENCY_ACTOR, Action, AuditEntry
from chalicelib.domain.errors import AlreadyReversed, Conflict, DomainError, DuplicateUtr, NotFound, Unavailable
from chalicelib.domain.loan import Loan, delinquency_changed, delinquency_snapshot
from chalicelib.domain.payment import (
    MIN_PAYMENT_PAISE,
    Payment,
    PaymentMode,
    PaymentStatus,
    allocations_now,
    check_amount,
    check_payment_date,
    payable_paise,
    post_to_loan,
    reverse_on_loan,
)
from chalicelib.domain.roles import MANAGE_LOANS, PAY_LOANS
from chalicelib.services.context import RequestContext
from chalicelib.services.ids import new_id
from chalicelib.services.loans import LoanService, retry_loan_write
from chalicelib.services.ports import Answered, Metrics, Page, PaymentRepository, Receipt, ReceiptTaken, UtrTaken
from chalicelib.services.views import loan_balance_dict

T = TypeVar("T")


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

    def _failure_metrics(self, operation: Callable[[], T]) -> T:
        """Run a posting or a reversal, counting ``PaymentFailed`` for anything that is not a
        refusal (an unreachable database, a bug) and ``PaymentRejected`` for refusals: ops watch the
        first, and a failed reversal is as much a money incident as a failed posting."""
        try:
            return operation()
        except Answered:
            raise
        except Unavailable:
            self.metrics.count("PaymentFailed")
            raise
        except DomainError as error:
            raise self._rejected(error) from None
        except Exception:
            # Not a refusal: something broke. Nothing was half-written (one transaction), but ops must look.
            self.metrics.count("PaymentFailed")
            raise

    def _replay_of(self, utr: str, fingerprint: str | None, ctx: RequestContext) -> PostedPayment | None:
        """An earlier attempt of this very request (same caller, key and body) that committed but whose
        answer never reached the client: answer with that payment instead of a duplicate error."""
        if fingerprint is None:
            return None
        payment_id = self.payments.payment_id_for_utr(utr)
        original = self.payments.get(payment_id) if payment_id else None
        if original is None or original.request_fingerprint != fingerprint:
            return None
        loan = self.loans.get(ctx, original.loan_id)
        return PostedPayment(with_allocation(original, loan), loan, replayed=True)

    def _remaining(self, ctx: RequestContext, loan_id: str) -> int | None:
        """Everything the loan still owes, when the caller may pay it; None otherwise (the amount
        check then refuses a sub-rupee amount as it would for any loan)."""
        try:
            loan = self.loans.stored(ctx, loan_id)
        except NotFound:
            return None
        return payable_paise(loan)

    def post(
        self, ctx: RequestContext, cmd: NewPayment, fingerprint: str | None = None, receipt: Receipt | None = None
    ) -> PostedPayment:
        """Record one payment exactly once and apply it to its loan. With a ``receipt`` (an
        Idempotency-Key), the key's record and the loan are read together first, a record there answers
        (:class:`Answered`) before any check, and the answer is stored by the payment's own transaction."""
        ctx.require(PAY_LOANS)
        if receipt is not None:
            return self._failure_metrics(lambda: self._post_with_receipt(ctx, cmd, fingerprint, receipt))
        return self._failure_metrics(lambda: self._post(ctx, cmd, fingerprint))

    def _post_with_receipt(
        self, ctx: RequestContext, cmd: NewPayment, fingerprint: str | None, receipt: Receipt
    ) -> PostedPayment:
        """One read (the record and the loan), one transaction (the payment and its answer)."""
        found, stored = self.payments.receipt_and_loan(receipt.record_id, cmd.loan_id)
        receipt.met(found)

        # The checks in the documented order, as :meth:`_post`: amount, date, then the loan.
        def remaining() -> int | None:
            try:
                return payable_paise(self.loans.visible(ctx, cmd.loan_id, stored))
            except NotFound:
                return None

        _check_amount_and_date(cmd, remaining)
        preloaded = [stored]

        def attempt() -> PostedPayment:
            # The first attempt posts to the loan just read; a retry (the loan changed) reads it again.
            first = self.loans.visible(ctx, cmd.loan_id, preloaded.pop()) if preloaded else None
            try:
                return self._post_once(ctx, cmd, fingerprint, receipt, first)
            except ReceiptTaken:
                # Another request with this key committed since the read: its record answers.
                receipt.met(self.payments.receipt(receipt.record_id))
                raise Conflict(f"loan {cmd.loan_id} changed while the payment was being posted") from None

        return retry_loan_write(
            attempt, f"loan {cmd.loan_id} is too busy right now; the payment was not recorded, try again"
        )

    def _post(self, ctx: RequestContext, cmd: NewPayment, fingerprint: str | None) -> PostedPayment:
        """The checks in the documented order (docs/rules.md, "Payments"): amount and date here, the
        loan (:func:`post_to_loan`) and the UTR (the write's claim) in each attempt of the write."""
        _check_amount_and_date(cmd, lambda: self._remaining(ctx, cmd.loan_id))
        replay = self._replay_of(cmd.utr, fingerprint, ctx)
        if replay is not None:
            return replay
        return retry_loan_write(
            lambda: self._post_once(ctx, cmd, fingerprint),
            f"loan {cmd.loan_id} is too busy right now; the payment was not recorded, try again",
        )

    def _post_once(
        self,
        ctx: RequestContext,
        cmd: NewPayment,
        fingerprint: str | None,
        receipt: Receipt | None = None,
        loan: Loan | None = None,
    ) -> PostedPayment:
        """One optimistic attempt: read the loan as stored (unless given), post the payment to it, write
        the payment, its UTR claim, the loan, the audit entries and the receipt's record in one transaction."""
        if loan is None:
            loan = self.loans.stored(ctx, cmd.loan_id)
        payment, updated = _posting(ctx, cmd, loan, fingerprint)
        audits = _change_audits(ctx, Action.PAYMENT_POSTED, loan, updated, payment)
        record = receipt.record(PostedPayment(payment, updated)) if receipt is not None else None
        try:
            stored = self.payments.post(payment, loan, updated, audits, record)
        except UtrTaken:
            # A keyed payment whose first attempt committed without a record under its key (one from
            # before records were written with the payment, when the key's record was deleted on an
            # error) is still recognised by the fingerprint stored on it.
            replay = self._replay_of(cmd.utr, fingerprint, ctx) if receipt is not None else None
            if replay is not None:
                return replay
            raise self._duplicate_utr(ctx, cmd) from None
        self.metrics.count("PaymentPosted")
        return PostedPayment(payment, stored)

    def _duplicate_utr(self, ctx: RequestContext, cmd: NewPayment) -> DuplicateUtr:
        """The refusal of a UTR used before, audited as a denied posting. The original payment's id is
        named only to a caller who may read that payment (a collector may not learn of payments on
        other collectors' loans)."""
        self.metrics.count("DuplicateUtr")
        original = self.payments.payment_id_for_utr(cmd.utr)
        details: dict[str, str] = {"utr": cmd.utr}
        if original is not None and self._may_read(ctx, original):
            details["payment_id"] = original
        attempted = {
            "utr": cmd.utr,
            "amount_paise": cmd.amount_paise,
            "payment_date": cmd.payment_date.isoformat(),
            "mode": cmd.mode.value,
        }
        self.loans.denials.record(
            ctx, Action.PAYMENT_POSTED, "loan", cmd.loan_id, attempted, f"DUPLICATE_UTR: {cmd.utr} was used before"
        )
        return DuplicateUtr(f"UTR {cmd.utr} was already used", details)

    def _may_read(self, ctx: RequestContext, payment_id: str) -> bool:
        try:
            self.get(ctx, payment_id)
        except NotFound:
            return False
        return True

    def reverse(self, ctx: RequestContext, payment_id: str, reason: str) -> PostedPayment:
        """Bounce: the loan becomes what it would be had the payment never been posted (its standing
        payments replayed without it; a closed loan reopens); the UTR stays used."""
        ctx.require(MANAGE_LOANS)
        return self._failure_metrics(lambda: self._reverse(ctx, payment_id, reason))

    def _reverse(self, ctx: RequestContext, payment_id: str, reason: str) -> PostedPayment:
        return retry_loan_write(
            lambda: self._reverse_once(ctx, payment_id, reason),
            f"loan of payment {payment_id} is too busy right now; try again",
        )

    def _reverse_once(self, ctx: RequestContext, payment_id: str, reason: str) -> PostedPayment:
        """One optimistic attempt: read the payment and its loan, replay the loan without it, write the
        reversed payment (if still POSTED), the loan and the audit entries in one transaction."""
        payment, loan = self._payment_and_loan(ctx, payment_id)
        if payment.status is PaymentStatus.REVERSED:
            raise AlreadyReversed(f"payment {payment_id} is already reversed", {"payment_id": payment_id})
        reversed_payment, updated = _reversal(ctx, payment, loan, reason)
        audits = _change_audits(ctx, Action.PAYMENT_REVERSED, loan, updated, reversed_payment, reason)
        stored = self.payments.reverse(reversed_payment, loan, updated, audits)
        self.metrics.count("PaymentReversed")
        return PostedPayment(reversed_payment, stored)

    def get(self, ctx: RequestContext, payment_id: str) -> Payment:
        """A payment on a loan the caller may see (collectors: their own loans), else 404; a standing
        payment shows where its money sits on the loan now."""
        return with_allocation(*self._payment_and_loan(ctx, payment_id))

    def _payment_and_loan(self, ctx: RequestContext, payment_id: str) -> tuple[Payment, Loan]:
        """The payment and its loan as stored, if the caller may see the loan; 404 otherwise, the same
        answer as for a payment that does not exist."""
        payment = self.payments.get(payment_id)
        if payment is None:
            raise NotFound(f"payment {payment_id} not found")
        try:
            return payment, self.loans.stored(ctx, payment.loan_id)
        except NotFound:
            raise NotFound(f"payment {payment_id} not found") from None

    def list_for_loan(self, ctx: RequestContext, loan_id: str, limit: int, cursor: str | None) -> Page[Payment]:
        loan = self.loans.stored(ctx, loan_id)
        page = self.payments.list_for_loan(loan_id, limit, cursor)
        allocations = allocations_now(loan)
        return Page([with_allocation(p, loan, allocations) for p in page.items], page.next_cursor)


def _check_amount_and_date(cmd: NewPayment, remaining: Callable[[], int | None]) -> None:
    """The first checks, in the documented order (docs/rules.md, "Payments"): the amount (₹1 to ₹1
    crore, or below ₹1 exactly what the loan still owes: ``remaining`` is asked only then), then the
    payment date."""
    below_minimum = 0 < cmd.amount_paise < MIN_PAYMENT_PAISE
    check_amount(cmd.amount_paise, remaining() if below_minimum else None)
    check_payment_date(cmd.payment_date, clock.today_ist())


def _posting(ctx: RequestContext, cmd: NewPayment, loan: Loan, fingerprint: str | None) -> tuple[Payment, Loan]:
    """The payment and the loan it makes, landing on the last completed business date (the loan
    checks — payable, not overpaid — are :func:`post_to_loan`'s)."""
    business_date = clock.last_completed_business_date()
    payment_id = new_id()
    updated, allocation = post_to_loan(loan, cmd.amount_paise, business_date, payment_id, cmd.payment_date)
    now = clock.now_iso()
    payment = Payment(
        payment_id=payment_id,
        utr=cmd.utr,
        loan_id=cmd.loan_id,
        amount_paise=cmd.amount_paise,
        payment_date=cmd.payment_date,
        mode=cmd.mode,
        status=PaymentStatus.POSTED,
        allocation=allocation,
        posted_at=now,
        posted_by=ctx.actor,
        landed_on=business_date,
        request_fingerprint=fingerprint,
        collector_id=loan.collector_id,
        branch=loan.branch,
    )
    return payment, dataclasses.replace(updated, updated_at=now)


def _reversal(ctx: RequestContext, payment: Payment, loan: Loan, reason: str) -> tuple[Payment, Loan]:
    """The reversed payment, keeping what the reversal took off, and the loan replayed without it for
    the last completed business date (:func:`reverse_on_loan`)."""
    now = clock.now_iso()
    updated, taken_off = reverse_on_loan(loan, payment.payment_id, clock.last_completed_business_date())
    reversed_payment = dataclasses.replace(
        payment,
        status=PaymentStatus.REVERSED,
        allocation=taken_off,
        reversed_at=now,
        reversed_by=ctx.actor,
        reversal_reason=reason,
    )
    return reversed_payment, dataclasses.replace(updated, updated_at=now)


def with_allocation(payment: Payment, loan: Loan, allocations: dict[str, Allocation] | None = None) -> Payment:
    """The payment with its allocation as it stands on ``loan`` now (reversed payments keep what the
    reversal took off)."""
    if payment.status is PaymentStatus.REVERSED:
        return payment
    current = (allocations if allocations is not None else allocations_now(loan)).get(payment.payment_id)
    if current is None:
        raise RuntimeError(f"payment {payment.payment_id} is POSTED but not on its loan's ledger")
    return dataclasses.replace(payment, allocation=current)


def _change_audits(
    ctx: RequestContext,
    action: Action,
    before: Loan,
    after: Loan,
    payment: Payment,
    reason: str | None = None,
) -> list[AuditEntry]:
    """The entries one posting or reversal writes with it: the money movement, and, when the stored
    dpd, bucket, classification or NPA date changes, a DELINQUENCY_CHANGED entry from the stored
    state to the new one (so a loan's delinquency trail chains; docs/rules.md, "Audit")."""
    entries = [_money_audit(ctx, action, before, after, payment, reason)]
    if delinquency_changed(before, after):
        entries.append(_delinquency_audit(ctx, action, before, after, payment))
    return entries


def _money_audit(
    ctx: RequestContext, action: Action, before: Loan, after: Loan, payment: Payment, reason: str | None
) -> AuditEntry:
    """PAYMENT_POSTED or PAYMENT_REVERSED: the loan's balances before and after, and the payment."""
    return ctx.loan_audit(
        action,
        before.loan_id,
        {**loan_balance_dict(before), "version": before.version},
        {**loan_balance_dict(after), "version": before.version + 1, "payment": payment_summary(payment)},
        reason=reason,
    )


def _delinquency_audit(ctx: RequestContext, action: Action, before: Loan, after: Loan, payment: Payment) -> AuditEntry:
    """DELINQUENCY_CHANGED in the system's name (the recompute is the system's), naming who caused it."""
    recompute = dataclasses.replace(ctx, actor=DELINQUENCY_ACTOR)
    return recompute.loan_audit(
        Action.DELINQUENCY_CHANGED,
        before.loan_id,
        delinquency_snapshot(before),
        delinquency_snapshot(after),
        reason=f"recomputed after {action.value} {payment.payment_id} by {ctx.actor.sub}",
    )


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
