from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.money import format_inr, to_paise


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0", 0),
        ("0.5", 1),
        ("1.5", 2),
        ("2.5", 3),
        ("0.4999999999", 0),
        ("0.5000000001", 1),
        ("-0.5", -1),
        ("-2.5", -3),
        ("-0.4999999999", 0),
        ("-1.5000000001", -2),
        ("123456.49", 123456),
        ("123456.50", 123457),
        ("2.49999999999999999999999999999999999999999999999", 2),
    ],
)
def test_to_paise_rounds_half_up(amount: str, expected: int) -> None:
    assert to_paise(Decimal(amount)) == expected


def test_to_paise_does_not_depend_on_ambient_precision() -> None:
    with localcontext() as ctx:
        ctx.prec = 5
        assert to_paise(Decimal("12345678901234567890.5")) == 12345678901234567891


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity"])
def test_to_paise_refuses_non_finite(amount: str) -> None:
    with pytest.raises(ValueError):
        to_paise(Decimal(amount))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_to_paise_ties_go_away_from_zero(whole: int) -> None:
    half = Decimal("0.5")
    assert to_paise(Decimal(whole) + half) == (whole + 1 if whole >= 0 else whole)
    assert to_paise(-(Decimal(abs(whole)) + half)) == -(abs(whole) + 1)
    assert to_paise(Decimal(whole)) == whole


@pytest.mark.parametrize(
    ("paise", "expected"),
    [
        (0, "₹0.00"),
        (5, "₹0.05"),
        (99, "₹0.99"),
        (100, "₹1.00"),
        (99_999, "₹999.99"),
        (1_00_000, "₹1,000.00"),
        (12_345_678, "₹1,23,456.78"),
        (1_00_000_00, "₹1,00,000.00"),
        (99_99_999_99, "₹99,99,999.99"),
        (1_00_00_000_00, "₹1,00,00,000.00"),
        (12_34_56_789_01, "₹12,34,56,789.01"),
        (1_00_00_00_00_000_00, "₹1,00,00,00,00,000.00"),
        (-5, "-₹0.05"),
        (-12_345_678, "-₹1,23,456.78"),
    ],
)
def test_format_inr(paise: int, expected: str) -> None:
    assert format_inr(paise) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_format_inr_round_trips(paise: int) -> None:
    text = format_inr(paise)
    digits = text.removeprefix("-").removeprefix("₹")
    rupees, paisa = digits.split(".")
    groups = rupees.split(",")
    assert len(groups[-1]) <= 3
    assert all(len(group) == 2 for group in groups[1:-1])
    assert len(groups) == 1 or (len(groups[-1]) == 3 and 1 <= len(groups[0]) <= 2)
    value = int("".join(groups)) * 100 + int(paisa)
    assert (-value if text.startswith("-") else value) == paise
