"""Loans in DynamoDB. Every write goes through one transaction with its audit entry (SPEC §8)."""

from __future__ import annotations

from collections.abc import Iterator

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.errors import is_unavailable, storage_call
from chalicelib.adapters.dynamodb.mapping import audit_to_item, item_to_loan, loan_to_item
from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import Conflict, LoanExists, Unavailable
from chalicelib.domain.loan import Loan
from chalicelib.services.ports import LoanFilter, Page

_TABLE_KEY = frozenset({"loan_id"})
_COLLECTOR_KEY = frozenset({"loan_id", "collector_id"})
_BUCKET_KEY = frozenset({"loan_id", "bucket"})


def cancellation_codes(exc: TransactWriteError) -> list[str | None]:
    return [r.code if r is not None else None for r in (exc.cancellation_reasons or [])]


class DynamoLoanRepository:
    @storage_call
    def get(self, loan_id: str) -> Loan | None:
        try:
            return item_to_loan(LoanModel.get(loan_id, consistent_read=True))
        except DoesNotExist:
            return None

    def _transact(self, loan: Loan, audit: AuditEntry, condition: Condition | None) -> LoanModel:
        item = loan_to_item(loan)
        connection = LoanModel._get_connection().connection
        try:
            with TransactWrite(connection=connection) as tx:
                tx.save(item, condition=condition)
                tx.save(audit_to_item(audit))
        except TransactWriteError as exc:
            if is_unavailable(exc):
                raise Unavailable("the database is not answering; nothing was changed, try again") from exc
            # Reasons come back in PynamoDB's order (puts in the order added): the loan is first.
            codes = cancellation_codes(exc)
            if codes and codes[0] == "ConditionalCheckFailed":
                raise _LoanConditionFailed() from exc
            raise
        return item

    @storage_call
    def create(self, loan: Loan, audit: AuditEntry) -> Loan:
        try:
            item = self._transact(loan, audit, LoanModel.loan_id.does_not_exist())
        except _LoanConditionFailed:
            raise LoanExists(f"loan {loan.loan_id} already exists", {"loan_id": loan.loan_id}) from None
        return item_to_loan(item)

    @storage_call
    def update(self, loan: Loan, audit: AuditEntry) -> Loan:
        try:
            # The version condition is added by PynamoDB's VersionAttribute.
            item = self._transact(loan, audit, LoanModel.loan_id.exists())
        except _LoanConditionFailed:
            raise Conflict(
                f"loan {loan.loan_id} was changed by someone else; read it again and retry",
                {"loan_id": loan.loan_id},
            ) from None
        return item_to_loan(item)

    @storage_call
    def list(self, filters: LoanFilter, limit: int, cursor: str | None) -> Page[Loan]:
        conditions: list[Condition] = []
        if filters.classification:
            conditions.append(LoanModel.classification == filters.classification)
        if filters.status:
            conditions.append(LoanModel.status == filters.status)
        results: Iterator[LoanModel]
        # Filters apply after DynamoDB reads a page, so read pages a bit larger than asked for.
        page_size = min(1000, limit + 1) if not (filters.classification or filters.status) else 500
        if filters.collector_id:
            if filters.bucket:
                conditions.append(LoanModel.bucket == filters.bucket)
            key_names = _COLLECTOR_KEY
            results = LoanModel.collector_index.query(
                filters.collector_id,
                filter_condition=paging.all_of(conditions),
                last_evaluated_key=paging.decode(cursor, key_names),
                page_size=page_size,
            )
        elif filters.bucket:
            key_names = _BUCKET_KEY
            results = LoanModel.bucket_index.query(
                filters.bucket,
                filter_condition=paging.all_of(conditions),
                last_evaluated_key=paging.decode(cursor, key_names),
                page_size=page_size,
            )
        else:
            key_names = _TABLE_KEY
            results = LoanModel.scan(
                filter_condition=paging.all_of(conditions),
                last_evaluated_key=paging.decode(cursor, key_names),
                page_size=page_size,
            )
        items, next_cursor = paging.collect_page(results, limit, key_names)
        return Page([item_to_loan(i) for i in items], next_cursor)


class _LoanConditionFailed(Exception):
    pass
