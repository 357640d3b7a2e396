"""``reconcile`` (check the ledger's invariants, print the report) and ``rebuild-aggregates`` (set the
dashboard's counters to a recount, after a repair). docs/reconciliation.md and
docs/runbook/alerts/reconciliation-mismatch.md say when to run which.

Both run in this process with no time limit, against whatever the configured endpoints name.
"""

from __future__ import annotations

import getpass
import json
import sys
from contextlib import redirect_stdout
from typing import Annotated

import typer

from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import DomainError
from chalicelib.domain.reconciliation import ReconciliationRun, ReconciliationStatus
from chalicelib.domain.roles import Role
from chalicelib.services.context import RequestContext
from chalicelib.services.views import reconciliation_dict
from chalicelib.wiring import services
from ops.console import fail, out


def _operator() -> RequestContext:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return RequestContext(actor=Actor(sub=f"system:ops:{user}", role=Role.ADMIN.value))


def reconcile(
    as_json: Annotated[bool, typer.Option("--json", help="The report as the API gives it.")] = False,
) -> None:
    """Check the ledger's invariants across the whole book; exit 1 when anything does not hold."""
    try:
        with redirect_stdout(sys.stderr):  # the job's metric lines are for CloudWatch
            run = services().reconciliation.start(f"cli:{_operator().actor.sub}")
    except DomainError as exc:
        raise fail(f"{exc.code}: {exc.message}") from None
    report = reconciliation_dict(run)
    if as_json:
        typer.echo(json.dumps(report, separators=(",", ":")))
    else:
        print_run(run, f"reconciliation {run.run_id}")
    if run.status is not ReconciliationStatus.COMPLETED or run.mismatch_count:
        raise typer.Exit(1)


def print_run(run: ReconciliationRun, label: str) -> None:
    """A reconciliation's outcome as ops read it: the counts, then what did not hold."""
    out.print(
        f"{label}: {run.status.value}  loans {run.loans_checked}  payments "
        f"{run.payments_checked}  claims {run.claims_checked}  mismatches {run.mismatch_count}",
        highlight=False,
    )
    if run.unverified:
        out.print(f"  written to while checked (neither confirmed nor refuted): {', '.join(run.unverified)}")
    # One line each, so a mismatch can be grepped and read whole whatever the terminal's width.
    for m in run.mismatches or []:
        out.print(
            f"  {m.kind.value} {m.entity_id}: expected {json.dumps(m.expected)}, found {json.dumps(m.actual)}",
            highlight=False,
        )
    if run.error:
        out.print(f"  error: {run.error}", highlight=False)


def rebuild_aggregates() -> None:
    """Set the dashboard's counters to a recount of the loans and payments, each correction audited
    (AGGREGATES_REBUILT). For after a repair; run `reconcile` first and again afterwards."""
    try:
        with redirect_stdout(sys.stderr):
            rebuilt = services().reconciliation.rebuild(_operator())
    except DomainError as exc:
        raise fail(f"{exc.code}: {exc.message}") from None
    out.print(
        f"corrected {len(rebuilt.corrected)}, already right {rebuilt.unchanged}, "
        f"written to meanwhile (left alone) {len(rebuilt.moving)}",
        highlight=False,
    )
    for label in rebuilt.corrected:
        out.print(f"  corrected {label}", highlight=False)
    if rebuilt.moving:
        out.print(f"  run again when the book is quieter: {', '.join(rebuilt.moving)}", highlight=False)
        raise typer.Exit(1)
