"""Collector scores in DynamoDB (docs/scoring.md): the ``scores`` table, the reassignments the holding
rule reads from the audit trail, and the collectors' live collections from the dashboard's counters.

A month is one partition: a row per collector and one ``#month`` row naming the pass that wrote it
(``as_of``) and whether it is frozen. Every write of a month is conditional on it not being frozen,
row by row, so a frozen month is never overwritten, whichever pass comes later.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from pynamodb.exceptions import DeleteError, PutError

from chalicelib.adapters.dynamodb.aggregates import SHARDS, collections_key
from chalicelib.adapters.dynamodb.batch import batch_get
from chalicelib.adapters.dynamodb.errors import conditional_check_failed, storage_call
from chalicelib.adapters.dynamodb.models import AggregateModel, AuditModel, ScoreModel, UserModel
from chalicelib.adapters.dynamodb.sharding import stored_values
from chalicelib.domain.audit import Action, Outcome
from chalicelib.domain.portfolio import MONTH_PAISE, Scope, ScopeKind
from chalicelib.domain.roles import Role
from chalicelib.domain.scoring import MonthScores, Reassignment, ScoreRow, ist_day
from chalicelib.services.ids import id_range_for_days

MONTH_ROW = "#month"
"""The sort key of a month's own row (usernames start with a letter or digit, never ``#``)."""


def _not_frozen() -> Any:
    return ScoreModel.month.does_not_exist() | (ScoreModel.frozen == False)  # noqa: E712 - a condition, not a test


class DynamoScoreStore:
    @storage_call
    def month(self, month: str) -> MonthScores | None:
        items = list(ScoreModel.query(month, consistent_read=True))
        head = next((i for i in items if i.collector_id == MONTH_ROW), None)
        if head is None:
            return None
        rows = tuple(
            ScoreRow(
                i.collector_id,
                int(i.loans or 0),
                int(i.amount_due_paise or 0),
                int(i.collected_paise or 0),
                int(i.cured or 0),
                int(i.rolled_forward or 0),
            )
            for i in items
            if i.collector_id != MONTH_ROW
        )
        as_of = dt.date.fromisoformat(head.as_of) if head.as_of else None
        return MonthScores(month, as_of, bool(head.frozen), rows)

    @storage_call
    def is_frozen(self, month: str) -> bool:
        try:
            return bool(ScoreModel.get(month, MONTH_ROW, consistent_read=True).frozen)
        except ScoreModel.DoesNotExist:
            return False

    @storage_call
    def write_month(self, scores: MonthScores, run_id: str) -> bool:
        """Rows first, the month's row last: a month is only ever frozen with its rows in place. A
        collector no longer in the month loses their row. False as soon as any write finds the month
        frozen (another pass froze it)."""
        if self.is_frozen(scores.month):
            return False
        as_of = scores.as_of.isoformat() if scores.as_of else None
        wanted = {row.collector_id for row in scores.rows}
        try:
            for item in ScoreModel.query(scores.month, consistent_read=True):
                if item.collector_id not in wanted and item.collector_id != MONTH_ROW:
                    item.delete(condition=_not_frozen())
            for row in scores.rows:
                item = ScoreModel(scores.month, row.collector_id, as_of=as_of, frozen=scores.frozen, run_id=run_id)
                for name, value in row.figures().items():
                    setattr(item, name, value)
                item.save(condition=_not_frozen())
            ScoreModel(scores.month, MONTH_ROW, as_of=as_of, frozen=scores.frozen, run_id=run_id).save(
                condition=_not_frozen()
            )
        except (PutError, DeleteError) as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True


class DynamoAssignmentLog:
    @storage_call
    def reassignments_since(self, first_day: dt.date) -> dict[str, list[Reassignment]]:
        low, high = id_range_for_days(first_day.isoformat(), None)
        found: dict[str, list[Reassignment]] = {}
        # Every shard of the action (``sharding``), one after the other: the holding rule takes a
        # loan's reassignments in any order (``domain.scoring.holding_periods``).
        items = (
            item
            for action in stored_values(Action.LOAN_ASSIGNED.value)
            for item in AuditModel.action_index.query(
                action, range_key_condition=AuditModel.audit_id.between(low, high)
            )
        )
        for item in items:
            if item.outcome != Outcome.SUCCESS.value:
                continue
            before = (item.before or {}).get("collector_id")
            after = (item.after or {}).get("collector_id")
            found.setdefault(item.entity_id, []).append(
                Reassignment(item.entity_id, item.audit_id, ist_day(item.at), before, after)
            )
        return found


class DynamoLiveCollections:
    """Collectors' month totals from the collections counters: each collector's shards, batch read."""

    @storage_call
    def collected(self, month: str, collectors: Iterable[str], every_collector: bool = False) -> dict[str, int]:
        names = sorted({*collectors, *(_collector_usernames() if every_collector else ())})
        shards = SHARDS[ScopeKind.COLLECTOR]
        keys = [collections_key(Scope(ScopeKind.COLLECTOR, name), month, n) for name in names for n in range(shards)]
        totals: dict[str, int] = {}
        for item in batch_get(AggregateModel, keys, consistent_read=True):
            collector = Scope.parse(item.scope).name
            totals[collector] = totals.get(collector, 0) + int(getattr(item, MONTH_PAISE, None) or 0)
        return totals


def _collector_usernames() -> list[str]:
    return [
        u.username
        for u in UserModel.scan(UserModel.role == Role.COLLECTOR.value, attributes_to_get=["username", "role"])
    ]
