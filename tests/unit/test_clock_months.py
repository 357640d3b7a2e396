"""Month keys (chalicelib/clock.py): every stored and published month is exactly ``YYYY-MM``, for any
date a request can name, and reading one back gives the same month."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import clock

MONTH = re.compile(r"^\d{4}-\d{2}$")


@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_a_month_key_is_seven_characters_and_reads_back(day: dt.date) -> None:
    key = clock.month_of(day)
    assert MONTH.match(key), key
    first, last = clock.month_days(key)
    assert first == day.replace(day=1)
    assert first <= day <= last
    assert last.month == day.month
    assert last == dt.date.max or (last + dt.timedelta(days=1)).day == 1


def test_early_years_are_zero_padded() -> None:
    # strftime("%Y") gives "1" for year 1 on Linux; a key like "1-01" broke the published pattern.
    assert clock.month_of(dt.date(1, 1, 5)) == "0001-01"
    assert clock.month_of(dt.date(999, 12, 31)) == "0999-12"


NOT_MONTHS = ["2026-3", "2026-13", "2026-00", "0000-01", "202603", "2026/03", "２０２６-03", "2026-0٣"]


@pytest.mark.parametrize("text", NOT_MONTHS)
def test_anything_but_a_real_month_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        clock.parse_month(text)
