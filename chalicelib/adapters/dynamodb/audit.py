"""The audit trail in DynamoDB: append-only (no update or delete path exists), listed newest first.

``audit_id`` is time-ordered, so every index sorts by it and a date range is a key range. Listings
without an entity, actor or action walk the per-day index from the newest day backwards.

The actor, action and day are stored with a shard suffix (``sharding``, ``mapping.audit_to_item``): a
listing by one of them queries every stored value of it, entries from before the sharding included,
and merges them newest first. Its cursor names the logical value and the last audit id listed, as it
did before the sharding, so each stored value's query resumes from that id.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib import clock
from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.mapping import AUDIT_SHARDED, audit_to_item, item_to_audit
from chalicelib.adapters.dynamodb.models import AuditModel
from chalicelib.adapters.dynamodb.sharding import stored_values
from chalicelib.domain.audit import AuditEntry
from chalicelib.services.ids import id_range_for_days
from chalicelib.services.ports import AuditFilter, Page

UNFILTERED_DEFAULT_DAYS = 31
"""An unfiltered listing with no ``from`` looks back this many days; older entries need ``from``."""

MAX_PAGE = 1000


def _partitions(name: str, value: str) -> list[str]:
    """The stored values to read for ``value`` of the attribute ``name`` (none for a value that no entry
    can have)."""
    return stored_values(value) if name in AUDIT_SHARDED else [value]


def _newest_first(
    index: Any, hash_name: str, partitions: list[str], after: str | None, limit: int, **conditions: Any
) -> Iterator[AuditModel]:
    """The entries of every partition of ``index`` named in ``partitions``, merged newest first, older than
    the audit id ``after`` when one is given (the table's key is the audit id too, so it is each
    partition's start key). Each partition first reads its share of ``limit`` and, as long as the
    listing keeps taking from it, twice as many each page: a listing spread over the shards reads
    about ``limit`` entries and a few more per partition, one whose entries sit in one partition (those
    written before the sharding) a few round trips more. The partitions' first pages are read at once,
    in threads, so a listing waits about one round trip for them rather than one per partition."""
    most = min(MAX_PAGE, limit + 1)
    first = min(most, -(-(limit + 1) // len(partitions)) + 1)

    def opened(value: str) -> tuple[Any, list[dict[str, Any]]]:
        start = None if after is None else {hash_name: {"S": value}, "audit_id": {"S": after}}
        results = index.query(value, scan_index_forward=False, last_evaluated_key=start, page_size=first, **conditions)
        pages = results.page_iter
        page: dict[str, Any] = next(pages, {})
        return pages, page.get("Items", [])

    def partition(pages: Any, items: list[dict[str, Any]]) -> Iterator[AuditModel]:
        while True:
            yield from map(AuditModel.from_raw_data, items)
            pages.page_size = min(most, 2 * pages.page_size)
            page = next(pages, None)
            if page is None:
                return
            items = page.get("Items", [])

    if len(partitions) == 1:
        firsts = [opened(partitions[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(partitions)) as pool:
            firsts = list(pool.map(opened, partitions))
    return heapq.merge(*(partition(*f) for f in firsts), key=lambda item: item.audit_id, reverse=True)


_INDEXES = {
    "entity_id": AuditModel.entity_index,
    "actor_sub": AuditModel.actor_index,
    "action": AuditModel.action_index,
}


class DynamoAuditLog:
    @storage_call
    def append(self, entry: AuditEntry) -> None:
        audit_to_item(entry).save(condition=AuditModel.audit_id.does_not_exist())

    @storage_call
    def list(self, filters: AuditFilter, limit: int, cursor: str | None) -> Page[AuditEntry]:
        if filters.entity_id:
            hash_name, hash_value = "entity_id", filters.entity_id
            filtered = {"actor_sub": filters.actor, "action": filters.action}
        elif filters.actor:
            hash_name, hash_value = "actor_sub", filters.actor
            filtered = {"action": filters.action}
        elif filters.action:
            hash_name, hash_value = "action", filters.action
            filtered = {}
        else:
            return self._list_by_day(filters, limit, cursor)
        low, high = id_range_for_days(filters.from_day, filters.to_day)
        names = frozenset({"audit_id", hash_name})
        start_key = paging.decode(cursor, names, {hash_name: hash_value}, {"audit_id": (low, high)})
        partitions = _partitions(hash_name, hash_value)
        wanted = {name: _partitions(name, value) for name, value in filtered.items() if value}
        if not partitions or not all(wanted.values()):
            return Page([], None)
        results = _newest_first(
            _INDEXES[hash_name],
            hash_name,
            partitions,
            start_key["audit_id"]["S"] if start_key else None,
            limit,
            range_key_condition=AuditModel.audit_id.between(low, high),
            filter_condition=paging.all_of([getattr(AuditModel, n).is_in(*v) for n, v in wanted.items()]),
        )
        items, next_cursor = paging.collect_page(results, limit, names, AUDIT_SHARDED)
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
        after = None
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
            last_day, after = resume_day, start_key["audit_id"]["S"]

        def walk() -> Iterator[AuditModel]:
            day, resume_after = last_day, after
            while day >= first_day:
                yield from _newest_first(
                    AuditModel.day_index, "day", stored_values(day.isoformat()), resume_after, limit
                )
                resume_after = None
                day -= dt.timedelta(days=1)

        items, next_cursor = paging.collect_page(walk(), limit, names, AUDIT_SHARDED)
        return Page([item_to_audit(i) for i in items], next_cursor)
