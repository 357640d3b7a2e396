"""The scoring rules (chalicelib/domain/scoring.py, docs/scoring.md): holding periods, a loan's figures,
efficiency and score. Property-based where dates and money are."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain import scoring
from chalicelib.domain.delinquency import Bucket, Classification, Delinquency
from chalicelib.domain.ledger import LedgerEntry
from chalicelib.domain.loan import Borrower, Loan, LoanStatus
from chalicelib.domain.schedule import Instalment
from chalicelib.domain.scoring import Reassignment, holding_periods, loan_figures

APRIL = (dt.date(2026, 4, 1), dt.date(2026, 4, 30))
COLLECTORS = st.sampled_from(["c1", "c2", "c3"])


def reassignments(draw_days: list[int], holders: list[str], first_holder: str) -> list[Reassignment]:
    found, before = [], first_holder
    for n, (day, after) in enumerate(zip(sorted(draw_days), holders, strict=False)):
        found.append(Reassignment("L", f"{n:04d}", dt.date(2026, 4, day), before, after))
        before = after
    return found


@st.composite
def timelines(draw: st.DrawFn) -> tuple[str, list[Reassignment]]:
    days = draw(st.lists(st.integers(1, 30), max_size=5))
    holders = draw(st.lists(COLLECTORS, min_size=len(days), max_size=len(days)))
    first = draw(COLLECTORS)
    moves = reassignments(days, holders, first)
    return (moves[-1].after if moves else first) or first, moves


@given(timelines())
def test_holding_periods_partition_the_month(timeline: tuple[str, list[Reassignment]]) -> None:
    current, moves = timeline
    periods = holding_periods(current, moves, *APRIL)
    assert periods[0].start == APRIL[0] and periods[-1].end == APRIL[1]
    for a, b in itertools.pairwise(periods):
        assert b.start == a.end + dt.timedelta(days=1)
    assert all(p.start <= p.end for p in periods)
    assert periods[-1].collector_id == current
    for move in moves:  # the day of a reassignment is the new holder's, unless another came that day
        later = [m for m in moves if m.day == move.day and m.audit_id > move.audit_id]
        holder = next(p.collector_id for p in periods if p.start <= move.day <= p.end)
        assert later or holder == move.after


def test_a_reassignment_after_the_month_says_who_held_it_at_the_end() -> None:
    moves = [Reassignment("L", "0001", dt.date(2026, 5, 3), "c1", "c2")]
    assert [p.collector_id for p in holding_periods("c2", moves, *APRIL)] == ["c1"]


def test_the_new_holder_holds_from_the_day_of_the_reassignment() -> None:
    moves = [Reassignment("L", "0001", dt.date(2026, 4, 15), "c1", "c2")]
    periods = holding_periods("c2", moves, *APRIL)
    assert [(p.collector_id, p.start.day, p.end.day) for p in periods] == [("c1", 1, 14), ("c2", 15, 30)]


def loan(collector: str, paid: list[tuple[int, int]]) -> Loan:
    """Overdue since 20 Mar (800), due again 20 Apr; payments (April day, paise)."""
    schedule = tuple(Instalment(n, dt.date(2026, m, 20), 70_000, 10_000) for n, m in enumerate((3, 4, 5), 1))
    entries = tuple(
        LedgerEntry(f"P{n}", dt.date(2026, 4, day), dt.date(2026, 4, day), amount)
        for n, (day, amount) in enumerate(paid)
    )
    return Loan(
        "L",
        Borrower("B", "9876543210"),
        LoanStatus.ACTIVE,
        210_000,
        dt.date(2026, 2, 20),
        schedule,
        Delinquency(dt.date(2026, 3, 31), 12, Bucket.B1_30, Classification.SMA_0, None, 80_000),
        collector_id=collector,
        payments=entries,
    )


PAYMENTS = st.lists(st.tuples(st.integers(1, 30), st.integers(100, 40_000)), max_size=4)


@given(PAYMENTS, COLLECTORS)
def test_a_loan_never_reassigned_gives_its_collector_the_whole_month(paid: list[tuple[int, int]], who: str) -> None:
    figures = loan_figures(loan(who, paid), [], "2026-04", dt.date(2026, 4, 30))
    assert list(figures) == [who]
    assert figures[who]["loans"] == 1
    assert figures[who]["amount_due_paise"] == 160_000  # 800 carried in + 800 due 20 Apr
    assert figures[who]["cured"] + figures[who]["rolled_forward"] <= 1


@given(PAYMENTS, st.integers(2, 30))
def test_a_reassignment_splits_the_loan_between_holders(paid: list[tuple[int, int]], day: int) -> None:
    moves = [Reassignment("L", "0001", dt.date(2026, 4, day), "c1", "c2")]
    figures = loan_figures(loan("c2", paid), moves, "2026-04", dt.date(2026, 4, 30))
    assert set(figures) == {"c1", "c2"}
    assert figures["c1"]["loans"] == figures["c2"]["loans"] == 1
    assert figures["c2"]["amount_due_paise"] > 0


def test_a_written_off_loan_counts_nowhere() -> None:
    assert loan_figures(replace(loan("c1", []), status=LoanStatus.WRITTEN_OFF), [], "2026-04", APRIL[1]) == {}


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 50), st.integers(0, 50), st.integers(0, 100))
def test_score_is_0_to_100_and_monotone_in_collected(
    collected: int, due: int, cured: int, rolled: int, loans: int
) -> None:
    cured, rolled = min(cured, loans), min(rolled, loans)
    low = scoring.score(scoring.efficiency(collected, due), cured, rolled, loans)
    high = scoring.score(scoring.efficiency(collected + 1, due), cured, rolled, loans)
    assert 0 <= low <= high <= 100


def test_efficiency_rounds_half_up_to_four_places_and_handles_nothing_due() -> None:
    assert scoring.efficiency(600, 2_200) == Fraction(2727, 10_000)
    assert scoring.efficiency(1, 20_000) == Fraction(1, 10_000)  # 0.00005 rounds up
    assert scoring.efficiency(0, 0) == 0 and scoring.efficiency(5, 0) == 1


def test_the_worked_example_of_the_readme() -> None:
    assert scoring.score(Fraction(8, 10), 1, 1, 2) == 71
    assert scoring.score(Fraction(2727, 10_000), 0, 1, 2) == 27
    assert scoring.score(Fraction(0), 0, 0, 0) == 15


def test_months() -> None:
    assert scoring.months_to_score(dt.date(2026, 3, 1)) == ("2026-02", "2026-03")
    assert scoring.is_frozen_by("2026-02", dt.date(2026, 2, 28))
    assert not scoring.is_frozen_by("2026-02", dt.date(2026, 2, 27))
    assert scoring.parse_label(scoring.score_label("a@b", "2026-04")) == ("a@b", "2026-04")
