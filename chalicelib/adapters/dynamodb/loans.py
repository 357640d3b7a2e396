"""Loans in DynamoDB. Every write goes through one transaction with its audit entry (docs/rules.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition

from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.aggregates import portfolio_entries
from chalicelib.adapters.dynamodb.batch import batch_get
from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.mapping import audit_to_item, item_to_loan, loan_to_item
from chalicelib.adapters.dynamodb.models import AuditModel, LoanModel
from chalicelib.adapters.dynamodb.sizes import model_size
from chalicelib.adapters.dynamodb.transact import (
    Entry,
    TransactionRefused,
    audit_entries,
    create_all,
    save_all,
    save_unless_taken,
)
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import Conflict, DomainError, LoanExists
from chalicelib.domain.loan import Loan
from chalicelib.domain.portfolio import Scope, loan_change, loan_scopes, loans_changed
from chalicelib.retry import BULK_CONTENTION
from chalicelib.services.ports import LoanFilter, Page

_TABLE_KEY = frozenset({"loan_id"})
_COLLECTOR_KEY = frozenset({"loan_id", "collector_id"})
_BUCKET_KEY = frozenset({"loan_id", "bucket"})

TRANSACTION_ACTIONS = 100
"""DynamoDB's limit on the items of one ``TransactWriteItems``."""
TRANSACTION_BYTES = 3_500_000
"""What the loans and audit entries of one transaction may weigh (``sizes.model_size``): DynamoDB
refuses a transaction whose items come to more than 4 MB, and the counters' items need some of the
rest."""
LOANS_PER_TRANSACTION = 25
"""At most this many loans to a transaction (the bulk writes, :meth:`DynamoLoanRepository.create_many`
and :meth:`~DynamoLoanRepository.update_many`): a 36-month loan and its entry are a few KB, so 25 weigh
well under a megabyte; the largest ones the API takes (600 instalments, every text at its longest in
four-byte characters) are cut by ``TRANSACTION_BYTES``."""


class DynamoLoanRepository:
    @storage_call
    def get(self, loan_id: str) -> Loan | None:
        try:
            return item_to_loan(LoanModel.get(loan_id, consistent_read=True))
        except DoesNotExist:
            return None

    @storage_call
    def get_many(self, loan_ids: Sequence[str]) -> dict[str, Loan]:
        found = batch_get(LoanModel, list(dict.fromkeys(loan_ids)), consistent_read=True)
        return {item.loan_id: item_to_loan(item) for item in found}

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
            taken=lambda: LoanExists.of(loan.loan_id),
            busy=lambda: Conflict(f"loan {loan.loan_id} is being created by someone else; try again"),
        )
        return item_to_loan(item)

    def create_many(self, created: Sequence[tuple[Loan, AuditEntry]]) -> list[Loan | DomainError]:
        """Store new loans as :meth:`create` does, several to a transaction: each loan with its audit
        entry, and what they add to the counters summed into one addition per scope. For the bulk
        import, where it costs DynamoDB about a third of the work per loan of a transaction each
        (docs/performance.md, "The bulk import"). Each loan is answered in its place (:func:`_write_many`):
        stored, or ``LoanExists`` when its id was taken. Ids must be distinct."""
        return _write_many([_Write(None, loan, audit) for loan, audit in created], LoanExists.of)

    def update_many(self, changes: Sequence[tuple[Loan, Loan, AuditEntry]]) -> list[Loan | DomainError]:
        """:meth:`update` for many loans, several to a transaction (the bulk reassignment): each loan
        under its own version condition with its audit entry, the counters' movements summed into one
        addition per scope. Each is answered in its place (:func:`_write_many`): the loan with its new
        version, or ``Conflict`` when its stored version was no longer the one read. Ids must be
        distinct."""
        return _write_many([_Write(before, loan, audit) for before, loan, audit in changes], _changed_by_someone)

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
            raise _changed_by_someone(loan.loan_id) from None
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


def _changed_by_someone(loan_id: str) -> Conflict:
    return Conflict(f"loan {loan_id} was changed by someone else; read it again and retry", {"loan_id": loan_id})


@dataclass
class _Write:
    """One loan of a bulk write: from ``before`` (None: a new loan) to ``after``, with its audit entry,
    as the items to send and what they weigh."""

    before: Loan | None
    after: Loan
    audit: AuditEntry
    item: LoanModel = field(init=False)
    entry: AuditModel = field(init=False)
    weight: int = field(init=False)

    def __post_init__(self) -> None:
        self.item = loan_to_item(self.after)
        self.entry = audit_to_item(self.audit)
        self.weight = model_size(self.item) + model_size(self.entry)

    @property
    def loan_id(self) -> str:
        return self.after.loan_id

    @property
    def scopes(self) -> set[Scope]:
        """The scopes whose counters the write moves: the loan's old ones and its new ones."""
        return {*loan_scopes(self.after), *(loan_scopes(self.before) if self.before is not None else ())}

    def put(self) -> Entry:
        # A new loan must not exist yet; a changed one must still exist, and PynamoDB's version
        # attribute adds that its stored version is still the one read.
        condition = LoanModel.loan_id.does_not_exist() if self.before is None else LoanModel.loan_id.exists()
        return Entry(f"loan:{self.loan_id}", self.item, condition)


def _write_many(writes: Sequence[_Write], refused: Callable[[str], DomainError]) -> list[Loan | DomainError]:
    """Write each loan with its audit entry, several to a transaction (:func:`_transaction_groups`),
    and answer each in its place: the loan as stored (its version one on), ``refused(loan_id)`` when its
    condition failed (the others of its transaction are sent again without it), or the error that
    stopped its transaction (``Unavailable``; ``Conflict`` when other writers kept holding a counter),
    the other transactions' loans written all the same. Ids must be distinct: answers are kept by id,
    and a loan twice in one call would be refused by its own first write."""
    if len({write.loan_id for write in writes}) != len(writes):
        raise ValueError("a bulk write names a loan more than once")
    answers: dict[str, Loan | DomainError] = {}
    for group in _transaction_groups(writes):
        pending = list(group)
        while pending:
            try:
                failed = _write_together(pending)
            except DomainError as stopped:
                answers.update((write.loan_id, stopped) for write in pending)
                break
            if not failed:
                answers.update(
                    (write.loan_id, dataclasses.replace(write.after, version=write.after.version + 1))
                    for write in pending
                )
                break
            answers.update((loan_id, refused(loan_id)) for loan_id in failed)
            pending = [write for write in pending if write.loan_id not in failed]
    return [answers[write.loan_id] for write in writes]


def _transaction_groups(writes: Sequence[_Write]) -> Iterator[list[_Write]]:
    """``writes`` in order, cut into transactions within ``LOANS_PER_TRANSACTION`` loans,
    ``TRANSACTION_BYTES`` and ``TRANSACTION_ACTIONS`` items (two puts a loan, one counter addition a
    scope)."""
    group: list[_Write] = []
    scopes: set[Scope] = set()
    weight = 0
    for write in writes:
        more, heavier = scopes | write.scopes, weight + write.weight
        full = len(group) == LOANS_PER_TRANSACTION or heavier > TRANSACTION_BYTES
        if group and (full or 2 * (len(group) + 1) + len(more) > TRANSACTION_ACTIONS):
            yield group
            group, more, heavier = [], write.scopes, write.weight
        group.append(write)
        scopes, weight = more, heavier
    if group:
        yield group


def _write_together(pending: Sequence[_Write]) -> frozenset[str]:
    """One transaction of every pending loan, its audit entry and the counters' sum: the ids whose
    condition failed (nothing was written then), or none (everything was). Sent again under
    ``BULK_CONTENTION`` while other writers hold a counter."""
    change = loans_changed((write.before, write.after) for write in pending)
    failed = storage_call(save_unless_taken)(
        lambda: [
            *(write.put() for write in pending),
            *audit_entries([write.entry for write in pending]),
            *portfolio_entries(change),
        ],
        BULK_CONTENTION,
        lambda: Conflict("other writers kept the portfolio counters busy; nothing was written, try again"),
    )
    return frozenset(name.removeprefix("loan:") for name in failed)
