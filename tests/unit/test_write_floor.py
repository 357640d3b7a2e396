"""The benches' write pricing (bench/floor.py): item sizes by DynamoDB's rules, and what an index entry
costs when a write moves its key, changes what it projects, or neither."""

from __future__ import annotations

from bench.floor import Index, Priced, Table, index_entry, item_size, units

LOANS = Table(
    "loans",
    ("loan_id",),
    (
        Index("bucket-list-index", ("bucket", "loan_id"), frozenset({"status"})),
        Index("watch-index", ("watch_key", "loan_id"), frozenset()),
        Index("everything", ("collector_id", "loan_id"), None),
    ),
)


def _loan(**attrs: str) -> dict[str, dict[str, str]]:
    base = {"loan_id": "L1", "bucket": "CURRENT", "status": "ACTIVE", "collector_id": "c1", "dpd": "0"}
    base.update(attrs)
    return {k: ({"N": v} if k == "dpd" else {"S": v}) for k, v in base.items()}


def test_item_size_counts_names_and_values() -> None:
    assert item_size({"a": {"S": "xyz"}}) == 4
    assert item_size({"n": {"N": "123456"}}) == 1 + 3 + 1  # two digits a byte, plus one
    assert item_size({"n": {"N": "-1200.00"}}) == 1 + 1 + 1  # "12": trailing zeros and sign dropped
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + (1 + 1 + 1)
    assert item_size({"b": {"BOOL": True}, "l": {"L": [{"S": "ab"}]}}) == (1 + 1) + (1 + 3 + 3)
    assert item_size(None) == 0


def test_units_start_a_new_unit_past_each_kilobyte() -> None:
    assert [units(n) for n in (0, 1, 1024, 1025, 2048, 2049)] == [1, 1, 1, 2, 2, 3]


def test_index_entries_are_sparse_and_projected() -> None:
    bucket, watch, everything = LOANS.indexes
    loan = _loan(notes="n" * 10)
    assert set(index_entry(LOANS, bucket, loan) or {}) == {"loan_id", "bucket", "status"}
    assert index_entry(LOANS, watch, loan) is None  # no watch_key: not in the index
    assert index_entry(LOANS, everything, loan) == loan


def test_an_unchanged_key_costs_the_floor_nothing_but_a_projected_change_is_priced() -> None:
    priced = Priced()
    # dpd changes: the ALL index is rewritten (priced, not floor); the INCLUDE one copies no dpd.
    priced.add(LOANS, _loan(), _loan(dpd="5"), in_transaction=True, prefix="")
    assert priced.priced["loans"] == priced.floor["loans"] == 2  # one item, transaction rate
    assert priced.priced["loans/everything"] == 1 and priced.floor["loans/everything"] == 0
    assert "loans/bucket-list-index" not in priced.priced
    # a bucket change moves the bucket entry: a delete and a put, in the floor too.
    priced.add(LOANS, _loan(), _loan(bucket="1-30"), in_transaction=False, prefix="")
    assert priced.floor["loans/bucket-list-index"] == priced.priced["loans/bucket-list-index"] == 2
    # a new watch key: one put.
    priced.add(LOANS, _loan(), _loan(watch_key="2026-11-05#01"), in_transaction=False, prefix="")
    assert priced.floor["loans/watch-index"] == 1
    assert priced.items["loans"] == 3
