"""Cost of the dashboard (docs/dashboard.md) on DynamoDB Local: one summary call at two book sizes, and
what the counters add to a payment.

For each book size (10,000 and 100,000 loans by default), on a fresh in-memory DynamoDB Local:

1. A book is generated fast (bench/reconciliation.py's ``LedgerBookBuilder``: loans whose paid amounts
   are the replay of their own ledgers, the bucket mix of bench/dpd.py, collector ``COL<n mod 500>``,
   branch ``BR<n mod 60>``) and written raw with ``BatchWriteItem``, with the counter items a recount
   of it gives (``domain.portfolio.recount``, spread over every shard). Nothing the dashboard or a
   payment reads is missing: the payments table is not seeded, since neither reads it.
2. Payments go through ``services().payments.post`` (the real service, one transaction each), one by
   one with the meter on: the write units per payment in total, on the ``aggregates`` table (the
   counters' share), and the requests it takes. Then (at the first size only) as many again from a
   few threads at once, on distinct loans, counting the transactions DynamoDB cancels
   (``TransactionConflict``: another payment held one of its counter shards; each one is a retry of
   the whole payment). After these, this month's collections exist for the scopes measured (more
   payments on their loans until every shard does).
3. ``services().dashboard.summary`` for the book, collector ``COL0000`` and branch ``BR000``: DynamoDB
   requests and read units of one call (they must be the same at both sizes: the bench says whether
   they are, with the ratio), then its latency, the median of 50 calls, next to the median of 50
   single ``GetItem``s of a loan (strongly consistent, raw botocore) interleaved with them: a ratio on
   this machine, not a claim about AWS.

Every DynamoDB request is metered (``bench.dynamo.DynamoMeter``: ``ReturnConsumedCapacity`` on every
call, so capacity figures are DynamoDB Local's own accounting), with two caveats the bench works
around: DynamoDB Local charges a ``BatchGetItem`` only for the items it finds, so the bench makes every
shard of the scopes it reads exist (a live book's state) and prints keys asked and items found next to
the read units; and it under-reports multi-item transactions (see :class:`Outcomes`), so a payment's
write units are also given per item written. Prints figures and ratios; there is no pass/fail.

    python -m bench.dashboard [--loans 10000] [--also 100000] [--payments 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import random
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.session import Session

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench import summary
from bench.dpd import _cpu_model
from bench.dynamo import READ_OPERATIONS, DynamoMeter, dynamodb_local, install_meter
from bench.floor import item_size
from bench.floor import units as write_units
from bench.reconciliation import ADMIN, LedgerBook, LedgerBookBuilder, seed
from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb.aggregates import SHARDS, collections_key
from chalicelib.adapters.dynamodb.models import AggregateModel
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.payment import PaymentMode
from chalicelib.domain.portfolio import (
    BOOK,
    MONTH_COUNT,
    MONTH_PAISE,
    CounterKind,
    Scope,
    ScopeKind,
    Summary,
    day_count,
    day_paise,
)
from chalicelib.services.payments import NewPayment
from local.dynamodb_local import jar as dynamodb_local_jar

COLLECTOR = Scope(ScopeKind.COLLECTOR, "COL0000")
BRANCH = Scope(ScopeKind.BRANCH, "BR000")
SCOPES = (BOOK, COLLECTOR, BRANCH)
CALLS = 50


# --- what the meter does not say: items found, and cancelled transactions -------------------------------


class Outcomes:
    """What the meter does not say, from a second botocore hook on every DynamoDB client: the items a
    ``BatchGetItem`` asked for and found; the reasons DynamoDB gave for each cancelled transaction; and
    the items each ``TransactWriteItems`` wrote, per table, with the write units each costs on AWS
    (2 per KB, rounded up per item). DynamoDB Local reports a transaction's units per table as the sum
    of the *distinct* per-item figures (three 1 KB puts: 2, not 6), so a payment's six counter updates
    show as 2 units; the items counted here give the real figure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = threading.local()
        self.items_found = 0
        self.keys_asked = 0
        self.cancelled: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        """Items written in transactions, by table (puts and updates)."""
        self.put_units: Counter[str] = Counter()
        """2 x ceil(KB) of every put, by table: the updates' sizes are not in the request."""
        self.checked = 0
        self.agreed = 0
        """Transactions' single-put tables whose units, from the item's size, equal Local's figure."""

    def before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "BatchGetItem":
            with self._lock:
                self.keys_asked += sum(len(t.get("Keys", ())) for t in params.get("RequestItems", {}).values())
        if model.name != "TransactWriteItems":
            return
        items: Counter[str] = Counter()
        units: Counter[str] = Counter()
        for entry in params.get("TransactItems", ()):
            for kind, body in entry.items():
                table = body["TableName"].split("-", 3)[-1]  # loan-crm-<stage>-<table>
                items[table] += 1
                if kind == "Put":
                    units[table] += 2 * write_units(item_size(body["Item"]))
        self._pending.written = (items, units)

    def after(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        with self._lock:
            if model.name == "BatchGetItem":
                self.items_found += sum(len(items) for items in (parsed.get("Responses") or {}).values())
            if parsed.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = {r.get("Code") for r in parsed.get("CancellationReasons") or []} - {None, "None"}
                for reason in reasons or {"(none given)"}:
                    self.cancelled[str(reason)] += 1
                return
            if model.name != "TransactWriteItems":
                return
            items, units = getattr(self._pending, "written", (Counter(), Counter()))
            self.items.update(items)
            self.put_units.update(units)
            reported = {
                str(c.get("TableName", "")).split("-", 3)[-1]: float(c.get("Table", {}).get("CapacityUnits", 0))
                for c in parsed.get("ConsumedCapacity") or []
            }
            for table, count in items.items():
                if count == 1 and units[table] and table in reported:
                    self.checked += 1
                    self.agreed += units[table] == reported[table]

    def reset(self) -> None:
        with self._lock:
            self.items_found = self.keys_asked = self.checked = self.agreed = 0
            self.cancelled.clear()
            self.items.clear()
            self.put_units.clear()


def install_outcomes(outcomes: Outcomes) -> None:
    original = Session.create_client

    def create_client(self: Session, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = original(self, service_name, *args, **kwargs)
        if service_name == "dynamodb":
            client.meta.events.register("provide-client-params.dynamodb.*", outcomes.before)
            client.meta.events.register("after-call.dynamodb.*", outcomes.after)
        return client

    Session.create_client = create_client  # type: ignore[method-assign]


# --- payments ---------------------------------------------------------------------------------------


@dataclass
class PaymentCost:
    payments: int
    wall: float
    requests: Counter[str]
    read_units: float
    write_units: float
    by_target: Counter[str]
    cancelled: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)
    put_units: Counter[str] = field(default_factory=Counter)
    checked: int = 0
    agreed: int = 0

    @property
    def local_counters_units(self) -> float:
        """The aggregates table's write units as DynamoDB Local reports them (under-counted)."""
        return self.by_target.get("W aggregates", 0.0)

    @property
    def counters_units(self) -> float:
        """2 per counter item updated: every counter item is under 1 KB (checked by the bench)."""
        return 2.0 * self.items["aggregates"]

    @property
    def index_units(self) -> float:
        return sum(units for target, units in self.by_target.items() if target.startswith("W ") and "/" in target)

    @property
    def total_units(self) -> float:
        """Every table's items at 2 units per KB (puts by their size, counter updates at 2), plus the
        indexes' units as Local reports them."""
        return sum(self.put_units.values()) + self.counters_units + self.index_units


def _pay(loan: Loan, utr: str) -> None:
    emi = loan.schedule[0].principal_paise + loan.schedule[0].interest_paise
    owed = sum(i.unpaid_paise for i in loan.schedule)
    command = NewPayment(loan.loan_id, utr, min(emi, owed), clock.today_ist(), PaymentMode.UPI)
    wiring.services().payments.post(ADMIN, command)


def post_payments(
    loans: list[Loan], prefix: str, threads: int, stage: str, meter: DynamoMeter, outcomes: Outcomes
) -> PaymentCost:
    """Each loan gets one payment dated today; with the meter reset first, so it counts these only."""
    meter.reset(f"loan-crm-{stage}-")
    outcomes.reset()
    started = time.perf_counter()
    jobs = [(loan, f"{prefix}{n:08d}") for n, loan in enumerate(loans)]
    if threads <= 1:
        for loan, utr in jobs:
            _pay(loan, utr)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda job: _pay(*job), jobs))
    wall = time.perf_counter() - started
    return PaymentCost(
        len(loans),
        wall,
        Counter(meter.requests),
        meter.read_units,
        meter.write_units,
        Counter(meter.by_target),
        Counter(outcomes.cancelled),
        Counter(outcomes.items),
        Counter(outcomes.put_units),
        outcomes.checked,
        outcomes.agreed,
    )


def fill_scopes(active: list[Loan], used: set[str], outcomes: Outcomes) -> int:
    """More payments on the measured scopes' loans until every shard of their counters and of this
    month's collections exists (a live book's state, some days into a month); how many it took."""
    added = 0
    for scope in SCOPES:
        candidates = [
            loan
            for loan in active
            if loan.loan_id not in used and (scope is BOOK or scope.name in (loan.collector_id, loan.branch))
        ]
        while True:
            outcomes.reset()
            wiring.services().dashboard.summary(ADMIN, **_filter(scope))
            if outcomes.items_found == outcomes.keys_asked or not candidates:
                break
            loan = candidates.pop()
            used.add(loan.loan_id)
            _pay(loan, f"BENCHFILL{added:06d}")
            added += 1
    return added


def largest_item(endpoint: str, table: str) -> int:
    client = boto3.client("dynamodb", endpoint_url=endpoint)
    largest = 0
    for page in client.get_paginator("scan").paginate(TableName=table):
        largest = max([largest, *(item_size(item) for item in page["Items"])])
    return largest


def collections_item_bytes(days: int, paise: int, count: int) -> int:
    """The size of a book collections item with ``days`` days' counters set (docs/dashboard.md says a
    counter item costs 2 write units in a transaction, i.e. stays under 1 KB)."""
    values = {MONTH_PAISE: paise * days, MONTH_COUNT: count * days}
    for day in range(1, days + 1):
        values[day_paise(day)] = paise
        values[day_count(day)] = count
    item = AggregateModel(
        collections_key(BOOK, "2026-12", 31),
        kind=CounterKind.COLLECTIONS.value,
        scope=BOOK.key,
        shard=31,
        month="2026-12",
        writes=count * days,
        **values,
    )
    return item_size(item.serialize())


def days_past_1kb(paise: int, count: int) -> int | None:
    """The first day of the month on which such an item passes 1 KB (4 write units per update)."""
    return next((d for d in range(1, 32) if collections_item_bytes(d, paise, count) > 1024), None)


# --- the dashboard ----------------------------------------------------------------------------------


def _filter(scope: Scope) -> dict[str, str]:
    if scope.kind is ScopeKind.COLLECTOR:
        return {"collector_id": scope.name}
    if scope.kind is ScopeKind.BRANCH:
        return {"branch": scope.name}
    return {}


@dataclass
class CallCost:
    requests: Counter[str]
    read_units: float
    keys_asked: int
    items_found: int
    summary: Summary
    median_ms: float = 0.0
    p95_ms: float = 0.0


def one_call(scope: Scope, stage: str, meter: DynamoMeter, outcomes: Outcomes) -> CallCost:
    meter.reset(f"loan-crm-{stage}-")
    outcomes.reset()
    summary = wiring.services().dashboard.summary(ADMIN, **_filter(scope))
    return CallCost(Counter(meter.requests), meter.read_units, outcomes.keys_asked, outcomes.items_found, summary)


def latencies(
    endpoint: str, stage: str, loan_ids: list[str], seed_: int
) -> tuple[dict[Scope, list[float]], list[float]]:
    """``CALLS`` rounds, each one summary per scope and one ``GetItem`` of a random loan, interleaved so
    that the machine's noise falls on all of them alike."""
    rng = random.Random(seed_)
    client = boto3.client("dynamodb", endpoint_url=endpoint)
    table = f"loan-crm-{stage}-loans"
    dashboard = wiring.services().dashboard
    timings: dict[Scope, list[float]] = {scope: [] for scope in SCOPES}
    gets: list[float] = []
    for _ in range(3):  # warm both paths (connections, first-call imports) before timing
        for scope in SCOPES:
            dashboard.summary(ADMIN, **_filter(scope))
        client.get_item(TableName=table, Key={"loan_id": {"S": rng.choice(loan_ids)}}, ConsistentRead=True)
    for _ in range(CALLS):
        for scope in SCOPES:
            started = time.perf_counter()
            dashboard.summary(ADMIN, **_filter(scope))
            timings[scope].append(time.perf_counter() - started)
        key = {"loan_id": {"S": rng.choice(loan_ids)}}
        started = time.perf_counter()
        client.get_item(TableName=table, Key=key, ConsistentRead=True)
        gets.append(time.perf_counter() - started)
    return timings, gets


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


# --- one book size ----------------------------------------------------------------------------------


@dataclass
class SizeResult:
    size: int
    build_seconds: float
    write_seconds: float
    items_written: int
    book: LedgerBook
    sequential: PaymentCost
    concurrent: PaymentCost | None
    """Measured at the first book size only (threads 0 at the others)."""
    filled: int
    calls: dict[Scope, CallCost]
    get_ms: float
    get_p95_ms: float
    checks: dict[str, bool]
    wall: float
    threads: int
    max_counter_bytes: int
    full_month_bytes: int


def measure_size(
    size: int, payments: int, threads: int, write_threads: int, seed_: int, meter: DynamoMeter, outcomes: Outcomes
) -> SizeResult:
    started = time.perf_counter()
    stage = f"dash{size}"
    with dynamodb_local() as server:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint
        os.environ["STAGE"] = stage
        wiring.reset()
        builder = LedgerBookBuilder(clock.last_completed_business_date(), seed_)
        seeded = seed(server.endpoint, stage, builder, size, write_threads, with_payments=False, check_every=100)
        book, write_seconds, items = seeded.book, seeded.seconds, seeded.items
        print(
            f"  generated {size:,} loans and wrote {items:,} items (loans and counters) in {write_seconds:.1f} s "
            f"(of which {book.build_seconds:.1f} s building loans)",
            flush=True,
        )
        rng = random.Random(seed_)
        active = [loan for loan in book.loans if loan.status is LoanStatus.ACTIVE]
        # A few on the measured collector's loans, so their collections get written too.
        own = [loan for loan in active if loan.collector_id == COLLECTOR.name]
        first = own[: payments // 20]
        rest = rng.sample([loan for loan in active if loan.collector_id != COLLECTOR.name], 2 * payments)
        chosen = first + rest[: payments - len(first)]
        others = rest[payments - len(first) : 2 * payments - len(first)] if threads > 0 else []
        with contextlib.redirect_stdout(io.StringIO()):  # EMF metric lines
            sequential = post_payments(chosen, "BENCHSEQ", 1, stage, meter, outcomes)
            concurrent = post_payments(others, "BENCHPAR", threads, stage, meter, outcomes) if others else None
            used = {loan.loan_id for loan in chosen + others}
            filled = fill_scopes(active, used, outcomes)
            calls = {scope: one_call(scope, stage, meter, outcomes) for scope in SCOPES}
            timings, gets = latencies(server.endpoint, stage, [loan.loan_id for loan in book.loans], seed_)
        max_counter_bytes = largest_item(server.endpoint, f"loan-crm-{stage}-aggregates")
        at_once = f", {len(others)} on {threads} threads {concurrent.wall:.1f} s" if concurrent else ""
        print(f"  payments: {payments} one by one {sequential.wall:.1f} s{at_once}; summaries timed", flush=True)
    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    for scope, values in timings.items():
        calls[scope].median_ms = statistics.median(values) * 1000
        calls[scope].p95_ms = _p95(values) * 1000
    posted = payments + len(others) + filled
    book_summary = calls[BOOK].summary
    checks = {
        "book loans_total == loans generated": book_summary.loans_total == size,
        "today's collections count == payments posted today": book_summary.collections_today_count == posted,
        "every key asked was found (all shards exist)": all(c.items_found == c.keys_asked for c in calls.values()),
        "no payment cancelled one by one": not sequential.cancelled,
    }
    return SizeResult(
        size,
        book.build_seconds,
        write_seconds,
        items,
        book,
        sequential,
        concurrent,
        filled,
        calls,
        statistics.median(gets) * 1000,
        _p95(gets) * 1000,
        checks,
        time.perf_counter() - started,
        threads,
        max_counter_bytes,
        collections_item_bytes(31, 9_999_999_999, 99_999),
    )


# --- report -----------------------------------------------------------------------------------------


def _scope_label(scope: Scope) -> str:
    return scope.key


def _ops(requests: Counter[str]) -> str:
    ordered = sorted(requests, key=lambda op: (op not in READ_OPERATIONS, op))
    return ", ".join(f"{op} {requests[op]}" for op in ordered)


def report(result: SizeResult) -> None:
    book = result.book
    print(f"\nbook of {result.size:,} loans (as of {book.as_of}); total for this size {result.wall:.0f} s")
    print(f"  loans by status: {dict(book.by_status)}; active by bucket: {dict(sorted(book.by_bucket.items()))}")
    print("  one summary call (services().dashboard.summary):")
    print(
        f"    {'scope':<18}{'shards':>7}{'requests':>9}{'keys':>6}{'found':>6}{'RRU':>6}"
        f"{'median ms':>11}{'p95 ms':>8}{'x GetItem':>11}"
    )
    for scope, call in result.calls.items():
        print(
            f"    {_scope_label(scope):<18}{SHARDS[scope.kind]:>7}{sum(call.requests.values()):>9}"
            f"{call.keys_asked:>6}{call.items_found:>6}{call.read_units:>6.1f}"
            f"{call.median_ms:>11.2f}{call.p95_ms:>8.2f}{call.median_ms / result.get_ms:>11.2f}"
            f"   ({_ops(call.requests)})"
        )
    blank = ""
    print(f"    {'GetItem of a loan':<18}{blank:>7}{1:>9}{blank:>18}{result.get_ms:>11.2f}{result.get_p95_ms:>8.2f}")
    print_payments(result)
    if result.filled:
        print(f"  + {result.filled} payments on the measured scopes' loans until every collections shard existed")
    print("  checks: " + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in result.checks.items()))


def print_payments(result: SizeResult) -> None:
    seq, par = result.sequential, result.concurrent
    n = seq.payments
    print(
        f"  payments one by one ({n}, services().payments.post): {seq.wall / n * 1000:.1f} ms each; "
        f"requests per payment {sum(seq.requests.values()) / n:.2f} ({_ops(seq.requests)}); "
        f"RRU per payment {seq.read_units / n:.2f}"
    )
    print(
        f"    write units per payment, as DynamoDB Local reports them: {seq.write_units / n:.2f}, "
        f"of which aggregates {seq.local_counters_units / n:.2f} ({seq.local_counters_units / seq.write_units:.0%})"
    )
    print(
        "    items written per payment: "
        + ", ".join(f"{table} {count / n:.2f}" for table, count in sorted(seq.items.items(), key=lambda kv: -kv[1]))
    )
    print(
        f"    Local's figure for a one-item table equals 2 x ceil(item KB) in {seq.agreed} of {seq.checked} cases; "
        f"largest counter item {result.max_counter_bytes:,} B (under 1 KB: "
        f"{'yes' if result.max_counter_bytes < 1024 else 'NO'})"
    )
    print(
        f"    write units per payment, per item (2 per KB): {seq.total_units / n:.2f}, of which the counters "
        f"{seq.counters_units / n:.2f} ({seq.counters_units / seq.total_units:.0%}); without them "
        f"{(seq.total_units - seq.counters_units) / n:.2f}"
    )
    print(f"      {'table / index':<30}{'Local WRU':>10}{'per item':>10}")
    tables = {target[2:] for target in seq.by_target if target.startswith("W ")}
    for table in sorted(tables, key=lambda t: -seq.by_target[f"W {t}"]):
        local = seq.by_target[f"W {table}"] / n
        if "/" in table:
            mine = local
        elif table == "aggregates":
            mine = seq.counters_units / n
        else:
            mine = seq.put_units[table] / n
        print(f"      {table:<30}{local:>10.2f}{mine:>10.2f}")
    if par is not None:
        cancelled = sum(par.cancelled.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(par.cancelled.items())) or "none"
        print(
            f"  payments concurrently ({par.payments} on distinct loans, {result.threads} threads): "
            f"{par.wall / par.payments * 1000:.1f} ms each (wall / payments); cancelled transactions (each one a "
            f"retry of the payment): {cancelled} ({cancelled / par.payments:.1%}); reasons: {reasons}"
        )
    print(
        f"  a book collections item with all 31 days set (10-digit paise, 5-digit counts): "
        f"{result.full_month_bytes:,} B, {2 * -(-result.full_month_bytes // 1024)} WRU per update in a transaction; "
        f"with 8-digit paise and 4-digit counts it passes 1 KB on day {days_past_1kb(99_999_999, 9_999)}, "
        f"with 6-digit paise and 2-digit counts on day {days_past_1kb(999_999, 99)}"
    )


def compare(small: SizeResult, large: SizeResult) -> None:
    factor = large.size / small.size
    print(f"\n{small.size:,} -> {large.size:,} loans (book x{factor:g}): one summary call, large / small")
    print(f"    {'scope':<18}{'requests':>14}{'ratio':>7}{'RRU':>14}{'ratio':>7}{'median ms':>18}{'ratio':>7}  equal?")
    for scope in SCOPES:
        a, b = small.calls[scope], large.calls[scope]
        ra, rb = sum(a.requests.values()), sum(b.requests.values())
        same = a.requests == b.requests and a.read_units == b.read_units
        print(
            f"    {_scope_label(scope):<18}{f'{ra} -> {rb}':>14}{rb / ra:>7.2f}"
            f"{f'{a.read_units:.0f} -> {b.read_units:.0f}':>14}{b.read_units / a.read_units:>7.2f}"
            f"{f'{a.median_ms:.2f} -> {b.median_ms:.2f}':>18}{b.median_ms / a.median_ms:>7.2f}"
            f"  {'yes: the same requests and read units' if same else 'NO'}"
        )
        summary.record(
            f"dashboard summary, {_scope_label(scope)}, {large.size:,} loans",
            f"{rb} requests, {b.read_units:.0f} read units, {b.median_ms:.1f} ms",
            b.read_units / a.read_units,
            f"read units at {small.size:,} loans",
        )
    print(
        f"    GetItem of a loan: {small.get_ms:.2f} -> {large.get_ms:.2f} ms "
        f"(ratio {large.get_ms / small.get_ms:.2f}; latency is this machine's, noisy)"
    )
    p, q = small.sequential, large.sequential
    print(
        f"    per payment (per item, 2 WRU per KB): counters {p.counters_units / p.payments:.2f} -> "
        f"{q.counters_units / q.payments:.2f} WRU, total {p.total_units / p.payments:.2f} -> "
        f"{q.total_units / q.payments:.2f} WRU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--loans", type=int, default=10_000, help="the small book")
    parser.add_argument("--also", type=int, default=100_000, help="a larger book to compare with (0: none)")
    parser.add_argument("--payments", type=int, default=200, help="payments one by one (and again concurrently)")
    parser.add_argument("--threads", type=int, default=4, help="threads for the concurrent payments (first size)")
    parser.add_argument("--write-threads", type=int, default=8, help="BatchWriteItem threads for the seed")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("loan-crm").setLevel(logging.WARNING)
    meter = DynamoMeter()
    install_meter(meter)
    outcomes = Outcomes()
    install_outcomes(outcomes)
    sizes = sorted({s for s in (args.loans, args.also) if s > 0})
    overall = time.perf_counter()
    results = []
    # The clock stands still for the whole bench: the books' dates, "today" and the payments agree.
    with clock.use_clock(clock.FixedClock(clock.now_ist())):
        for size in sizes:
            print(f"book of {size:,} loans ...", flush=True)
            threads = args.threads if size == sizes[0] else 0  # concurrent payments: once is enough
            results.append(measure_size(size, args.payments, threads, args.write_threads, args.seed, meter, outcomes))
    print(
        f"\nmachine: {_cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"DynamoDB Local {dynamodb_local_jar().parent.name}; capacity as DynamoDB Local reports it"
    )
    for result in results:
        report(result)
    if len(results) == 2:
        compare(results[0], results[1])
    print(f"\ntotal bench time {time.perf_counter() - overall:.0f} s (DynamoDB Local on this machine; not AWS)")


if __name__ == "__main__":
    main()
