"""The audit trail in DynamoDB: append-only (no update or delete path exists), listed newest first.

``audit_id`` is time-ordered, so every index sorts by it and a date range is a key range. Listings
without an entity, actor or action walk the per-day index from the newest day backwards.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from pynamodb.expressions.condition import Condition

from chalicelib import clock
from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.mapping import audit_to_item, item_to_audit
from chalicelib.adapters.dynamodb.models import AuditModel
from chalicelib.domain.audit import AuditEntry
from chalicelib.services.ids import id_range_for_days
from chalicelib.services.ports import AuditFilter, Page

UNFILTERED_DEFAULT_DAYS = 31
"""An unfiltered listing with no ``from`` looks back this many days; older entries need ``from``."""


class DynamoAuditLog:
    @storage_call
    def append(self, entry: AuditEntry) -> None:
        audit_to_item(entry).save(condition=AuditModel.audit_id.does_not_exist())

    @storage_call
    def list(self, filters: AuditFilter, limit: int, cursor: str | None) -> Page[AuditEntry]:
        low, high = id_range_for_days(filters.from_day, filters.to_day)
        range_condition = AuditModel.audit_id.between(low, high)
        rest: list[Condition] = []
        index: Any
        if filters.entity_id:
            index, hash_key, names = AuditModel.entity_index, filters.entity_id, frozenset({"audit_id", "entity_id"})
            if filters.actor:
                rest.append(AuditModel.actor_sub == filters.actor)
            if filters.action:
                rest.append(AuditModel.action == filters.action)
        elif filters.actor:
            index, hash_key, names = AuditModel.actor_index, filters.actor, frozenset({"audit_id", "actor_sub"})
            if filters.action:
                rest.append(AuditModel.action == filters.action)
        elif filters.action:
            index, hash_key, names = AuditModel.action_index, filters.action, frozenset({"audit_id", "action"})
        else:
            return self._list_by_day(filters, limit, cursor)
        (hash_name,) = names - {"audit_id"}
        results = index.query(
            hash_key,
            range_key_condition=range_condition,
            filter_condition=paging.all_of(rest),
            scan_index_forward=False,
            last_evaluated_key=paging.decode(cursor, names, {hash_name: hash_key}, {"audit_id": (low, high)}),
            page_size=min(1000, limit + 1),
        )
        items, next_cursor = paging.collect_page(results, limit, names)
        return Page([item_to_audit(i) for i in items], next_cursor)

    def _list_by_day(self, filters: AuditFilter, limit: int, cursor: str | None) -> Page[AuditEntry]:
        names = frozenset({"audit_id", "day"})
        start_key = paging.decode(cursor, names)
        last_day = dt.date.fromisoformat(filters.to_day) if filters.to_day else None
        if last_day is None:
            last_day = clock.today_ist()
        first_day = (
            dt.date.fromisoformat(filters.from_day)
            if filters.from_day
            else last_day - dt.timedelta(days=UNFILTERED_DEFAULT_DAYS - 1)
        )
        if start_key is not None:
            # The walk resumes on the cursor's day: it must be a day of this listing, written as
            # the index writes it (fromisoformat also reads "20250614"), or it would widen the range.
            resume = start_key["day"]["S"]
            try:
                resume_day = dt.date.fromisoformat(resume)
            except ValueError:
                raise paging.invalid_cursor() from None
            if resume_day.isoformat() != resume or resume_day > last_day:
                raise paging.invalid_cursor()
            last_day = resume_day

        def walk() -> Iterator[AuditModel]:
            day = last_day
            key = start_key
            while day >= first_day:
                yield from AuditModel.day_index.query(
                    day.isoformat(),
                    scan_index_forward=False,
                    last_evaluated_key=key,
                    page_size=min(1000, limit + 1),
                )
                key = None
                day -= dt.timedelta(days=1)

        items, next_cursor = paging.collect_page(walk(), limit, names)
        return Page([item_to_audit(i) for i in items], next_cursor)
