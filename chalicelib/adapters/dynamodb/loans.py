"""Loans in DynamoDB. Every write goes through one transaction with its audit entry (docs/rules.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition

from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.aggregates import portfolio_entries
from chalicelib.adapters.dynamodb.batch import batch_get
from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.mapping import audit_to_item, item_to_loan, loan_to_item
from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.adapters.dynamodb.transact import Entry, TransactionRefused, audit_entries, create_all, save_all
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import Conflict, LoanExists
from chalicelib.domain.loan import Loan
from chalicelib.domain.portfolio import loan_change
from chalicelib.services.ports import LoanFilter, Page

_TABLE_KEY = frozenset({"loan_id"})
_COLLECTOR_KEY = frozenset({"loan_id", "collector_id"})
_BUCKET_KEY = frozenset({"loan_id", "bucket"})


class DynamoLoanRepository:
    @storage_call
    def get(self, loan_id: str) -> Loan | None:
        try:
            return item_to_loan(LoanModel.get(loan_id, consistent_read=True))
        except DoesNotExist:
            return None

    @storage_call
    def create(self, loan: Loan, audit: AuditEntry) -> Loan:
        item = loan_to_item(loan)
        create_all(
            lambda: [
                Entry("loan", item, LoanModel.loan_id.does_not_exist()),
                *audit_entries([audit_to_item(audit)]),
                *portfolio_entries(loan_change(None, loan)),
            ],
            new="loan",
            taken=lambda: LoanExists(f"loan {loan.loan_id} already exists", {"loan_id": loan.loan_id}),
            busy=lambda: Conflict(f"loan {loan.loan_id} is being created by someone else; try again"),
        )
        return item_to_loan(item)

    @storage_call
    def update(self, before: Loan, loan: Loan, audit: AuditEntry) -> Loan:
        item = loan_to_item(loan)
        try:
            # The version condition is added by PynamoDB's VersionAttribute: the loan stored is ``before``.
            save_all(
                [
                    Entry("loan", item, LoanModel.loan_id.exists()),
                    *audit_entries([audit_to_item(audit)]),
                    *portfolio_entries(loan_change(before, loan)),
                ]
            )
        except TransactionRefused:
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
        index: Any = None
        if filters.collector_id:
            if filters.bucket:
                conditions.append(LoanModel.bucket == filters.bucket)
            index, key_names, pinned = LoanModel.collector_index, _COLLECTOR_KEY, ("collector_id", filters.collector_id)
        elif filters.bucket:
            index, key_names, pinned = LoanModel.bucket_index, _BUCKET_KEY, ("bucket", filters.bucket)
        if index is not None:
            name, value = pinned
            entries = index.query(
                value,
                filter_condition=paging.all_of(conditions),
                last_evaluated_key=paging.decode(cursor, key_names, {name: value}),
                page_size=page_size,
            )
            results = _whole_loans(entries, filters, min(page_size, limit + 1))
        else:
            key_names = _TABLE_KEY
            results = LoanModel.scan(
                filter_condition=paging.all_of(conditions),
                last_evaluated_key=paging.decode(cursor, key_names),
                page_size=page_size,
            )
        items, next_cursor = paging.collect_page(results, limit, key_names)
        return Page([item_to_loan(i) for i in items], next_cursor)


def _whole_loans(entries: Iterable[LoanModel], filters: LoanFilter, batch: int) -> Iterator[LoanModel]:
    """The loans a listing index names, read from the table in index order, ``batch`` at a time.

    The listing indexes hold keys and the filtered attributes only (docs/architecture.md, "Index
    projections"), so each batch of entries is one consistent ``BatchGetItem``. An index lags its table
    for a moment after a write: a loan that has since left the listing's partition (reassigned to
    another collector, moved to another bucket) or stopped matching a filter is skipped rather than
    shown, so a collector never sees a loan that is no longer theirs. The page's cursor is the last
    loan shown, so a skipped entry after it is read, and skipped, again by the next page."""
    wanted = {name: value for name, value in dataclasses.asdict(filters).items() if value is not None}
    entries = iter(entries)
    while chunk := list(islice(entries, batch)):
        found = {loan.loan_id: loan for loan in batch_get(LoanModel, [e.loan_id for e in chunk], consistent_read=True)}
        for entry in chunk:
            loan = found.get(entry.loan_id)
            if loan is not None and all(getattr(loan, name) == value for name, value in wanted.items()):
                yield loan
