"""Backups (python -m ops backup ...) against moto: DynamoDB Local has no backup API.

verify compares a restore with the checksum recorded when the backup was taken, so a live table that
moved on since is not a failure, and a restore that differs from what was saved is one."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner, Result

from chalicelib.clock import FixedClock, use_clock
from chalicelib.config import settings
from infra.provision import table_specs
from local.demo import seed
from ops import backups
from ops.cli import app


def run(*args: str, manifest: Path) -> Result:
    return CliRunner().invoke(app, ["backup", *args, "--manifest", str(manifest)], env={"COLUMNS": "400"})


def _tables() -> list[str]:
    return list(boto3.client("dynamodb").list_tables()["TableNames"])


def _temporaries() -> list[str]:
    return [t for t in _tables() if "-verify-" in t]


def _result_line(output: str, table: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"│ {table} "))


def _change_one_loan() -> None:
    ddb = boto3.client("dynamodb")
    loans = settings().table_name("loans")
    item = ddb.scan(TableName=loans, Limit=1)["Items"][0]
    ddb.update_item(
        TableName=loans,
        Key={"loan_id": item["loan_id"]},
        UpdateExpression="SET notes = :n",
        ExpressionAttributeValues={":n": {"S": "changed after the backup"}},
    )


@pytest.fixture
def book(moto_stack: str) -> str:
    seed(12)
    return moto_stack


def test_create_list_verify_then_a_planted_difference_fails_naming_the_table(book: str, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    names = [s.name for s in table_specs(book)]

    created = run("create", manifest=manifest)

    assert created.exit_code == 0, created.output
    revision = backups.git_revision()
    recorded = json.loads(manifest.read_text())["backups"]
    assert sorted(r["table"] for r in recorded.values()) == sorted(names)
    for r in recorded.values():
        assert r["backup_name"].startswith(f"{r['table']}-{revision}-") and r["backup_name"].endswith("IST")
        assert r["revision"] == revision and len(r["checksum"]) == 64
    loans_record = next(r for r in recorded.values() if r["table"] == settings().table_name("loans"))
    assert loans_record["items"] == 12

    listed = run("list", manifest=manifest)
    assert listed.exit_code == 0, listed.output
    for name in names:
        assert name in listed.stdout

    verified = run("verify", manifest=manifest)

    assert verified.exit_code == 0, verified.output
    for name in names:
        line = _result_line(verified.stdout, name)
        assert "backup record" in line and "OK" in line, line
    assert "12/12" in _result_line(verified.stdout, settings().table_name("loans"))
    assert "all backups verified" in verified.stdout
    assert _temporaries() == []

    # The live table moving on after its backup is not a fault of the backup.
    _change_one_loan()
    assert run("verify", manifest=manifest).exit_code == 0

    # What was saved no longer matches what was recorded: the restore differs from the record.
    loans = settings().table_name("loans")
    data = json.loads(manifest.read_text())
    arn = next(a for a, r in data["backups"].items() if r["table"] == loans)
    data["backups"][arn]["checksum"] = "0" * 64
    manifest.write_text(json.dumps(data))

    tampered = run("verify", manifest=manifest)

    assert tampered.exit_code == 1
    assert "restored items differ from the backup record" in _result_line(tampered.stdout, loans)
    assert f"backup verify failed for: {loans}" in tampered.stderr
    others = [n for n in names if n != loans]
    assert all("OK" in _result_line(tampered.stdout, n) for n in others)
    assert _temporaries() == []


def test_without_a_record_verify_compares_with_the_live_table_and_says_so(book: str, tmp_path: Path) -> None:
    assert run("create", manifest=tmp_path / "elsewhere.json").exit_code == 0
    manifest = tmp_path / "this-machine.json"  # another operator's machine: no record of those backups
    loans = settings().table_name("loans")

    untouched = run("verify", manifest=manifest)

    assert untouched.exit_code == 0, untouched.output
    assert "live table" in _result_line(untouched.stdout, loans)

    _change_one_loan()
    changed = run("verify", manifest=manifest)

    assert changed.exit_code == 1
    assert "restored items differ from the live table" in _result_line(changed.stdout, loans)
    assert f"backup verify failed for: {loans}" in changed.stderr
    assert _temporaries() == []


def test_newest_backup_is_the_one_verified_and_listed_first(book: str, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    ddb = boto3.client("dynamodb")
    first = backups.create_backups(ddb, book, manifest, revision="aaaaaaa")
    _change_one_loan()
    second = backups.create_backups(ddb, book, manifest, revision="bbbbbbb")

    listed = backups.list_backups(ddb, book)
    loans = settings().table_name("loans")
    assert [b.arn for b in listed[loans]][:2] == [
        next(r.backup_arn for r in second if r.table == loans),
        next(r.backup_arn for r in first if r.table == loans),
    ]
    verified = backups.verify_backups(ddb, book, manifest, delay=0)
    assert verified.ok
    assert {r.revision for r in verified.results} == {"bbbbbbb"}


def test_a_table_written_during_the_backup_gets_no_checksum(book: str, tmp_path: Path) -> None:
    class WritesDuringBackup:
        """A client whose backups race a payment: the table changes right after the snapshot."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def create_backup(self, **kwargs: Any) -> Any:
            answer = self._inner.create_backup(**kwargs)
            if kwargs["TableName"] == settings().table_name("loans"):
                _change_one_loan()
            return answer

    manifest = tmp_path / "manifest.json"
    created = backups.create_backups(WritesDuringBackup(boto3.client("dynamodb")), book, manifest, "ccccccc")

    loans = next(r for r in created if r.table == settings().table_name("loans"))
    assert (loans.items, loans.checksum) == (None, None)
    assert all(r.checksum for r in created if r is not loans)
    result = next(
        r
        for r in backups.verify_backups(boto3.client("dynamodb"), book, manifest, delay=0).results
        if r.table == loans.table
    )
    assert result.compared_with == backups.COMPARED_WITH_LIVE
    # Compared with the live table, the write after the snapshot shows as a difference: the reason
    # create records a checksum whenever the table held still.
    assert result.problem == "restored items differ from the live table"


def test_temporaries_are_deleted_when_verification_breaks_midway(book: str, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    ddb = boto3.client("dynamodb")
    backups.create_backups(ddb, book, manifest, revision="ddddddd")
    calls = {"n": 0}

    def flaky_digest(client: Any, table: str) -> backups.Digest:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("scan interrupted")
        return backups.table_digest(client, table)

    verified = backups.verify_backups(ddb, book, manifest, delay=0, digest=flaky_digest)

    assert not verified.ok
    broken = [r for r in verified.results if not r.ok]
    assert len(broken) == 1 and "scan interrupted" in (broken[0].problem or "")
    assert len(verified.temporaries) == len(table_specs(book)) and verified.left_behind == []
    assert _temporaries() == []


def test_verify_without_any_backup_fails(book: str, tmp_path: Path) -> None:
    result = run("verify", manifest=tmp_path / "manifest.json")

    assert result.exit_code == 1
    assert "no available backup" in result.stdout
    assert _temporaries() == []


def test_checksum_ignores_item_order_and_set_order() -> None:
    a = {"k": {"S": "1"}, "tags": {"SS": ["x", "y"]}, "m": {"M": {"b": {"N": "2"}, "a": {"B": b"\x00"}}}}
    b = {"m": {"M": {"a": {"B": b"\x00"}, "b": {"N": "2"}}}, "tags": {"SS": ["y", "x"]}, "k": {"S": "1"}}
    assert backups.item_digest(a) == backups.item_digest(b)
    assert backups.item_digest(a) != backups.item_digest({**a, "k": {"S": "2"}})
    assert backups.item_digest({"n": {"N": "1"}}) != backups.item_digest({"n": {"S": "1"}})


def test_prune_deletes_only_on_demand_backups_older_than_asked(book: str, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    assert run("create", manifest=manifest).exit_code == 0
    tables = len(table_specs(book))
    ddb = boto3.client("dynamodb")

    def listed() -> int:
        return sum(len(found) for found in backups.list_backups(ddb, book).values())

    young = CliRunner().invoke(app, ["backup", "prune", "--older-than", "35d"], env={"COLUMNS": "400"})
    assert young.exit_code == 0 and "0 on-demand backups older than 35d deleted" in young.stdout
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=36)
    with use_clock(FixedClock(later)):
        dry = CliRunner().invoke(app, ["backup", "prune", "--dry-run"], env={"COLUMNS": "400"})
        assert dry.exit_code == 0, dry.output
        assert f"{tables} on-demand backups older than 35d found" in dry.stdout and listed() == tables
        pruned = CliRunner().invoke(app, ["backup", "prune"], env={"COLUMNS": "400"})

    assert pruned.exit_code == 0, pruned.output
    assert f"{tables} on-demand backups older than 35d deleted" in pruned.stdout
    assert listed() == 0
