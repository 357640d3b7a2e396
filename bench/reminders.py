"""What borrower reminders add to a day-end run, and what sending them costs (docs/reminders.md), on
DynamoDB Local.

For each book size, on a fresh in-memory DynamoDB Local:

1. The book of ``bench.dpd`` (its generator, the same seed: a realistic mix of current and overdue
   loans, due days spread over the month, a quarter of the EMIs due on the run date bounced) is written
   into two identical stages, with the previous date's run recorded as COMPLETED, so the measured run is
   an ordinary nightly run in watch mode.
2. The same day-end run for the run date is made in both stages at 00:30 IST the next day, once with
   ``REMINDERS_ENABLED`` on and once off. Every DynamoDB request is metered (``bench.dynamo``); the
   difference between the two runs is what queueing reminders costs the run. The write units the two
   reminder indexes of the loans table take are paid by every loan write whatever the switch says, so
   they are shown apart.
3. In the stage with reminders, the sender (``services().reminders.send_due``) then sends everything the
   run queued, at 08:00 IST, with a publisher that only counts: SNS is not DynamoDB and is not measured
   here (one ``Publish`` per reminder, docs/reminders.md).

Prints figures and checks (the queued reminders equal what the domain rule says the book is owed); there
is no pass/fail. Times are this machine's; capacity units are DynamoDB Local's own accounting.

    python -m bench.reminders [--loans 20000] [--also 2000] [--date 2026-11-05]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import boto3

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench import summary
from bench.dpd import AllOn, BookBuilder, Measurement, run_day_end, seed_previous_run, write_items
from bench.dynamo import DynamoMeter, NoSsm, dynamodb_local, install_meter
from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb.mapping import item_to_loan
from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.domain.flags import FlagName
from chalicelib.domain.reminders import Reminder, reminders_due
from chalicelib.services.reminders import SendReport
from infra.provision import provision
from local.dynamodb_local import jar as dynamodb_local_jar

REMINDER_INDEXES = ("loans/due-index", "loans/arrears-index")


class CountingPublisher:
    """Stands in for the SNS topic: counts, never fails."""

    def __init__(self) -> None:
        self.published = 0

    def publish(self, reminder: Reminder, message: dict[str, Any]) -> str:
        self.published += 1
        return f"bench-{reminder.reminder_id}"


@dataclass
class SendMeasurement:
    report: SendReport
    published: int
    wall: float
    read_units: float
    write_units: float
    requests: Counter[str]
    by_target: Counter[str]


@dataclass
class SizeResult:
    size: int
    owed: Counter[str]
    """Reminders the domain rule says the book is owed on the run date, by kind (worked out here)."""
    queued: Counter[str]
    """Reminders stored in the stage with the switch on, by kind."""
    on: Measurement
    off: Measurement
    send: SendMeasurement


def _owed(items: list[dict[str, Any]], run_date: dt.date) -> Counter[str]:
    at = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(0, 30), tzinfo=clock.IST)
    owed: Counter[str] = Counter()
    for item in items:
        loan = item_to_loan(LoanModel.from_raw_data(item))
        # The run reassesses a loan before it queues; reminders_due reads the schedule, which the run
        # does not change, so the book as written gives the same answer.
        owed.update(r.kind.value for r in reminders_due(loan, run_date, at))
    return owed


def _stored_by_kind(endpoint: str, stage: str) -> Counter[str]:
    client = boto3.client("dynamodb", endpoint_url=endpoint)
    kinds: Counter[str] = Counter()
    for page in client.get_paginator("scan").paginate(
        TableName=f"loan-crm-{stage}-reminders", ProjectionExpression="kind"
    ):
        kinds.update(item["kind"]["S"] for item in page["Items"])
    return kinds


def _send(stage: str, run_date: dt.date, meter: DynamoMeter) -> SendMeasurement:
    os.environ["STAGE"] = stage
    wiring.reset()
    sender = wiring.services().reminders
    sender.flags = AllOn()
    publisher = CountingPublisher()
    sender.publisher = publisher
    eight = dt.datetime.combine(run_date + dt.timedelta(days=1), dt.time(8, 0), tzinfo=clock.IST)
    with clock.use_clock(clock.FixedClock(eight)), contextlib.redirect_stdout(io.StringIO()):
        meter.reset(f"loan-crm-{stage}-")
        started = time.perf_counter()
        report = sender.send_due()
        wall = time.perf_counter() - started
    return SendMeasurement(
        report,
        publisher.published,
        wall,
        meter.read_units,
        meter.write_units,
        Counter(meter.requests),
        Counter(meter.by_target),
    )


def measure_size(size: int, run_date: dt.date, seed: int, threads: int, meter: DynamoMeter) -> SizeResult:
    book = BookBuilder(run_date, 0.25, seed).build(size)
    owed = _owed(book.items, run_date)
    stages = {"on": f"remon{size}", "off": f"remoff{size}"}
    with dynamodb_local() as server:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint
        ddb = boto3.client("dynamodb", endpoint_url=server.endpoint)
        for stage in stages.values():
            provision(stage, ddb, ssm=NoSsm(), quiet=True)
            write_items(server.endpoint, f"loan-crm-{stage}-loans", book.items, threads)
            seed_previous_run(server.endpoint, stage, run_date - dt.timedelta(days=1))
        print(f"  book of {size:,} written to two stages; owed tonight: {sum(owed.values()):,}", flush=True)
        on = run_day_end(server, stages["on"], run_date, False, meter, None)
        off = run_day_end(server, stages["off"], run_date, False, meter, None, flags=AllOn(FlagName.REMINDERS_ENABLED))
        print(f"  runs: on {on.outcome} in {on.wall:.1f} s, off {off.outcome} in {off.wall:.1f} s", flush=True)
        queued = _stored_by_kind(server.endpoint, stages["on"])
        send = _send(stages["on"], run_date, meter)
        print(f"  sender: {send.report.sent:,} sent in {send.wall:.1f} s", flush=True)
    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    return SizeResult(size, owed, queued, on, off, send)


def _per(value: float, count: int) -> str:
    return f"{value / count:.3f}" if count else "-"


def report(result: SizeResult) -> None:
    on, off, send = result.on, result.off, result.send
    queued = sum(result.queued.values())
    print(f"\nbook {result.size:,} loans: reminders queued {queued:,} ({queued / result.size:.2%} of the book)")
    print("  by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.queued.items())))
    d_read, d_write = on.read_units - off.read_units, on.write_units - off.write_units
    extra_requests = on.requests - off.requests
    width = 44
    print(f"  {'figure':<{width}}{'on':>12}{'off':>12}{'on - off':>12}")
    rows = [
        ("read units (RRU)", on.read_units, off.read_units),
        ("write units (WRU)", on.write_units, off.write_units),
        ("requests", sum(on.requests.values()), sum(off.requests.values())),
        ("loans evaluated", on.scanned, off.scanned),
        ("loans updated", on.updated, off.updated),
        ("wall time s", on.wall, off.wall),
    ]
    for label, a, b in rows:
        print(f"  {label:<{width}}{a:>12,.1f}{b:>12,.1f}{a - b:>12,.1f}")
    print("  extra requests: " + ", ".join(f"{op} {n:,}" for op, n in sorted(extra_requests.items())))
    print(f"  queueing, per loan in the book:      {_per(d_read, result.size)} RRU, {_per(d_write, result.size)} WRU")
    print(f"  queueing, per reminder queued:       {_per(d_read, queued)} RRU, {_per(d_write, queued)} WRU")
    summary.record(
        f"reminders queued by the day-end run, {result.size:,} loans",
        f"{queued:,} queued; {_per(d_read, queued)} read and {_per(d_write, queued)} write units per reminder",
    )
    print("  units by table/index, on - off:")
    for target in sorted(set(on.by_target) | set(off.by_target)):
        delta = on.by_target[target] - off.by_target[target]
        if abs(delta) > 1e-9:
            print(f"    {target:<40}{delta:>12,.1f}")
    index_writes = sum(on.by_target[f"W {index}"] for index in REMINDER_INDEXES)
    index_writes_off = sum(off.by_target[f"W {index}"] for index in REMINDER_INDEXES)
    print(
        f"  reminder indexes of the loans table, written by the run's loan writes: {index_writes:,.1f} WRU on, "
        f"{index_writes_off:,.1f} off ({_per(index_writes, on.updated)} per loan updated; paid either way)"
    )
    sent = send.report.sent
    print(
        f"  sender at 08:00: {sent:,} sent, {send.report.cancelled:,} cancelled, {send.published:,} published, "
        f"{send.wall:.1f} s; per reminder sent {_per(send.read_units, sent)} RRU, "
        f"{_per(send.write_units, sent)} WRU, {_per(sum(send.requests.values()), sent)} requests "
        f"({', '.join(f'{op} {n:,}' for op, n in sorted(send.requests.items()))})"
    )
    checks = {
        "queued == owed (domain rule)": result.queued == result.owed,
        "off queued none": "W reminders" not in off.by_target,
        "every queued reminder sent once": sent == send.published == queued,
        "same loans updated on and off": on.updated == off.updated,
    }
    print("  consistency: " + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in checks.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--loans", type=int, default=20_000, help="the large book")
    parser.add_argument("--also", type=int, default=2_000, help="a smaller book to compare with (0: none)")
    parser.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 5), help="the run date")
    parser.add_argument("--threads", type=int, default=8, help="BatchWriteItem threads for generation")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    meter = DynamoMeter()
    install_meter(meter)
    overall = time.perf_counter()
    results = []
    for size in sorted({s for s in (args.also, args.loans) if s > 0}):
        print(f"book of {size:,} loans ...", flush=True)
        results.append(measure_size(size, args.date, args.seed, args.threads, meter))
    print(
        f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"DynamoDB Local {dynamodb_local_jar().parent.name}"
    )
    for result in results:
        report(result)
    print(f"\ntotal bench time {time.perf_counter() - overall:.0f} s (DynamoDB Local on this machine; not AWS)")


if __name__ == "__main__":
    main()
