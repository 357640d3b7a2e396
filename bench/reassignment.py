"""The bulk reassignment (``ReassignmentService.move_collector_loans``: a collector's offboarding, or
``POST /api/v1/reassignments``) on DynamoDB Local: a collector's loans moved 25 to a transaction, as the
service does, and one to a transaction, as it did before and as ``PATCH /api/v1/loans/{id}`` still
does, side by side in one run (docs/performance.md, "The bulk reassignment").

Each way gets a fresh stage and the same book: ``--loans`` 36-month loans of one collector over seven
branches, loaded by the bulk import. The move runs with the service's threads and no time limit. For
each way: wall time, DynamoDB requests by operation, this process's CPU and the DynamoDB Local
server's. Then ``--priced`` more loans each way are moved with the write pricer on (``bench.floor``:
every item written read before and after, so not timed): write units a loan, priced from the items.
Prints figures and ratios; there is no pass/fail.

    python -m bench.reassignment [--loans 3000] [--priced 200]
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from contextlib import contextmanager

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench.imports import rows_csv
from bench.side_by_side import Way, fresh_stage, measure, price, print_ways, record_headlines, rig
from chalicelib import wiring
from chalicelib.domain.audit import Actor
from chalicelib.domain.roles import Role
from chalicelib.services import reassignment
from chalicelib.services.context import RequestContext
from ops import csv_io

WAYS = (("one loan to a transaction", 1), ("25 loans to a transaction", reassignment.BATCH))
LEAVING, TAKING = "col-000", "col-001"
"""``rows_csv`` with one collector gives every loan to ``col-000``."""
MANAGER = RequestContext(Actor("bench-manager", Role.MANAGER.value), "10.0.0.1", "bench-reassignment")


@contextmanager
def loans_per_batch(count: int) -> Iterator[None]:
    """The service's batches at ``count`` loans (restored after): one loan a batch is one a transaction."""
    saved = reassignment.BATCH
    reassignment.BATCH = count
    try:
        yield
    finally:
        reassignment.BATCH = saved


def load(first: int, count: int) -> None:
    """``count`` loans of :data:`LEAVING`, ids from ``first``, stored by the bulk import."""
    report = csv_io.import_loans(
        io.StringIO(rows_csv(first, count, 1)), wiring.services().loans, stored=csv_io.stored_loan_ids
    )
    assert (report.stored, report.error_rows) == (count, 0), report.summary()


def move(count: int) -> int:
    progress = wiring.services().reassignment.move_collector_loans(MANAGER, LEAVING, TAKING, None)
    assert (progress.moved, progress.already, progress.remaining) == (count, 0, 0), progress
    return progress.moved


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loans", type=int, default=3000)
    parser.add_argument("--priced", type=int, default=200)
    args = parser.parse_args()
    ways: dict[str, Way] = {}
    with rig() as bench:
        for n, (label, per_batch) in enumerate(WAYS):
            fresh_stage(f"move{n}", (LEAVING, TAKING))
            load(0, args.loans)
            with loans_per_batch(per_batch):
                way = measure(bench, lambda: move(args.loans))
                if args.priced:
                    load(args.loans, args.priced)
                    price(bench, way, lambda: move(args.priced))
            ways[label] = way
    report(ways, args)


def report(ways: dict[str, Way], args: argparse.Namespace) -> None:
    print_ways(ways, f"{args.loans:,} loans of one collector moved each way; DynamoDB Local", "service")
    record_headlines("bulk reassignment", f"{args.loans:,} loans", ways[WAYS[0][0]], ways[WAYS[-1][0]])


if __name__ == "__main__":
    main()
