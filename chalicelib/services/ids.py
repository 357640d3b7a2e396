"""Identifiers that sort by creation time (ULID layout: 48-bit milliseconds + 80 random bits,
Crockford base32), so audit entries list newest-first straight from a DynamoDB range key."""

from __future__ import annotations

import datetime as dt
import os

from chalicelib import clock

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


_last = (0, 0)
"""(millis, random part) of the last id made in this process, to keep ids strictly increasing."""


def new_id() -> str:
    """A ULID. Within one process ids are strictly increasing even inside one millisecond (the random
    part is incremented), so two audit entries of one request never list out of order."""
    global _last
    millis = int(clock.now_ist().timestamp() * 1000)
    last_millis, last_random = _last
    # A clock stepping back by more than a second is a different time, not the same instant again
    # (and test clocks jump around): only then is the id allowed to go backwards.
    if last_millis - 1000 < millis <= last_millis and last_random < (1 << 80) - 1:
        millis, random_part = last_millis, last_random + 1
    else:
        random_part = int.from_bytes(os.urandom(10), "big")
    _last = (millis, random_part)
    return _base32((millis << 80) | random_part, 26)


def new_loan_id() -> str:
    return "LN" + new_id()


def _start_millis(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=clock.IST).timestamp() * 1000)


def id_range_for_days(from_day: str | None, to_day: str | None) -> tuple[str, str]:
    """Inclusive id bounds covering IST days ``from_day``..``to_day`` (either may be open): an audit
    date filter becomes a key range instead of a scan."""
    low, high = "0" * 26, "Z" * 26
    if from_day:
        low = _base32(_start_millis(dt.date.fromisoformat(from_day)), 10) + "0" * 16
    if to_day:
        end = _start_millis(dt.date.fromisoformat(to_day) + dt.timedelta(days=1)) - 1
        high = _base32(end, 10) + "Z" * 16
    return low, high
