"""Payments in DynamoDB.

Posting is one transaction of puts: the payment, the UTR claim (``attribute_not_exists``), the loan
(version unchanged and still ACTIVE) and its audit entries (the posting, and the delinquency change
when there is one). Either all of them exist or none, and UTR uniqueness is decided by DynamoDB's
condition on the ``utr_claim`` entry, never by a read followed by a write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from pynamodb.exceptions import DoesNotExist

from chalicelib import clock
from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.aggregates import portfolio_entries
from chalicelib.adapters.dynamodb.batch import client_sender, read_by_keys
from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.idempotency import COMPLETED, live_record, record_is_free
from chalicelib.adapters.dynamodb.mapping import (
    audit_to_item,
    item_to_loan,
    item_to_payment,
    loan_to_item,
    payment_to_item,
)
from chalicelib.adapters.dynamodb.models import IdempotencyRecordModel, LoanModel, PaymentModel, UtrClaimModel
from chalicelib.adapters.dynamodb.transact import Entry, TransactionRefused, audit_entries, save_all
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import AlreadyReversed, Conflict
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.payment import Payment, PaymentStatus
from chalicelib.domain.portfolio import loan_change, payment_collections
from chalicelib.services.ports import Page, ReceiptRecord, ReceiptTaken, UtrTaken

_LOAN_INDEX_KEY = frozenset({"payment_id", "loan_id"})


class DynamoPaymentRepository:
    @storage_call
    def get(self, payment_id: str) -> Payment | None:
        try:
            return item_to_payment(PaymentModel.get(payment_id, consistent_read=True))
        except DoesNotExist:
            return None

    @storage_call
    def payment_id_for_utr(self, utr: str) -> str | None:
        try:
            return str(UtrClaimModel.get(utr, consistent_read=True).payment_id)
        except DoesNotExist:
            return None

    @storage_call
    def receipt_and_loan(self, record_id: str, loan_id: str) -> tuple[object | None, Loan | None]:
        """One BatchGetItem (consistent reads) of the record and the loan: the two tables' keys."""
        client = LoanModel._get_connection().connection.client
        loans = LoanModel.Meta.table_name
        records = IdempotencyRecordModel.Meta.table_name
        wanted = [(loans, {"loan_id": {"S": loan_id}}), (records, {"id": {"S": record_id}})]
        found: dict[str, list[dict[str, Any]]] = {loans: [], records: []}
        for table, item in read_by_keys(client_sender(client), wanted):
            found[table].append(item)
        loan_raw = found[loans][0] if found[loans] else None
        record_raw = found[records][0] if found[records] else None
        loan = item_to_loan(LoanModel.from_raw_data(loan_raw)) if loan_raw is not None else None
        return live_record(record_raw), loan

    @storage_call
    def receipt(self, record_id: str) -> object | None:
        client = IdempotencyRecordModel._get_connection().connection.client
        item = client.get_item(
            TableName=IdempotencyRecordModel.Meta.table_name, Key={"id": {"S": record_id}}, ConsistentRead=True
        ).get("Item")
        return live_record(item)

    @storage_call
    def post(
        self,
        payment: Payment,
        before: Loan,
        loan: Loan,
        audits: Sequence[AuditEntry],
        receipt: ReceiptRecord | None = None,
    ) -> Loan:
        loan_item = loan_to_item(loan)
        claim = UtrClaimModel(
            payment.utr, payment_id=payment.payment_id, loan_id=payment.loan_id, claimed_at=clock.now_iso()
        )
        try:
            save_all(
                [
                    Entry("payment", payment_to_item(payment), PaymentModel.payment_id.does_not_exist()),
                    Entry("utr_claim", claim, UtrClaimModel.utr.does_not_exist()),
                    Entry("loan", loan_item, LoanModel.status == LoanStatus.ACTIVE.value),
                    *audit_entries([audit_to_item(audit) for audit in audits]),
                    *portfolio_entries(loan_change(before, loan, payment_collections(payment))),
                    *([_receipt_entry(receipt)] if receipt is not None else []),
                ]
            )
        except TransactionRefused as exc:
            if "receipt" in exc.failed:
                raise ReceiptTaken(receipt.record_id if receipt is not None else "") from None
            if "utr_claim" in exc.failed:
                raise UtrTaken(payment.utr) from None
            raise Conflict(f"loan {loan.loan_id} changed while the payment was being posted") from None
        return item_to_loan(loan_item)

    @storage_call
    def reverse(self, payment: Payment, before: Loan, loan: Loan, audits: Sequence[AuditEntry]) -> Loan:
        loan_item = loan_to_item(loan)
        try:
            save_all(
                [
                    Entry("payment", payment_to_item(payment), PaymentModel.status == PaymentStatus.POSTED.value),
                    Entry("loan", loan_item, LoanModel.loan_id.exists()),
                    *audit_entries([audit_to_item(audit) for audit in audits]),
                    *portfolio_entries(loan_change(before, loan, payment_collections(payment))),
                ]
            )
        except TransactionRefused as exc:
            if "payment" in exc.failed:
                raise AlreadyReversed(f"payment {payment.payment_id} is already reversed") from None
            raise Conflict(f"loan {loan.loan_id} changed while the payment was being reversed") from None
        return item_to_loan(loan_item)

    @storage_call
    def list_for_loan(self, loan_id: str, limit: int, cursor: str | None) -> Page[Payment]:
        results = PaymentModel.loan_index.query(
            loan_id,
            scan_index_forward=False,
            last_evaluated_key=paging.decode(cursor, _LOAN_INDEX_KEY, pinned={"loan_id": loan_id}),
            page_size=min(1000, limit + 1),
        )
        items, next_cursor = paging.collect_page(results, limit, _LOAN_INDEX_KEY)
        return Page([item_to_payment(i) for i in items], next_cursor)


def _receipt_entry(receipt: ReceiptRecord) -> Entry:
    """The COMPLETED record, only where no live record is (``idempotency.record_is_free``)."""
    item = IdempotencyRecordModel(
        receipt.record_id,
        validation=receipt.validation,
        status=COMPLETED,
        expiration=receipt.expires_at,
        data=json.dumps(receipt.answer, sort_keys=True),
    )
    return Entry("receipt", item, record_is_free(time.time()))
