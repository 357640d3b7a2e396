"""The one place that knows what time it is, and that business dates are IST.

Every time-dependent rule (date windows, token expiry, throttling windows, leases) asks this module,
so tests can freeze time with :func:`use_clock` and ``TZ`` on the host never matters.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
"""India has had a fixed +05:30 offset and no DST since 1945, so a fixed offset is exact and avoids
depending on the tz database being present in the Lambda image."""


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """An aware datetime for the current instant."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that stands still until moved; for tests and for replaying a business date."""

    def __init__(self, at: dt.datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at

    def now(self) -> dt.datetime:
        return self._at

    def advance(self, **delta: float) -> None:
        self._at = self._at + dt.timedelta(**delta)


_clock: Clock = SystemClock()


def now_ist() -> dt.datetime:
    """The current instant, expressed in IST."""
    return _clock.now().astimezone(IST)


def now_epoch() -> int:
    """Whole seconds since the epoch (for JWT claims and DynamoDB TTLs)."""
    return int(_clock.now().timestamp())


def now_iso() -> str:
    """ISO-8601 timestamp with the +05:30 offset, millisecond precision (sortable within IST)."""
    return now_ist().isoformat(timespec="milliseconds")


def today_ist() -> dt.date:
    """Today's IST calendar date: the date a payment made now is dated."""
    return now_ist().date()


def last_completed_business_date() -> dt.date:
    """Yesterday in IST: the latest date whose day-end has passed, which delinquency is shown for."""
    return today_ist() - dt.timedelta(days=1)


def month_of(day: dt.date) -> str:
    """``YYYY-MM`` of a date. Formatted by hand: ``strftime("%Y")`` does not zero-pad years before 1000
    on Linux, and a month key must always be seven characters."""
    return f"{day.year:04d}-{day.month:02d}"


def parse_month(text: str) -> dt.date:
    """The first day of a ``YYYY-MM`` month; ValueError for anything else (``2026-3``, ``2026-13``)."""
    if len(text) != 7 or text[4] != "-" or not (text[:4] + text[5:]).isascii() or not (text[:4] + text[5:]).isdigit():
        raise ValueError(f"not a month: {text!r}")
    return dt.date(int(text[:4]), int(text[5:]), 1)


def month_days(month: str) -> tuple[dt.date, dt.date]:
    """The first and last day of a month."""
    first = parse_month(month)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Swap the process clock for the duration of a block (tests, replays)."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield clock
    finally:
        _clock = previous
