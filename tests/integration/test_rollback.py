"""The rehearsed data rollback (docs/runbook/rollback.md) on moto, end to end: a book written through the
API, a backup, damage after it, ``ops restore tables`` into a new prefix, ``ops restore verify``, then the
API pointed at the new tables with ``TABLE_PREFIX`` reads the book as it was, and unsetting it goes back.

Where moto falls short of AWS, and what these tests do about it:

- a point-in-time restore copies the table as it is now, whatever instant is asked for: the PITR test
  checks the mechanics (every table made, settings applied, verified), not the instant;
- a restore drops the table's encryption setting and UpdateTable ignores ``SSESpecification``:
  :class:`KeepsEncryption` remembers what was asked and shows it, as AWS would;
- AWS Backup has no restore jobs: :class:`FakeVault` plays the vault, restoring with DynamoDB's own
  backups underneath.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner, Result

from chalicelib import wiring
from chalicelib.adapters.dynamodb.models import ALL_MODELS
from chalicelib.clock import FixedClock, use_clock
from chalicelib.config import reset_settings, settings
from infra.provision import table_specs
from ops import backups, restore
from ops.cli import app
from tests.integration.api_helpers import (
    FROZEN_AT,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    imported_body,
)

TODAY = (FROZEN_AT + dt.timedelta(hours=5, minutes=30)).date().isoformat()
ROWS = [("2026-01-05", 1_000_000, 100_000), ("2026-02-05", 1_000_000, 90_000), ("2026-04-05", 1_000_000, 80_000)]
TTL_TABLES = {"login-attempts", "idempotency"}
COPIED = {"audit", "reminders", "users"}
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


class KeepsEncryption:
    """A DynamoDB client that shows the KMS encryption a restore or UpdateTable asked for (moto drops it)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._kms: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _note(self, table: str, spec: dict[str, Any] | None) -> None:
        if spec and spec.get("Enabled") and spec.get("SSEType") == "KMS":
            self._kms.add(table)

    def restore_table_from_backup(self, **kwargs: Any) -> Any:
        self._note(kwargs["TargetTableName"], kwargs.get("SSESpecificationOverride"))
        return self._inner.restore_table_from_backup(**kwargs)

    def restore_table_to_point_in_time(self, **kwargs: Any) -> Any:
        self._note(kwargs["TargetTableName"], kwargs.get("SSESpecificationOverride"))
        return self._inner.restore_table_to_point_in_time(**kwargs)

    def update_table(self, **kwargs: Any) -> Any:
        self._note(kwargs["TableName"], kwargs.get("SSESpecification"))
        return self._inner.update_table(**kwargs)

    def tag_resource(self, **kwargs: Any) -> Any:
        for tag in kwargs["Tags"]:  # what DynamoDB accepts in a tag value; moto takes anything
            assert re.fullmatch(r"[\w\s+=._:/-]{0,256}", tag["Value"]), tag
        return self._inner.tag_resource(**kwargs)

    def describe_table(self, **kwargs: Any) -> Any:
        answer = self._inner.describe_table(**kwargs)
        if kwargs["TableName"] in self._kms:
            answer["Table"]["SSEDescription"] = {"Status": "ENABLED", "SSEType": "KMS"}
        return answer


@pytest.fixture
def ddb(moto_stack: str, monkeypatch: pytest.MonkeyPatch) -> KeepsEncryption:
    client = KeepsEncryption(boto3.client("dynamodb"))
    monkeypatch.setattr(restore, "_ddb", lambda: client)
    return client


def ops(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


def rows(output: str) -> dict[str, str]:
    """A rich table's lines by their first cell."""
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1]:
            found[cells[1]] = line
    return found


def tables() -> set[str]:
    return set(boto3.client("dynamodb").list_tables()["TableNames"])


def new_loan(api: Api, loan_id: str) -> None:
    api.create_loan(imported_body(ROWS, loan_id=loan_id, collector_id="collector1"))


def pay(api: Api, loan_id: str, utr: str, on: str = TODAY) -> dict[str, Any]:
    reply = api.post(
        "/api/v1/payments",
        {"loan_id": loan_id, "utr": utr, "amount_paise": 300_000, "payment_date": on, "mode": "UPI"},
    )
    assert reply.status == 201, reply.body
    answer: dict[str, Any] = reply.json
    return answer


def payments_of(api: Api, loan_id: str) -> list[str]:
    reply = api.get(f"/api/v1/loans/{loan_id}/payments")
    assert reply.status == 200, reply.body
    return sorted(p["utr"] for p in reply.json["items"])


def point_at(monkeypatch: pytest.MonkeyPatch, prefix: str | None) -> None:
    """What a redeploy with (or without) TABLE_PREFIX does to the functions: settings read afresh."""
    if prefix is None:
        monkeypatch.delenv("TABLE_PREFIX", raising=False)
    else:
        monkeypatch.setenv("TABLE_PREFIX", prefix)
    wiring.reset()


# --- the setting ------------------------------------------------------------------------------------


def test_table_prefix_names_every_table_only_when_it_belongs_to_the_stage(
    moto_stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = f"loan-crm-{moto_stack}-"
    assert settings().table_prefix == base and settings().table_name("loans") == f"{base}loans"

    point_at(monkeypatch, f"{base}r1-")
    assert settings().table_name("loans") == f"{base}r1-loans"
    assert settings().stage_prefix == base, "topics and alarms keep the stage's names"
    wiring.services()
    assert {m.Meta.table_name for m in ALL_MODELS} == {  # type: ignore[attr-defined]
        f"{base}r1-{m.Meta.short_name}"  # type: ignore[attr-defined]
        for m in ALL_MODELS
    }

    point_at(monkeypatch, "")
    assert settings().table_prefix == base, "empty is unset"

    for wrong in (
        "loan-crm-otherstage-r1-",  # another stage's tables
        f"{base}r1",  # no trailing dash
        f"{base}R1-",  # upper case
        f"{base}r_1-",
        f"{base}r1.-",
        f"x{base}r1-",
        f"{base}{'r' * 200}-",
    ):
        monkeypatch.setenv("TABLE_PREFIX", wrong)
        reset_settings()
        with pytest.raises(ValueError, match="TABLE_PREFIX must start with " + base):
            settings()


def test_backups_follow_the_table_prefix(ddb: KeepsEncryption, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prefix = f"{settings().table_prefix}r1-"
    for spec in backups.stage_tables(settings().stage, prefix):
        keys = {k["AttributeName"] for k in spec.key_schema}
        boto3.client("dynamodb").create_table(
            TableName=spec.name,
            AttributeDefinitions=[a for a in spec.properties["AttributeDefinitions"] if a["AttributeName"] in keys],
            KeySchema=spec.key_schema,
            BillingMode="PAY_PER_REQUEST",
        )
    point_at(monkeypatch, prefix)

    created = ops("backup", "create", "--manifest", str(tmp_path / "m.json"))

    assert created.exit_code == 0, created.output
    recorded = json.loads((tmp_path / "m.json").read_text())["backups"].values()
    assert sorted(r["table"] for r in recorded) == sorted(prefix + s for s in _shorts())


def _shorts() -> list[str]:
    return [backups.short_name(s, settings().stage) for s in table_specs(settings().stage)]


# --- the rehearsal ----------------------------------------------------------------------------------


def test_rollback_to_a_backup_under_a_new_prefix_and_back(
    api: Api, ddb: KeepsEncryption, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The book at the restore point: two loans, one payment, taken as a backup.
    new_loan(api, "LN-A")
    new_loan(api, "LN-B")
    pay(api, "LN-A", "SBIN0000001")
    good_a, good_b = api.loan("LN-A"), api.loan("LN-B")
    assert ops("backup", "create", "--manifest", str(tmp_path / "m.json")).exit_code == 0

    # The damage after it (moto stamps backups with the real time, so the damage comes later than that):
    # a payment, a loan edited, an item deleted behind the API's back.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    with api.at(later):
        pay(api, "LN-B", "SBIN0000002", on=later.astimezone(IST).date().isoformat())
        assert api.patch("/api/v1/loans/LN-A", {"notes": "written by the bad release"}).status == 200
    live = settings().table_prefix
    stored = boto3.client("dynamodb").scan(TableName=f"{live}payments")["Items"]
    first = next(i for i in stored if i["utr"]["S"] == "SBIN0000001")
    boto3.client("dynamodb").delete_item(TableName=f"{live}payments", Key={"payment_id": first["payment_id"]})

    prefix = f"{live}r1-"
    made = ops("restore", "tables", "--latest", "--prefix", prefix)

    assert made.exit_code == 0, made.output
    lines = rows(made.stdout)
    for short in _shorts():
        assert prefix + short in tables()
        line = lines[short]
        if short in TTL_TABLES:
            assert "new, empty" in line and "TTL" in line, line
        elif short in COPIED:
            assert f"copy of {live}{short}" in line and "items copied" in line and "PITR" in line, line
        else:
            assert "arn:aws:dynamodb:" in line and "PITR" in line and "deletion protection" in line, line
            assert "KMS key" in line and "tags" in line, line
    restored_loans = boto3.client("dynamodb").describe_table(TableName=f"{prefix}loans")["Table"]
    assert restored_loans["DeletionProtectionEnabled"] is True
    template_loans = next(s for s in table_specs(api.stage) if s.name.endswith("-loans"))
    assert {g["IndexName"] for g in restored_loans["GlobalSecondaryIndexes"]} == {
        g["IndexName"] for g in template_loans.properties["GlobalSecondaryIndexes"]
    }

    # Writes must be frozen before the copy: one that reaches the live audit after it fails verify,
    # and `refresh` copies it over.
    with api.at(later + dt.timedelta(minutes=1)):
        assert api.post("/api/v1/loans", imported_body(ROWS, loan_id="LN-X"), as_="collector").status == 403
    stale = ops("restore", "verify", "--prefix", prefix, "--against-live")
    assert (
        stale.exit_code == 1
        and "differs from the live table it was copied from" in rows(stale.stdout)[f"{prefix}audit"]
    )
    assert ops("restore", "refresh", "--prefix", prefix).exit_code == 0

    lost_file = tmp_path / "lost.jsonl"
    checked = ops("restore", "verify", "--prefix", prefix, "--against-live", "--lost-out", str(lost_file))

    assert checked.exit_code == 0, checked.output
    assert "reconciliation of the restored ledger: COMPLETED" in checked.stdout and "mismatches 0" in checked.stdout
    verified = rows(checked.stdout)
    # table | items | checksum | live items | only restored | only live | changed | from | result
    payments = [c.strip() for c in verified[f"{prefix}payments"].split("│")][1:-1]
    assert payments[1] == "1" and payments[3:7] == ["1", "1", "1", "0"], payments
    loans = [c.strip() for c in verified[f"{prefix}loans"].split("│")][1:-1]
    assert loans[1] == "2" and loans[6] == "2", loans  # both loans changed since (a payment, an edit)
    audit = [c.strip() for c in verified[f"{prefix}audit"].split("│")][1:-1]
    assert audit[4:7] == ["0", "0", "0"], audit  # the trail is kept whole
    assert all("OK" in verified[prefix + s] for s in _shorts())
    lost = [json.loads(line) for line in lost_file.read_text().splitlines()]
    written = {(e["action"], e["entity_id"]) for e in lost if e["outcome"] == "SUCCESS"}
    assert {("PAYMENT_POSTED", "LN-B"), ("LOAN_UPDATED", "LN-A")} <= written
    assert ("ACCESS_DENIED", "DENIED") in {(e["action"], e["outcome"]) for e in lost}
    assert [e["at"] for e in lost] == sorted(e["at"] for e in lost)
    assert "PAYMENT_POSTED 1" in checked.stdout and "LOAN_UPDATED 1" in checked.stdout

    # The cut-over: the stage reads the new tables, the damage is gone, the audit trail is whole.
    point_at(monkeypatch, prefix)
    assert api.loan("LN-A") == good_a and api.loan("LN-B") == good_b
    assert payments_of(api, "LN-A") == ["SBIN0000001"] and payments_of(api, "LN-B") == []
    assert "PAYMENT_POSTED" in [e["action"] for e in api.audit(entity_id="LN-B")]
    # The lost payment is re-entered from the audit trail: its UTR is free again in the restored tables.
    with api.at(later + dt.timedelta(minutes=2)):
        replayed = pay(api, "LN-B", "SBIN0000002", on=later.astimezone(IST).date().isoformat())
    assert (
        boto3.client("dynamodb")
        .get_item(TableName=f"{prefix}payments", Key={"payment_id": {"S": replayed["payment_id"]}})
        .get("Item")
    )

    # After the cut-over a refresh would make the new tables equal to the old ones, deleting what the
    # stage has written since: refused, whether this shell points at the new tables or not.
    assert ops("restore", "refresh", "--prefix", prefix).exit_code == 2
    point_at(monkeypatch, None)
    refused = ops("restore", "refresh", "--prefix", prefix, "--dry-run")
    assert refused.exit_code == 2 and "writing to the new tables" in refused.stderr
    assert payments_of_table(f"{prefix}payments", replayed["payment_id"])

    # Going back is unsetting it: the old tables were never written.
    assert api.loan("LN-A")["notes"] == "written by the bad release"
    assert payments_of(api, "LN-A") == []


def payments_of_table(table: str, payment_id: str) -> bool:
    item = boto3.client("dynamodb").get_item(TableName=table, Key={"payment_id": {"S": payment_id}})
    return "Item" in item


def test_point_in_time_restore_makes_and_verifies_every_table(api: Api, ddb: KeepsEncryption) -> None:
    new_loan(api, "LN-T")
    pay(api, "LN-T", "SBIN0000009")
    prefix = f"{settings().table_prefix}t1-"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)

    with use_clock(FixedClock(now + dt.timedelta(minutes=1))):
        naive = ops("restore", "tables", "--to-time", now.replace(tzinfo=None).isoformat(), "--prefix", prefix)
        future = ops("restore", "tables", "--to-time", (now + dt.timedelta(hours=1)).isoformat(), "--prefix", prefix)
        made = ops(
            "restore",
            "tables",
            "--to-time",
            now.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).isoformat(),
            "--prefix",
            prefix,
        )

    assert naive.exit_code == 2 and "has no offset" in naive.stderr
    assert future.exit_code == 2 and "in the future" in future.stderr
    assert made.exit_code == 0, made.output
    lines = rows(made.stdout)
    assert f"{settings().table_prefix}loans at " in lines["loans"] and "IST" in lines["loans"]
    checked = ops("restore", "verify", "--prefix", prefix, "--against-live")
    assert checked.exit_code == 0, checked.output
    assert "(undone by the rollback): none" in checked.stdout


def test_an_index_the_backup_predates_is_added_and_users_can_be_rolled_back_too(
    ddb: KeepsEncryption, tmp_path: Path
) -> None:
    client = boto3.client("dynamodb")
    live = settings().table_prefix
    client.update_table(
        TableName=f"{live}legal-cases", GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "status-index"}}]
    )
    assert ops("backup", "create", "--manifest", str(tmp_path / "m.json")).exit_code == 0
    prefix = f"{live}i1-"

    made = ops("restore", "tables", "--latest", "--restore-users", "--prefix", prefix)

    assert made.exit_code == 0, made.output
    lines = rows(made.stdout)
    assert "index status-index added" in lines["legal-cases"]
    assert "arn:aws:dynamodb:" in lines["users"], "restored, not copied"
    assert "copy of" in lines["audit"] and "copy of" in lines["reminders"]
    indexes = client.describe_table(TableName=f"{prefix}legal-cases")["Table"]["GlobalSecondaryIndexes"]
    assert "status-index" in {g["IndexName"] for g in indexes}
    assert ops("restore", "verify", "--prefix", prefix).exit_code == 0


# --- refusals -----------------------------------------------------------------------------------------


def test_a_prefix_outside_the_stage_or_badly_formed_is_refused_before_anything_is_made(
    ddb: KeepsEncryption, tmp_path: Path
) -> None:
    assert ops("backup", "create", "--manifest", str(tmp_path / "m.json")).exit_code == 0
    before = tables()
    stage = settings().stage
    for wrong in ("loan-crm-otherstage-r1-", f"loan-crm-{stage}-R1-", f"loan-crm-{stage}-r1", "r1-"):
        refused = ops("restore", "tables", "--latest", "--prefix", wrong)
        assert refused.exit_code == 2, refused.output
        assert f"--prefix must start with loan-crm-{stage}-" in refused.stderr
    live = ops("restore", "tables", "--latest", "--prefix", settings().table_prefix)
    assert live.exit_code == 2 and "prefix of the live tables" in live.stderr
    both = ops(
        "restore", "tables", "--latest", "--to-time", "2026-03-15T10:00:00+05:30", "--prefix", f"loan-crm-{stage}-r1-"
    )
    assert both.exit_code == 2 and "exactly one of" in both.stderr
    partial = ops(
        "restore",
        "tables",
        "--from-backup",
        "loans=arn:aws:dynamodb:ap-south-1:123456789012:table/x/backup/1",
        "--prefix",
        f"loan-crm-{stage}-r1-",
    )
    assert partial.exit_code == 2 and "missing: payments" in partial.stderr
    assert tables() == before


def test_an_existing_target_table_refuses_the_whole_restore(ddb: KeepsEncryption, tmp_path: Path) -> None:
    assert ops("backup", "create", "--manifest", str(tmp_path / "m.json")).exit_code == 0
    prefix = f"{settings().table_prefix}r2-"
    assert ops("restore", "tables", "--latest", "--prefix", prefix).exit_code == 0
    before = tables()

    again = ops("restore", "tables", "--latest", "--prefix", prefix)

    assert again.exit_code == 1
    assert "exist already" in again.stderr and f"{prefix}loans" in again.stderr
    assert tables() == before

    # One table in the way is enough: nothing else is made either.
    other = f"{settings().table_prefix}r3-"
    boto3.client("dynamodb").create_table(
        TableName=f"{other}scores",
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    blocked = ops("restore", "tables", "--latest", "--prefix", other)
    assert blocked.exit_code == 1 and f"{other}scores" in blocked.stderr
    assert [t for t in tables() if t.startswith(other)] == [f"{other}scores"]


def test_a_backup_of_the_wrong_table_is_refused(ddb: KeepsEncryption, tmp_path: Path) -> None:
    created = backups.create_backups(boto3.client("dynamodb"), settings().stage, tmp_path / "m.json", "abc1234")
    arn_of = {r.table.removeprefix(settings().table_prefix): r.backup_arn for r in created}
    pairs = [f"{n}={arn_of[n]}" for n in restore.restored_table_names(settings().stage)]
    pairs[0] = f"loans={arn_of['payments']}"
    args = [a for p in pairs for a in ("--from-backup", p)]

    refused = ops("restore", "tables", *args, "--prefix", f"{settings().table_prefix}r4-")

    assert refused.exit_code == 1 and "loans: that backup is of" in refused.stderr
    assert not [t for t in tables() if "-r4-" in t]


# --- verify finds what is wrong ---------------------------------------------------------------------


def test_verify_fails_on_a_restore_that_does_not_add_up(api: Api, ddb: KeepsEncryption, tmp_path: Path) -> None:
    new_loan(api, "LN-V")
    pay(api, "LN-V", "SBIN0000005")
    assert ops("backup", "create", "--manifest", str(tmp_path / "m.json")).exit_code == 0
    prefix = f"{settings().table_prefix}v1-"
    assert ops("restore", "tables", "--latest", "--prefix", prefix).exit_code == 0
    client = boto3.client("dynamodb")

    # A payment missing from the restored ledger (its loan still holds it), PITR off on another table.
    (item,) = client.scan(TableName=f"{prefix}payments")["Items"]
    client.delete_item(TableName=f"{prefix}payments", Key={"payment_id": item["payment_id"]})
    client.update_continuous_backups(
        TableName=f"{prefix}dpd-runs", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
    )

    checked = ops("restore", "verify", "--prefix", prefix)

    assert checked.exit_code == 1
    assert "point-in-time recovery off" in rows(checked.stdout)[f"{prefix}dpd-runs"]
    assert "LEDGER_PAYMENT_MISMATCH LN-V" in checked.stdout
    assert "restore verify failed: dpd-runs, reconciliation" in checked.stderr

    # The audit table is a copy of the live trail: an entry that differs from it is out of place.
    audit = client.scan(TableName=f"{prefix}audit", Limit=1)["Items"][0]
    client.put_item(TableName=f"{prefix}audit", Item={**audit, "reason": {"S": "edited"}})
    against = ops("restore", "verify", "--prefix", prefix, "--against-live")
    assert "differs from the live table it was copied from" in rows(against.stdout)[f"{prefix}audit"]

    client.update_table(TableName=f"{prefix}scores", DeletionProtectionEnabled=False)
    client.delete_table(TableName=f"{prefix}scores")
    missing = ops("restore", "verify", "--prefix", prefix)
    assert missing.exit_code == 1 and "missing" in rows(missing.stdout)[f"{prefix}scores"]
    assert "not run: tables are missing" in missing.stderr


# --- vault recovery points ----------------------------------------------------------------------------


class FakeVault:
    """AWS Backup for the restore: recovery points that are DynamoDB backups underneath, restored by a
    'job' that finishes at once."""

    def __init__(self, ddb: Any, points: dict[str, str]) -> None:
        self._ddb = ddb
        self.points = points
        """Recovery point ARN -> the DynamoDB backup ARN it stands for."""
        self.jobs: dict[str, dict[str, Any]] = {}

    def describe_recovery_point(self, BackupVaultName: str, RecoveryPointArn: str) -> dict[str, Any]:
        backup = self._ddb.describe_backup(BackupArn=self.points[RecoveryPointArn])["BackupDescription"]
        return {"Status": "COMPLETED", "ResourceArn": backup["SourceTableDetails"]["TableArn"]}

    def get_recovery_point_restore_metadata(self, BackupVaultName: str, RecoveryPointArn: str) -> dict[str, Any]:
        return {
            "RestoreMetadata": {"TableName": "original", "targetTableName": "original", "encryptionType": "Default"}
        }

    def start_restore_job(self, **kwargs: Any) -> dict[str, Any]:
        job_id = f"job-{len(self.jobs)}"
        self.jobs[job_id] = kwargs
        self._ddb.restore_table_from_backup(
            TargetTableName=kwargs["Metadata"]["targetTableName"], BackupArn=self.points[kwargs["RecoveryPointArn"]]
        )
        return {"RestoreJobId": job_id}

    def describe_restore_job(self, RestoreJobId: str) -> dict[str, Any]:
        return {"Status": "COMPLETED"}


def test_vault_recovery_points_are_restored_by_aws_backup_under_its_role(ddb: KeepsEncryption, tmp_path: Path) -> None:
    stage, live = settings().stage, settings().table_prefix
    client = boto3.client("dynamodb")
    created = backups.create_backups(client, stage, tmp_path / "m.json", "abc1234")
    points = {f"arn:aws:backup:ap-south-1:123456789012:recovery-point:{i}": r.backup_arn for i, r in enumerate(created)}
    vault = FakeVault(client, points)
    by_table = {
        client.describe_backup(BackupArn=b)["BackupDescription"]["SourceTableDetails"]["TableName"]: p
        for p, b in points.items()
    }
    chosen = {n: by_table[live + n] for n in restore.restored_table_names(stage)}
    prefix = f"{live}b1-"
    planned = restore.plan(stage, prefix, live, chosen=chosen)

    made = restore.restore_tables(
        ddb, vault, stage, planned, "the-vault", "arn:aws:iam::123456789012:role/backup", delay=0
    )

    assert {p.short for p in made if p.source.kind == restore.RECOVERY_POINT} == set(chosen)
    assert {j["IamRoleArn"] for j in vault.jobs.values()} == {"arn:aws:iam::123456789012:role/backup"}
    job = next(iter(vault.jobs.values()))
    assert job["ResourceType"] == "DynamoDB" and job["Metadata"]["encryptionType"] == "Default"
    assert {j["Metadata"]["targetTableName"] for j in vault.jobs.values()} == {prefix + n for n in chosen}
    # AWS Backup restores with the AWS-owned key unless told: the template's KMS key is put back after.
    assert {prefix + n for n in chosen} <= ddb._kms
    assert restore.verify_prefix(ddb, stage, prefix).ok

    without_role = restore.plan(stage, f"{live}b2-", live, chosen=chosen)
    with pytest.raises(restore.RestoreRefused, match="role AWS Backup restores under"):
        restore.restore_tables(ddb, vault, stage, without_role, "the-vault", None, delay=0)
