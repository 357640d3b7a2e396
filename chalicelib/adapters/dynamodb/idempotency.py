"""Idempotency-Key records in the stage's idempotency table (infra/template.json), written by the app.

One item per (caller, key), in the attribute layout powertools' idempotency utility used, so records
written before this module replaced it keep working (a key in flight across a deploy still replays):

``id``                      ``loan-crm-api#`` + md5 of the caller and key (:func:`chalicelib.api.idempotency.record_id`)
``validation``              hash of the request fingerprint: the same key with another request is refused
``status``                  ``INPROGRESS`` or ``COMPLETED``
``expiration``              epoch seconds; the table's TTL attribute, and past it the record counts as absent
``in_progress_expiration``  epoch milliseconds; an ``INPROGRESS`` record past it counts as absent (a crash)
``data``                    the stored answer (JSON: status, body, headers), on ``COMPLETED`` records

A claim is one conditional PutItem that returns the record it met (``ReturnValuesOnConditionCheckFailure``),
so a refused claim needs no second read; completing is one PutItem, and an answer that is not kept is
deleted.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.expressions.condition import Condition

from chalicelib.adapters.dynamodb.models import IdempotencyRecordModel
from chalicelib.config import Settings
from chalicelib.domain.errors import Unavailable

IN_PROGRESS = "INPROGRESS"
COMPLETED = "COMPLETED"


def record_is_free(now: float) -> Condition:
    """Where a record may be written: there is none under its id, or the one there counts as absent
    (past its expiration, or in progress past its in-progress expiration: the request that claimed it
    crashed). The one statement of that rule for writes: a claim, a kept refusal and the record a
    payment's transaction writes all use it; :func:`live_record` reads it back for a record a read
    returned."""
    record = IdempotencyRecordModel
    free: Condition = (
        record.id.does_not_exist()
        | (record.expiration < int(now))
        | (
            (record.status == IN_PROGRESS)
            & record.in_progress_expiration.exists()
            & (record.in_progress_expiration < int(now * 1000))
        )
    )
    return free


@dataclass(frozen=True)
class StoredRecord:
    """A record as read back: whose request (``validation``), how far it got, and its answer if any."""

    record_id: str
    validation: str
    status: str
    answer: dict[str, Any] | None

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


def live_record(item: dict[str, Any] | None, now: float | None = None) -> StoredRecord | None:
    """The record an item is, None when it counts as absent: past its expiration, or in progress past
    its in-progress expiration (the request that claimed it crashed)."""
    if item is None:
        return None
    at = time.time() if now is None else now
    if int(item.get("expiration", {}).get("N", "0")) < int(at):
        return None
    in_progress_until = item.get("in_progress_expiration", {}).get("N")
    status = item.get("status", {}).get("S")
    if status == IN_PROGRESS and in_progress_until is not None and int(in_progress_until) < int(at * 1000):
        return None
    return _record(item)


def _record(item: dict[str, Any]) -> StoredRecord:
    data = item.get("data", {}).get("S")
    return StoredRecord(
        record_id=item["id"]["S"],
        validation=item.get("validation", {}).get("S", ""),
        status=item.get("status", {}).get("S", ""),
        answer=json.loads(data) if data else None,
    )


def completed_item(record_id: str, validation: str, answer: dict[str, Any], expires_at: int) -> dict[str, Any]:
    """The COMPLETED record holding ``answer``, as a DynamoDB item (a PutItem's or a transaction's)."""
    return {
        "id": {"S": record_id},
        "validation": {"S": validation},
        "status": {"S": COMPLETED},
        "expiration": {"N": str(expires_at)},
        "data": {"S": json.dumps(answer, sort_keys=True)},
    }


class IdempotencyRecords:
    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def claim(self, record_id: str, validation: str, expires_at: int, in_progress_until_ms: int) -> StoredRecord | None:
        """Mark the key INPROGRESS unless a live record holds it: None when claimed, else that record."""
        item = {
            "id": {"S": record_id},
            "validation": {"S": validation},
            "status": {"S": IN_PROGRESS},
            "expiration": {"N": str(expires_at)},
            "in_progress_expiration": {"N": str(in_progress_until_ms)},
        }
        return self._put_unless_live(item)

    def keep(self, record_id: str, validation: str, answer: dict[str, Any], expires_at: int) -> StoredRecord | None:
        """Store a COMPLETED record unless a live one is there: None when stored, else that record."""
        return self._put_unless_live(completed_item(record_id, validation, answer, expires_at))

    def _put_unless_live(self, item: dict[str, Any]) -> StoredRecord | None:
        """Put ``item`` unless a live record holds its id (one conditional PutItem that returns what it
        met): None when put, else the record met."""
        placeholders: dict[str, str] = {}
        values: dict[str, Any] = {}
        condition = record_is_free(time.time()).serialize(placeholders, values)
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames={placeholder: name for name, placeholder in placeholders.items()},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                old = exc.response.get("Item")
                if old is not None:
                    return _record(old)
                # An endpoint that does not return the item it met: read it. Gone since, it was a
                # request in progress that has just released the key: the caller is told to retry.
                record_id, validation = item["id"]["S"], item["validation"]["S"]
                return self.get(record_id) or StoredRecord(record_id, validation, IN_PROGRESS, None)
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        return None

    def complete(self, record_id: str, validation: str, answer: dict[str, Any], expires_at: int) -> None:
        try:
            self.client.put_item(
                TableName=self.table_name, Item=completed_item(record_id, validation, answer, expires_at)
            )
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc

    def release(self, record_id: str) -> None:
        """Forget the key (an answer that is not kept): the next request with it runs."""
        try:
            self.client.delete_item(TableName=self.table_name, Key={"id": {"S": record_id}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc

    def get(self, record_id: str) -> StoredRecord | None:
        """The live record under ``record_id`` (an expired one counts as absent)."""
        try:
            item = self.client.get_item(
                TableName=self.table_name, Key={"id": {"S": record_id}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc
        return live_record(item)


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable("could not record the idempotency key; nothing was changed, try again")


def idempotency_store(settings: Settings) -> IdempotencyRecords:
    client = boto3.client(
        "dynamodb",
        region_name=settings.region,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or None,
    )
    return IdempotencyRecords(client, settings.table_name("idempotency"))
