from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import itertools
import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from chalicelib.domain.errors import InvalidSchedule
from chalicelib.domain.schedule import (
    Instalment,
    due_dates,
    emi_paise,
    generate_schedule,
    import_schedule,
    monthly_interest_paise,
    monthly_rate,
)

# --- an independent, exact reference: rational arithmetic, no Decimal, no code under test ---


def ref_round_half_up(value: Fraction) -> int:
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return -magnitude if value < 0 else magnitude


def ref_monthly_rate(annual_rate_bps: int) -> Fraction:
    return Fraction(annual_rate_bps, 10_000) / 12


def ref_emi(principal: int, annual_rate_bps: int, tenure: int) -> int:
    rate = ref_monthly_rate(annual_rate_bps)
    if rate == 0:
        return ref_round_half_up(Fraction(principal, tenure))
    growth = (1 + rate) ** tenure
    return ref_round_half_up(principal * rate * growth / (growth - 1))


def ref_schedule(principal: int, annual_rate_bps: int, tenure: int) -> list[tuple[int, int]] | None:
    """(principal, interest) per month, or None when some instalment would repay no principal."""
    rate = ref_monthly_rate(annual_rate_bps)
    emi = ref_emi(principal, annual_rate_bps, tenure)
    balance = principal
    rows = []
    for month in range(1, tenure + 1):
        interest = ref_round_half_up(balance * rate)
        part = balance if month == tenure else emi - interest
        if part <= 0 or (month < tenure and part >= balance):
            return None
        rows.append((part, interest))
        balance -= part
    return rows


def fields(exc: pytest.ExceptionInfo[InvalidSchedule]) -> set[str]:
    details: list[dict[str, Any]] = exc.value.details
    assert all(set(item) == {"field", "message"} and item["message"] for item in details)
    return {item["field"] for item in details}


DISBURSED = dt.date(2024, 1, 15)
FIRST_DUE = dt.date(2024, 2, 5)

# --- money maths ---


def test_known_emi_one_lakh_at_12_percent_for_12_months() -> None:
    # The brief quoted 888849 paise; the exact rational EMI is 888487.886... -> 888488 (₹8,884.88).
    assert ref_emi(1_00_000_00, 1200, 12) == 888_488
    assert emi_paise(1_00_000_00, 1200, 12) == 888_488


def test_known_schedule_one_lakh_at_12_percent_for_12_months() -> None:
    schedule = generate_schedule(1_00_000_00, 1200, 12, DISBURSED, FIRST_DUE)
    assert schedule[0] == Instalment(1, FIRST_DUE, 788_488, 100_000)
    assert sum(i.principal_paise for i in schedule) == 1_00_000_00
    assert [i.due_paise for i in schedule[:-1]] == [888_488] * 11
    assert schedule[-1] == Instalment(12, dt.date(2025, 1, 5), 879_688, 8_797)
    assert [(i.principal_paise, i.interest_paise) for i in schedule] == ref_schedule(1_00_000_00, 1200, 12)


def test_exact_half_paisa_ties_round_up() -> None:
    # 60000 paise at 1 bps: one month's interest is exactly 0.5 paise and the 1-month EMI 60000.5.
    assert monthly_interest_paise(60_000, 1) == 1
    assert emi_paise(60_000, 1, 1) == 60_001
    assert emi_paise(3, 0, 2) == 2


TIE_RATES = [bps for bps in range(1, 10_001) if 60_000 % bps == 0]


@settings(max_examples=200, deadline=None)
@given(
    balance=st.integers(min_value=0, max_value=10**13),
    annual_rate_bps=st.integers(min_value=0, max_value=10_000),
    odd=st.integers(min_value=0, max_value=10**6),
    tie_rate=st.sampled_from(TIE_RATES),
)
def test_monthly_interest_matches_exact_reference_including_ties(
    balance: int, annual_rate_bps: int, odd: int, tie_rate: int
) -> None:
    rate = ref_monthly_rate(annual_rate_bps)
    assert monthly_interest_paise(balance, annual_rate_bps) == ref_round_half_up(balance * rate)
    # balance * tie_rate / 120000 == odd + 1/2 exactly
    tie_balance = 60_000 * (2 * odd + 1) // tie_rate
    assert monthly_interest_paise(tie_balance, tie_rate) == odd + 1


def test_monthly_rate() -> None:
    assert monthly_rate(1200) == Decimal("0.01")
    assert monthly_rate(0) == 0
    assert 0 <= Fraction(1, 120) - Fraction(monthly_rate(1000)) < Fraction(1, 10**51)


def test_zero_rate_emi_is_principal_over_tenure() -> None:
    assert emi_paise(1_000_00, 0, 3) == 33_333
    assert emi_paise(1_000_01, 0, 2) == 50_001


@settings(max_examples=300, deadline=None)
@given(
    principal=st.integers(min_value=1, max_value=10**12),
    annual_rate_bps=st.integers(min_value=0, max_value=10_000),
    tenure=st.integers(min_value=1, max_value=600),
)
def test_emi_matches_exact_rational_reference(principal: int, annual_rate_bps: int, tenure: int) -> None:
    assert emi_paise(principal, annual_rate_bps, tenure) == ref_emi(principal, annual_rate_bps, tenure)


# --- generated schedules ---

rates = st.one_of(st.integers(min_value=0, max_value=3600), st.integers(min_value=0, max_value=10_000))


@settings(max_examples=300, deadline=None)
@given(
    principal=st.integers(min_value=1_00, max_value=5_00_00_000_00),
    annual_rate_bps=rates,
    tenure=st.integers(min_value=1, max_value=360),
    first_due=st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2090, 12, 31)),
    gap_days=st.integers(min_value=1, max_value=60),
)
def test_generated_schedule_properties(
    principal: int, annual_rate_bps: int, tenure: int, first_due: dt.date, gap_days: int
) -> None:
    disbursed = first_due - dt.timedelta(days=gap_days)
    expected = ref_schedule(principal, annual_rate_bps, tenure)
    try:
        schedule = generate_schedule(principal, annual_rate_bps, tenure, disbursed, first_due)
    except InvalidSchedule as exc:
        event("refused as degenerate")
        assert expected is None, "refused a schedule the reference can build"
        assert [d["field"] for d in exc.details] == ["tenure_months"]
        return
    assert expected is not None

    emi = emi_paise(principal, annual_rate_bps, tenure)
    assert emi == ref_emi(principal, annual_rate_bps, tenure)
    assert [(i.principal_paise, i.interest_paise) for i in schedule] == expected
    assert [i.seq for i in schedule] == list(range(1, tenure + 1))
    assert sum(i.principal_paise for i in schedule) == principal
    assert all(i.due_paise == emi for i in schedule[:-1])
    assert all(i.principal_paise > 0 and i.interest_paise >= 0 for i in schedule)
    assert all(i.paid_paise == 0 and not i.is_settled for i in schedule)

    balance = principal
    rate = ref_monthly_rate(annual_rate_bps)
    for instalment in schedule:
        assert instalment.interest_paise == ref_round_half_up(balance * rate)
        balance -= instalment.principal_paise
        assert balance >= 0
    assert balance == 0

    dates = [i.due_date for i in schedule]
    assert dates[0] == first_due > disbursed
    assert all(a < b for a, b in itertools.pairwise(dates))
    assert dates == due_dates(first_due, tenure)

    reimported = import_schedule(
        principal,
        disbursed,
        [(i.due_date, i.principal_paise, i.interest_paise) for i in schedule],
    )
    assert reimported == schedule


def test_tiny_principal_over_long_tenure_is_refused() -> None:
    with pytest.raises(InvalidSchedule) as exc:
        generate_schedule(1_00, 0, 360, DISBURSED, FIRST_DUE)
    assert fields(exc) == {"tenure_months"}
    # 100 paise over 150 months: EMI rounds up to 1 paisa and would repay everything by month 100.
    with pytest.raises(InvalidSchedule) as exc:
        generate_schedule(1_00, 0, 150, DISBURSED, FIRST_DUE)
    assert fields(exc) == {"tenure_months"}


def test_smallest_schedules() -> None:
    assert generate_schedule(1, 0, 1, DISBURSED, FIRST_DUE) == [Instalment(1, FIRST_DUE, 1, 0)]
    assert generate_schedule(1, 10_000, 1, DISBURSED, FIRST_DUE) == [Instalment(1, FIRST_DUE, 1, 0)]
    schedule = generate_schedule(5_00_00_000_00, 1200, 600, DISBURSED, FIRST_DUE)
    assert len(schedule) == 600
    assert sum(i.principal_paise for i in schedule) == 5_00_00_000_00


def test_high_rate_over_long_tenure_is_refused() -> None:
    # At 100% a year over 50 years the first month's principal part is about 1e-20 of the loan.
    with pytest.raises(InvalidSchedule) as exc:
        generate_schedule(5_00_00_000_00, 10_000, 600, DISBURSED, FIRST_DUE)
    assert fields(exc) == {"tenure_months"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"principal_paise": 0}, "principal_paise"),
        ({"principal_paise": -100}, "principal_paise"),
        ({"annual_rate_bps": -1}, "annual_rate_bps"),
        ({"annual_rate_bps": 10_001}, "annual_rate_bps"),
        ({"tenure_months": 0}, "tenure_months"),
        ({"tenure_months": 601}, "tenure_months"),
        ({"first_due_date": DISBURSED}, "first_due_date"),
        ({"first_due_date": DISBURSED - dt.timedelta(days=1)}, "first_due_date"),
        (
            {
                "first_due_date": dt.date(9999, 6, 1),
                "disbursement_date": dt.date(9999, 5, 1),
            },
            "first_due_date",
        ),
    ],
)
def test_generate_schedule_rejects_bad_terms(overrides: dict[str, Any], field: str) -> None:
    terms: dict[str, Any] = {
        "principal_paise": 1_00_000_00,
        "annual_rate_bps": 1800,
        "tenure_months": 24,
        "disbursement_date": DISBURSED,
        "first_due_date": FIRST_DUE,
    } | overrides
    with pytest.raises(InvalidSchedule) as exc:
        generate_schedule(**terms)
    assert exc.value.code == "INVALID_SCHEDULE"
    assert fields(exc) == {field}


def test_generate_schedule_reports_every_bad_term_at_once() -> None:
    with pytest.raises(InvalidSchedule) as exc:
        generate_schedule(0, -5, 0, DISBURSED, DISBURSED)
    assert fields(exc) == {
        "principal_paise",
        "annual_rate_bps",
        "tenure_months",
        "first_due_date",
    }


def test_generate_schedule_accepts_boundary_terms() -> None:
    next_day = DISBURSED + dt.timedelta(days=1)
    assert len(generate_schedule(1_00_000_00, 10_000, 12, DISBURSED, next_day)) == 12
    assert len(generate_schedule(1_00_000_00, 1200, 600, DISBURSED, next_day)) == 600
    assert len(generate_schedule(1_00_000_00, 0, 1, DISBURSED, FIRST_DUE)) == 1


# --- due dates ---


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (
            dt.date(2024, 1, 31),
            [
                dt.date(2024, 1, 31),
                dt.date(2024, 2, 29),
                dt.date(2024, 3, 31),
                dt.date(2024, 4, 30),
                dt.date(2024, 5, 31),
            ],
        ),
        (
            dt.date(2023, 1, 31),
            [dt.date(2023, 1, 31), dt.date(2023, 2, 28), dt.date(2023, 3, 31)],
        ),
        (
            dt.date(2024, 1, 30),
            [dt.date(2024, 1, 30), dt.date(2024, 2, 29), dt.date(2024, 3, 30)],
        ),
        (
            dt.date(2023, 1, 30),
            [dt.date(2023, 1, 30), dt.date(2023, 2, 28), dt.date(2023, 3, 30)],
        ),
        (
            dt.date(2024, 12, 31),
            [dt.date(2024, 12, 31), dt.date(2025, 1, 31), dt.date(2025, 2, 28)],
        ),
        (dt.date(2024, 1, 15), [dt.date(2024, 1, 15), dt.date(2024, 2, 15)]),
    ],
)
def test_due_dates_clamp_to_month_end_without_drifting(first: dt.date, expected: list[dt.date]) -> None:
    assert due_dates(first, len(expected)) == expected


def test_due_dates_from_29_february() -> None:
    dates = due_dates(dt.date(2024, 2, 29), 49)
    assert dates[1] == dt.date(2024, 3, 29)
    assert dates[12] == dt.date(2025, 2, 28)
    assert dates[13] == dt.date(2025, 3, 29)
    assert dates[48] == dt.date(2028, 2, 29)


def test_due_dates_count() -> None:
    assert due_dates(FIRST_DUE, 0) == []
    with pytest.raises(ValueError):
        due_dates(FIRST_DUE, -1)


@settings(max_examples=200, deadline=None)
@given(
    first=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2300, 12, 31)),
    count=st.integers(min_value=1, max_value=600),
)
def test_due_dates_are_monthly_and_anchored(first: dt.date, count: int) -> None:
    dates = due_dates(first, count)
    assert len(dates) == count
    assert dates[0] == first
    for offset, date in enumerate(dates):
        months = first.year * 12 + first.month - 1 + offset
        assert date.year * 12 + date.month - 1 == months
        assert date.day == min(first.day, calendar.monthrange(date.year, date.month)[1])
    assert all(a < b for a, b in itertools.pairwise(dates))


# --- imported schedules ---

ROWS = [
    (dt.date(2024, 2, 5), 40_000, 1_500),
    (dt.date(2024, 3, 5), 30_000, 1_000),
    (dt.date(2024, 4, 5), 0, 500),
    (dt.date(2024, 5, 5), 30_000, 250),
]


def test_import_schedule_passes_rows_through() -> None:
    schedule = import_schedule(1_00_000, DISBURSED, ROWS)
    assert schedule == [
        Instalment(seq, due, principal, interest) for seq, (due, principal, interest) in enumerate(ROWS, start=1)
    ]


def with_row(index: int, row: tuple[dt.date, int, int]) -> list[tuple[dt.date, int, int]]:
    rows = list(ROWS)
    rows[index] = row
    return rows


@pytest.mark.parametrize(
    ("principal", "rows", "expected_fields"),
    [
        (1_00_000, [], {"schedule"}),
        (
            1_00_000,
            [(FIRST_DUE + dt.timedelta(days=i), 1, 0) for i in range(601)],
            {"schedule"},
        ),
        (0, [(FIRST_DUE, 0, 100)], {"principal_paise"}),
        (
            1_00_000,
            [
                *with_row(1, (dt.date(2024, 3, 5), -10_000, 1_000)),
                (dt.date(2024, 6, 5), 40_000, 0),
            ],
            {"schedule[1].principal_paise"},
        ),
        (
            1_00_000,
            with_row(2, (dt.date(2024, 4, 5), 0, -1)),
            {"schedule[2].interest_paise"},
        ),
        (1_00_000, with_row(2, (dt.date(2024, 4, 5), 0, 0)), {"schedule[2]"}),
        (99_999, ROWS, {"schedule"}),
        (1_00_000, with_row(0, (DISBURSED, 40_000, 1_500)), {"schedule[0].due_date"}),
        (
            1_00_000,
            with_row(0, (DISBURSED - dt.timedelta(days=3), 40_000, 1_500)),
            {"schedule[0].due_date"},
        ),
        (
            1_00_000,
            with_row(3, (dt.date(2024, 4, 5), 30_000, 250)),
            {"schedule[3].due_date"},
        ),
        (
            1_00_000,
            with_row(2, (dt.date(2024, 3, 1), 0, 500)),
            {"schedule[2].due_date"},
        ),
        (
            1_00_001,
            [
                *with_row(1, (dt.date(2024, 3, 5), 30_000, -1)),
                (dt.date(2024, 1, 1), 1, 0),
            ],
            {"schedule[1].interest_paise", "schedule[4].due_date"},
        ),
    ],
)
def test_import_schedule_names_the_offending_field(
    principal: int, rows: list[tuple[dt.date, int, int]], expected_fields: set[str]
) -> None:
    with pytest.raises(InvalidSchedule) as exc:
        import_schedule(principal, DISBURSED, rows)
    assert exc.value.code == "INVALID_SCHEDULE"
    assert fields(exc) == expected_fields


def test_import_schedule_accepts_600_rows() -> None:
    rows = [(d, 1, 0) for d in due_dates(FIRST_DUE, 600)]
    assert [i.seq for i in import_schedule(600, DISBURSED, rows)] == list(range(1, 601))


# --- instalments ---


def test_instalment_amounts() -> None:
    instalment = Instalment(1, FIRST_DUE, 1_000, 200, paid_principal_paise=300, paid_interest_paise=200)
    assert (instalment.due_paise, instalment.paid_paise, instalment.unpaid_paise) == (
        1_200,
        500,
        700,
    )
    assert not instalment.is_settled
    assert dataclasses.replace(instalment, paid_principal_paise=1_000).is_settled
    with pytest.raises(dataclasses.FrozenInstanceError):
        instalment.paid_interest_paise = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    "amounts",
    [
        (-1, 0, 0, 0),
        (0, -1, 0, 0),
        (100, 10, 101, 0),
        (100, 10, 0, 11),
        (100, 10, -1, 0),
        (100, 10, 0, -1),
    ],
)
def test_instalment_refuses_impossible_amounts(
    amounts: tuple[int, int, int, int],
) -> None:
    with pytest.raises(ValueError):
        Instalment(1, FIRST_DUE, *amounts)


def test_with_paid_is_replace_of_the_paid_amounts() -> None:
    # with_paid builds the copy field by field for speed; a field added to Instalment must be carried.
    assert [f.name for f in dataclasses.fields(Instalment)] == [
        "seq",
        "due_date",
        "principal_paise",
        "interest_paise",
        "paid_principal_paise",
        "paid_interest_paise",
    ]
    inst = Instalment(3, dt.date(2026, 5, 5), 10_000, 2_500, 4_000, 2_500)
    assert inst.with_paid(7_000, 1_000) == dataclasses.replace(
        inst, paid_principal_paise=7_000, paid_interest_paise=1_000
    )
    with pytest.raises(ValueError):
        inst.with_paid(10_001, 0)  # still validated
