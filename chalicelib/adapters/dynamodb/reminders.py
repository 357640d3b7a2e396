"""Reminders in DynamoDB (docs/reminders.md): one item per loan, kind and instalment, written once by a
conditional put and moved through its states by conditional puts, so two senders (or a resumed run)
can never both act on one reminder."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib.adapters.dynamodb.batch import batch_get
from chalicelib.adapters.dynamodb.errors import conditional_check_failed, storage_call
from chalicelib.adapters.dynamodb.mapping import audit_to_item
from chalicelib.adapters.dynamodb.models import ReminderModel
from chalicelib.adapters.dynamodb.sharding import stored_value, stored_values
from chalicelib.adapters.dynamodb.transact import Entry, TransactionRefused, audit_entries, save_all
from chalicelib.clock import IST
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.reminders import Reminder, ReminderKind, ReminderStatus

OUTBOX_SHARDS = 4
"""Partitions of the outbox index: a morning's reminders (one per loan falling due) are read by
several senders' queries at once instead of one hot partition."""
PAGE_SIZE = 100


def outbox_shard(loan_id: str) -> int:
    return zlib.crc32(loan_id.encode()) % OUTBOX_SHARDS


def _utc(at: dt.datetime) -> str:
    """Sortable: every ``next_attempt_at`` is written in this one form, so the index orders by time."""
    return at.astimezone(dt.UTC).isoformat(timespec="seconds")


def _to_item(reminder: Reminder) -> ReminderModel:
    waiting = reminder.waiting and reminder.next_attempt_at is not None
    return ReminderModel(
        reminder.loan_id,
        reminder.key,
        reminder_id=reminder.reminder_id,
        kind=reminder.kind.value,
        seq=reminder.seq,
        due_date=reminder.due_date.isoformat(),
        business_date=reminder.business_date.isoformat(),
        send_after=reminder.send_after.astimezone(IST).isoformat(timespec="seconds"),
        # Sharded (``sharding``): every reminder queued in the night would otherwise share one key.
        send_day=stored_value(reminder.send_after.astimezone(IST).date().isoformat(), reminder.reminder_id),
        status=reminder.status.value,
        reason=reminder.reason,
        attempts=reminder.attempts,
        outbox=f"OUTBOX#{outbox_shard(reminder.loan_id):02d}" if waiting else None,
        next_attempt_at=_utc(reminder.next_attempt_at) if waiting and reminder.next_attempt_at else None,
        attempt_started_at=_utc(reminder.attempt_started_at) if reminder.attempt_started_at else None,
        queued_at=reminder.queued_at,
        sent_at=reminder.sent_at,
        message_id=reminder.message_id,
        collector_id=reminder.collector_id,
    )


def _from_item(item: ReminderModel) -> Reminder:
    def at(value: str | None) -> dt.datetime | None:
        return dt.datetime.fromisoformat(value) if value else None

    send_after = dt.datetime.fromisoformat(item.send_after)
    return Reminder(
        loan_id=item.loan_id,
        kind=ReminderKind(item.kind),
        seq=item.seq,
        due_date=dt.date.fromisoformat(item.due_date),
        business_date=dt.date.fromisoformat(item.business_date),
        send_after=send_after,
        status=ReminderStatus(item.status),
        reason=item.reason,
        attempts=item.attempts or 0,
        next_attempt_at=at(item.next_attempt_at),
        attempt_started_at=at(item.attempt_started_at),
        queued_at=item.queued_at,
        sent_at=item.sent_at,
        message_id=item.message_id,
        collector_id=item.collector_id,
    )


def _conditional_put(item: ReminderModel, condition: Any) -> bool:
    try:
        item.save(condition=condition)
    except PutError as exc:
        if conditional_check_failed(exc):
            return False
        raise
    return True


class DynamoReminderStore:
    @storage_call
    def queue(self, reminders: Sequence[Reminder]) -> int:
        return sum(_conditional_put(_to_item(r), ReminderModel.loan_id.does_not_exist()) for r in reminders)

    @storage_call
    def stored_keys(self, reminders: Sequence[Reminder]) -> set[tuple[str, str]]:
        # Eventually consistent, keys only: a reminder is never deleted, so a lagging read can only miss
        # one put a moment ago, and its conditional put is then refused as before (half the read units
        # of a consistent read, for the reminder phase's bulk of already-queued reminders).
        keys = list(dict.fromkeys((r.loan_id, r.key) for r in reminders))
        found = batch_get(ReminderModel, keys, attributes_to_get=["loan_id", "reminder_key"])
        return {(item.loan_id, item.reminder_key) for item in found}

    @storage_call
    def for_loan(self, loan_id: str) -> list[Reminder]:
        return [_from_item(i) for i in ReminderModel.query(loan_id, consistent_read=True)]

    @storage_call
    def get(self, loan_id: str, key: str) -> Reminder | None:
        try:
            return _from_item(ReminderModel.get(loan_id, key, consistent_read=True))
        except DoesNotExist:
            return None

    @storage_call
    def waiting(
        self, shard: int, until: dt.datetime, cursor: dict[str, Any] | None
    ) -> tuple[list[Reminder], dict[str, Any] | None]:
        results = ReminderModel.outbox_index.query(
            f"OUTBOX#{shard:02d}",
            ReminderModel.next_attempt_at <= _utc(until),
            last_evaluated_key=cursor,
            page_size=PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        return [_from_item(i) for i in results], results.last_evaluated_key

    @storage_call
    def on_day(self, day: dt.date) -> list[Reminder]:
        """The day's reminders in no particular order: every shard's, and those stored before the sharding."""
        return [_from_item(i) for value in stored_values(day.isoformat()) for i in ReminderModel.day_index.query(value)]

    @storage_call
    def replace(self, before: Reminder, after: Reminder, audit: AuditEntry | None = None) -> bool:
        condition = (ReminderModel.status == before.status.value) & (ReminderModel.attempts == before.attempts)
        if audit is None:
            return _conditional_put(_to_item(after), condition)
        try:
            save_all([Entry("reminder", _to_item(after), condition), *audit_entries([audit_to_item(audit)])])
        except TransactionRefused:
            return False
        return True
