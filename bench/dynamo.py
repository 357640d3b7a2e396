"""What the benchmarks share: a throwaway DynamoDB Local (``local.dynamodb_local``), and a meter for
every DynamoDB request and its consumed capacity (DynamoDB's own figures, asked for with ``ReturnConsumedCapacity``)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from botocore.session import Session

from bench.floor import WRITE_OPERATIONS, WritePricer
from local.dynamodb_local import Server, running

READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})


# --- metering ---------------------------------------------------------------------------------------


class DynamoMeter:
    """Every DynamoDB request any botocore client in this process makes, with its consumed capacity
    split into read and write units and by table / index (thread-safe: the job runs segments in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.read_units = 0.0
        self.write_units = 0.0
        self.by_target: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.prefix = ""
        self._started = threading.local()
        self.pricer: WritePricer | None = None
        """Set by a bench that prices writes from their items (``bench.floor``); None: not priced."""

    def start(self, **_: Any) -> None:
        self._started.at = time.perf_counter()

    def before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.input_shape is not None and "ReturnConsumedCapacity" in model.input_shape.members:
            params["ReturnConsumedCapacity"] = "INDEXES"
        if self.pricer is not None and model.name in WRITE_OPERATIONS:
            self.pricer.before(model.name, params)

    def after(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        consumed = parsed.get("ConsumedCapacity")
        entries = consumed if isinstance(consumed, list) else [consumed] if consumed else []
        read = model.name in READ_OPERATIONS
        elapsed = time.perf_counter() - getattr(self._started, "at", time.perf_counter())
        with self._lock:
            self.requests[model.name] += 1
            self.seconds[model.name] += elapsed
            for entry in entries:
                units = float(entry.get("CapacityUnits", 0))
                if read:
                    self.read_units += units
                else:
                    self.write_units += units
                table = str(entry.get("TableName", "?")).removeprefix(self.prefix)
                kind = "R" if read else "W"
                self.by_target[f"{kind} {table}"] += float(entry.get("Table", {}).get("CapacityUnits", units))
                for index, part in (entry.get("GlobalSecondaryIndexes") or {}).items():
                    self.by_target[f"{kind} {table}/{index}"] += float(part.get("CapacityUnits", 0))
        if self.pricer is not None and model.name in WRITE_OPERATIONS:
            # After the request's time is taken: the pricer's own reads are not the request's.
            self.pricer.after(succeeded=http_response.status_code == 200)

    def total_seconds(self) -> float:
        """Wall time spent inside DynamoDB requests since the last reset, all operations."""
        with self._lock:
            return sum(self.seconds.values())

    def reset(self, prefix: str) -> None:
        with self._lock:
            self.requests.clear()
            self.by_target.clear()
            self.seconds.clear()
            self.read_units = self.write_units = 0.0
            self.prefix = prefix


_create_client = Session.create_client
"""botocore's own, kept before :func:`install_meter` wraps it: :func:`unmetered_client` uses it."""


def unmetered_client(endpoint: str) -> Any:
    """A DynamoDB client the meter neither counts nor prices (the write pricer's reads)."""
    return _create_client(Session(), "dynamodb", endpoint_url=endpoint, region_name="ap-south-1")


def install_meter(meter: DynamoMeter) -> None:
    original = Session.create_client

    def create_client(self: Session, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = original(self, service_name, *args, **kwargs)
        if service_name == "dynamodb":
            client.meta.events.register("provide-client-params.dynamodb.*", meter.before)
            client.meta.events.register("before-call.dynamodb.*", meter.start)
            client.meta.events.register("after-call.dynamodb.*", meter.after)
        return client

    Session.create_client = create_client  # type: ignore[method-assign]


# --- DynamoDB Local ---------------------------------------------------------------------------------

# The benchmarks start theirs with the project's one launcher (a fresh in-memory server on a free port).
dynamodb_local = running
LocalServer = Server


class NoSsm:
    """Provisioning's SSM side, skipped: benchmarks replace or do without flags."""

    def put_parameter(self, **_: Any) -> None:
        return None
