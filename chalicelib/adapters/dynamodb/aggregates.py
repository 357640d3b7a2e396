"""The portfolio counters in DynamoDB (docs/dashboard.md, "Counters and shards").

Each scope's counters are spread over shards: items ``counters#<scope>#<NN>`` hold the loan counters
(``domain.portfolio.LOAN_COUNTERS``) and items ``collections#<scope>#<YYYY-MM>#<NN>`` the month's and
each day's collections. A write adds to one shard of each scope it moves, picked at random for each
attempt, and a reader sums the shards. Sharding is for contention more than for throughput: two
transactions touching one item at once cancel each other (``TransactionConflict``), so a single book
item would make month-end payments retry each other; with the book over ``BOOK_SHARDS`` items a
transaction rarely meets another on the same shard, and when it does its retry lands elsewhere.
The arithmetic is in docs/dashboard.md.

The additions are ``ADD`` actions in the same transaction as the loan write they account for
(``portfolio_entries``), so they commit or fail with it. Every item also counts its ``writes``: the
reconciliation compares them before and after its recount, and a scope written to meanwhile is
reported as moving rather than as a mismatch.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from pynamodb.expressions.update import Action

from chalicelib import clock
from chalicelib.adapters.dynamodb.batch import batch_get
from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.mapping import audit_to_item
from chalicelib.adapters.dynamodb.models import AggregateModel
from chalicelib.adapters.dynamodb.transact import Entry, audit_entries, save_all
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.portfolio import (
    COLLECTION_COUNTERS,
    LOAN_COUNTERS,
    Collection,
    CounterKey,
    CounterKind,
    CounterTotals,
    MonthCollections,
    PortfolioChange,
    Scope,
    ScopeKind,
    collection_counters,
    month_collections,
)

SHARDS: dict[ScopeKind, int] = {ScopeKind.BOOK: 32, ScopeKind.BRANCH: 8, ScopeKind.COLLECTOR: 4}
"""Items per scope's counters (and per scope and month's collections). The book is written by every
payment; a branch by its own; a collector's by their loans only (docs/dashboard.md)."""

COUNTER_KIND = CounterKind.COUNTERS.value
COLLECTIONS_KIND = CounterKind.COLLECTIONS.value


def counters_key(scope: Scope, shard: int) -> str:
    return f"{COUNTER_KIND}#{scope.key}#{shard:02d}"


def collections_key(scope: Scope, month: str, shard: int) -> str:
    return f"{COLLECTIONS_KIND}#{scope.key}#{month}#{shard:02d}"


def _shard(scope: Scope) -> int:
    return secrets.randbelow(SHARDS[scope.kind])


def _addition(pk: str, kind: str, scope: Scope, shard: int, adds: dict[str, int], month: str | None = None) -> Entry:
    model = AggregateModel
    actions: list[Action] = [getattr(model, name).add(value) for name, value in sorted(adds.items())]
    actions += [
        model.writes.add(1),
        model.kind.set(kind),
        model.scope.set(scope.key),
        model.shard.set(shard),
    ]
    if month is not None:
        actions.append(model.month.set(month))
    return Entry(f"aggregate:{pk}", model(pk), actions=actions)


def portfolio_entries(change: PortfolioChange) -> list[Entry]:
    """The transaction entries that add ``change`` to the counters: one random shard per scope."""
    entries = []
    for scope, adds in sorted(change.counters.items()):
        shard = _shard(scope)
        entries.append(_addition(counters_key(scope, shard), COUNTER_KIND, scope, shard, adds))
    for (scope, month), adds in sorted(_collections_by_item(change.collections).items()):
        shard = _shard(scope)
        entries.append(_addition(collections_key(scope, month, shard), COLLECTIONS_KIND, scope, shard, adds, month))
    return entries


def _collections_by_item(collections: Iterable[Collection]) -> dict[tuple[Scope, str], dict[str, int]]:
    grouped: dict[tuple[Scope, str], dict[str, int]] = {}
    for c in collections:
        adds = grouped.setdefault((c.scope, clock.month_of(c.day)), {})
        for name, value in collection_counters(c).items():
            adds[name] = adds.get(name, 0) + value
    return grouped


class DynamoPortfolio:
    """Reads of the counters: a constant number of items per scope, whatever the size of the book."""

    @storage_call
    def read(self, scope: Scope, month: str) -> tuple[dict[str, int], MonthCollections]:
        """The scope's counters and its collections in ``month``: its shards, in one batch read."""
        shards = range(SHARDS[scope.kind])
        keys = [counters_key(scope, n) for n in shards] + [collections_key(scope, month, n) for n in shards]
        counters: dict[str, int] = {}
        collections: dict[str, int] = {}
        for item in batch_get(AggregateModel, keys, consistent_read=True):
            target = counters if item.kind == COUNTER_KIND else collections
            _sum_into(target, item, LOAN_COUNTERS if item.kind == COUNTER_KIND else COLLECTION_COUNTERS)
        return counters, month_collections(collections)

    @storage_call
    def totals(self) -> dict[CounterKey, CounterTotals]:
        """Every scope's counters and every scope and month's collections, summed over their shards,
        with the writes each took. The table holds a few items per scope and month, so the
        reconciliation and the rebuild read it whole."""
        totals: dict[CounterKey, CounterTotals] = {}
        for item in AggregateModel.scan(consistent_read=True):
            kind = CounterKind(item.kind)
            key = CounterKey(kind, item.scope, item.month if kind is CounterKind.COLLECTIONS else None)
            values = dict(totals[key].values) if key in totals else {}
            _sum_into(values, item, LOAN_COUNTERS if kind is CounterKind.COUNTERS else COLLECTION_COUNTERS)
            writes = (totals[key].writes if key in totals else 0) + int(item.writes or 0)
            totals[key] = CounterTotals(values, writes)
        return totals

    @storage_call
    def correct(self, key: CounterKey, delta: dict[str, int], audit: AuditEntry) -> None:
        """Add ``delta`` to one shard of ``key`` with its audit entry, in one transaction (the rebuild)."""
        scope = Scope.parse(key.scope)
        shard = _shard(scope)
        if key.kind is CounterKind.COUNTERS:
            entry = _addition(counters_key(scope, shard), COUNTER_KIND, scope, shard, delta)
        else:
            assert key.month is not None
            pk = collections_key(scope, key.month, shard)
            entry = _addition(pk, COLLECTIONS_KIND, scope, shard, delta, key.month)
        save_all([entry, *audit_entries([audit_to_item(audit)])])


def _sum_into(target: dict[str, int], item: Any, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(item, name, None)
        if value:
            target[name] = target.get(name, 0) + int(value)
