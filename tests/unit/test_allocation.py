"""Allocation: money is conserved, the order is right, nothing goes negative, reversal is the inverse."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.allocation import apply_payment, is_fully_paid, total_unpaid_paise, unapply_payment
from chalicelib.domain.schedule import Instalment

START = dt.date(2026, 1, 5)


def _schedule(rows: list[tuple[int, int]]) -> tuple[Instalment, ...]:
    return tuple(
        Instalment(seq=n, due_date=START + dt.timedelta(days=30 * (n - 1)), principal_paise=p, interest_paise=i)
        for n, (p, i) in enumerate(rows, start=1)
    )


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


@settings(max_examples=300, deadline=None)
@given(schedule=schedules, data=st.data())
def test_money_is_conserved_and_reversal_is_the_exact_inverse(
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
    assert unapply_payment(updated, allocation) == schedule


@settings(max_examples=200, deadline=None)
@given(schedule=schedules, data=st.data())
def test_reversing_an_earlier_payment_keeps_the_later_one(
    schedule: tuple[Instalment, ...], data: st.DataObject
) -> None:
    owed = total_unpaid_paise(schedule)
    first = data.draw(st.integers(1, owed))
    after_first, first_alloc = apply_payment(schedule, first)
    if first == owed:
        return
    second = data.draw(st.integers(1, owed - first))
    after_second, second_alloc = apply_payment(after_first, second)
    reversed_first = unapply_payment(after_second, first_alloc)
    assert total_unpaid_paise(reversed_first) == owed - second
    # Reversing the second as well gets back to the original exactly, in either order.
    assert unapply_payment(reversed_first, second_alloc) == schedule
