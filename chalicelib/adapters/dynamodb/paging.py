"""Opaque page cursors: a DynamoDB exclusive start key, base64url-encoded JSON.

A cursor is checked against the key names the access path expects, so a tampered or foreign cursor is
a 400, not a DynamoDB error. It cannot widen what a caller sees: the query it resumes is rebuilt from
the caller's own filters and scope.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from pynamodb.expressions.condition import Condition

from chalicelib.adapters.dynamodb.sharding import logical_value
from chalicelib.domain.errors import ValidationFailed

Key = dict[str, dict[str, str]]


def encode(key: Key) -> str:
    raw = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_cursor() -> ValidationFailed:
    return ValidationFailed("invalid cursor", [{"field": "cursor", "message": "not a cursor from this listing"}])


def decode(
    cursor: str | None,
    expected_names: frozenset[str],
    pinned: Mapping[str, str] | None = None,
    bounds: Mapping[str, tuple[str, str]] | None = None,
) -> Key | None:
    """The start key in ``cursor``, or ValidationFailed. ``pinned`` names the partition the query
    reads and ``bounds`` its inclusive key range: DynamoDB rejects a start key outside either with a
    ValidationException, which would otherwise surface as a 500."""
    if cursor is None:
        return None
    bad = invalid_cursor()
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key: Any = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(key, dict) or set(key) != expected_names:
        raise bad
    for value in key.values():
        if not (isinstance(value, dict) and set(value) == {"S"} and isinstance(value["S"], str) and value["S"]):
            raise bad
    for name, value in (pinned or {}).items():
        if key[name]["S"] != value:
            raise bad
    for name, (low, high) in (bounds or {}).items():
        if not low <= key[name]["S"] <= high:
            raise bad
    return key


def key_of(item: Any, names: frozenset[str], sharded: frozenset[str] = frozenset()) -> Key:
    key = {name: str(getattr(item, name)) for name in sorted(names)}
    return {name: {"S": logical_value(value) if name in sharded else value} for name, value in key.items()}


def collect_page(
    items: Iterable[Any], limit: int, key_names: frozenset[str], sharded: frozenset[str] = frozenset()
) -> tuple[list[Any], str | None]:
    """Take ``limit`` items and peek at one more, so ``next_cursor`` is null exactly on the last page.
    The cursor holds the logical value of the ``sharded`` key names (``sharding``): a listing merged
    over every shard resumes each of them from it."""
    taken = list(islice(items, limit + 1))
    if len(taken) <= limit:
        return taken, None
    page = taken[:limit]
    return page, encode(key_of(page[-1], key_names, sharded))


def all_of(conditions: list[Condition]) -> Condition | None:
    if not conditions:
        return None
    combined = conditions[0]
    for c in conditions[1:]:
        combined &= c
    return combined


def segment_page(model: Any, segment: int, total: int, cursor: dict[str, Any] | None, size: int) -> Any:
    """One page of one segment of a parallel scan, read consistently: what the jobs that walk a whole
    table (the day-end run's full scan, the reconciliation) resume from their checkpoints. Iterate the
    result for the items; its ``last_evaluated_key`` is the next page's cursor (None after the last)."""
    return model.scan(
        segment=segment,
        total_segments=total,
        last_evaluated_key=cursor,
        page_size=size,
        limit=size,
        consistent_read=True,
    )
