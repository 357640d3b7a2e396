"""On-demand DynamoDB backups of a stage, and a verify that proves a backup restores to what was saved.

``create`` backs up every table infra/template.json defines for the stage (``provision.table_specs``),
under the names the application uses now: after a rollback to restored tables (``TABLE_PREFIX``), those
are the tables that hold the book, so every command here takes the prefix the caller's settings name.
A backup is named ``<table>-<git revision>-<IST timestamp>`` and recorded, with that revision, its item
count and a content checksum, in a small manifest file (``.local/backups/<stage>.json`` unless told
otherwise). DynamoDB cannot tag on-demand backups, hence the file.

``verify`` restores the newest backup of each table to a temporary table ``<table>-verify-<timestamp>``
(no indexes: they are rebuilt from the items and the checksum does not need them), waits until it is
ACTIVE, counts and checksums its items, and deletes the temporary tables whatever happens.

What the restore is compared with, and why: a live table moves on after its backup (every payment,
every login attempt), so comparing a restore with the live table would fail for a healthy backup and
could pass a broken one. ``create`` therefore checksums the table just before and just after asking for
the backup. If the two agree, nothing was written while the backup was taken, the backup holds exactly
that content, and the checksum goes in the manifest: ``verify`` compares the restore with it ("backup
record"). If they differ, or the backup is not in this machine's manifest (taken elsewhere, or by AWS),
``verify`` can only compare with the live table ("live table") and says so: a difference there may be
writes made since the backup. Take backups meant as restore points in a quiet moment (before a deploy,
with the day-end job done) and they verify exactly.

Checksum: SHA-256 of each item's canonical JSON (DynamoDB's typed form, keys sorted, set members
sorted, binary as base64), summed modulo 2**256, so item order does not matter; with the item count.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import clock
from chalicelib.config import stage_prefix
from infra.provision import TableSpec, table_specs

ROOT = Path(__file__).resolve().parent.parent
MANIFEST_VARIABLE = "BACKUP_MANIFEST"
_MODULUS = 2**256
COMPARED_WITH_RECORD = "backup record"
COMPARED_WITH_LIVE = "live table"
WAIT_DELAY_SECONDS = 20
WAIT_MINUTES = 180
"""A restore takes minutes for small tables and grows with size; after this, verify gives up (and
still deletes what it made)."""


def default_manifest(stage: str) -> Path:
    override = os.environ.get(MANIFEST_VARIABLE)
    return Path(override) if override else ROOT / ".local" / "backups" / f"{stage}.json"


def git_revision() -> str:
    """``git rev-parse --short HEAD`` of this checkout, or ``unknown`` (no git, not a checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, as an operator runs it
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and revision.isalnum() else "unknown"


def short_name(spec: TableSpec, stage: str) -> str:
    """``loans`` of ``loan-crm-<stage>-loans``: the part of a table's name that no prefix changes."""
    return spec.name.removeprefix(stage_prefix(stage))


def stage_tables(stage: str, prefix: str | None = None) -> list[TableSpec]:
    """The stage's tables as the template defines them, named under ``prefix`` (``Settings.table_prefix``)
    rather than the template's ``loan-crm-<stage>-``; None keeps the template's names."""
    specs = table_specs(stage)
    if prefix is None or prefix == stage_prefix(stage):
        return specs
    renamed = []
    for spec in specs:
        name = prefix + short_name(spec, stage)
        renamed.append(replace(spec, name=name, properties={**spec.properties, "TableName": name}))
    return renamed


def _stamp(at: dt.datetime) -> str:
    return at.astimezone(clock.IST).strftime("%Y%m%dT%H%M%SIST")


def _canonical(value: dict[str, Any]) -> dict[str, Any]:
    ((kind, inner),) = value.items()
    if kind == "B":
        return {kind: base64.b64encode(inner).decode()}
    if kind == "BS":
        return {kind: sorted(base64.b64encode(b).decode() for b in inner)}
    if kind in ("SS", "NS"):
        return {kind: sorted(inner)}
    if kind == "M":
        return {kind: {k: _canonical(v) for k, v in inner.items()}}
    if kind == "L":
        return {kind: [_canonical(v) for v in inner]}
    return {kind: inner}


def item_digest(item: dict[str, Any]) -> int:
    """SHA-256 of one item's canonical JSON, as an integer."""
    canonical = json.dumps(
        {k: _canonical(v) for k, v in item.items()}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest(), "big")


@dataclass(frozen=True)
class Digest:
    items: int
    checksum: str


def combined(digests: Iterable[int]) -> Digest:
    """The table checksum of items with these :func:`item_digest` values (and their count)."""
    total = count = 0
    for digest in digests:
        total = (total + digest) % _MODULUS
        count += 1
    return Digest(count, f"{total:064x}")


def table_digest(ddb: Any, table: str) -> Digest:
    """Item count and order-independent checksum of a table's items (a consistent full scan)."""
    return combined(
        item_digest(item)
        for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        for item in page["Items"]
    )


@dataclass
class BackupRecord:
    table: str
    backup_name: str
    backup_arn: str
    revision: str
    created_at: str
    items: int | None
    checksum: str | None
    """None when the table was written while the backup was taken: its exact content is unknown."""


@dataclass
class Manifest:
    path: Path
    backups: dict[str, BackupRecord] = field(default_factory=dict)
    """By backup ARN."""

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.exists():
            return cls(path)
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(path, {arn: BackupRecord(**entry) for arn, entry in raw.get("backups", {}).items()})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"backups": {arn: asdict(record) for arn, record in self.backups.items()}}
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        partial.replace(self.path)


def create_backups(
    ddb: Any, stage: str, manifest_path: Path, revision: str | None = None, prefix: str | None = None
) -> list[BackupRecord]:
    """Back up every table of the stage; record each backup (and its checksum when exact) in the manifest."""
    revision = revision or git_revision()
    manifest = Manifest.load(manifest_path)
    now = clock.now_ist()
    created = []
    for spec in stage_tables(stage, prefix):
        before = table_digest(ddb, spec.name)
        name = f"{spec.name}-{revision}-{_stamp(now)}"
        details = ddb.create_backup(TableName=spec.name, BackupName=name)["BackupDetails"]
        after = table_digest(ddb, spec.name)
        exact = before == after
        record = BackupRecord(
            table=spec.name,
            backup_name=name,
            backup_arn=details["BackupArn"],
            revision=revision,
            created_at=now.isoformat(timespec="seconds"),
            items=after.items if exact else None,
            checksum=after.checksum if exact else None,
        )
        manifest.backups[record.backup_arn] = record
        manifest.save()
        created.append(record)
    return created


@dataclass(frozen=True)
class BackupInfo:
    table: str
    name: str
    arn: str
    created: dt.datetime
    status: str
    kind: str
    size_bytes: int | None


def list_backups(ddb: Any, stage: str, prefix: str | None = None) -> dict[str, list[BackupInfo]]:
    """Every backup of each of the stage's tables, newest first."""
    found: dict[str, list[BackupInfo]] = {}
    for spec in stage_tables(stage, prefix):
        backups = [
            BackupInfo(
                table=spec.name,
                name=s["BackupName"],
                arn=s["BackupArn"],
                created=s["BackupCreationDateTime"],
                status=s["BackupStatus"],
                kind=s.get("BackupType", "USER"),
                size_bytes=s.get("BackupSizeBytes"),
            )
            for page in ddb.get_paginator("list_backups").paginate(TableName=spec.name)
            for s in page["BackupSummaries"]
        ]
        found[spec.name] = sorted(backups, key=lambda b: b.created, reverse=True)
    return found


@dataclass
class VerifyResult:
    table: str
    backup: BackupInfo | None = None
    revision: str | None = None
    compared_with: str | None = None
    restored: Digest | None = None
    expected: Digest | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.restored is not None and self.restored == self.expected


@dataclass
class VerifyRun:
    results: list[VerifyResult]
    temporaries: list[str]
    left_behind: list[str]
    """Temporary tables that could not be deleted (named so ops can delete them by hand)."""

    @property
    def ok(self) -> bool:
        return not self.left_behind and all(r.ok for r in self.results)


def _wait_active(ddb: Any, table: str, delay: float, attempts: int) -> None:
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})


def _delete(ddb: Any, table: str, delay: float, attempts: int) -> str | None:
    """Delete a temporary table if it exists; the reason it could not be, or None."""
    try:
        described = ddb.describe_table(TableName=table)["Table"]
        if described.get("TableStatus") == "CREATING":
            _wait_active(ddb, table, delay, attempts)
        if described.get("DeletionProtectionEnabled"):
            ddb.update_table(TableName=table, DeletionProtectionEnabled=False)
        ddb.delete_table(TableName=table)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        return f"{exc.response['Error']['Code']}: {exc.response['Error'].get('Message', '')}"
    except Exception as exc:
        return repr(exc)
    return None


def verify_backups(
    ddb: Any,
    stage: str,
    manifest_path: Path,
    delay: float = WAIT_DELAY_SECONDS,
    wait_minutes: float = WAIT_MINUTES,
    digest: Callable[[Any, str], Digest] = table_digest,
    prefix: str | None = None,
) -> VerifyRun:
    """Restore the newest available USER backup of each table to a temporary table, compare it with the
    backup's record (or, without one, the live table), and delete the temporaries even on failure."""
    manifest = Manifest.load(manifest_path)
    attempts = max(1, int(wait_minutes * 60 / delay)) if delay > 0 else 1
    suffix = _stamp(clock.now_ist()).removesuffix("IST").lower()
    run = VerifyRun(results=[], temporaries=[], left_behind=[])
    try:
        restoring = _start_restores(ddb, stage, suffix, run, prefix)
        for result, temporary in restoring:
            try:
                _wait_active(ddb, temporary, delay, attempts)
                _compare(ddb, result, temporary, manifest, digest)
            except Exception as exc:
                result.problem = f"verification failed: {exc!r}"
    finally:
        for temporary in run.temporaries:
            reason = _delete(ddb, temporary, delay, attempts)
            if reason is not None:
                run.left_behind.append(f"{temporary} ({reason})")
    return run


def _start_restores(
    ddb: Any, stage: str, suffix: str, run: VerifyRun, prefix: str | None
) -> list[tuple[VerifyResult, str]]:
    """Ask for every table's restore before waiting for any: restores run side by side in AWS. Each
    temporary table is noted in ``run`` before it is asked for, so the clean-up finds it whatever fails."""
    restoring: list[tuple[VerifyResult, str]] = []
    for table, backups in list_backups(ddb, stage, prefix).items():
        result = VerifyResult(table)
        run.results.append(result)
        usable = [b for b in backups if b.status == "AVAILABLE" and b.kind == "USER"]
        if not usable:
            result.problem = "no available backup"
            continue
        result.backup = usable[0]
        temporary = f"{table}-verify-{suffix}"
        run.temporaries.append(temporary)
        try:
            ddb.restore_table_from_backup(
                TargetTableName=temporary,
                BackupArn=result.backup.arn,
                BillingModeOverride="PAY_PER_REQUEST",
                GlobalSecondaryIndexOverride=[],
            )
        except ClientError as exc:
            result.problem = f"restore refused: {exc.response['Error']['Code']}"
            continue
        restoring.append((result, temporary))
    return restoring


def _compare(
    ddb: Any, result: VerifyResult, temporary: str, manifest: Manifest, digest: Callable[[Any, str], Digest]
) -> None:
    """The restored copy against what the backup held when it was taken (its record in the manifest),
    or, for a backup taken without this tool, against the live table."""
    assert result.backup is not None
    result.restored = digest(ddb, temporary)
    record = manifest.backups.get(result.backup.arn)
    if record is not None and record.checksum is not None and record.items is not None:
        result.compared_with = COMPARED_WITH_RECORD
        result.revision = record.revision
        result.expected = Digest(record.items, record.checksum)
    else:
        result.compared_with = COMPARED_WITH_LIVE
        result.revision = record.revision if record else None
        result.expected = digest(ddb, result.table)
    if result.restored != result.expected:
        result.problem = "restored items differ from the " + result.compared_with


@dataclass(frozen=True)
class RecoveryWindow:
    table: str
    status: str
    earliest: dt.datetime | None
    """The oldest instant a point-in-time restore can go back to (35 days at most)."""


def point_in_time_recovery(ddb: Any, stage: str, prefix: str | None = None) -> list[RecoveryWindow]:
    """PITR of each table of the stage that keeps its rows (the TTL tables have none, by design)."""
    windows = []
    for spec in stage_tables(stage, prefix):
        if "TimeToLiveSpecification" in spec.properties:
            continue
        described = ddb.describe_continuous_backups(TableName=spec.name)["ContinuousBackupsDescription"]
        pitr = described.get("PointInTimeRecoveryDescription", {})
        status = pitr.get("PointInTimeRecoveryStatus", "DISABLED")
        windows.append(RecoveryWindow(spec.name, status, pitr.get("EarliestRestorableDateTime")))
    return windows


def prune_backups(
    ddb: Any, stage: str, older_than: dt.datetime, dry_run: bool, prefix: str | None = None
) -> list[BackupInfo]:
    """Delete the stage's on-demand (USER) backups created before ``older_than``; the ones deleted, or
    with ``dry_run`` the ones that would be. They are kept until deleted, unlike AWS Backup's recovery
    points, which expire by their plan's lifecycle and are never touched here."""
    old = [
        b
        for found in list_backups(ddb, stage, prefix).values()
        for b in found
        if b.kind == "USER" and b.created < older_than and b.status == "AVAILABLE"
    ]
    if not dry_run:
        for backup in old:
            ddb.delete_backup(BackupArn=backup.arn)
    return old
