"""Write units priced from the items themselves: what DynamoDB's published rules charge for a write, and
the floor those same item changes could cost at best (docs/architecture.md, "Index projections").

DynamoDB Local's own ``ConsumedCapacity`` is not a price list: inside a transaction it reports, per
table, only the distinct per-item figures (three 1 KB puts to one table show as 2 units, not 6), and
its index figures follow its own bookkeeping. So the benches that judge write cost read every item a
write touches, before and after (with a client the meter does not count), and price it themselves:

- **priced**: each item written, ``ceil(max(size before, size after) / 1 KB)`` units, doubled inside a
  ``TransactWriteItems``; plus each index entry the write creates, deletes or rewrites (an entry is
  rewritten when its key or any attribute it projects changes), at the entry's size.
- **floor**: the same items at the same sizes and transaction rate, plus only the index entries whose
  *key* appears, disappears or changes (a changed key is a delete and a put). An index that copies
  nothing but its keys costs exactly this; the gap between the two is what projections add.

Sizes follow DynamoDB's rules for item size (``chalicelib/adapters/dynamodb/sizes.py``, which the bulk
writes cut their transactions by). Refused writes (a failed condition, a cancelled transaction) are not
priced: AWS charges them, but the floor of a write that did not happen is not a useful figure.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from chalicelib.adapters.dynamodb.sizes import Item, item_size

KB = 1024
WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})


def units(size: int) -> int:
    """Write units for one item of ``size`` bytes: 1 per KB started, at least 1."""
    return max(1, math.ceil(size / KB))


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]
    """The index's own key attributes."""
    projected: frozenset[str] | None
    """Non-key attributes copied (None: all of them)."""


@dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[str, ...]
    indexes: tuple[Index, ...]

    def key_of(self, item: Item) -> dict[str, Any]:
        return {k: item[k] for k in self.keys}


def describe(client: Any, table_name: str) -> Table:
    described = client.describe_table(TableName=table_name)["Table"]
    indexes = []
    for gsi in described.get("GlobalSecondaryIndexes", []):
        projection = gsi["Projection"]
        kind = projection["ProjectionType"]
        projected = (
            None if kind == "ALL" else frozenset(projection.get("NonKeyAttributes", []) if kind == "INCLUDE" else [])
        )
        indexes.append(Index(gsi["IndexName"], tuple(k["AttributeName"] for k in gsi["KeySchema"]), projected))
    return Table(table_name, tuple(k["AttributeName"] for k in described["KeySchema"]), tuple(indexes))


def index_entry(table: Table, index: Index, item: Item | None) -> dict[str, Any] | None:
    """The entry ``item`` has in ``index`` (None if the item lacks one of the index's keys: sparse)."""
    if not item or any(k not in item for k in index.keys):
        return None
    names = set(table.keys) | set(index.keys)
    names |= set(item) if index.projected is None else index.projected & set(item)
    return {name: item[name] for name in names}


@dataclass
class Priced:
    """Priced and floor write units, by ``table`` and ``table/index``."""

    priced: Counter[str] = field(default_factory=Counter)
    floor: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)
    """Items written per table."""

    def add(self, table: Table, before: Item | None, after: Item | None, in_transaction: bool, prefix: str) -> None:
        name = table.name.removeprefix(prefix)
        cost = units(max(item_size(before), item_size(after))) * (2 if in_transaction else 1)
        self.priced[name] += cost
        self.floor[name] += cost
        self.items[name] += 1
        for index in table.indexes:
            old, new = index_entry(table, index, before), index_entry(table, index, after)
            target = f"{name}/{index.name}"
            old_key = old and {k: old[k] for k in index.keys}
            new_key = new and {k: new[k] for k in index.keys}
            if old_key != new_key:  # the entry moves, appears or goes: a delete and/or a put
                moved = (units(item_size(old)) if old else 0) + (units(item_size(new)) if new else 0)
                self.priced[target] += moved
                self.floor[target] += moved
            elif old != new:  # same key, a projected attribute changed: the entry is rewritten
                self.priced[target] += units(max(item_size(old), item_size(new)))

    def total(self, which: str) -> float:
        return float(sum((self.priced if which == "priced" else self.floor).values()))

    def clear(self) -> None:
        self.priced.clear()
        self.floor.clear()
        self.items.clear()


class WritePricer:
    """Hooks a metered process's DynamoDB writes (``bench.dynamo.DynamoMeter`` calls it) and prices each
    successful one from the items it touched, read before and after with ``shadow``, a client whose
    requests are not metered. Costs two extra reads per item written, so a bench prices a run of its
    own rather than one it times."""

    def __init__(self, shadow: Any, prefix: str) -> None:
        self.shadow = shadow
        self.prefix = prefix
        self.result = Priced()
        self._tables: dict[str, Table] = {}
        self._pending = threading.local()
        self._lock = threading.Lock()

    def table(self, name: str) -> Table:
        with self._lock:
            if name not in self._tables:
                self._tables[name] = describe(self.shadow, name)
            return self._tables[name]

    def _read(self, table: Table, key: Mapping[str, Any]) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.shadow.get_item(
            TableName=table.name, Key=dict(key), ConsistentRead=True
        ).get("Item")
        return found

    def _targets(self, operation: str, params: Mapping[str, Any]) -> list[tuple[Table, dict[str, Any], Any, bool]]:
        """(table, key, the item a put writes or None, whether in a transaction) for each item written."""
        if operation == "PutItem":
            table = self.table(params["TableName"])
            return [(table, table.key_of(params["Item"]), params["Item"], False)]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(self.table(params["TableName"]), dict(params["Key"]), None, False)]
        if operation == "BatchWriteItem":
            found = []
            for name, requests in params["RequestItems"].items():
                table = self.table(name)
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        found.append((table, table.key_of(item), item, False))
                    else:
                        found.append((table, dict(request["DeleteRequest"]["Key"]), None, False))
            return found
        found = []
        for entry in params["TransactItems"]:
            ((kind, body),) = entry.items()
            if kind == "ConditionCheck":
                continue
            table = self.table(body["TableName"])
            if kind == "Put":
                found.append((table, table.key_of(body["Item"]), body["Item"], True))
            else:
                found.append((table, dict(body["Key"]), None, True))
        return found

    def before(self, operation: str, params: Mapping[str, Any]) -> None:
        targets = self._targets(operation, params)
        self._pending.writes = [
            (table, key, put, in_tx, self._read(table, key), operation == "DeleteItem" or _deletes(params, key))
            for table, key, put, in_tx in targets
        ]

    def after(self, succeeded: bool) -> None:
        writes = getattr(self._pending, "writes", [])
        self._pending.writes = []
        if not succeeded:
            return
        priced = []
        for table, key, put, in_tx, before, deleted in writes:
            after = None if deleted else (put if put is not None else self._read(table, key))
            priced.append((table, before, after, in_tx))
        with self._lock:
            for table, before, after, in_tx in priced:
                self.result.add(table, before, after, in_tx, self.prefix)

    @contextmanager
    def fresh(self) -> Iterator[Priced]:
        with self._lock:
            self.result = Priced()
        yield self.result


def _deletes(params: Mapping[str, Any], key: Mapping[str, Any]) -> bool:
    """Whether the transaction or batch entry for ``key`` deletes its item."""
    for entry in params.get("TransactItems", []):
        if "Delete" in entry and dict(entry["Delete"]["Key"]) == dict(key):
            return True
    for requests in params.get("RequestItems", {}).values():
        for request in requests:
            if "DeleteRequest" in request and dict(request["DeleteRequest"]["Key"]) == dict(key):
                return True
    return False
