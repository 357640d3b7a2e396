"""``python -m ops verify`` end to end: the API served over real HTTP on a free port (as ``make run`` serves
it) against moto, with a book, last night's run, backups and alarms in place, the clock frozen at
12:00 IST on 15 March 2026. Every check passes and the payment probe leaves every table as it was;
then one thing at a time is broken and exactly its row fails, with exit status 1."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import typer
from moto.dynamodb.models import table as moto_table
from typer.testing import CliRunner, Result

from chalicelib.clock import IST, FixedClock, now_ist, use_clock
from chalicelib.config import settings
from chalicelib.domain.roles import Role
from chalicelib.domain.runs import RunStatus
from chalicelib.wiring import services
from local.demo import seed
from local.environment import Ports
from ops import verify
from ops.cli import app
from ops.target import Target
from tests.integration.api_helpers import FROZEN_AT, YESTERDAY, local_server

PASSWORD = "a-long-operator-password"
BOOK = 12
CHECKS = [
    "health",
    "every route answers",
    "day-end run",
    "payment path (changes nothing)",
    "audit trail written",
    "latest backups",
    "alarms",
]
ALARMS = ("dpd-run-failed", "payment-failed")
WRITTEN_BY_A_LOGIN = ("login-attempts",)
"""The login throttle counts the verify's own login (and clears it): the one table it may touch."""


def run_verify(url: str, *extra: str) -> Result:
    return CliRunner().invoke(
        app,
        ["verify", "--url", url, "--user", "ops-admin", "--password-stdin", *extra],
        input=PASSWORD + "\n",
        env={"COLUMNS": "400"},
    )


def rows(result: Result) -> dict[str, tuple[str, str]]:
    """check -> (verdict, detail), from the table's lines."""
    found: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 3 and cells[0] in CHECKS:
            found[cells[0]] = (cells[1], cells[2])
    return found


def backup_all(stage: str, at: dt.datetime) -> None:
    """An on-demand backup of every table, made at ``at`` as far as DynamoDB (moto) records it."""
    ddb = boto3.client("dynamodb")
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(moto_table, "utcnow", lambda: at.astimezone(dt.UTC).replace(tzinfo=None))
        for name in ddb.list_tables()["TableNames"]:
            if name.startswith(f"loan-crm-{stage}-"):
                ddb.create_backup(TableName=name, BackupName=f"{name}-test")


def dump(stage: str) -> dict[str, list[dict[str, Any]]]:
    ddb = boto3.client("dynamodb")
    tables: dict[str, list[dict[str, Any]]] = {}
    for name in ddb.list_tables()["TableNames"]:
        short = name.removeprefix(f"loan-crm-{stage}-")
        if name.startswith(f"loan-crm-{stage}-") and short not in WRITTEN_BY_A_LOGIN:
            items = ddb.scan(TableName=name, ConsistentRead=True)["Items"]
            tables[short] = sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return tables


@pytest.fixture
def stage_ready(moto_stack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A stage that should pass: an operator, a book, yesterday's run completed, every table backed up
    two hours ago, two alarms in OK, and its API served. Yields the API's URL."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OPS_USER", raising=False)
    with use_clock(FixedClock(FROZEN_AT)):
        services().auth.add_user("ops-admin", PASSWORD, Role.ADMIN)
        seed(BOOK)
        assert services().dpd_job.run(dt.date.fromisoformat(YESTERDAY), trigger="test").record is not None
        backup_all(moto_stack, FROZEN_AT - dt.timedelta(hours=2))
        cw = boto3.client("cloudwatch")
        for alarm in ALARMS:
            name = f"loan-crm-{moto_stack}-{alarm}"
            cw.put_metric_alarm(
                AlarmName=name, Namespace=f"LoanCRM/{moto_stack}", MetricName="Anything", Statistic="Sum",
                Period=300, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
            )  # fmt: skip
            cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="test")
        with local_server() as url:
            yield url


def test_a_healthy_stage_passes_every_check_and_the_probe_writes_nothing(stage_ready: str, moto_stack: str) -> None:
    before = dump(moto_stack)

    result = run_verify(stage_ready)

    assert result.exit_code == 0, result.output
    found = rows(result)
    assert list(found) == CHECKS
    assert {check: verdict for check, (verdict, _) in found.items()} == dict.fromkeys(CHECKS, "PASS"), found
    assert "all 7 checks passed" in result.stderr
    assert found["health"][1].startswith(f"200 ok (dynamodb ok, ssm ok), stage {moto_stack}")
    assert found["every route answers"][1].startswith("23 routes, 28 methods, without a token: 200 x3, 400 x1, 401 x24")
    assert found["day-end run"][1].startswith(f"{YESTERDAY} COMPLETED, finished 2026-03-15 12:00 IST: scanned {BOOK}")
    assert "amount 0 refused 422 AMOUNT_OUT_OF_RANGE" in found["payment path (changes nothing)"][1]
    assert (
        found["audit trail written"][1]
        == "newest: LOAN_CREATED SUCCESS by system:seed, 2026-03-15 12:00 IST (0 min ago)"
    )
    assert found["latest backups"][1] == (
        f"11 data tables, each backed up within 26 h (oldest: loan-crm-{moto_stack}-loans, 2 h ago)"
    )
    assert found["alarms"][1] == "2 alarms, none in ALARM (OK 2)"
    assert dump(moto_stack) == before


def _alarm_fires(stage: str) -> None:
    boto3.client("cloudwatch").set_alarm_state(
        AlarmName=f"loan-crm-{stage}-payment-failed", StateValue="ALARM", StateReason="threshold crossed"
    )


def _backups_are_old(stage: str) -> None:
    ddb = boto3.client("dynamodb")
    for summary in ddb.list_backups()["BackupSummaries"]:
        ddb.delete_backup(BackupArn=summary["BackupArn"])
    backup_all(stage, FROZEN_AT - dt.timedelta(hours=30))


def _no_day_end_run(stage: str) -> None:
    boto3.client("dynamodb").delete_item(
        TableName=f"loan-crm-{stage}-dpd-runs", Key={"business_date": {"S": YESTERDAY}}
    )


@pytest.mark.parametrize(
    ("broken", "check", "detail"),
    [
        (
            _alarm_fires,
            "alarms",
            "in ALARM: loan-crm-{stage}-payment-failed (see docs/runbook/alerts/payment-failed.md)",
        ),
        (_backups_are_old, "latest backups", "older than 26 h: loan-crm-{stage}-aggregates (30 h ago)"),
        (_no_day_end_run, "day-end run", f"yesterday ({YESTERDAY}): no run; see python -m ops dpd runs"),
    ],
)
def test_one_broken_thing_fails_its_own_row_and_the_exit_status(
    stage_ready: str, moto_stack: str, broken: Callable[[str], None], check: str, detail: str
) -> None:
    broken(moto_stack)

    result = run_verify(stage_ready)

    assert result.exit_code == 1
    found = rows(result)
    verdicts = {name: verdict for name, (verdict, _) in found.items()}
    assert verdicts == {**dict.fromkeys(CHECKS, "PASS"), check: "FAIL"}, found
    assert found[check][1].startswith(detail.format(stage=moto_stack)), found[check]
    assert f"1 of 7 checks failed: {check}" in result.stderr


def test_before_0600_ist_the_run_of_the_day_before_is_enough(moto_stack: str) -> None:
    get = services().runs.get
    early = dt.datetime(2026, 3, 15, 3, 0, tzinfo=IST)

    assert check_verdict(verify.check_day_end(get, early)) == ("FAIL", f"yesterday ({YESTERDAY}): no run")
    with use_clock(FixedClock(early)):
        services().dpd_job.run(dt.date(2026, 3, 13), trigger="test")
    row = verify.check_day_end(get, early)
    assert check_verdict(row) == ("PASS", f"{YESTERDAY}: no run, not due before 06:00 IST; 2026-03-13 COMPLETED")
    late = early.replace(hour=6)
    assert check_verdict(verify.check_day_end(get, late))[0] == "FAIL"
    with use_clock(FixedClock(late)):
        assert services().dpd_job.run(dt.date.fromisoformat(YESTERDAY), trigger="test").record is not None
    assert services().runs.get(dt.date.fromisoformat(YESTERDAY)).status is RunStatus.COMPLETED  # type: ignore[union-attr]
    assert verify.check_day_end(get, late).verdict is verify.Verdict.PASS


def check_verdict(row: verify.Row) -> tuple[str, str]:
    return row.verdict.value, row.detail.split(";")[0] if row.verdict is verify.Verdict.FAIL else row.detail


def test_the_local_stack_skips_backups_and_judges_its_metrics_by_the_alarm_rules(
    stage_ready: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = typer.Context(typer.main.get_command(app), obj=Target(local_ports=Ports(8000, 5000, 8080)))
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n" + PASSWORD + "\n"))

    verify.verify_command(ctx, user="ops-admin", password_stdin=True, url=stage_ready)

    printed = capsys.readouterr()
    assert "all 6 checks passed, 1 skipped" in printed.err
    lines = printed.out.splitlines()
    assert any(
        "latest backups" in line and "SKIP" in line and "DynamoDB Local keeps no backups" in line for line in lines
    )
    assert any("alarms" in line and "PASS" in line and "none would fire" in line for line in lines)

    # A metric over an alarm's threshold, as the local stack forwards it, fails the row.
    boto3.client("cloudwatch").put_metric_data(
        Namespace=f"LoanCRM/{settings().stage}",
        MetricData=[
            {
                "MetricName": "PaymentFailed",
                "Dimensions": [{"Name": "service", "Value": "loan-crm"}],
                "Value": 1,
                "Timestamp": now_ist(),  # the test's frozen now
            }
        ],
    )
    with pytest.raises(typer.Exit):
        verify.verify_command(ctx, user="ops-admin", password_stdin=True, url=stage_ready)
    row = next(line for line in capsys.readouterr().out.splitlines() if "alarms" in line and "FAIL" in line)
    assert "payment-failed" in row
