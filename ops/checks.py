"""Consistency checks of the book as the API shows it: ``check loan``, ``check portfolio``, ``check buckets``.

``check loan`` recomputes, from a loan's own schedule, what the API shows for it: dpd (the oldest
instalment still unpaid at the end of ``dpd_as_of``; its due date is day 1), bucket and outstanding
principal. The arithmetic is written out again here from docs/rules.md on purpose, not imported from
``chalicelib.domain``: a check that called the code it checks would agree with any bug in it.

``check portfolio`` reads every active loan (as the export does), recounts the dashboard's figures
(counts per bucket and classification, outstanding, overdue, average dpd of the loans past due) and
compares them with what ``GET /api/v1/dashboard/summary`` answers from its counters, with two more
consistency checks: loans whose bucket is not the bucket of their dpd
(must be none) and the ``dpd_as_of`` dates (one date: the latest completed run); and it compares the
counts per bucket with the loans table's ``bucket-list-index``, the storage the collectors' lists come from.
``check buckets`` is only that index count, cheap enough for every morning.
"""

from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Any

import boto3
import typer
from rich.table import Table

from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import Bucket
from chalicelib.domain.errors import NotFound
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import LoanFilter
from chalicelib.services.views import loan_dict
from chalicelib.wiring import services
from ops.console import err, out

CHECK_ACTOR = Actor(sub="system:ops-check", role="admin")
PAGE = 500
BUCKET_INDEX = "bucket-list-index"

app = typer.Typer(help="Consistency checks of loans as the API shows them.", no_args_is_help=True)


def bucket_of(dpd: int) -> str:
    """docs/rules.md: CURRENT at 0, 1-30, 31-60, 61-90, and 90+ from 91."""
    if dpd == 0:
        return "CURRENT"
    if dpd <= 30:
        return "1-30"
    if dpd <= 60:
        return "31-60"
    if dpd <= 90:
        return "61-90"
    return "90+"


@dataclass(frozen=True)
class LoanCheck:
    loan_id: str
    status: str
    dpd_as_of: str
    dpd: int
    expected_dpd: int
    bucket: str
    expected_bucket: str
    outstanding: int
    expected_outstanding: int

    @property
    def ok(self) -> bool:
        """Delinquency is kept only for ACTIVE loans; outstanding principal for every loan."""
        delinquency = self.status != LoanStatus.ACTIVE.value or (
            self.dpd == self.expected_dpd and self.bucket == self.expected_bucket
        )
        return delinquency and self.outstanding == self.expected_outstanding


def check_shown(shown: dict[str, Any]) -> LoanCheck:
    """Recompute one loan from its JSON as the API returns it (``GET /api/v1/loans/{id}``)."""
    as_of = dt.date.fromisoformat(shown["dpd_as_of"])
    unpaid = [
        dt.date.fromisoformat(row["due_date"])
        for row in shown["schedule"]
        if dt.date.fromisoformat(row["due_date"]) <= as_of
        and row["principal_paise"] + row["interest_paise"] > row["paid_principal_paise"] + row["paid_interest_paise"]
    ]
    dpd = (as_of - min(unpaid)).days + 1 if unpaid else 0
    return LoanCheck(
        loan_id=shown["loan_id"],
        status=shown["status"],
        dpd_as_of=shown["dpd_as_of"],
        dpd=shown["dpd"],
        expected_dpd=dpd,
        bucket=shown["bucket"],
        expected_bucket=bucket_of(dpd),
        outstanding=shown["outstanding_principal_paise"],
        expected_outstanding=sum(row["principal_paise"] - row["paid_principal_paise"] for row in shown["schedule"]),
    )


def _context() -> RequestContext:
    return RequestContext(actor=CHECK_ACTOR)


def _sample(per_bucket: int) -> list[str]:
    """The first ``per_bucket`` active loans of each bucket."""
    ids: list[str] = []
    for bucket in Bucket:
        page = services().loans.list(_context(), LoanFilter(bucket=bucket.value, status="ACTIVE"), per_bucket, None)
        ids.extend(loan.loan_id for loan in page.items)
    return ids


@app.command("loan")
def check_loan(
    loan_ids: Annotated[list[str] | None, typer.Argument(help="Loan ids.")] = None,
    per_bucket: Annotated[int, typer.Option(min=0, help="Also check the first N active loans of every bucket.")] = 0,
) -> None:
    """Recompute dpd, bucket and outstanding principal of loans from their schedules; exit 1 on a mismatch."""
    ids = [*(loan_ids or []), *(_sample(per_bucket) if per_bucket else [])]
    if not ids:
        raise typer.BadParameter("name loan ids, or --per-bucket N")
    table = Table(
        "loan", "status", "dpd_as_of", "dpd", "expected", "bucket", "expected", "outstanding", "expected", "ok"
    )
    bad = 0
    for loan_id in ids:
        try:
            c = check_shown(loan_dict(services().loans.get(_context(), loan_id)))
        except NotFound:
            table.add_row(loan_id, "[red]not found[/]", *["-"] * 7, "[red]NO[/]")
            bad += 1
            continue
        bad += not c.ok
        table.add_row(
            c.loan_id, c.status, c.dpd_as_of, str(c.dpd), str(c.expected_dpd), c.bucket, c.expected_bucket,
            str(c.outstanding), str(c.expected_outstanding), "[green]ok[/]" if c.ok else "[red]NO[/]",
        )  # fmt: skip
    out.print(table)
    out.print(f"{len(ids)} loans checked, {bad} with a mismatch", highlight=False)
    if bad:
        raise typer.Exit(1)


def bucket_index_counts(ddb: Any, table: str) -> dict[str, int]:
    """Active loans per bucket as stored, counted on the bucket index (what collectors' lists read)."""
    counts: dict[str, int] = {}
    for bucket in Bucket:
        pages = ddb.get_paginator("query").paginate(
            TableName=table,
            IndexName=BUCKET_INDEX,
            KeyConditionExpression="#b = :b",
            FilterExpression="#s = :a",
            ExpressionAttributeNames={"#b": "bucket", "#s": "status"},
            ExpressionAttributeValues={":b": {"S": bucket.value}, ":a": {"S": LoanStatus.ACTIVE.value}},
            Select="COUNT",
        )
        counts[bucket.value] = sum(page["Count"] for page in pages)
    return counts


def _index_counts() -> dict[str, int]:
    config = settings()
    return bucket_index_counts(boto3.client("dynamodb", region_name=config.region), config.table_name("loans"))


@dataclass
class Portfolio:
    loans: int = 0
    by_bucket: collections.Counter[str] = field(default_factory=collections.Counter)
    by_classification: collections.Counter[str] = field(default_factory=collections.Counter)
    outstanding: int = 0
    overdue: int = 0
    late_dpd: list[int] = field(default_factory=list)
    as_of: collections.Counter[str] = field(default_factory=collections.Counter)
    wrong_bucket: list[str] = field(default_factory=list)

    def add(self, loan: Loan) -> None:
        d = loan.delinquency
        self.loans += 1
        self.by_bucket[d.bucket.value] += 1
        self.by_classification[d.classification.value] += 1
        self.outstanding += loan.outstanding_principal_paise
        self.overdue += d.overdue_paise
        if d.dpd > 0:
            self.late_dpd.append(d.dpd)
        self.as_of[d.as_of.isoformat()] += 1
        if bucket_of(d.dpd) != d.bucket.value:
            self.wrong_bucket.append(loan.loan_id)

    @property
    def average_late_dpd(self) -> float:
        return round(sum(self.late_dpd) / len(self.late_dpd), 2) if self.late_dpd else 0.0


def dashboard_differences(p: Portfolio) -> dict[str, tuple[Any, Any]]:
    """The dashboard's figures (from its counters) that differ from this recount of the active loans
    as the API shows them. The dashboard's mean dpd is computed for its ``as_of``; it is compared only
    when every active loan is shown as of that date (the night's run has completed)."""
    summary = services().dashboard.summary(_context())
    pairs: dict[str, tuple[Any, Any]] = {
        "active loans": (p.loans, summary.loans_active),
        "outstanding principal": (p.outstanding, summary.outstanding_principal_paise),
        "overdue": (p.overdue, summary.overdue_paise),
        **{f"bucket {b}": (p.by_bucket.get(b, 0), count) for b, (count, _) in summary.buckets.items()},
        **{f"classification {c}": (p.by_classification.get(c, 0), n) for c, n in summary.classification.items()},
    }
    if set(p.as_of) <= {summary.as_of.isoformat()}:
        pairs["average dpd (dpd > 0)"] = (p.average_late_dpd, round(summary.avg_dpd, 2))
    return {name: pair for name, pair in pairs.items() if pair[0] != pair[1]}


def active_portfolio() -> Portfolio:
    portfolio = Portfolio()
    cursor = None
    while True:
        page = services().loans.list(_context(), LoanFilter(status=LoanStatus.ACTIVE.value), PAGE, cursor)
        for loan in page.items:
            portfolio.add(loan)
        cursor = page.next_cursor
        if cursor is None:
            return portfolio


def _print_counts(title: str, counts: dict[str, int]) -> None:
    table = Table("bucket", "active loans", title=title)
    for bucket in Bucket:
        table.add_row(bucket.value, str(counts.get(bucket.value, 0)))
    out.print(table)


@app.command("portfolio")
def check_portfolio() -> None:
    """The active book's figures, each bucket = bucket(dpd), and the counts against the bucket index;
    exit 1 if a check fails."""
    p = active_portfolio()
    index = _index_counts()
    table = Table("bucket", "shown (API)", "stored (bucket-list-index)", "", title="active loans per bucket")
    mismatched = 0
    for bucket in Bucket:
        shown, stored = p.by_bucket.get(bucket.value, 0), index.get(bucket.value, 0)
        mismatched += shown != stored
        table.add_row(bucket.value, str(shown), str(stored), "" if shown == stored else "[red]DIFFERENT[/]")
    out.print(table)
    lines = [
        ("active loans", str(p.loans)),
        ("by classification", ", ".join(f"{k} {v}" for k, v in sorted(p.by_classification.items()))),
        ("outstanding principal", f"{p.outstanding} paise"),
        ("overdue", f"{p.overdue} paise"),
        ("average dpd (dpd > 0)", str(p.average_late_dpd)),
        ("dpd_as_of (expect one date)", ", ".join(f"{k}: {v}" for k, v in sorted(p.as_of.items())) or "-"),
        ("bucket != bucket(dpd)", f"{len(p.wrong_bucket)} {p.wrong_bucket[:10] if p.wrong_bucket else ''}"),
    ]
    for label, value in lines:
        out.print(f"{label:<28} {value}", highlight=False)
    differences = dashboard_differences(p)
    for name, (recounted, dashboard) in differences.items():
        out.print(f"[red]dashboard differs[/] {name}: recounted {recounted}, dashboard {dashboard}")
    if not differences:
        out.print(f"{'dashboard (its counters)':<28} equal to this recount", highlight=False)
    if p.wrong_bucket or mismatched or differences:
        err.print("[bold red]portfolio check failed[/]: see the rows above")
        raise typer.Exit(1)


@app.command("buckets")
def check_buckets() -> None:
    """Active loans per bucket as stored (bucket index): the cheap daily count."""
    _print_counts("active loans per bucket (bucket-list-index)", _index_counts())
