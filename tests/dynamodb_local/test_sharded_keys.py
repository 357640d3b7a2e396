"""Sharded hot keys on DynamoDB Local (``adapters.dynamodb.sharding``): the audit trail's actor, action and
day, and the reminders' day, are stored over ``KEY_SHARDS`` shards, and entries stored before that carry the bare
value. Every reader must see both kinds alike.

A day-end-like trail (one actor, one action, one day, over every shard) is written together with
entries written the old way (bare values, through the raw model), some of them interleaved in time.
Each listing is then paged with small limits and compared with a reference computed here in Python:
the same entries, newest first, every page but the last full, the cursor null on the last one.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.adapters.dynamodb import models, paging
from chalicelib.adapters.dynamodb.audit import DynamoAuditLog
from chalicelib.adapters.dynamodb.mapping import audit_to_item
from chalicelib.adapters.dynamodb.models import AuditModel, ReminderModel
from chalicelib.adapters.dynamodb.reminders import DynamoReminderStore
from chalicelib.adapters.dynamodb.scores import DynamoAssignmentLog
from chalicelib.adapters.dynamodb.sharding import KEY_SHARDS, shard_of, stored_values
from chalicelib.clock import IST, FixedClock, now_iso, use_clock
from chalicelib.config import settings
from chalicelib.domain.audit import DELINQUENCY_ACTOR, Action, Actor, AuditEntry, Outcome
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.reminders import Reminder, ReminderKind
from chalicelib.services.ids import new_id, new_loan_id
from chalicelib.services.ports import AuditFilter
from tests.dynamodb_local.faults import hooked
from tests.integration.test_repository_contract import expected_for

pytestmark = pytest.mark.dynamodb_local

JOB = DELINQUENCY_ACTOR.sub
MEERA = Actor("meera", "manager")
RUN_DAY = "2025-06-14"
START = dt.datetime(2025, 6, 13, 23, 0, tzinfo=IST)
NOW = dt.datetime(2025, 6, 15, 11, 0, tzinfo=IST)


@pytest.fixture
def clock(local_stack: str) -> Iterator[FixedClock]:
    models.bind(settings())
    with use_clock(FixedClock(START)) as fixed:
        assert isinstance(fixed, FixedClock)
        yield fixed


def _entry(clock: FixedClock, entity_id: str, action: Action, actor: Actor) -> AuditEntry:
    clock.advance(seconds=7)
    return AuditEntry(
        audit_id=new_id(),
        at=now_iso(),
        actor=actor,
        source_ip=None,
        request_id=None,
        action=action,
        entity_type="loan",
        entity_id=entity_id,
        before={"collector_id": "c1"},
        after={"collector_id": "c2"},
        outcome=Outcome.SUCCESS,
    )


def _store_before_sharding(entry: AuditEntry) -> None:
    """The entry as every writer stored it before the sharding: bare actor, action and day."""
    item = audit_to_item(entry)
    item.actor_sub, item.action, item.day = entry.actor.sub, entry.action.value, entry.day
    item.save()


@pytest.fixture
def trail(clock: FixedClock) -> list[AuditEntry]:
    """Entries over 13 and 14 June: bare ones on the 13th, then on the run's day through the adapter until
    every shard holds some, with a few stored bare amid them and a few by another actor and action."""
    log = DynamoAuditLog()
    written = [_entry(clock, f"E{n % 3}", Action.DELINQUENCY_CHANGED, DELINQUENCY_ACTOR) for n in range(6)]
    for entry in written:
        _store_before_sharding(entry)
    clock.advance(seconds=(dt.datetime(2025, 6, 14, 0, 5, tzinfo=IST) - clock.now()).total_seconds())
    shards: set[int] = set()
    n = 0
    while n < 30 or len(shards) < KEY_SHARDS:
        if n % 7 == 3:
            entry = _entry(clock, f"E{n % 4}", Action.LOAN_ASSIGNED, MEERA)
            log.append(entry)
        elif n % 9 == 4:
            # Deploys do not stop the world: an entry written the old way amid the new ones.
            entry = _entry(clock, f"E{n % 4}", Action.DELINQUENCY_CHANGED, DELINQUENCY_ACTOR)
            _store_before_sharding(entry)
        else:
            entry = _entry(clock, f"E{n % 4}", Action.DELINQUENCY_CHANGED, DELINQUENCY_ACTOR)
            log.append(entry)
            shards.add(shard_of(entry.audit_id))
        written.append(entry)
        n += 1
    clock.advance(seconds=(NOW - clock.now()).total_seconds())
    return written


def _shard(entry: AuditEntry) -> str | None:
    """The shard the entry is stored in (None: stored bare), read from the table."""
    stored = AuditModel.get(entry.audit_id, consistent_read=True).actor_sub
    return stored.rpartition("#")[2] if "#" in stored else None


def _pages(f: AuditFilter, limit: int) -> list[list[AuditEntry]]:
    pages: list[list[AuditEntry]] = []
    cursor: str | None = None
    while True:
        page = DynamoAuditLog().list(f, limit, cursor)
        pages.append(list(page.items))
        if page.next_cursor is None:
            return pages
        assert len(pages) < 200, "paging did not end"
        cursor = page.next_cursor


LISTINGS = [
    AuditFilter(actor=JOB),
    AuditFilter(action="DELINQUENCY_CHANGED"),
    AuditFilter(action="LOAN_ASSIGNED"),
    AuditFilter(actor=JOB, action="DELINQUENCY_CHANGED"),
    AuditFilter(actor="meera", action="LOAN_ASSIGNED"),
    AuditFilter(entity_id="E1", actor=JOB),
    AuditFilter(entity_id="E2", action="DELINQUENCY_CHANGED"),
    AuditFilter(entity_id="E3", actor="meera", action="LOAN_ASSIGNED"),
    # Unfiltered: the walk over days, each day's shards merged (bounded days, to keep the test short;
    # the contract suite covers the default look-back).
    AuditFilter(from_day="2025-06-10"),
    AuditFilter(from_day=RUN_DAY, to_day=RUN_DAY),
    AuditFilter(from_day="2025-06-12", to_day="2025-06-13"),
    AuditFilter(actor=JOB, from_day=RUN_DAY),
]


def test_the_trail_is_in_every_shard_and_bare(trail: list[AuditEntry]) -> None:
    shards = {_shard(e) for e in trail}
    assert shards == {None, *(f"{k:02d}" for k in range(KEY_SHARDS))}


def test_listings_page_through_sharded_and_bare_entries_newest_first(trail: list[AuditEntry]) -> None:
    by_id = {e.audit_id: e for e in trail}
    for f in LISTINGS:
        expected = expected_for(trail, f)
        for limit in (3, 8, 100):
            pages = _pages(f, limit)
            listed = [e for page in pages for e in page]
            assert [e.audit_id for e in listed] == expected, (f, limit)
            assert listed == [by_id[i] for i in expected], "entries read back unchanged, suffixes stripped"
            assert all(len(p) == limit for p in pages[:-1]), (f, limit)
            assert expected == [] or pages[-1], (f, limit)
    # Not vacuous: the listings select different, non-empty parts of the trail, old entries included.
    sizes = [len(expected_for(trail, f)) for f in LISTINGS]
    assert all(sizes) and len(set(sizes)) > 5, sizes


def _decoded(cursor: str) -> dict[str, dict[str, str]]:
    decoded: dict[str, dict[str, str]] = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return decoded


def test_a_cursor_names_the_bare_value_and_resumes_where_the_page_ended(trail: list[AuditEntry]) -> None:
    for f, hash_name, value in [
        (AuditFilter(actor=JOB), "actor_sub", JOB),
        (AuditFilter(action="DELINQUENCY_CHANGED"), "action", "DELINQUENCY_CHANGED"),
        (AuditFilter(from_day=RUN_DAY, to_day=RUN_DAY), "day", RUN_DAY),
    ]:
        expected = expected_for(trail, f)
        first = DynamoAuditLog().list(f, 5, None)
        second = DynamoAuditLog().list(f, 5, first.next_cursor)
        assert second.next_cursor is not None
        assert _decoded(second.next_cursor) == {hash_name: {"S": value}, "audit_id": {"S": expected[9]}}
        # The same cursor again (a client retrying), and one built the way cursors were before the
        # sharding: both resume right after the last entry listed.
        for cursor in (second.next_cursor, paging.encode({hash_name: {"S": value}, "audit_id": {"S": expected[9]}})):
            resumed = DynamoAuditLog().list(f, 5, cursor)
            assert [e.audit_id for e in resumed.items] == expected[10:15], f


def test_a_value_naming_one_shard_lists_nothing(trail: list[AuditEntry]) -> None:
    shard_of_newest = _shard(trail[-1])
    for f in [
        AuditFilter(actor=f"{JOB}#03"),
        AuditFilter(actor=f"{JOB}#{shard_of_newest}"),
        AuditFilter(action="DELINQUENCY_CHANGED#00"),
        AuditFilter(entity_id="E1", actor=f"{JOB}#01"),
        AuditFilter(entity_id="E1", action="DELINQUENCY_CHANGED#01"),
    ]:
        page = DynamoAuditLog().list(f, 10, None)
        assert (list(page.items), page.next_cursor) == ([], None), f
    with pytest.raises(ValidationFailed):
        DynamoAuditLog().list(AuditFilter(actor=f"{JOB}#03"), 10, "not a cursor")


def test_a_cursor_cannot_name_a_shard(trail: list[AuditEntry]) -> None:
    cursor = DynamoAuditLog().list(AuditFilter(actor=JOB), 3, None).next_cursor
    assert cursor is not None
    key = _decoded(cursor)
    key["actor_sub"]["S"] = f"{JOB}#03"
    with pytest.raises(ValidationFailed):
        DynamoAuditLog().list(AuditFilter(actor=JOB), 3, paging.encode(key))
    day_cursor = DynamoAuditLog().list(AuditFilter(), 3, None).next_cursor
    assert day_cursor is not None
    key = _decoded(day_cursor)
    key["day"]["S"] = f"{RUN_DAY}#03"
    with pytest.raises(ValidationFailed):
        DynamoAuditLog().list(AuditFilter(), 3, paging.encode(key))


def test_a_page_reads_about_its_limit_not_a_limit_per_shard(clock: FixedClock) -> None:
    log = DynamoAuditLog()
    for n in range(200):
        log.append(_entry(clock, f"E{n % 4}", Action.DELINQUENCY_CHANGED, DELINQUENCY_ACTOR))
    read: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        read.append(int(parsed.get("ScannedCount", 0)))

    limit = 20
    with hooked(AuditModel, "after-call.dynamodb.Query", count):
        page = log.list(AuditFilter(actor=JOB), limit, None)
    assert len(page.items) == limit
    partitions = KEY_SHARDS + 1
    assert len(read) >= partitions, "every partition is read"
    # A page size of limit + 1 in each partition would read about limit x partitions entries here.
    assert sum(read) <= limit + 4 * partitions, read


def test_the_partitions_first_pages_are_read_at_once(trail: list[AuditEntry]) -> None:
    """A listing by actor waits about one round trip for its partitions' first pages, not one per
    partition: the first query of each is held until all of them have started, which a listing reading
    them one after another could never get past."""
    partitions = len(stored_values(JOB))
    together = threading.Barrier(partitions, timeout=10)
    calls = itertools.count()

    def hold_the_first_ones(**_: Any) -> None:
        if next(calls) < partitions:
            together.wait()

    with hooked(AuditModel, "before-call.dynamodb.Query", hold_the_first_ones):
        page = DynamoAuditLog().list(AuditFilter(actor=JOB), 5, None)
    assert not together.broken
    assert [e.audit_id for e in page.items] == expected_for(trail, AuditFilter(actor=JOB))[:5]


def test_scoring_reads_the_reassignments_of_every_shard(trail: list[AuditEntry], clock: FixedClock) -> None:
    old = _entry(clock, "E9", Action.LOAN_ASSIGNED, MEERA)
    _store_before_sharding(old)
    assigned = [e for e in trail if e.action is Action.LOAN_ASSIGNED] + [old]
    found = DynamoAssignmentLog().reassignments_since(dt.date(2025, 6, 1))
    assert sorted(r.audit_id for moves in found.values() for r in moves) == sorted(e.audit_id for e in assigned)
    assert {e.entity_id for e in assigned} == set(found)


def _reminder(loan_id: str, seq: int, day: dt.date) -> Reminder:
    return Reminder(
        loan_id=loan_id,
        kind=ReminderKind.PRE_DUE_3,
        seq=seq,
        due_date=day + dt.timedelta(days=3),
        business_date=day - dt.timedelta(days=1),
        send_after=dt.datetime.combine(day, dt.time(9, 0), tzinfo=IST),
        queued_at="2025-06-13T23:00:00+05:30",
    )


def test_reminders_of_a_day_include_sharded_and_bare_ones(clock: FixedClock) -> None:
    day = dt.date(2025, 6, 14)
    store = DynamoReminderStore()
    # Loan ids as the service makes them; enough reminders that every shard of the day holds some,
    # and a few more stored the way they were before the sharding (the bare day).
    sharded: list[Reminder] = []
    while len(sharded) < 40 or len({shard_of(r.reminder_id) for r in sharded}) < KEY_SHARDS:
        sharded.append(_reminder(new_loan_id(), 1 + len(sharded) % 2, day))
    bare = [_reminder(new_loan_id(), 1, day) for _ in range(8)]
    wanted = sharded + bare
    other_day = [_reminder(r.loan_id, 3, day + dt.timedelta(days=1)) for r in wanted[:5]]
    assert store.queue(wanted + other_day) == len(wanted) + 5
    for reminder in bare:
        item = ReminderModel.get(reminder.loan_id, reminder.key, consistent_read=True)
        item.send_day = day.isoformat()
        item.save()
    stored = {ReminderModel.get(r.loan_id, r.key, consistent_read=True).send_day for r in wanted}
    assert stored == set(stored_values(day.isoformat()))
    listed = store.on_day(day)
    assert sorted(r.reminder_id for r in listed) == sorted(r.reminder_id for r in wanted)
    assert set(listed) == set(wanted)
    assert store.on_day(day + dt.timedelta(days=2)) == []
