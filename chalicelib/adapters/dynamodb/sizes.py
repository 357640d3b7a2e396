"""What an item weighs as DynamoDB counts it, from its wire form (attribute name -> ``{"S": ...}``).

DynamoDB's published rules: each attribute's name counts in UTF-8 bytes; a string is its UTF-8
bytes, a number about one byte per two significant digits plus one, a binary its bytes; a map or a
list adds three bytes and one per element. The bulk writes cut their transactions by it (DynamoDB
refuses a ``TransactWriteItems`` over 4 MB) and the benchmarks price write units with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pynamodb.models import Model

Item = Mapping[str, Any]
"""An item in DynamoDB's wire form: attribute name -> ``{"S": ...}`` and so on."""


def value_size(value: Mapping[str, Any]) -> int:
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(str(raw).encode())
    if kind == "N":
        significant = len(Decimal(str(raw)).normalize().as_tuple().digits)
        return math.ceil(significant / 2) + 1
    if kind == "B":
        return len(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in raw.items())
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in raw)
    if kind == "SS":
        return sum(len(s.encode()) for s in raw)
    if kind == "NS":
        return sum(value_size({"N": n}) for n in raw)
    if kind == "BS":
        return sum(len(b) for b in raw)
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: Item | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def model_size(item: Model) -> int:
    """:func:`item_size` of a PynamoDB item as it would be sent."""
    return item_size(item.serialize())
