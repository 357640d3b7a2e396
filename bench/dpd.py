"""Cost of the day-end DPD job (docs/day-end.md) on DynamoDB Local: the watch-index run against the full scan.

For each book size, on a fresh in-memory DynamoDB Local:

1. A realistic book is generated fast: domain ``Loan``s (schedules from ``generate_schedule``,
   delinquency from ``initial_delinquency`` as of the day before the run date, ``watch_key`` set by
   ``mapping.loan_to_item`` itself) written with ``BatchWriteItem`` (25 a request, several threads)
   into two identical stages, one per mode. Generation time is printed apart from the measurements.
2. The previous business date's run record is written directly as COMPLETED (the book stands as that
   run left it), so the measured run is a typical daily run and takes the watch mode.
3. The real job, ``wiring.services().dpd_job.run(...)``, runs the business date once per stage: the
   watch mode in one, ``full_scan=True`` in the other. Only the flags are replaced (all on: there is
   no SSM here, so the runs queue borrower reminders too; ``bench.reminders`` measures their share)
   and the clock is fixed at 00:30 IST the next day.

Every DynamoDB request of the process is counted by a botocore hook that also asks for
``ReturnConsumedCapacity=INDEXES``, so capacity figures are DynamoDB Local's own, split by table and
index. Local is not AWS: its latencies and CPU are this machine's, and see docs/dpd-at-scale.md for
how the figures carry over. Prints figures and ratios; there is no pass/fail.

    python -m bench.dpd [--loans 100000] [--also 10000] [--date 2026-11-05] [--bounce 0.25]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench import summary
from bench.dynamo import (
    READ_OPERATIONS,
    DynamoMeter,
    LocalServer,
    NoSsm,
    dynamodb_local,
    install_meter,
    unmetered_client,
)
from bench.floor import Priced, WritePricer, item_size
from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb.mapping import loan_to_item
from chalicelib.domain.flags import FlagName, FlagSource, FlagValue
from chalicelib.domain.loan import (
    ESCALATION_DPD,
    Borrower,
    Loan,
    LoanStatus,
    initial_delinquency,
    reassess,
    watch_date,
)
from chalicelib.domain.schedule import Instalment, generate_schedule
from chalicelib.services.day_end import PAGE_WORKERS, SEGMENT_WORKERS
from infra.provision import provision
from local.dynamodb_local import jar as dynamodb_local_jar

PRINCIPALS_PAISE = (50_000_00, 1_00_000_00, 2_50_000_00, 5_00_000_00, 10_00_000_00)
RATES_BPS = (1400, 1800, 2400)
TENURES = (12, 24, 36, 48, 60)
MIX = (("CURRENT", 0.80), ("1-30", 0.08), ("31-60", 0.05), ("61-90", 0.03), ("90+", 0.04))
"""Share of the book by bucket the day before the run; dpd is uniform inside each overdue bucket."""
DPD_RANGE = {"1-30": (1, 30), "31-60": (31, 60), "61-90": (61, 90), "90+": (91, 360)}
PARTIAL_SHARE = 0.25
"""Overdue loans whose oldest instalment has its interest paid (partly paid is still unpaid)."""


class AllOn:
    """Every flag on, as the defaults are (there is no SSM here); ``off`` names the ones to turn off."""

    def __init__(self, *off: FlagName) -> None:
        self.off = frozenset(off)

    def read(self, name: FlagName, fresh: bool = False) -> FlagValue:
        return FlagValue(name, name not in self.off, FlagSource.DEFAULT)

    def all(self) -> list[FlagValue]:
        return [self.read(name) for name in FlagName]


# --- the book ---------------------------------------------------------------------------------------


def _month(year: int, month: int, offset: int) -> tuple[int, int]:
    y, m0 = divmod(month - 1 + offset, 12)
    return year + y, m0 + 1


def _due(year: int, month: int, day: int) -> dt.date:
    """The monthly due date on nominal ``day``, clamped to a shorter month's end (as schedules are)."""
    last = (dt.date(*_month(year, month, 1), 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day, last))


def bench_borrower(n: int) -> Borrower:
    """The n-th bench borrower: distinct, realistic-looking contact data (every bench book uses these)."""
    return Borrower(
        name=f"Borrower {n:07d} Kumar",
        phone=f"98{n % 100_000_000:08d}",
        email=f"borrower{n}@example.in",
        address=f"{n % 400 + 1}, Main Road, Ward {n % 97}, Pune 4110{n % 90:02d}",
    )


@dataclass
class Book:
    size: int
    run_date: dt.date
    items: list[dict[str, Any]]
    build_seconds: float
    by_bucket: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    """Transitions the run for ``run_date`` must make, worked out here with the domain rules alone."""
    watched_on_run_date: int = 0
    indexed: int = 0
    """Loans with a watch_key, i.e. entries in the watch index (ALL projection: full copies)."""
    mean_item_bytes: float = 0.0


class BookBuilder:
    """Loans as they stand after a completed run for ``run_date - 1`` (every figure as of that date)."""

    def __init__(self, run_date: dt.date, bounce: float, seed: int, held: int | None = None) -> None:
        self.held = held
        """Loans from this one on are current and paid on time (none changes tonight): a larger book then
        has the same delinquent loans and the same changes as the first ``held`` (None: the mix throughout)."""
        self.run_date = run_date
        self.as_of = run_date - dt.timedelta(days=1)
        self.bounce = bounce
        self.rng = random.Random(seed)
        self._amounts: dict[tuple[int, int, int], list[tuple[int, int]]] = {}

    def amounts(self, principal: int, rate: int, tenure: int) -> list[tuple[int, int]]:
        """(principal, interest) per instalment: the real generator, once per set of terms."""
        key = (principal, rate, tenure)
        if key not in self._amounts:
            schedule = generate_schedule(principal, rate, tenure, dt.date(2020, 1, 1), dt.date(2020, 2, 1))
            self._amounts[key] = [(i.principal_paise, i.interest_paise) for i in schedule]
        return self._amounts[key]

    def _schedule(
        self, terms: tuple[int, int, int], anchor: dt.date, first_offset: int, paid: int, partial: bool
    ) -> tuple[Instalment, ...]:
        """Monthly instalments on ``anchor``'s day of month, the first one ``first_offset`` months from
        ``anchor``'s month (negative: before it); the first ``paid`` fully paid, and the interest of the
        next one too if ``partial`` (partly paid is still unpaid)."""
        rows = []
        for seq, (principal, interest) in enumerate(self.amounts(*terms), start=1):
            due = _due(*_month(anchor.year, anchor.month, first_offset + seq - 1), anchor.day)
            if seq <= paid:
                rows.append(Instalment(seq, due, principal, interest, principal, interest))
            elif seq == paid + 1 and partial:
                rows.append(Instalment(seq, due, principal, interest, 0, interest))
            else:
                rows.append(Instalment(seq, due, principal, interest))
        return tuple(rows)

    def loan(self, n: int) -> tuple[str, Loan]:
        rng = self.rng
        roll, bucket = rng.random(), MIX[-1][0]
        for name, share in MIX:
            if roll < share:
                bucket = name
                break
            roll -= share
        on_time = self.held is not None and n >= self.held
        if on_time:
            bucket = "CURRENT"
        principal, rate = rng.choice(PRINCIPALS_PAISE), rng.choice(RATES_BPS)
        escalated_on = None
        if bucket == "CURRENT":
            tenure = rng.choice(TENURES)
            due_day = rng.randint(1, 28)
            # The first due date after as_of on this day; the instalments before it are all paid.
            year, month = self.as_of.year, self.as_of.month
            if due_day <= self.as_of.day:
                year, month = _month(year, month, 1)
            next_due = dt.date(year, month, due_day)
            paid_before = rng.randint(0, tenure - 2)
            paid = paid_before
            if next_due == self.run_date and (rng.random() >= self.bounce or on_time):
                paid += 1  # paid on its due date (NACH went through): only the bounced ones change tonight
            schedule = self._schedule((principal, rate, tenure), next_due, -paid_before, paid, False)
        else:
            low, high = DPD_RANGE[bucket]
            dpd = rng.randint(low, high)
            oldest = self.as_of - dt.timedelta(days=dpd - 1)
            unpaid_due = sum(
                1 for t in range(0, 16) if _due(*_month(oldest.year, oldest.month, t), oldest.day) <= self.as_of
            )
            tenure = rng.choice([t for t in TENURES if t > unpaid_due])
            paid = rng.randint(0, tenure - unpaid_due - 1)
            schedule = self._schedule((principal, rate, tenure), oldest, -paid, paid, rng.random() < PARTIAL_SHARE)
            if dpd >= ESCALATION_DPD:
                escalated_on = oldest + dt.timedelta(days=ESCALATION_DPD - 1)
        loan_id = f"LN{n:09d}"
        stamp = f"{schedule[0].due_date - dt.timedelta(days=30)}T10:00:00.000+05:30"
        loan = Loan(
            loan_id=loan_id,
            borrower=bench_borrower(n),
            status=LoanStatus.ACTIVE,
            principal_paise=principal,
            disbursement_date=schedule[0].due_date - dt.timedelta(days=30),
            schedule=schedule,
            delinquency=initial_delinquency(schedule, self.as_of),
            annual_rate_bps=rate,
            collector_id=f"COL{n % 500:04d}",
            branch=f"BR{n % 60:03d}",
            legal_escalated=escalated_on is not None,
            legal_escalated_on=escalated_on,
            created_at=stamp,
            updated_at=stamp,
            version=1,
        )
        return bucket, loan

    def build(self, size: int) -> Book:
        started = time.perf_counter()
        items: list[dict[str, Any]] = []
        book = Book(size, self.run_date, items, 0.0)
        total_bytes = 0
        for n in range(size):
            bucket, loan = self.loan(n)
            item = loan_to_item(loan)  # sets watch_key exactly as every other write of a loan does
            serialized = item.serialize()
            items.append(serialized)
            total_bytes += item_size(serialized)
            book.by_bucket[bucket] += 1
            book.indexed += item.watch_key is not None
            if watch_date(loan) == self.run_date:
                book.watched_on_run_date += 1
                assert item.watch_key is not None and item.watch_key.startswith(self.run_date.isoformat())
            before, after = loan.delinquency, reassess(loan, self.run_date).delinquency
            if (before.bucket, before.classification, before.npa_since) != (
                after.bucket,
                after.classification,
                after.npa_since,
            ):
                book.expected[f"{before.classification} -> {after.classification}"] += 1
            if after.dpd >= ESCALATION_DPD and not loan.legal_escalated:
                book.expected["escalation"] += 1
        book.build_seconds = time.perf_counter() - started
        book.mean_item_bytes = total_bytes / max(1, size)
        return book


def write_items(endpoint: str, table: str, items: list[dict[str, Any]], threads: int) -> None:
    client = boto3.client(
        "dynamodb", endpoint_url=endpoint, config=Config(max_pool_connections=threads, retries={"max_attempts": 10})
    )

    def put(start: int) -> None:
        request: dict[str, Any] = {table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, range(0, len(items), 25)))


def seed_previous_run(endpoint: str, stage: str, previous: dt.date) -> None:
    """The run for the day before, as a COMPLETED record written directly (the book already stands as
    that run left it), so the measured run continues from it in watch mode."""
    stamp = f"{previous + dt.timedelta(days=1)}T00:30:00.000+05:30"
    boto3.client("dynamodb", endpoint_url=endpoint).put_item(
        TableName=f"loan-crm-{stage}-dpd-runs",
        Item={
            "business_date": {"S": previous.isoformat()},
            "status": {"S": "COMPLETED"},
            "trigger": {"S": "bench-seed"},
            "run_id": {"S": "bench-seed"},
            "lease_until": {"N": "0"},
            "started_at": {"S": stamp},
            "finished_at": {"S": stamp},
            "mode": {"S": "watch"},
            "errors": {"N": "0"},
        },
    )


# --- measuring --------------------------------------------------------------------------------------


@dataclass
class Measurement:
    mode: str
    outcome: str
    wall: float
    python_cpu: float
    local_cpu: float
    requests: Counter[str]
    seconds: Counter[str]
    """Client-side time per operation (request sent to response parsed), summed over threads."""
    read_units: float
    write_units: float
    by_target: Counter[str]
    scanned: int
    updated: int
    escalated: int
    pending: int
    segments: int
    largest_segment: int


def run_day_end(
    server: LocalServer,
    stage: str,
    run_date: dt.date,
    full_scan: bool,
    meter: DynamoMeter,
    workers: int | None,
    flags: AllOn | None = None,
    page_workers: int | None = None,
) -> Measurement:
    """One metered day-end run for ``run_date`` in ``stage``, made at 00:30 IST the next day."""
    os.environ["STAGE"] = stage
    wiring.reset()
    job = wiring.services().dpd_job
    job.flags = flags or AllOn()
    wiring.services().reminders.flags = job.flags  # the sender the completed run calls reads them too
    if workers:
        job.workers = workers
    if page_workers:
        job.page_workers = page_workers
    midnight = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(0, 30), tzinfo=clock.IST)
    # EMF metric lines go to stdout; keep them out of the report.
    with clock.use_clock(clock.FixedClock(midnight)), contextlib.redirect_stdout(io.StringIO()):
        meter.reset(f"loan-crm-{stage}-")
        cpu, local_cpu, started = time.process_time(), server.cpu_seconds(), time.perf_counter()
        result = job.run(run_date, "bench", full_scan=full_scan)
        wall = time.perf_counter() - started
        cpu, local_cpu = time.process_time() - cpu, server.cpu_seconds() - local_cpu
    record = result.record
    assert record is not None, result
    return Measurement(
        mode=record.mode or "?",
        outcome=result.outcome.value,
        wall=wall,
        python_cpu=cpu,
        local_cpu=local_cpu,
        requests=Counter(meter.requests),
        seconds=Counter(meter.seconds),
        read_units=meter.read_units,
        write_units=meter.write_units,
        by_target=Counter(meter.by_target),
        scanned=record.loans_scanned,
        updated=record.loans_updated,
        escalated=record.escalated,
        pending=record.pending_escalation,
        segments=len(record.segments),
        largest_segment=max((s.scanned for s in record.segments.values()), default=0),
    )


@dataclass
class SizeResult:
    book: Book
    write_seconds: float
    watch: Measurement
    scan: Measurement
    priced: Priced
    """The watch run once more, on a third copy of the book, its writes priced from their items
    (``bench.floor``): the pricer's reads would distort the timed runs' figures."""
    priced_updated: int


def measure_size(
    size: int,
    run_date: dt.date,
    bounce: float,
    threads: int,
    seed: int,
    meter: DynamoMeter,
    workers: int | None,
    held: int | None = None,
    flags: AllOn | None = None,
    page_workers: int | None = None,
) -> SizeResult:
    book = BookBuilder(run_date, bounce, seed, held).build(size)
    previous = run_date - dt.timedelta(days=1)
    stages = {"watch": f"dpdw{size}", "scan": f"dpds{size}", "priced": f"dpdp{size}"}
    with dynamodb_local() as server:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint
        ddb = boto3.client("dynamodb", endpoint_url=server.endpoint)
        started = time.perf_counter()
        for stage in stages.values():
            provision(stage, ddb, ssm=NoSsm(), quiet=True)
            write_items(server.endpoint, f"loan-crm-{stage}-loans", book.items, threads)
            seed_previous_run(server.endpoint, stage, previous)
        write_seconds = time.perf_counter() - started
        print(
            f"  generated {size:,} loans: build {book.build_seconds:.1f} s (Python), "
            f"write {len(stages)} x {size:,} items {write_seconds:.1f} s "
            f"({len(stages) * size / write_seconds:,.0f} items/s, {threads} threads); "
            f"mean loan item {book.mean_item_bytes:,.0f} B",
            flush=True,
        )
        book.items = []
        watch = run_day_end(server, stages["watch"], run_date, False, meter, workers, flags, page_workers)
        print(f"  watch run: {watch.outcome} in {watch.wall:.1f} s", flush=True)
        scan = run_day_end(server, stages["scan"], run_date, True, meter, workers, flags, page_workers)
        print(f"  scan run:  {scan.outcome} in {scan.wall:.1f} s", flush=True)
        pricer = WritePricer(unmetered_client(server.endpoint), f"loan-crm-{stages['priced']}-")
        meter.pricer = pricer
        try:
            priced = run_day_end(server, stages["priced"], run_date, False, meter, workers, flags, page_workers)
        finally:
            meter.pricer = None
        print(f"  priced run: {priced.outcome} in {priced.wall:.1f} s", flush=True)
    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    return SizeResult(book, write_seconds, watch, scan, pricer.result, priced.updated)


# --- report -----------------------------------------------------------------------------------------

Figure = Callable[[SizeResult, Measurement], float | None]


def _per(value: float, count: int) -> float | None:
    return value / count if count else None


def _figures(ops: list[str]) -> list[tuple[str, Figure, str]]:
    rows: list[tuple[str, Figure, str]] = [
        ("wall time s", lambda r, m: m.wall, ".2f"),
        ("loans/s (book / wall)", lambda r, m: r.book.size / m.wall, ",.0f"),
        ("loans/s (evaluated / wall)", lambda r, m: m.scanned / m.wall, ",.0f"),
        ("loans evaluated (scanned)", lambda r, m: m.scanned, ",.0f"),
        ("loans updated (changed)", lambda r, m: m.updated, ",.0f"),
        ("loans escalated", lambda r, m: m.escalated, ",.0f"),
        ("segments", lambda r, m: m.segments, ",.0f"),
        ("largest segment (loans)", lambda r, m: m.largest_segment, ",.0f"),
        ("requests, total", lambda r, m: sum(m.requests.values()), ",.0f"),
    ]
    for op in ops:
        rows.append((f"  {op}", lambda r, m, op=op: m.requests.get(op, 0), ",.0f"))
    for op in ops:
        rows.append((f"  mean ms per {op}", lambda r, m, op=op: _per(m.seconds[op] * 1000, m.requests[op]), ".1f"))
    rows += [
        ("read units (RRU)", lambda r, m: m.read_units, ",.1f"),
        ("write units (WRU)", lambda r, m: m.write_units, ",.1f"),
        ("RRU per loan in book", lambda r, m: m.read_units / r.book.size, ".4f"),
        ("WRU per loan in book", lambda r, m: m.write_units / r.book.size, ".4f"),
        ("RRU per changed loan", lambda r, m: _per(m.read_units, m.updated), ".2f"),
        ("WRU per changed loan", lambda r, m: _per(m.write_units, m.updated), ".2f"),
        ("TransactWriteItems per changed loan", lambda r, m: _per(m.requests["TransactWriteItems"], m.updated), ".2f"),
        ("requests per changed loan", lambda r, m: _per(sum(m.requests.values()), m.updated), ".2f"),
        ("Python CPU s (job process)", lambda r, m: m.python_cpu, ".2f"),
        ("Python CPU ms per evaluated loan", lambda r, m: _per(m.python_cpu * 1000, m.scanned), ".3f"),
        ("DynamoDB Local CPU s", lambda r, m: m.local_cpu, ".2f"),
    ]
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.3f}" if a / b < 10 else f"{a / b:,.1f}"


def _operations(results: list[SizeResult]) -> list[str]:
    seen = {op for r in results for m in (r.watch, r.scan) for op in m.requests}
    return sorted(seen, key=lambda op: (op not in READ_OPERATIONS, op))


def report(result: SizeResult, ops: list[str]) -> None:
    book, watch, scan = result.book, result.watch, result.scan
    print(
        f"\nbook {book.size:,} loans, run date {book.run_date} (previous run {book.run_date - dt.timedelta(days=1)}: "
        f"COMPLETED record written directly); modes: watch={watch.mode}, scan={scan.mode}"
    )
    mix = ", ".join(f"{k} {v:,}" for k, v in sorted(book.by_bucket.items()))
    print(f"  book by bucket the day before: {mix}")
    expected = ", ".join(f"{k} {v:,}" for k, v in sorted(book.expected.items()))
    print(f"  expected tonight (domain rules): {expected}; watched on the run date: {book.watched_on_run_date:,}")
    print(
        f"  watch-index entries: {book.indexed:,} ({book.indexed / book.size:.0%} of the book); "
        f"mean loan item {book.mean_item_bytes:,.0f} B"
    )
    width = 38
    print(f"  {'figure':<{width}}{'watch':>14}{'scan':>14}{'watch/scan':>12}")
    for label, fn, spec in _figures(ops):
        a, b = fn(result, watch), fn(result, scan)
        print(f"  {label:<{width}}{_fmt(a, spec):>14}{_fmt(b, spec):>14}{_ratio(a, b):>12}")
    print("  write units by table/index (watch run), per changed loan:")
    for target, units in sorted(watch.by_target.items(), key=lambda kv: -kv[1]):
        if target.startswith("W ") and units:
            print(f"    {target[2:]:<34}{units:>12,.1f}{_fmt(_per(units, watch.updated), '.2f'):>10}")
    report_priced(result)
    summary.record(
        f"day-end, {book.size:,} loans: wall time",
        f"{watch.wall:.1f} s, {watch.updated:,} loans changed, "
        f"{sum(watch.requests.values()) / max(1, watch.updated):.2f} requests per changed loan",
        watch.wall / scan.wall,
        "a full scan of the same book",
    )
    checks = {
        "watch updated == scan updated": watch.updated == scan.updated,
        "priced run updated == watch updated": result.priced_updated == watch.updated,
        "updated == loans watched on the date": watch.updated == book.watched_on_run_date,
        "escalated == expected": watch.escalated == scan.escalated == book.expected["escalation"],
    }
    print("  consistency: " + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in checks.items()))


def report_priced(result: SizeResult) -> None:
    """Write units per changed loan as DynamoDB's rules price the items written, against the floor for
    those items (``bench.floor``), by table and index."""
    priced, changed = result.priced, result.priced_updated
    if not changed:
        return
    total, floor = priced.total("priced"), priced.total("floor")
    book = f"{result.book.size:,} loans"
    summary.record(
        f"day-end, {book}: write units per changed loan", f"{total / changed:.2f}", total / floor, "the floor"
    )
    print(
        f"  write units priced from the items, per changed loan (a third run of the same book): "
        f"priced {total / changed:.2f}, floor {floor / changed:.2f}, priced/floor {total / floor:.3f}"
    )
    for target in sorted(priced.priced, key=lambda t: -priced.priced[t]):
        items = priced.items.get(target)
        print(
            f"    {target:<34}{priced.priced[target] / changed:>10.2f}{priced.floor[target] / changed:>10.2f}"
            + (f"   {items / changed:.2f} items" if items else "")
        )


def growth(small: SizeResult, large: SizeResult, ops: list[str]) -> None:
    factor = large.book.size / small.book.size
    changed = f"{large.watch.updated:,} vs {small.watch.updated:,} changed loans"
    against = f"{small.book.size:,} loans ({changed})"
    for name, a, b in (
        ("wall time", large.watch.wall, small.watch.wall),
        ("requests", sum(large.watch.requests.values()), sum(small.watch.requests.values())),
        ("read units", large.watch.read_units, small.watch.read_units),
    ):
        summary.record(f"day-end, {large.book.size:,} loans: {name}", f"{a:,.1f}", a / b if b else None, against)
    print(f"\ngrowth {small.book.size:,} -> {large.book.size:,} loans (book x{factor:g}): ratio large/small")
    width = 38
    print(f"  {'figure':<{width}}{'watch':>12}{'scan':>12}")
    for label, fn, _spec in _figures(ops):
        w = _ratio(fn(large, large.watch), fn(small, small.watch))
        s = _ratio(fn(large, large.scan), fn(small, small.scan))
        print(f"  {label:<{width}}{w:>12}{s:>12}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--loans", type=int, default=100_000, help="the large book")
    parser.add_argument("--also", type=int, default=10_000, help="a smaller book to compare with (0: none)")
    parser.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 5), help="the run date")
    parser.add_argument("--bounce", type=float, default=0.25, help="share of EMIs due on the date left unpaid")
    parser.add_argument("--threads", type=int, default=8, help="BatchWriteItem threads for generation")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--sizes", type=lambda v: [int(s) for s in v.split(",")], default=None, help="books to run, e.g. 10000,50000"
    )
    parser.add_argument(
        "--held",
        type=int,
        default=None,
        help="loans past this many are current and paid on time: every book has the same delinquent loans",
    )
    parser.add_argument(
        "--no-reminders",
        action="store_true",
        help="the REMINDERS_ENABLED switch off: the delinquency work alone (bench.reminders measures reminders)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="override the job's segment threads (default: the job's own)"
    )
    parser.add_argument(
        "--page-workers",
        type=int,
        default=None,
        help="override the loans of a page worked at once in each segment (default: the job's own)",
    )
    args = parser.parse_args()
    meter = DynamoMeter()
    install_meter(meter)
    sizes = sorted(set(args.sizes or ()) or {s for s in (args.also, args.loans) if s > 0})
    results = []
    overall = time.perf_counter()
    for size in sizes:
        print(f"book of {size:,} loans ...", flush=True)
        results.append(
            measure_size(
                size,
                args.date,
                args.bounce,
                args.threads,
                args.seed,
                meter,
                args.workers,
                args.held,
                AllOn(FlagName.REMINDERS_ENABLED) if args.no_reminders else None,
                args.page_workers,
            )
        )
    ops = _operations(results)
    workers = args.workers or SEGMENT_WORKERS
    print(
        f"\nmachine: {_cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"DynamoDB Local {dynamodb_local_jar().parent.name}; job segment threads: {workers}, "
        f"loans of a page at once: {args.page_workers or PAGE_WORKERS}"
    )
    for result in results:
        report(result, ops)
    for larger in results[1:]:
        growth(results[0], larger, ops)
    print(f"\ntotal bench time {time.perf_counter() - overall:.0f} s (DynamoDB Local on this machine; not AWS)")


if __name__ == "__main__":
    main()
