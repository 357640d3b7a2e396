"""In-memory ``PaymentRepository`` (chalicelib.services.ports), for fast payment-service tests.

It follows the DynamoDB adapter where behaviour is observable: ``post`` writes the payment, the UTR
claim, the loan (only if its stored version is still the one read and it is still ACTIVE) and the
audit entries all together or not at all; a claimed UTR wins over a version conflict (UtrTaken); the
stored loan's version goes up by one. ``reverse`` needs the stored payment still POSTED
(AlreadyReversed otherwise) and the loan version unchanged (Conflict). Claims are never removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import AlreadyReversed, Conflict
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.payment import NO_ALLOCATION, Payment, PaymentStatus
from chalicelib.domain.portfolio import loan_change, payment_collections
from chalicelib.services.ports import Page, ReceiptRecord, ReceiptTaken, UtrTaken
from tests.fakes import InMemoryAuditLog, InMemoryLoanRepository, _page

BeforeWrite = Callable[[Payment, Loan], None]


@dataclass
class InMemoryPaymentRepository:
    loans: InMemoryLoanRepository
    audit: InMemoryAuditLog
    payments: dict[str, Payment] = field(default_factory=dict)
    utr_claims: dict[str, str] = field(default_factory=dict)
    """UTR -> payment id; never deleted."""
    receipts: dict[str, ReceiptRecord] = field(default_factory=dict)
    """Idempotency-Key records written with a payment, by record id (they never expire here)."""
    post_calls: int = field(default=0, init=False)
    reverse_calls: int = field(default=0, init=False)
    _before_write: list[BeforeWrite] = field(default_factory=list, init=False, repr=False)

    def on_next_write(self, hook: BeforeWrite) -> None:
        """Run ``hook(payment, loan)`` at the start of a later ``post``/``reverse`` call (one hook per
        call, in order), before any condition is checked: where a concurrent writer gets in first."""
        self._before_write.append(hook)

    def _run_hook(self, payment: Payment, loan: Loan) -> None:
        if self._before_write:
            self._before_write.pop(0)(payment, loan)

    def get(self, payment_id: str) -> Payment | None:
        return self.payments.get(payment_id)

    def payment_id_for_utr(self, utr: str) -> str | None:
        return self.utr_claims.get(utr)

    def _check_audit_and_loan(self, loan: Loan, audits: Sequence[AuditEntry], require_active: bool) -> None:
        current = self.loans.loans.get(loan.loan_id)
        if (
            current is None
            or current.version != loan.version
            or (require_active and current.status is not LoanStatus.ACTIVE)
        ):
            raise Conflict(f"loan {loan.loan_id} changed meanwhile", {"loan_id": loan.loan_id})
        for audit in audits:
            if audit.audit_id in self.audit.entries:
                raise ValueError(f"audit entry {audit.audit_id} already exists")

    def _commit(self, payment: Payment, loan: Loan, audits: Sequence[AuditEntry]) -> Loan:
        before = self.loans.loans[loan.loan_id]
        self.loans.portfolio.apply(loan_change(before, loan, payment_collections(payment)))
        stored = dataclasses.replace(loan, version=loan.version + 1)
        # As in DynamoDB, a standing payment's allocation is not stored: it is derived from the ledger.
        if payment.status is PaymentStatus.POSTED:
            payment = dataclasses.replace(payment, allocation=NO_ALLOCATION)
        self.payments[payment.payment_id] = payment
        self.loans.loans[loan.loan_id] = stored
        for audit in audits:
            self.audit.append(audit)
        return stored

    def receipt_and_loan(self, record_id: str, loan_id: str) -> tuple[object | None, Loan | None]:
        return self.receipts.get(record_id), self.loans.loans.get(loan_id)

    def receipt(self, record_id: str) -> object | None:
        return self.receipts.get(record_id)

    def post(
        self,
        payment: Payment,
        before: Loan,
        loan: Loan,
        audits: Sequence[AuditEntry],
        receipt: ReceiptRecord | None = None,
    ) -> Loan:
        self.post_calls += 1
        self._run_hook(payment, loan)
        if receipt is not None and receipt.record_id in self.receipts:
            raise ReceiptTaken(receipt.record_id)
        if payment.utr in self.utr_claims:
            raise UtrTaken(payment.utr)
        if payment.payment_id in self.payments:
            raise Conflict(f"payment {payment.payment_id} already exists")
        self._check_audit_and_loan(loan, audits, require_active=True)
        self.utr_claims[payment.utr] = payment.payment_id
        if receipt is not None:
            self.receipts[receipt.record_id] = receipt
        return self._commit(payment, loan, audits)

    def reverse(self, payment: Payment, before: Loan, loan: Loan, audits: Sequence[AuditEntry]) -> Loan:
        self.reverse_calls += 1
        self._run_hook(payment, loan)
        current = self.payments.get(payment.payment_id)
        if current is None or current.status is not PaymentStatus.POSTED:
            raise AlreadyReversed(f"payment {payment.payment_id} is already reversed")
        self._check_audit_and_loan(loan, audits, require_active=False)
        return self._commit(payment, loan, audits)

    def list_for_loan(self, loan_id: str, limit: int, cursor: str | None) -> Page[Payment]:
        mine = (p for p in self.payments.values() if p.loan_id == loan_id)
        return _page(mine, lambda p: p.payment_id, True, ("payments", loan_id), limit, cursor)
