"""Typed PynamoDB attributes.

Paise must come back as ``int``: PynamoDB's NumberAttribute round-trips through JSON and a float can
slip in, so money uses :class:`IntegerAttribute`, which refuses anything that is not an exact integer.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from pynamodb.attributes import Attribute
from pynamodb.constants import NUMBER, STRING

from chalicelib.domain.allocation import Allocation, AllocationLine
from chalicelib.domain.ledger import LedgerEntry
from chalicelib.domain.schedule import Instalment


class IntegerAttribute(Attribute[int]):
    attr_type = NUMBER

    def serialize(self, value: int) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"integer expected, got {type(value).__name__}")
        return str(value)

    def deserialize(self, value: str) -> int:
        return int(value)


class DateAttribute(Attribute[dt.date]):
    """An IST business date stored as ``YYYY-MM-DD`` so it sorts and reads naturally."""

    attr_type = STRING

    def serialize(self, value: dt.date) -> str:
        return value.isoformat()

    def deserialize(self, value: str) -> dt.date:
        return dt.date.fromisoformat(value)


class ScheduleAttribute(Attribute[list[Instalment]]):
    """The schedule as one compact JSON string of rows ``[due, principal, interest, paid_p, paid_i]``.

    A list of DynamoDB maps repeats every attribute name in every row; this is about a third of the
    size, and item size is what every read and write of a loan pays for (capacity units are per KB).
    """

    attr_type = STRING

    def serialize(self, value: list[Instalment]) -> str:
        rows = [
            [i.due_date.isoformat(), i.principal_paise, i.interest_paise, i.paid_principal_paise, i.paid_interest_paise]
            for i in value
        ]
        return json.dumps(rows, separators=(",", ":"))

    def deserialize(self, value: str) -> list[Instalment]:
        rows: list[list[Any]] = json.loads(value)
        return [
            Instalment(
                seq=n,
                due_date=dt.date.fromisoformat(r[0]),
                principal_paise=int(r[1]),
                interest_paise=int(r[2]),
                paid_principal_paise=int(r[3]),
                paid_interest_paise=int(r[4]),
            )
            for n, r in enumerate(rows, start=1)
        ]


class AllocationAttribute(Attribute[Allocation]):
    """A payment's allocation as compact JSON rows ``[seq, interest, principal]``."""

    attr_type = STRING

    def serialize(self, value: Allocation) -> str:
        rows = [[line.seq, line.interest_paise, line.principal_paise] for line in value.lines]
        return json.dumps(rows, separators=(",", ":"))

    def deserialize(self, value: str) -> Allocation:
        return Allocation(tuple(AllocationLine(int(r[0]), int(r[1]), int(r[2])) for r in json.loads(value)))


class LedgerAttribute(Attribute[list[LedgerEntry]]):
    """A loan's standing payments as compact JSON rows ``[payment_id, payment_date, landed_on, amount]``:
    about 60 bytes a payment, read with the loan at no extra request."""

    attr_type = STRING

    def serialize(self, value: list[LedgerEntry]) -> str:
        rows = [[e.payment_id, e.payment_date.isoformat(), e.landed_on.isoformat(), e.amount_paise] for e in value]
        return json.dumps(rows, separators=(",", ":"))

    def deserialize(self, value: str) -> list[LedgerEntry]:
        return [
            LedgerEntry(str(r[0]), dt.date.fromisoformat(r[1]), dt.date.fromisoformat(r[2]), int(r[3]))
            for r in json.loads(value)
        ]


class JsonAttribute(Attribute[Any]):
    """Free-form JSON (audit before/after). Stored as a string so integers stay integers.

    Whatever is stored must read back as JSON every client can parse, so NaN and Infinity are never
    written as such (they are not JSON): such a value is stored with each non-finite number spelled
    as a string. Reading never fails either: a stored text that is not JSON (written before this rule,
    or by hand) comes back as that text, and NaN or Infinity inside it as strings.
    """

    attr_type = STRING

    def serialize(self, value: Any) -> str:
        try:
            return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str, allow_nan=False)
        except ValueError:
            return json.dumps(_finite(value), separators=(",", ":"), sort_keys=True, default=str, allow_nan=False)

    def deserialize(self, value: str) -> Any:
        try:
            return json.loads(value, parse_constant=str)
        except (ValueError, RecursionError):
            return value


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by its name ("nan", "inf", "-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
