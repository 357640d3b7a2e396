"""The bulk import (``python -m ops import``, ops/csv_io.py) on DynamoDB Local: the same rows written 25
loans to a transaction, as the importer does, and one loan to a transaction, as it did before and as
the API's ``POST /api/v1/loans`` still does, side by side in one run (docs/performance.md, "The bulk
import").

Each way gets a fresh stage (its own tables) and the same file: ``--rows`` generated rows (36-month
loans over ``--collectors`` collectors and a few branches), imported by ``import_loans`` with its
threads and its stored-id lookup, as the CLI runs it. For each: wall time, DynamoDB requests by
operation, the importer's CPU and the DynamoDB Local server's. Then ``--priced`` more rows each
way with the write pricer on (``bench.floor``: every item written read before and after, so not
timed): write units per loan, priced from the items, since DynamoDB Local under-reports transactions.
Prints figures and ratios; there is no pass/fail.

    python -m bench.imports [--rows 5000] [--priced 200] [--collectors 20]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import random
from collections.abc import Iterator
from contextlib import contextmanager

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench.side_by_side import Way, fresh_stage, measure, price, print_ways, record_headlines, rig
from chalicelib import wiring
from chalicelib.adapters.dynamodb import loans as loans_adapter
from ops import csv_io

WAYS = (("one loan to a transaction", 1), ("25 loans to a transaction", loans_adapter.LOANS_PER_TRANSACTION))


def rows_csv(first: int, count: int, collectors: int) -> str:
    """``count`` valid import rows with ids from ``first`` on (the same rows for the same arguments)."""
    rng = random.Random(first)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=csv_io.IMPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for n in range(first, first + count):
        disbursed = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(0, 540))
        writer.writerow(
            {
                "loan_id": f"BULK-{n:07d}",
                "borrower_name": f"Borrower {n}",
                "phone": f"9{rng.randrange(10**8, 10**9)}",
                "email": "",
                "address": f"{n}, MG Road, Pune",
                "principal_paise": str(rng.randrange(50_000, 1_000_000) * 100),
                "annual_rate_bps": str(rng.randrange(900, 3000)),
                "tenure_months": "36",
                "disbursement_date": disbursed.isoformat(),
                "first_due_date": (disbursed + dt.timedelta(days=30)).isoformat(),
                "collector_id": f"col-{n % collectors:03d}",
                "branch": f"BR{n % 7}",
            }
        )
    return out.getvalue()


@contextmanager
def loans_per_transaction(count: int) -> Iterator[None]:
    """The importer's chunks and the adapter's transactions at ``count`` loans (restored after)."""
    saved = loans_adapter.LOANS_PER_TRANSACTION, csv_io.LOANS_PER_TRANSACTION
    loans_adapter.LOANS_PER_TRANSACTION = csv_io.LOANS_PER_TRANSACTION = count
    try:
        yield
    finally:
        loans_adapter.LOANS_PER_TRANSACTION, csv_io.LOANS_PER_TRANSACTION = saved


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--priced", type=int, default=200)
    parser.add_argument("--collectors", type=int, default=20)
    args = parser.parse_args()
    ways: dict[str, Way] = {}

    def imported(first: int, count: int) -> int:
        report = csv_io.import_loans(
            io.StringIO(rows_csv(first, count, args.collectors)), wiring.services().loans, stored=csv_io.stored_loan_ids
        )
        assert (report.stored, report.error_rows) == (count, 0), report.summary()
        return report.stored

    with rig() as bench:
        for n, (label, per_transaction) in enumerate(WAYS):
            fresh_stage(f"bulk{n}", (f"col-{c:03d}" for c in range(args.collectors)))
            with loans_per_transaction(per_transaction):
                way = measure(bench, lambda: imported(0, args.rows))
                if args.priced:
                    price(bench, way, lambda: imported(args.rows, args.priced))
            ways[label] = way
    report_ways(ways, args)


def report_ways(ways: dict[str, Way], args: argparse.Namespace) -> None:
    title = f"{args.rows:,} rows each way ({args.collectors} collectors, 7 branches); DynamoDB Local"
    print_ways(ways, title, "importer")
    record_headlines("bulk import", f"{args.rows:,} rows", ways[WAYS[0][0]], ways[WAYS[-1][0]])


if __name__ == "__main__":
    main()
