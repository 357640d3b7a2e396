"""The ops CLI's commands on the book and its tables, against moto: ``check`` (loans recomputed from
their schedules, the portfolio against the bucket index), ``users``, ``restore`` (the copy-back of a
data rollback) and ``backup pitr``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from typer.testing import CliRunner, Result

from chalicelib import clock, retry
from chalicelib.config import settings
from chalicelib.domain.roles import Role
from chalicelib.services.auth import verify_password
from chalicelib.services.ports import AuditFilter, LoanFilter
from chalicelib.wiring import services
from local.demo import seed
from ops import checks, restore
from ops.cli import app

BOOK = 20
"""Enough loans for every bucket to appear (see local.demo)."""
PASSWORD = "sixteen-chars-or-more"


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin, env={"COLUMNS": "400"})


def _loans_table() -> str:
    return settings().table_name("loans")


def _set(loan_id: str, attribute: str, value: dict[str, Any]) -> None:
    boto3.client("dynamodb").update_item(
        TableName=_loans_table(),
        Key={"loan_id": {"S": loan_id}},
        UpdateExpression="SET #a = :v",
        ExpressionAttributeNames={"#a": attribute},
        ExpressionAttributeValues={":v": value},
    )


# ---- check -----------------------------------------------------------------------------------------


def test_check_shown_recomputes_dpd_bucket_and_outstanding_from_the_schedule() -> None:
    row = {"principal_paise": 1000, "interest_paise": 100, "paid_principal_paise": 0, "paid_interest_paise": 0}
    shown = {
        "loan_id": "LN1",
        "status": "ACTIVE",
        "dpd_as_of": "2026-03-14",
        "dpd": 31,
        "bucket": "31-60",
        "outstanding_principal_paise": 1600,
        "schedule": [
            {**row, "due_date": "2026-02-12", "paid_principal_paise": 400},  # partly paid is unpaid: day 1 is 02-12
            {**row, "due_date": "2026-03-12"},
            {**row, "due_date": "2026-04-12", "paid_principal_paise": 1000, "paid_interest_paise": 100},
        ],
    }

    checked = checks.check_shown(shown)

    assert (checked.expected_dpd, checked.expected_bucket, checked.expected_outstanding) == (31, "31-60", 1600)
    assert checked.ok
    assert not checks.check_shown({**shown, "dpd": 30}).ok
    assert checks.check_shown({**shown, "status": "CLOSED", "dpd": 0, "bucket": "CURRENT"}).ok
    assert not checks.check_shown({**shown, "status": "CLOSED", "outstanding_principal_paise": 0}).ok
    paid_up = [{**r, "paid_principal_paise": 1000, "paid_interest_paise": 100} for r in shown["schedule"]]
    assert checks.check_shown({**shown, "schedule": paid_up, "dpd": 0, "bucket": "CURRENT"}).expected_dpd == 0
    assert [checks.bucket_of(d) for d in (0, 1, 30, 31, 60, 61, 90, 91)] == [
        "CURRENT", "1-30", "1-30", "31-60", "31-60", "61-90", "61-90", "90+"
    ]  # fmt: skip


def test_check_loan_and_portfolio_pass_on_a_healthy_book_and_name_a_damaged_loan(moto_stack: str) -> None:
    seed(BOOK)

    sampled = run("check", "loan", "--per-bucket", "2")
    portfolio = run("check", "portfolio")
    buckets = run("check", "buckets")

    assert sampled.exit_code == 0, sampled.output
    assert "0 with a mismatch" in sampled.stdout and "90+" in sampled.stdout
    assert portfolio.exit_code == 0, portfolio.output
    assert f"active loans                 {BOOK}" in portfolio.stdout
    assert "DIFFERENT" not in portfolio.stdout and "bucket != bucket(dpd)        0" in portfolio.stdout
    assert "dashboard (its counters)     equal to this recount" in portfolio.stdout
    for bucket_row in (line for line in buckets.stdout.splitlines() if "│ 90+" in line):
        assert int(bucket_row.split("│")[2]) > 0

    _set("DEMO-00002", "dpd", {"N": "45"})
    damaged = run("check", "loan", "DEMO-00002", "NO-SUCH-LOAN")
    assert damaged.exit_code == 1
    assert "2 loans checked, 2 with a mismatch" in damaged.stdout and "not found" in damaged.stdout

    _set("DEMO-00003", "bucket", {"S": "61-90"})
    wrong = run("check", "portfolio")
    assert wrong.exit_code == 1
    line = next(line for line in wrong.stdout.splitlines() if line.startswith("bucket != bucket(dpd)"))
    assert line.split()[3] == "2" and "DEMO-00002" in line and "DEMO-00003" in line  # the dpd above, and this
    # Written behind the API's back, the bucket no longer matches the dashboard's counters either.
    assert "dashboard differs bucket 61-90" in wrong.stdout
    assert run("check", "loan").exit_code == 2


# ---- users -----------------------------------------------------------------------------------------


def test_users_add_refuses_to_replace_and_deactivate_stops_logins(moto_stack: str) -> None:
    added = run("users", "add", "first.admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")

    assert added.exit_code == 0, added.output
    assert f"created first.admin (admin, active) on stage {moto_stack}" in added.stdout
    stored = services().auth.users.get("first.admin")
    assert stored is not None and stored.role == "admin" and verify_password(PASSWORD, stored.password_hash)
    assert PASSWORD not in added.output
    created = _audit("USER_CREATED", "first.admin")
    assert len(created) == 1 and created[0].actor.sub.startswith("system:ops:")
    assert PASSWORD not in repr(created) and "pbkdf2" not in repr(created)

    again = run("users", "add", "first.admin", "--role", "collector", "--password-stdin", stdin="x" * 20 + "\n")
    assert again.exit_code == 2 and "CONFLICT" in again.stderr
    assert services().auth.users.get("first.admin") == stored
    short = run("users", "add", "second", "--role", "auditor", "--password-stdin", stdin="short-pass\n")
    assert short.exit_code == 2 and "password" in short.stderr and services().auth.users.get("second") is None
    assert run("users", "add", "third", "--role", "root", "--password-stdin", stdin=PASSWORD).exit_code == 2
    assert run("users", "add", "Upper.Case", "--role", "auditor", "--password-stdin", stdin=PASSWORD).exit_code == 2

    reset = run("users", "reset-password", "first.admin", "--password-stdin", stdin="another-long-passphrase\n")
    assert reset.exit_code == 0, reset.output
    assert verify_password("another-long-passphrase", services().auth.users.get("first.admin").password_hash)  # type: ignore[union-attr]

    last = run("users", "deactivate", "first.admin")
    assert last.exit_code == 2 and "last active admin" in last.stderr
    assert run("users", "add", "second.admin", "--role", "admin", "--password-stdin", stdin=PASSWORD).exit_code == 0
    deactivated = run("users", "deactivate", "first.admin")
    assert deactivated.exit_code == 0, deactivated.output
    assert "deactivated first.admin (admin, inactive)" in deactivated.stdout
    assert services().auth.users.get("first.admin").active is False  # type: ignore[union-attr]
    assert len(_audit("USER_UPDATED", "first.admin")) == 2  # the reset and the deactivation
    assert run("users", "deactivate", "nobody").exit_code == 2

    listed = run("users", "list")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if "first.admin" in line)
    assert "admin" in row and "no" in row
    assert "pbkdf2" not in listed.stdout.lower()


def test_users_deactivate_moves_a_departing_collectors_loans_first(moto_stack: str) -> None:
    seed(12)  # demo collectors hold some of these loans
    book = services().loans.loans
    holder = next(u for u in ("col-anita", "col-ravi", "col-imran", "col-priya", "col-suresh") if _held(u))
    successor = "col-suresh" if holder != "col-suresh" else "col-anita"
    held = _held(holder)

    refused = run("users", "deactivate", holder)
    assert refused.exit_code == 2 and "CONFLICT" in refused.stderr
    assert services().auth.users.get(holder).active is True  # type: ignore[union-attr]

    done = run("users", "deactivate", holder, "--reassign-to", successor)

    assert done.exit_code == 0, done.output
    assert f"loans moved to {successor}: {len(held)}" in done.stdout
    assert services().auth.users.get(holder).active is False  # type: ignore[union-attr]
    assert _held(holder) == []
    assert all(book.get(loan_id).collector_id == successor for loan_id in held)  # type: ignore[union-attr]
    assert {e.entity_id for e in _audit("LOAN_ASSIGNED")} >= set(held)


def _held(collector: str) -> list[str]:
    page = services().loans.loans.list(LoanFilter(collector_id=collector, status="ACTIVE"), 200, None)
    return sorted(loan.loan_id for loan in page.items)


def _audit(action: str, entity_id: str | None = None) -> list[Any]:
    return list(services().audit.list(AuditFilter(action=action, entity_id=entity_id), 200, None).items)


def test_failed_logins_shows_username_and_source_of_each_window(moto_stack: str) -> None:
    auth = services().auth
    auth.add_user("ravi", PASSWORD, Role.COLLECTOR)
    for source in ("203.0.113.7", "203.0.113.7", "2001:db8:1:2::99"):
        with pytest.raises(Exception, match="wrong username or password"):
            auth.login("ravi", "not-it", source)

    shown = run("users", "failed-logins", "--since", "15m")

    assert shown.exit_code == 0, shown.output
    rows = [line.split("│")[1:4] for line in shown.stdout.splitlines() if "│ ravi" in line]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["ravi", "203.0.113.7", "2"],
        ["ravi", "2001:db8:1:2::/64", "1"],
    ]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    with clock.use_clock(clock.FixedClock(later)):
        assert "ravi" not in run("users", "failed-logins", "--since", "1h").stdout


# ---- restore ---------------------------------------------------------------------------------------


def _copy_table(source: str, target: str) -> None:
    ddb = boto3.client("dynamodb")
    described = ddb.describe_table(TableName=source)["Table"]
    ddb.create_table(
        TableName=target,
        KeySchema=described["KeySchema"],
        AttributeDefinitions=[a for a in described["AttributeDefinitions"] if a["AttributeName"] == "loan_id"],
        BillingMode="PAY_PER_REQUEST",
    )
    for page in ddb.get_paginator("scan").paginate(TableName=source):
        for item in page["Items"]:
            ddb.put_item(TableName=target, Item=item)


def _items(table: str) -> list[str]:
    ddb = boto3.client("dynamodb")
    return sorted(
        json.dumps(item, sort_keys=True)
        for page in ddb.get_paginator("scan").paginate(TableName=table)
        for item in page["Items"]
    )


def test_copy_back_makes_the_live_table_equal_to_the_restored_copy(moto_stack: str) -> None:
    seed(BOOK)
    live = _loans_table()
    _copy_table(live, f"{live}-restored")  # the "last good instant"
    restored = _items(f"{live}-restored")
    _set("DEMO-00004", "notes", {"S": "written by a bad release"})
    boto3.client("dynamodb").delete_item(TableName=live, Key={"loan_id": {"S": "DEMO-00005"}})
    created_later = {**boto3.client("dynamodb").get_item(TableName=live, Key={"loan_id": {"S": "DEMO-00006"}})["Item"]}
    created_later["loan_id"] = {"S": "LN-AFTER-T"}
    boto3.client("dynamodb").put_item(TableName=live, Item=created_later)

    dry = run("restore", "copy-back", "loans", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert f"would put {BOOK}, would delete 1" in dry.stdout
    assert _items(live) != restored

    done = run("restore", "copy-back", "loans")

    assert done.exit_code == 0, done.output
    assert f"{live} <- {live}-restored: put {BOOK}, deleted 1" in done.stdout
    assert _items(live) == restored
    refused = run("restore", "copy-back", "audit")
    assert refused.exit_code == 2 and "not restored in place" in refused.stderr
    missing = run("restore", "copy-back", "payments")
    assert missing.exit_code == 1 and "payments-restored" in missing.stderr


def test_a_copy_back_throttled_to_the_end_says_to_run_it_again_and_the_rerun_finishes(
    moto_stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB hands one put of every BatchWriteItem back unprocessed, every time (a table throttled
    throughout): the copy-back gives up after its pauses, says the table is partly copied and to run
    it again; run again, it makes the live table equal to the copy."""
    seed(BOOK)
    live = _loans_table()
    _copy_table(live, f"{live}-restored")
    restored = _items(f"{live}-restored")
    _set("DEMO-00004", "notes", {"S": "written by a bad release"})
    monkeypatch.setattr(retry.time, "sleep", lambda _seconds: None)
    client = boto3.client("dynamodb")
    sent: list[int] = []

    def hand_all_back(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        # Answered before it is sent (a before-call handler's answer replaces the request): nothing done.
        requests = json.loads(params["body"])["RequestItems"][live]
        sent.append(len(requests))
        return AWSResponse("", 200, {}, None), {"UnprocessedItems": {live: requests}}

    client.meta.events.register("before-call.dynamodb.BatchWriteItem", hand_all_back)
    monkeypatch.setattr(restore, "_ddb", lambda: client)

    throttled = run("restore", "copy-back", "loans")

    assert throttled.exit_code == 1, throttled.output
    assert "partly copied back" in throttled.stderr and "run the same command again" in throttled.stderr
    assert sent and len(sent) % retry.UNPROCESSED_KEYS.attempts == 0  # each write gave up after its attempts
    assert _items(live) != restored
    client.meta.events.unregister("before-call.dynamodb.BatchWriteItem", hand_all_back)
    done = run("restore", "copy-back", "loans")
    assert done.exit_code == 0, done.output
    assert _items(live) == restored


def test_clear_idempotency_empties_the_retry_records(moto_stack: str) -> None:
    ddb = boto3.client("dynamodb")
    table = settings().table_name("idempotency")
    for i in range(30):
        ddb.put_item(TableName=table, Item={"id": {"S": f"loan-crm#key-{i}"}, "status": {"S": "COMPLETED"}})

    counted = run("restore", "clear-idempotency", "--dry-run")
    cleared = run("restore", "clear-idempotency")

    assert counted.exit_code == 0 and "would delete 30 records" in counted.stdout
    assert cleared.exit_code == 0 and "deleted 30 records" in cleared.stdout
    assert ddb.scan(TableName=table)["Count"] == 0


# ---- backup pitr -----------------------------------------------------------------------------------


def test_backup_pitr_names_a_data_table_without_point_in_time_recovery(moto_stack: str) -> None:
    shown = run("backup", "pitr")

    assert shown.exit_code == 0, shown.output
    assert "loan-crm-" + moto_stack + "-audit" in shown.stdout
    assert "login-attempts" not in shown.stdout and "idempotency" not in shown.stdout
    boto3.client("dynamodb").update_continuous_backups(
        TableName=settings().table_name("payments"),
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False},
    )
    off = run("backup", "pitr")
    assert off.exit_code == 1 and "point-in-time recovery is off" in off.stderr
    row = next(line for line in off.stdout.splitlines() if "-payments " in line)
    assert "DISABLED" in row
