"""Money as integer paise.

Every amount in the system is an ``int`` number of paise. Interest maths may pass through
``decimal.Decimal``, but a Decimal becomes paise at exactly one place, :func:`to_paise`, with one
explicit rounding mode (half-up, as Indian lenders and borrowers expect: 0.5 paisa rounds away
from zero). No float ever touches money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

Paise = int
"""An amount in paise (1 rupee = 100 paise); a plain ``int`` so JSON and DynamoDB keep it exact."""


def to_paise(amount: Decimal) -> int:
    """Round a Decimal amount of paise to whole paise, half-up (ties away from zero).

    This is the codebase's single rounding point, so a rounding rule can never differ between
    schedule generation, allocation and reporting. ``to_integral_value`` is used rather than
    ``quantize`` because it is not bounded by the ambient context's precision: callers may hand in
    a 50-digit intermediate without preparing a context.
    """
    if not amount.is_finite():
        raise ValueError(f"cannot convert {amount} to paise")
    return int(amount.to_integral_value(rounding=ROUND_HALF_UP))


def format_inr(paise: int) -> str:
    """Render paise as rupees with Indian digit grouping (lakh, crore), e.g. ``₹1,23,456.78``.

    Collectors and borrowers read amounts in the Indian system; Western 3-digit grouping
    (``₹123,456.78``) is easy to misread by a factor of ten in a call.
    """
    sign = "-" if paise < 0 else ""
    rupees, paisa = divmod(abs(paise), 100)
    digits = str(rupees)
    head, tail = digits[:-3], digits[-3:]
    groups: list[str] = []
    while head:
        groups.insert(0, head[-2:])
        head = head[:-2]
    groups.append(tail)
    return f"{sign}₹{','.join(groups)}.{paisa:02d}"
