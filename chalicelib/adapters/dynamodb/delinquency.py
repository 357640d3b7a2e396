"""What the day-end job reads and writes: watched loans, scan segments, evaluations, legal cases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pynamodb.exceptions import DoesNotExist

from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.aggregates import portfolio_entries
from chalicelib.adapters.dynamodb.batch import batch_get
from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.loans import DynamoLoanRepository
from chalicelib.adapters.dynamodb.mapping import (
    audit_to_item,
    item_to_loan,
    loan_to_item,
    pending_key_for,
    watch_key_for,
)
from chalicelib.adapters.dynamodb.models import LegalCaseModel, LoanModel
from chalicelib.adapters.dynamodb.transact import Entry, TransactionRefused, audit_entries, save_all
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import Conflict
from chalicelib.domain.legal import LegalCase
from chalicelib.domain.loan import Loan
from chalicelib.domain.portfolio import loan_change
from chalicelib.domain.runs import ReminderAnchor
from chalicelib.services.ports import LoansPage, Page

PAGE_SIZE = 100
_CASE_KEY = frozenset({"loan_id", "status", "escalated_on"})


def _case_to_item(case: LegalCase) -> LegalCaseModel:
    return LegalCaseModel(
        case.loan_id,
        case_id=case.case_id,
        status=case.status,
        escalated_on=case.escalated_on.isoformat(),
        dpd=case.dpd,
        overdue_paise=case.overdue_paise,
        outstanding_principal_paise=case.outstanding_principal_paise,
        collector_id=case.collector_id,
        branch=case.branch,
        borrower_name=case.borrower_name,
        created_at=case.created_at,
    )


def _item_to_case(item: LegalCaseModel) -> LegalCase:
    return LegalCase(
        loan_id=item.loan_id,
        case_id=item.case_id,
        escalated_on=dt.date.fromisoformat(item.escalated_on),
        dpd=item.dpd,
        overdue_paise=item.overdue_paise,
        outstanding_principal_paise=item.outstanding_principal_paise,
        borrower_name=item.borrower_name,
        collector_id=item.collector_id,
        branch=item.branch,
        created_at=item.created_at,
        status=item.status,
    )


class DynamoDelinquencyStore:
    def __init__(self) -> None:
        self._loans = DynamoLoanRepository()

    def watched(self, day: dt.date, shard: int, cursor: dict[str, Any] | None) -> LoansPage:
        """Loans whose watch date is ``day``, in one shard."""
        return self._watch_partition(watch_key_for(day, shard), cursor)

    def pending(self, shard: int, cursor: dict[str, Any] | None) -> LoansPage:
        """Loans pending escalation, in one shard (every run reads these)."""
        return self._watch_partition(pending_key_for(shard), cursor)

    def reminder_candidates(
        self, anchor: ReminderAnchor, day: dt.date, shard: int, cursor: dict[str, Any] | None
    ) -> LoansPage:
        """Loans whose next unpaid instalment falls due on ``day`` (``DUE``), or whose arrears date from
        ``day`` (``ARREARS``), in one shard: the loans that may be owed a reminder (docs/reminders.md)."""
        index = LoanModel.due_index if anchor is ReminderAnchor.DUE else LoanModel.arrears_index
        return self._watch_partition(watch_key_for(day, shard), cursor, index)

    @storage_call
    def _watch_partition(self, key: str, cursor: dict[str, Any] | None, index: Any = None) -> LoansPage:
        """One page of a watch-index partition (or of another keys-only index keyed the same way). The
        index holds keys only (every loan write would otherwise pay to copy the whole loan into it), so
        the page's loans are then read by key, consistently — which also means the job decides on
        current data, not on a lagging index."""
        index = index if index is not None else LoanModel.watch_index
        results = index.query(key, last_evaluated_key=cursor, page_size=PAGE_SIZE, limit=PAGE_SIZE)
        ids = [item.loan_id for item in results]
        loans = {item.loan_id: item for item in batch_get(LoanModel, ids, consistent_read=True)}
        # Keep the index's order; a loan deleted meanwhile (never, today) would simply drop out.
        return [item_to_loan(loans[i]) for i in ids if i in loans], results.last_evaluated_key

    @storage_call
    def scan_segment(self, segment: int, total: int, cursor: dict[str, Any] | None) -> LoansPage:
        results = paging.segment_page(LoanModel, segment, total, cursor, PAGE_SIZE)
        return _page_of(results)

    def get(self, loan_id: str) -> Loan | None:
        return self._loans.get(loan_id)

    @storage_call
    def save_evaluation(
        self, before: Loan, loan: Loan, business_date: dt.date, audits: Sequence[AuditEntry], case: LegalCase | None
    ) -> None:
        """Write the re-evaluated loan, its audit entries and a legal case in one transaction, only if
        the loan is still the version that was read and has not been evaluated for a later date (a run
        never moves ``dpd_as_of`` backwards). Conflict otherwise: re-read and decide again."""
        entries = [
            Entry("loan", loan_to_item(loan), LoanModel.dpd_as_of <= business_date),
            *audit_entries([audit_to_item(a) for a in audits]),
            *portfolio_entries(loan_change(before, loan)),
        ]
        if case is not None:
            entries.append(Entry("legal_case", _case_to_item(case), LegalCaseModel.loan_id.does_not_exist()))
        try:
            save_all(entries)
        except TransactionRefused:
            raise Conflict(f"loan {loan.loan_id} changed during the day-end run") from None

    @storage_call
    def case(self, loan_id: str) -> LegalCase | None:
        try:
            return _item_to_case(LegalCaseModel.get(loan_id, consistent_read=True))
        except DoesNotExist:
            return None

    @storage_call
    def cases(self, limit: int, cursor: str | None) -> Page[LegalCase]:
        """Open legal cases, most recently escalated first."""
        results = LegalCaseModel.status_index.query(
            "OPEN",
            scan_index_forward=False,
            last_evaluated_key=paging.decode(cursor, _CASE_KEY, pinned={"status": "OPEN"}),
            page_size=min(1000, limit + 1),
        )
        items, next_cursor = paging.collect_page(results, limit, _CASE_KEY)
        return Page([_item_to_case(i) for i in items], next_cursor)


def _page_of(results: Any) -> LoansPage:
    items = [item_to_loan(i) for i in results]
    return items, results.last_evaluated_key
