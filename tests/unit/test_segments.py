"""The segment id of a day-end run (``domain.runs.Segment``): its stored text form is the key of the run
record's segment map, so it must read back every record ever written and write them back unchanged."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.adapters.dynamodb import runs as run_adapter
from chalicelib.adapters.dynamodb.models import DpdRunModel
from chalicelib.domain.runs import Segment, SegmentKind, SegmentState

D = dt.date

STORED = [
    (Segment.watch(D(2026, 11, 1), 3), "w:2026-11-01:03"),
    (Segment.watch(D(2026, 11, 1), 15), "w:2026-11-01:15"),
    (Segment.pending(0), "p:00"),
    (Segment.pending(3), "p:03"),
    (Segment.scan(1, 16), "s:001:16"),
    (Segment.scan(15, 16), "s:015:16"),
]

days = st.dates(min_value=D(2000, 1, 1), max_value=D(2099, 12, 31))
shards = st.integers(min_value=0, max_value=99)
segments = st.one_of(
    st.builds(Segment.watch, days, shards),
    st.builds(Segment.pending, shards),
    st.builds(lambda index, total: Segment.scan(index % total, total), st.integers(0, 999), st.integers(1, 1000)),
)


@pytest.mark.parametrize(("segment", "stored"), STORED, ids=[s for _, s in STORED])
def test_the_stored_form_is_the_one_records_were_written_with(segment: Segment, stored: str) -> None:
    assert str(segment) == stored
    assert Segment.parse(stored) == segment


@given(segments)
def test_every_segment_reads_back_from_its_stored_form(segment: Segment) -> None:
    assert Segment.parse(str(segment)) == segment
    assert str(Segment.parse(str(segment))) == str(segment)


@given(st.lists(st.one_of(st.builds(Segment.watch, days, shards), st.builds(Segment.pending, shards))))
def test_watch_and_pending_segments_order_as_their_stored_form(listed: list[Segment]) -> None:
    assert [str(s) for s in sorted(listed)] == sorted(str(s) for s in listed)


@given(st.integers(1, 1000).flatmap(lambda total: st.lists(st.integers(0, total - 1).map(lambda i: (i, total)))))
def test_the_segments_of_one_scan_order_as_their_stored_form(parts: list[tuple[int, int]]) -> None:
    listed = [Segment.scan(index, total) for index, total in parts]
    assert [str(s) for s in sorted(listed)] == sorted(str(s) for s in listed)


def test_kinds_order_pending_scan_watch_as_their_letters_do() -> None:
    listed = [Segment.watch(D(2026, 1, 1), 0), Segment.scan(0, 16), Segment.pending(0)]
    assert [s.kind for s in sorted(listed)] == [SegmentKind.PENDING, SegmentKind.SCAN, SegmentKind.WATCH]


@pytest.mark.parametrize("stored", ["", "x:01", "w:2026-11-01", "w:01:2026-11-01", "p:01:16", "s:001", "p:one"])
def test_what_is_not_a_segment_id_is_refused(stored: str) -> None:
    with pytest.raises(ValueError):
        Segment.parse(stored)


def test_only_a_watch_segment_names_a_day() -> None:
    with pytest.raises(ValueError):
        Segment(SegmentKind.PENDING, day=D(2026, 11, 1))
    with pytest.raises(ValueError):
        Segment(SegmentKind.WATCH, index=3)


def test_the_watch_segments_are_the_ones_reading_the_watch_index() -> None:
    assert Segment.watch(D(2026, 11, 1), 3).reads_watch_index
    assert Segment.pending(3).reads_watch_index
    assert not Segment.scan(3, 16).reads_watch_index


def test_a_stored_run_record_loads_with_typed_segments_and_is_written_back_byte_for_byte() -> None:
    """The storage edge (``adapters/dynamodb/runs.py``) is the only place the text form appears."""
    stored = {
        "w:2026-11-04:03": '{"cursor":null,"done":true,"scanned":2,"updated":1,"escalated":0,"pending":0,"page":null}',
        "p:03": '{"cursor":null,"done":false,"scanned":0,"updated":0,"escalated":0,"pending":0,"page":null}',
        "s:007:16": '{"cursor":{"loan_id":"L-9"},"done":false,"scanned":100,"updated":4,"escalated":1,"pending":2,'
        '"page":null}',
    }
    item = DpdRunModel.from_raw_data(
        {
            "business_date": {"S": "2026-11-05"},
            "status": {"S": "RUNNING"},
            "trigger": {"S": "scheduler"},
            "run_id": {"S": "run-1"},
            "lease_until": {"N": "0"},
            "started_at": {"S": "2026-11-06T00:30:00.000+05:30"},
            "mode": {"S": "watch"},
            "segments": {"M": {k: {"S": v} for k, v in stored.items()}},
        }
    )
    record = run_adapter._item_to_record(item)
    assert record.segments == {
        Segment.watch(D(2026, 11, 4), 3): SegmentState(done=True, scanned=2, updated=1),
        Segment.pending(3): SegmentState(),
        Segment.scan(7, 16): SegmentState({"loan_id": "L-9"}, scanned=100, updated=4, escalated=1, pending=2),
    }
    assert run_adapter._segments_to_item(record.segments) == stored
