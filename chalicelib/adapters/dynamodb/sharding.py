"""Write sharding of hot index keys: one logical key value stored as ``<value>#NN`` over several partitions.

Some index keys take every write of the night's day-end run: the audit indexes' ``actor_sub``
(``system:dpd_job``), ``action`` (``DELINQUENCY_CHANGED``) and ``day``, and the reminders' ``send_day``.
An index partition takes about 1 000 writes a second, and since the audit indexes' sort key (the
time-ordered ``audit_id``) only grows, every write lands at the end of the same partition and DynamoDB
cannot split it: the whole run would be capped there (docs/dpd-at-scale.md, "The ceiling"). So a
writer stores the value with a suffix naming one of :data:`KEY_SHARDS` shards, picked from the item's
own unique id, and a reader queries every stored value and merges.

Entries written before the sharding carry the bare value. Readers query it too (:func:`stored_values`
lists it first), so nothing is backfilled; the indexes and their attributes are unchanged, so there is
no table or CloudFormation change either.

No logical value contains :data:`SEPARATOR` (usernames are ``[a-z0-9._-]``, system actors
``system:<name>``, actions an enum, days ISO dates), which keeps the suffix unambiguous. A value
containing it is refused on write and matches nothing on read.
"""

from __future__ import annotations

import zlib

KEY_SHARDS = 8
"""Shards per hot key value. Eight partitions take about 8 000 writes a second, three times the peak
date's planned rate with every worker fanned out (docs/dpd-at-scale.md §4); each one more is one more
query for every listing by actor, action or day, so the count is no higher than that margin needs.
It may only ever be raised: readers query shards 0..KEY_SHARDS-1, so lowering it would hide the
entries already stored in the higher shards. At most 99, for the two-digit suffix and because a
listing filters on all stored values with one ``IN`` (DynamoDB allows 100)."""

SEPARATOR = "#"


def shard_of(unique_id: str) -> int:
    """The shard of an item, from its own unique id (an audit id, a reminder id): stable for the item,
    spread evenly over many items."""
    return zlib.crc32(unique_id.encode()) % KEY_SHARDS


def stored_value(value: str, unique_id: str) -> str:
    """What is stored for the logical ``value`` on the item whose unique id is ``unique_id``."""
    if SEPARATOR in value:
        raise ValueError(f"a sharded key value cannot contain {SEPARATOR!r}: {value!r}")
    return f"{value}{SEPARATOR}{shard_of(unique_id):02d}"


def stored_values(value: str) -> list[str]:
    """Every value a reader must query for the logical ``value``: the bare value (items written before
    the sharding), then each shard's. None for a value containing the separator: it is no logical value,
    and must not select the one shard it happens to name."""
    if SEPARATOR in value:
        return []
    return [value, *(f"{value}{SEPARATOR}{shard:02d}" for shard in range(KEY_SHARDS))]


def logical_value(stored: str) -> str:
    """The logical value of a stored one: the value without its shard suffix (a bare value unchanged)."""
    value, separator, shard = stored.rpartition(SEPARATOR)
    return value if separator and shard.isdigit() else stored
