"""The operations CLI (python -m ops) end to end against moto, through typer's CliRunner."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import boto3
import pytest
from typer.testing import CliRunner, Result

from chalicelib import clock
from chalicelib.adapters.dynamodb.delinquency import DynamoDelinquencyStore
from chalicelib.clock import FixedClock, use_clock
from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.flags import FlagName, FlagSource
from chalicelib.domain.loan import Loan
from chalicelib.domain.money import format_inr
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import LoanFilter
from chalicelib.wiring import services
from infra.provision import provision
from local.demo import seed
from ops.cli import app
from ops.csv_io import EXPORT_COLUMNS

ADMIN = RequestContext(actor=Actor(sub="test", role="admin"))
BOOK = 20
"""Enough loans for every bucket to appear (see local.demo)."""


def run(*args: str, **env: str) -> Result:
    # Wide enough that rich tables never truncate a cell the assertions look for.
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", **env})


def _parameter(name: FlagName) -> dict[str, object]:
    param: dict[str, object] = boto3.client("ssm").get_parameter(Name=f"/loan-crm/{settings().stage}/flags/{name}")[
        "Parameter"
    ]
    return param


def test_flags_list_and_set_round_trip(moto_stack: str) -> None:
    listed = run("flags", "list")
    assert listed.exit_code == 0, listed.output
    for name in FlagName:
        assert name.value in listed.stdout
    assert "FLAG_CACHE_SECONDS (60 s)" in listed.stdout

    at = dt.datetime(2026, 3, 15, 6, 30, tzinfo=dt.UTC)  # 12:00:00 IST
    with use_clock(FixedClock(at)):
        changed = run("flags", "set", "CRON_ENABLED", "false", FLAG_CACHE_SECONDS="45")

    assert changed.exit_code == 0, changed.output
    assert "CRON_ENABLED on stage" in changed.stdout and "true (ssm) -> false" in changed.stdout
    assert (
        "Takes effect now for jobs (they read fresh), within FLAG_CACHE_SECONDS (45 s) for the API, "
        "by 2026-03-15 12:00:45 IST." in changed.stdout
    )
    assert _parameter(FlagName.CRON_ENABLED)["Value"] == "false"
    assert _parameter(FlagName.CRON_ENABLED)["Type"] == "String"
    flag = services().flags.read(FlagName.CRON_ENABLED, fresh=True)
    assert (flag.enabled, flag.source) == (False, FlagSource.PARAMETER)
    row = next(line for line in run("flags", "list").stdout.splitlines() if "CRON_ENABLED" in line)
    assert row.split("│")[2].strip() == "false"

    assert run("flags", "set", "CRON_ENABLED", "true").exit_code == 0
    assert services().flags.read(FlagName.CRON_ENABLED, fresh=True).enabled is True


REFUSED = [
    ("CRON", "false", "unknown flag 'CRON'"),
    ("cron_enabled", "false", "unknown flag 'cron_enabled'"),
    ("DELETE_EVERYTHING", "true", "unknown flag"),
    ("CRON_ENABLED", "yes", "value must be true or false"),
    ("CRON_ENABLED", "False", "value must be true or false"),
    ("CRON_ENABLED", "0", "value must be true or false"),
    ("CRON_ENABLED", "", "value must be true or false"),
]


def test_flags_set_refuses_unknown_names_and_values(moto_stack: str) -> None:
    before = _parameter(FlagName.CRON_ENABLED)

    for name, value, complaint in REFUSED:
        refused = run("flags", "set", name, value)

        assert refused.exit_code == 2, (name, value)
        assert complaint in refused.stderr, (name, value)
    assert _parameter(FlagName.CRON_ENABLED) == before
    stored = boto3.client("ssm").get_parameters_by_path(Path=f"/loan-crm/{moto_stack}/flags/")["Parameters"]
    assert {p["Name"] for p in stored} == {f"/loan-crm/{moto_stack}/flags/{f}" for f in FlagName}


def test_dpd_run_on_a_seeded_book_then_runs_shows_it(moto_stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(BOOK)
    yesterday = clock.last_completed_business_date()
    earlier = yesterday - dt.timedelta(days=3)

    # A run that fails first (before any date completed, so it really runs): its record says so in
    # plain words, without the exception's own text.
    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("segment read failed on arn:aws:dynamodb:ap-south-1:123456789012:table/loans")

    with monkeypatch.context() as patched:
        patched.setattr(DynamoDelinquencyStore, "scan_segment", broken)
        failed = run("dpd", "run", "--date", earlier.isoformat())
    assert failed.exit_code == 1
    assert f"dpd run {earlier}: FAILED" in failed.stdout and "internal error (RuntimeError)" in failed.stdout
    assert "arn:aws" not in failed.stdout and "segment read failed" not in failed.stdout

    ran = run("dpd", "run", "--date", yesterday.isoformat())

    assert ran.exit_code == 0, ran.output
    assert f"dpd run {yesterday}: COMPLETED" in ran.stdout
    assert f"status COMPLETED  scanned {BOOK}" in ran.stdout
    assert "_aws" not in ran.stdout  # the job's metric lines went to stderr
    history = run("dpd", "runs")
    assert history.exit_code == 0, history.output
    row = next(line for line in history.stdout.splitlines() if yesterday.isoformat() in line)
    assert "COMPLETED" in row and "cli:" in row

    again = run("dpd", "run", "--date", yesterday.isoformat())
    assert again.exit_code == 0 and "ALREADY_COMPLETED" in again.stdout

    not_over = run("dpd", "run", "--date", clock.today_ist().isoformat())
    assert not_over.exit_code == 2 and "has not ended yet" in not_over.stderr
    assert run("dpd", "run", "--date", "15/03/2026").exit_code == 2
    dates = [line.split("│")[1].strip() for line in run("dpd", "runs").stdout.splitlines() if "│ 20" in line]
    assert dates == [yesterday.isoformat(), earlier.isoformat()]  # newest first
    as_json = [json.loads(line) for line in run("dpd", "runs", "--json").stdout.splitlines()]
    assert [(r["business_date"], r["status"]) for r in as_json] == [
        (yesterday.isoformat(), "COMPLETED"),
        (earlier.isoformat(), "FAILED"),
    ]
    assert as_json[1]["last_error"].startswith("internal error (RuntimeError)")


def _listed(filters: LoanFilter) -> list[Loan]:
    loans: list[Loan] = []
    cursor = None
    while True:
        page = services().loans.list(ADMIN, filters, 7, cursor)
        loans.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return loans


def test_export_matches_loan_service_list_for_a_bucket(moto_stack: str) -> None:
    seed(BOOK)

    exported = run("export", "loans", "--bucket", "90+")

    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    expected = _listed(LoanFilter(bucket="90+"))
    assert expected, "the seeded book has 90+ loans"
    assert f"{len(expected)} loans exported" in exported.stderr
    assert [r["loan_id"] for r in rows] == [loan.loan_id for loan in expected]
    for row, loan in zip(rows, expected, strict=True):
        d = loan.delinquency
        assert row == {
            "loan_id": loan.loan_id,
            "borrower_name": loan.borrower.name,
            "phone": loan.borrower.phone,
            "collector_id": loan.collector_id or "",
            "branch": loan.branch or "",
            "status": loan.status.value,
            "principal_paise": str(loan.principal_paise),
            "outstanding_principal_paise": str(loan.outstanding_principal_paise),
            "overdue_paise": str(d.overdue_paise),
            "dpd": str(d.dpd),
            "bucket": "90+",
            "classification": "NPA",
            "npa_since": d.npa_since.isoformat() if d.npa_since else "",
            "dpd_as_of": d.as_of.isoformat(),
            "outstanding_inr": format_inr(loan.outstanding_principal_paise),
        }
        assert int(row["dpd"]) > 90 and row["npa_since"]

    everything = list(csv.DictReader(io.StringIO(run("export", "loans").stdout)))
    assert len(everything) == BOOK
    collector = rows[0]["collector_id"] or "col-anita"
    mine = list(csv.DictReader(io.StringIO(run("export", "loans", "--collector", collector).stdout)))
    assert {r["loan_id"] for r in mine} == {loan.loan_id for loan in _listed(LoanFilter(collector_id=collector))}
    assert run("export", "loans", "--bucket", "100+").exit_code == 2


def test_seed_is_for_the_local_stage_only(moto_stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = run("seed", "--loans", "5")
    assert refused.exit_code == 2 and "seed the local stage only" in refused.stderr

    monkeypatch.setenv("STAGE", "local")
    provision("local", boto3.client("dynamodb"), boto3.client("ssm"), quiet=True)

    seeded = run("seed", "--loans", "5")

    assert seeded.exit_code == 0, seeded.output
    assert "demo loans: 5 (5 created, 0 already there)" in seeded.stdout
