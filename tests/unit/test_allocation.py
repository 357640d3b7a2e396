"""Allocation: money is conserved, the order is right, nothing goes negative.

A reversal no longer subtracts its own allocation (``unapply_payment`` is gone): the loan's standing
payments are re-allocated from scratch without it (``domain.ledger.allocate``), so the tests that
used to check "un-applying is the exact inverse" now check that dropping a payment from the ledger
gives exactly the schedule the remaining payments alone would have produced.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.allocation import apply_payment, is_fully_paid, total_unpaid_paise
from chalicelib.domain.ledger import LedgerEntry, allocate
from chalicelib.domain.schedule import Instalment

START = dt.date(2026, 1, 5)


def _schedule(rows: list[tuple[int, int]]) -> tuple[Instalment, ...]:
    return tuple(
        Instalment(seq=n, due_date=START + dt.timedelta(days=30 * (n - 1)), principal_paise=p, interest_paise=i)
        for n, (p, i) in enumerate(rows, start=1)
    )


def _entry(payment_id: str, amount: int, payment_date: dt.date = START) -> LedgerEntry:
    return LedgerEntry(payment_id, payment_date, payment_date, amount)


schedules = st.lists(
    st.tuples(st.integers(0, 5_000_000), st.integers(0, 500_000)).filter(lambda r: r[0] + r[1] > 0),
    min_size=1,
    max_size=24,
).map(_schedule)


def test_interest_before_principal_oldest_first_remainder_forward() -> None:
    schedule = _schedule([(1000, 200), (1000, 150), (1000, 100)])
    updated, allocation = apply_payment(schedule, 1500)
    assert [(line.seq, line.interest_paise, line.principal_paise) for line in allocation.lines] == [
        (1, 200, 1000),
        (2, 150, 150),
    ]
    assert (updated[1].paid_interest_paise, updated[1].paid_principal_paise) == (150, 150)
    assert updated[2].paid_paise == 0
    assert (allocation.interest_paise, allocation.principal_paise) == (350, 1150)


def test_partially_paid_instalment_is_topped_up_before_the_next() -> None:
    schedule, _ = apply_payment(_schedule([(1000, 200), (1000, 200)]), 100)
    updated, allocation = apply_payment(schedule, 300)
    assert allocation.lines[0].seq == 1
    assert (allocation.lines[0].interest_paise, allocation.lines[0].principal_paise) == (100, 200)
    assert updated[0].paid_paise == 400


def test_exact_payoff_settles_everything_and_more_is_refused() -> None:
    schedule = _schedule([(1000, 10), (2000, 20)])
    updated, _ = apply_payment(schedule, 3030)
    assert is_fully_paid(updated)
    with pytest.raises(ValueError, match="exceeds"):
        apply_payment(schedule, 3031)


@pytest.mark.parametrize("amount", [0, -1])
def test_a_payment_must_be_positive(amount: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        apply_payment(_schedule([(1000, 10)]), amount)


def test_a_settled_instalment_gets_nothing_and_a_zero_interest_one_takes_principal_at_once() -> None:
    schedule, _ = apply_payment(_schedule([(1000, 10), (500, 0), (700, 30)]), 1010)
    updated, allocation = apply_payment(schedule, 600)
    assert [(line.seq, line.interest_paise, line.principal_paise) for line in allocation.lines] == [
        (2, 0, 500),
        (3, 30, 70),
    ]
    assert updated[0] == schedule[0]


def test_dropping_a_payment_from_the_ledger_moves_the_later_money_onto_the_oldest_instalment() -> None:
    """Replaces "un-applying is the exact inverse": a reversal re-allocates what stands."""
    schedule = _schedule([(1000, 100), (1000, 100), (1000, 100)])
    first, second = _entry("P1", 1100), _entry("P2", 1100)
    both, (alloc_first, alloc_second) = allocate(schedule, [first, second])
    assert [line.seq for line in alloc_first.lines] == [1]
    assert [line.seq for line in alloc_second.lines] == [2]
    without_first, (moved,) = allocate(both, [second])
    assert [(line.seq, line.interest_paise, line.principal_paise) for line in moved.lines] == [(1, 100, 1000)]
    assert without_first == apply_payment(schedule, 1100)[0]


@settings(max_examples=300, deadline=None)
@given(schedule=schedules, data=st.data())
def test_money_is_conserved_and_dropping_the_payment_restores_the_schedule(
    schedule: tuple[Instalment, ...], data: st.DataObject
) -> None:
    owed = total_unpaid_paise(schedule)
    amount = data.draw(st.integers(1, owed))
    updated, allocation = apply_payment(schedule, amount)
    assert allocation.total_paise == amount
    assert total_unpaid_paise(updated) == owed - amount
    for before, after in zip(schedule, updated, strict=True):
        assert after.paid_paise >= before.paid_paise
        assert 0 <= after.paid_interest_paise <= after.interest_paise
        assert 0 <= after.paid_principal_paise <= after.principal_paise
    # Principal is only touched on an instalment whose interest is fully paid.
    for after in updated:
        if after.paid_principal_paise > 0:
            assert after.paid_interest_paise == after.interest_paise
    # Oldest first: once an instalment is left unpaid, no later one received anything.
    seen_unpaid = False
    for line_inst in updated:
        if seen_unpaid:
            assert line_inst.paid_paise == 0
        if not line_inst.is_settled:
            seen_unpaid = True
    # The allocation names exactly what changed on each instalment.
    by_seq = {line.seq: line for line in allocation.lines}
    for before, after in zip(schedule, updated, strict=True):
        line = by_seq.get(before.seq)
        assert after.paid_interest_paise - before.paid_interest_paise == (line.interest_paise if line else 0)
        assert after.paid_principal_paise - before.paid_principal_paise == (line.principal_paise if line else 0)
    # Was: unapply_payment(updated, allocation) == schedule. Now: a ledger without the payment
    # replays to the schedule with nothing paid, whatever the schedule held.
    assert allocate(updated, []) == (schedule, ())
    ledger_schedule, (ledger_alloc,) = allocate(schedule, [_entry("P1", amount)])
    assert (ledger_schedule, ledger_alloc) == (updated, allocation)


@settings(max_examples=200, deadline=None)
@given(schedule=schedules, data=st.data())
def test_reversing_an_earlier_payment_moves_the_later_one_onto_the_oldest_instalments(
    schedule: tuple[Instalment, ...], data: st.DataObject
) -> None:
    owed = total_unpaid_paise(schedule)
    first = data.draw(st.integers(1, owed))
    if first == owed:
        return
    second = data.draw(st.integers(1, owed - first))
    a, b = _entry("PA", first), _entry("PB", second)
    after_both, _ = allocate(schedule, [a, b])
    assert after_both == apply_payment(apply_payment(schedule, first)[0], second)[0]
    # Old rule: reversing A left B on the instalments it first went to. Replay rule: B alone, from
    # the oldest instalment, exactly as if A had never been posted.
    reversed_first, (moved,) = allocate(after_both, [b])
    assert (reversed_first, moved) == apply_payment(schedule, second)
    assert total_unpaid_paise(reversed_first) == owed - second
    # Reversing the second as well gets back to the original exactly, in either order.
    assert allocate(reversed_first, [])[0] == schedule
    assert allocate(allocate(after_both, [a])[0], [])[0] == schedule
