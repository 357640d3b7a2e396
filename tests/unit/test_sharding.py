"""The shard suffix of hot index keys (``adapters.dynamodb.sharding``) and the audit mapping that uses it:
what is stored reads back as the logical value, the shards are all used, and the bare values stored
before the sharding read the same."""

from __future__ import annotations

import collections
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.adapters.dynamodb.mapping import audit_to_item, item_to_audit
from chalicelib.adapters.dynamodb.sharding import KEY_SHARDS, logical_value, stored_value, stored_values
from chalicelib.domain.audit import DELINQUENCY_ACTOR, Action, AuditEntry, Outcome

# What the sharded values are: usernames, system actors, actions, ISO days. None contains "#".
logical = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-", min_size=1)


def test_a_value_is_stored_with_a_two_digit_shard_and_reads_back() -> None:
    stored = stored_value("system:dpd_job", "01JXAMPLE0000000000000000")
    assert re.fullmatch(r"system:dpd_job#\d\d", stored)
    assert int(stored[-2:]) < KEY_SHARDS
    assert logical_value(stored) == "system:dpd_job"
    assert stored_value("2025-06-14", "x") == stored_value("2025-06-14", "x"), "the shard is the item's own"


def test_readers_query_the_bare_value_first_then_every_shard() -> None:
    assert stored_values("DELINQUENCY_CHANGED") == ["DELINQUENCY_CHANGED"] + [
        f"DELINQUENCY_CHANGED#{n:02d}" for n in range(KEY_SHARDS)
    ]
    assert 8 <= KEY_SHARDS <= 99


def test_many_ids_spread_over_every_shard() -> None:
    ids = [f"01J{n:023d}" for n in range(4000)]
    counts = collections.Counter(stored_value("meera", i) for i in ids)
    assert set(counts) == set(stored_values("meera")[1:])
    expected = len(ids) / KEY_SHARDS
    assert all(0.75 * expected < n < 1.25 * expected for n in counts.values()), counts


def test_a_value_with_the_separator_matches_nothing_and_is_never_stored() -> None:
    assert stored_values("system:dpd_job#03") == []
    assert stored_values("#") == []
    with pytest.raises(ValueError):
        stored_value("meera#01", "01JXAMPLE")


def test_only_a_numeric_suffix_is_stripped() -> None:
    assert logical_value("meera") == "meera"
    assert logical_value("2025-06-14#15") == "2025-06-14"
    assert logical_value("odd#name") == "odd#name"


@given(logical, st.text(min_size=1))
def test_stored_values_round_trip_and_are_what_readers_query(value: str, unique_id: str) -> None:
    stored = stored_value(value, unique_id)
    assert logical_value(stored) == value
    assert logical_value(value) == value
    assert stored in stored_values(value)
    assert stored_values(value)[0] == value
    assert len(set(stored_values(value))) == KEY_SHARDS + 1


def _entry(audit_id: str) -> AuditEntry:
    return AuditEntry(
        audit_id=audit_id,
        at="2025-06-14T00:30:00.000+05:30",
        actor=DELINQUENCY_ACTOR,
        source_ip=None,
        request_id=None,
        action=Action.DELINQUENCY_CHANGED,
        entity_type="loan",
        entity_id="LN1",
        before={"dpd": 0},
        after={"dpd": 1},
        outcome=Outcome.SUCCESS,
    )


def test_an_audit_entry_stores_sharded_keys_and_reads_back_unchanged() -> None:
    entry = _entry("01JXAMPLE0000000000000001")
    item = audit_to_item(entry)
    shard = item.actor_sub.rpartition("#")[2]
    assert (item.actor_sub, item.action, item.day) == (
        f"system:dpd_job#{shard}",
        f"DELINQUENCY_CHANGED#{shard}",
        f"2025-06-14#{shard}",
    )
    assert item_to_audit(item) == entry


def test_an_audit_item_stored_before_the_sharding_reads_the_same() -> None:
    entry = _entry("01JXAMPLE0000000000000002")
    item = audit_to_item(entry)
    item.actor_sub, item.action, item.day = "system:dpd_job", "DELINQUENCY_CHANGED", "2025-06-14"
    assert item_to_audit(item) == entry
