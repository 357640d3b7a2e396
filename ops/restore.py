"""Data rollback (docs/runbook/rollback.md, docs/runbook/backups-and-restore.md). DynamoDB restores only
into new tables, so there are two ways to put a stage back to an earlier state:

``restore tables`` + ``restore verify`` (the supported path): make EVERY table of the stage anew under a
new prefix (``loan-crm-<stage>-r1-loans``...): the ledger restored to one instant or from one set of
backups, the tables that are never rolled back (audit, reminders, and users unless asked) copied from the
live ones, the TTL tables empty; re-apply what a restore does not carry over (point-in-time recovery,
deletion protection, TTL, the KMS key, tags, indexes the backup predates); check them (the template's
settings, counts and checksums, a reconciliation of the restored ledger, against the live tables what
differs and which audited writes came after the restore point); then point the stage at them with
``TABLE_PREFIX`` and redeploy. Nothing live is written, so going back is unsetting the variable.

``restore copy-back`` (keeps table identity): make one live table equal to its restored copy
``<table>-restored``: put every restored item, delete every live item the copy does not have. The live
table is never deleted, so it keeps its point-in-time recovery, deletion protection, indexes and
CloudFormation identity. Items are copied raw (DynamoDB's typed JSON), so every attribute type survives
unchanged. ``--dry-run`` only counts what would be put and deleted: run it first, and have two people
read the numbers. The audit table is refused outright: it is the evidence and append-only, and is
restored only to a side table to be read.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import boto3
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from rich.table import Table

from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb.batch import (
    BATCH_GET_LIMIT,
    BATCH_WRITE_LIMIT,
    client_sender,
    read_by_keys,
    write_requests,
)
from chalicelib.adapters.dynamodb.mapping import item_to_audit
from chalicelib.adapters.dynamodb.models import AuditModel
from chalicelib.api.routes.audit import audit_dict
from chalicelib.config import check_table_prefix, settings, stage_prefix
from chalicelib.domain.errors import Unavailable
from chalicelib.domain.reconciliation import ReconciliationRun, ReconciliationStatus, SegmentProgress
from chalicelib.services.reconciliation import RunHere
from infra.provision import TableSpec, table_layout, table_specs
from ops import backups, stack
from ops.console import err, fail, out
from ops.reconcile import print_run
from ops.target import target

SEGMENTS = 8
"""Parallel scan segments: a restore is done in a maintenance window, so speed matters, and one
on-demand table takes eight scanners easily."""
RESTORABLE = ("loans", "payments", "utr-claims", "dpd-runs", "legal-cases", "users")
"""Never ``audit`` (evidence, append-only), nor the TTL tables (their rows are disposable), nor
``reminders`` (a reminder put back as it stood before it was sent would be sent again). The derived tables
(``aggregates``, ``reconciliations``, ``scores``) are rebuilt from the restored ledger instead."""

app = typer.Typer(help="Make live tables equal to their restored copies (data rollback).", no_args_is_help=True)


@dataclass(frozen=True)
class CopyBack:
    live: str
    restored: str
    puts: int
    deletes: int


def _scan(ddb: Any, table: str, segment: int, keys: list[str] | None) -> Iterator[dict[str, Any]]:
    args: dict[str, Any] = {"TableName": table, "Segment": segment, "TotalSegments": SEGMENTS, "ConsistentRead": True}
    if keys is not None:
        args["ProjectionExpression"] = ", ".join(f"#k{i}" for i in range(len(keys)))
        args["ExpressionAttributeNames"] = {f"#k{i}": k for i, k in enumerate(keys)}
    for page in ddb.get_paginator("scan").paginate(**args):
        yield from page["Items"]


def _key_of(item: dict[str, Any], keys: list[str]) -> str:
    return json.dumps({k: item[k] for k in keys}, sort_keys=True)


def _present(ddb: Any, table: str, chunk: list[dict[str, Any]], keys: list[str]) -> set[str]:
    """Which of these keys exist in ``table`` (BatchGetItem; keys handed back unread are asked for
    again after a pause, as the product's reads do)."""
    return {_key_of(item, keys) for _, item in read_by_keys(client_sender(ddb), [(table, key) for key in chunk])}


def _copy_segment(ddb: Any, live: str, restored: str, segment: int, dry_run: bool) -> int:
    count, batch = 0, []
    for item in _scan(ddb, restored, segment, None):
        count += 1
        batch.append({"PutRequest": {"Item": item}})
        if len(batch) == BATCH_WRITE_LIMIT:
            if not dry_run:
                write_requests(ddb, live, batch)
            batch = []
    if batch and not dry_run:
        write_requests(ddb, live, batch)
    return count


def _prune_segment(ddb: Any, live: str, restored: str, keys: list[str], segment: int, dry_run: bool) -> int:
    gone: list[dict[str, Any]] = []
    chunk: list[dict[str, Any]] = []
    for key in _scan(ddb, live, segment, keys):
        chunk.append(key)
        if len(chunk) == BATCH_GET_LIMIT:
            have = _present(ddb, restored, chunk, keys)
            gone.extend(k for k in chunk if _key_of(k, keys) not in have)
            chunk = []
    if chunk:
        have = _present(ddb, restored, chunk, keys)
        gone.extend(k for k in chunk if _key_of(k, keys) not in have)
    if not dry_run:
        for i in range(0, len(gone), BATCH_WRITE_LIMIT):
            write_requests(ddb, live, [{"DeleteRequest": {"Key": k}} for k in gone[i : i + BATCH_WRITE_LIMIT]])
    return len(gone)


def copy_back(ddb: Any, live: str, restored: str, dry_run: bool) -> CopyBack:
    """Make ``live`` equal to ``restored``: all puts first, then the deletes (a live item the restored
    copy lacks was written after the restore instant)."""
    keys = [k["AttributeName"] for k in ddb.describe_table(TableName=live)["Table"]["KeySchema"]]
    ddb.describe_table(TableName=restored)  # fails before any write if the copy is not there
    with ThreadPoolExecutor(SEGMENTS, thread_name_prefix="copy-back") as pool:
        puts = sum(pool.map(lambda s: _copy_segment(ddb, live, restored, s, dry_run), range(SEGMENTS)))
        deletes = sum(pool.map(lambda s: _prune_segment(ddb, live, restored, keys, s, dry_run), range(SEGMENTS)))
    return CopyBack(live, restored, puts, deletes)


def _ddb() -> Any:
    return boto3.client("dynamodb", region_name=settings().region)


@app.command("copy-back")
def copy_back_command(
    name: Annotated[str, typer.Argument(help=f"The table's short name: {', '.join(RESTORABLE)}.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be put and deleted.")] = False,
) -> None:
    """Make loan-crm-<stage>-NAME equal to loan-crm-<stage>-NAME-restored (put all, delete the rest)."""
    if name not in RESTORABLE:
        raise fail(f"{name!r} is not restored in place; tables that are: {', '.join(RESTORABLE)}", 2)
    live = settings().table_name(name)
    try:
        done = copy_back(_ddb(), live, f"{live}-restored", dry_run)
    except Unavailable:
        raise fail(
            f"DynamoDB kept handing requests back unprocessed (throttled) and {live} is partly copied back: "
            "run the same command again, which puts every restored item again and deletes what the copy lacks"
        ) from None
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        raise fail(f"no table {live}-restored (or {live}): restore it first; nothing was written") from None
    verb = ("would put", "would delete") if dry_run else ("put", "deleted")
    out.print(f"{done.live} <- {done.restored}: {verb[0]} {done.puts}, {verb[1]} {done.deletes}", highlight=False)


@app.command("clear-idempotency")
def clear_idempotency(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count the records.")] = False,
) -> None:
    """Delete every Idempotency-Key record (24-hour retry records): after a rollback they would replay
    answers for payments that no longer exist."""
    ddb = _ddb()
    table = settings().table_name("idempotency")
    keys = [
        item
        for page in ddb.get_paginator("scan").paginate(
            TableName=table, ProjectionExpression="#i", ExpressionAttributeNames={"#i": "id"}
        )
        for item in page["Items"]
    ]
    if not dry_run:
        for i in range(0, len(keys), BATCH_WRITE_LIMIT):
            write_requests(ddb, table, [{"DeleteRequest": {"Key": k}} for k in keys[i : i + BATCH_WRITE_LIMIT]])
    out.print(f"{table}: {'would delete' if dry_run else 'deleted'} {len(keys)} records", highlight=False)
    if not dry_run:
        err.print("wait 2 minutes before reopening: API containers keep flags and the latest run date up to 60 s")


# ---- every table under a new prefix --------------------------------------------------------------

EMPTY = "empty"
POINT_IN_TIME = "point in time"
BACKUP = "backup"
RECOVERY_POINT = "recovery point"
LIVE_COPY = "live copy"
KEPT_LIVE = ("audit", "reminders")
"""Never rolled back, as with copy-back: ``audit`` is the evidence and append-only (the entries of the
rolled-back period stay on the trail, next to the replayed writes), and ``reminders`` records what
borrowers were sent (a reminder put back as it stood before it was sent would be sent again). The new
tables get a copy of the live ones; ``users`` too, unless ``--restore-users`` (deactivations and
password changes made after the restore point must not be undone by accident)."""
TAG_SOURCE = "loan-crm:restored-from"
TAG_POINT = "loan-crm:restore-point"
"""Tags on every table ``restore tables`` makes: where its items came from, and for the restored ones
the instant they hold (what ``restore verify`` counts lost writes from)."""
_ARN = re.compile(r"arn:aws[a-z-]*:(?P<service>dynamodb|backup):[a-z0-9-]+:\d{12}:\S+")
_JOB_DONE = ("COMPLETED", "ABORTED", "FAILED")
WAIT_MINUTES = backups.WAIT_MINUTES


class RestoreRefused(Exception):
    """Nothing was started: the reason, for the operator."""


class RestoreFailed(Exception):
    """Something went wrong after tables were asked for; ``started`` names them (to delete by hand)."""

    def __init__(self, message: str, started: list[str]) -> None:
        super().__init__(message)
        self.started = started


@dataclass(frozen=True)
class Source:
    kind: str
    """:data:`EMPTY`, :data:`LIVE_COPY`, :data:`POINT_IN_TIME`, :data:`BACKUP` or :data:`RECOVERY_POINT`."""
    detail: str
    table: str | None = None
    """The live table a point-in-time restore or a copy reads."""
    at: dt.datetime | None = None
    arn: str | None = None


@dataclass
class Planned:
    short: str
    spec: TableSpec
    """The template's table, named under the new prefix: what the new table must look like."""
    source: Source
    restore_point: dt.datetime | None = None
    """The instant the restored items hold (the PITR instant, or when the backup was taken)."""
    job_id: str | None = None
    applied: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name


def _has_ttl(spec: TableSpec) -> bool:
    return "TimeToLiveSpecification" in spec.properties


def restored_table_names(stage: str, restore_users: bool = False) -> list[str]:
    """Short names of the tables rolled back to the restore point. The others are copied from the live
    tables (:data:`KEPT_LIVE`, ``users``) or made new and empty: the TTL tables (``login-attempts``,
    ``idempotency``), whose rows expire within a day anyway, and whose Idempotency-Key records would
    answer a retry with a payment the rollback removed (why copy-back is followed by ``clear-idempotency``)."""
    kept = (*KEPT_LIVE, *(() if restore_users else ("users",)))
    return [
        short
        for spec in table_specs(stage)
        if not _has_ttl(spec) and (short := backups.short_name(spec, stage)) not in kept
    ]


def parse_instant(text: str) -> dt.datetime:
    """An ISO-8601 instant with its offset (``2025-01-15T14:05:00+05:30``): without one it could be read
    as IST or as UTC, five and a half hours apart."""
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RestoreRefused(
            f"--to-time must be an ISO-8601 instant like 2025-01-15T14:05:00+05:30, not {text!r}"
        ) from None
    if at.tzinfo is None:
        raise RestoreRefused(f"--to-time {text!r} has no offset: write +05:30 (IST) or Z (UTC)")
    if at > clock.now_ist():
        raise RestoreRefused(f"--to-time {text!r} is in the future")
    return at


def parse_backups(stage: str, pairs: list[str], restore_users: bool = False) -> dict[str, str]:
    """``--from-backup NAME=ARN``, one for every restored table: a stage restored from backups of
    different days would hold payments without their loans' changes, so a partial set is refused."""
    wanted = restored_table_names(stage, restore_users)
    chosen: dict[str, str] = {}
    for pair in pairs:
        name, _, arn = pair.partition("=")
        if name not in wanted:
            raise RestoreRefused(f"--from-backup {pair!r}: NAME must be one of {', '.join(wanted)}")
        if name in chosen:
            raise RestoreRefused(f"--from-backup names {name} twice")
        if not _ARN.fullmatch(arn):
            raise RestoreRefused(f"--from-backup {pair!r}: not a DynamoDB backup or AWS Backup recovery point ARN")
        chosen[name] = arn
    missing = [n for n in wanted if n not in chosen]
    if missing:
        raise RestoreRefused(
            "--from-backup must name a backup for every restored table; missing: " + ", ".join(missing)
        )
    return chosen


def latest_backup_set(
    ddb: Any, stage: str, source_prefix: str, restore_users: bool = False
) -> tuple[str, dict[str, str]]:
    """The newest ``backup create`` run that covers every restored table: its label
    (``<revision>-<time>``) and each table's backup ARN. One run's backups are taken one after another
    within seconds, the closest to a single instant on-demand backups get."""
    wanted = restored_table_names(stage, restore_users)
    runs: dict[str, dict[str, backups.BackupInfo]] = {}
    for table, found in backups.list_backups(ddb, stage, source_prefix).items():
        short = table.removeprefix(source_prefix)
        for b in found:  # newest first: a label seen twice keeps its newest backup
            if b.kind == "USER" and b.status == "AVAILABLE" and b.name.startswith(f"{table}-"):
                runs.setdefault(b.name.removeprefix(f"{table}-"), {}).setdefault(short, b)
    complete = [(label, members) for label, members in runs.items() if all(n in members for n in wanted)]
    if not complete:
        raise RestoreRefused(
            f"no `backup create` run covers every restored table of {source_prefix}*; name them with --from-backup"
        )
    label, members = max(complete, key=lambda run: max(b.created for b in run[1].values()))
    return label, {n: members[n].arn for n in wanted}


def _source(
    short: str, restored: list[str], source_prefix: str, at: dt.datetime | None, chosen: dict[str, str]
) -> Source:
    live = source_prefix + short
    if short not in restored:
        if short in KEPT_LIVE or short == "users":
            return Source(LIVE_COPY, f"copy of {live}", table=live)
        return Source(EMPTY, "new, empty (TTL table: rows expire within a day)")
    if at is not None:
        return Source(POINT_IN_TIME, f"{live} at {_ist(at)}", table=live, at=at)
    arn = chosen[short]
    match = _ARN.fullmatch(arn)
    assert match is not None  # parse_backups checked it
    return Source(BACKUP if match["service"] == "dynamodb" else RECOVERY_POINT, arn, arn=arn)


def plan(
    stage: str,
    prefix: str,
    source_prefix: str,
    at: dt.datetime | None = None,
    chosen: dict[str, str] | None = None,
    restore_users: bool = False,
) -> list[Planned]:
    """What ``restore tables`` will make: one table per table of the template, named ``<prefix><short>``."""
    if (at is None) == (chosen is None):
        raise RestoreRefused("give exactly one of --to-time, --latest and --from-backup")
    check_table_prefix(prefix, stage, "--prefix")
    if prefix == source_prefix:
        raise RestoreRefused(f"--prefix {prefix} is the prefix of the live tables; choose a new one")
    restored = restored_table_names(stage, restore_users)
    planned = []
    for template, target_spec in zip(table_specs(stage), backups.stage_tables(stage, prefix), strict=True):
        short = backups.short_name(template, stage)
        source = _source(short, restored, source_prefix, at, chosen or {})
        planned.append(Planned(short, target_spec, source, restore_point=at if source.at else None))
    return planned


def _ist(at: dt.datetime) -> str:
    return at.astimezone(clock.IST).strftime("%Y-%m-%d %H:%M:%S IST")


def _existing(ddb: Any) -> set[str]:
    names: set[str] = set()
    for page in ddb.get_paginator("list_tables").paginate():
        names.update(page["TableNames"])
    return names


def _table_arn_name(arn: str) -> str:
    """``loan-crm-prod-loans`` of ``arn:aws:dynamodb:...:table/loan-crm-prod-loans[/backup/...]``."""
    return arn.split(":table/", 1)[-1].split("/", 1)[0]


def _same_table(stage: str, short: str, table: str) -> bool:
    """Whether ``table`` is (a restored generation of) the stage's ``short`` table: a backup of payments
    restored as loans would be caught by nothing else."""
    return table.startswith(stage_prefix(stage)) and table.endswith(f"-{short}")


def preflight(
    ddb: Any, backup: Any, stage: str, planned: list[Planned], vault: str | None, role_arn: str | None
) -> None:
    """Everything that can be known before the first table is asked for (RestoreRefused if not); notes
    each restored table's restore point."""
    existing = _existing(ddb)
    taken = sorted(p.name for p in planned if p.name in existing)
    if taken:
        raise RestoreRefused(
            "these tables exist already (a restore never overwrites); choose another --prefix: " + ", ".join(taken)
        )
    problems: list[str] = []
    for p in planned:
        source = p.source
        if source.kind == LIVE_COPY:
            if source.table not in existing:
                problems.append(f"{p.short}: no live table {source.table} to copy")
        elif source.kind == POINT_IN_TIME:
            assert source.table is not None and source.at is not None
            problems += _pitr_problems(ddb, source.table, source.at)
        elif source.kind == BACKUP:
            details = ddb.describe_backup(BackupArn=source.arn)["BackupDescription"]
            status = details["BackupDetails"]["BackupStatus"]
            table = details["SourceTableDetails"]["TableName"]
            p.restore_point = details["BackupDetails"]["BackupCreationDateTime"]
            if status != "AVAILABLE":
                problems.append(f"{p.short}: backup is {status}")
            if not _same_table(stage, p.short, table):
                problems.append(f"{p.short}: that backup is of {table}")
        elif source.kind == RECOVERY_POINT:
            if vault is None or role_arn is None:
                problems.append(f"{p.short}: a recovery point needs the vault and the role AWS Backup restores under")
                continue
            point = backup.describe_recovery_point(BackupVaultName=vault, RecoveryPointArn=source.arn)
            p.restore_point = point.get("CreationDate")
            if point.get("Status") != "COMPLETED":
                problems.append(f"{p.short}: recovery point is {point.get('Status')}")
            if not _same_table(stage, p.short, _table_arn_name(str(point.get("ResourceArn", "")))):
                problems.append(f"{p.short}: that recovery point is of {point.get('ResourceArn')}")
    if problems:
        raise RestoreRefused("nothing was started:\n  " + "\n  ".join(problems))


def _pitr_problems(ddb: Any, table: str, at: dt.datetime) -> list[str]:
    described = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    pitr = described.get("PointInTimeRecoveryDescription", {})
    if pitr.get("PointInTimeRecoveryStatus") != "ENABLED":
        return [f"{table}: point-in-time recovery is off"]
    earliest = pitr.get("EarliestRestorableDateTime")
    if earliest is not None and at < earliest:
        return [f"{table}: the earliest instant it can be restored to is {_ist(earliest)}"]
    return []


def _sse_override(spec: TableSpec) -> dict[str, Any]:
    """The template's ``SSEEnabled`` is the AWS-managed KMS key; a restore would otherwise use the
    AWS-owned one."""
    if spec.properties.get("SSESpecification", {}).get("SSEEnabled"):
        return {"SSESpecificationOverride": {"Enabled": True, "SSEType": "KMS"}}
    return {}


def _start(ddb: Any, backup: Any, p: Planned, vault: str | None, role_arn: str | None) -> None:
    props, source = p.spec.properties, p.source
    billing = {"BillingModeOverride": props.get("BillingMode", "PAY_PER_REQUEST")}
    if source.kind == POINT_IN_TIME:
        ddb.restore_table_to_point_in_time(
            SourceTableName=source.table, TargetTableName=p.name, RestoreDateTime=source.at,
            **billing, **_sse_override(p.spec),
        )  # fmt: skip
    elif source.kind == BACKUP:
        ddb.restore_table_from_backup(TargetTableName=p.name, BackupArn=source.arn, **billing, **_sse_override(p.spec))
    elif source.kind == RECOVERY_POINT:
        answer = backup.get_recovery_point_restore_metadata(BackupVaultName=vault, RecoveryPointArn=source.arn)
        metadata = dict(answer["RestoreMetadata"])
        # AWS Backup answers with the metadata the point was taken with; only the target's name changes.
        key = next((k for k in metadata if k.lower() == "targettablename"), "targetTableName")
        metadata[key] = p.name
        p.job_id = backup.start_restore_job(
            RecoveryPointArn=source.arn, Metadata=metadata, IamRoleArn=role_arn, ResourceType="DynamoDB"
        )["RestoreJobId"]
    else:
        _create_empty(ddb, p.spec)


def _create_empty(ddb: Any, spec: TableSpec) -> None:
    kwargs = table_layout(spec)
    sse = _sse_override(spec)
    if sse:
        kwargs["SSESpecification"] = sse["SSESpecificationOverride"]
    ddb.create_table(**kwargs)


def copy_all(ddb: Any, source: str, target: str) -> int:
    """Put every item of ``source`` into ``target`` (parallel scan, raw items); how many."""
    with ThreadPoolExecutor(SEGMENTS, thread_name_prefix="copy-live") as pool:
        return sum(pool.map(lambda s: _copy_segment(ddb, target, source, s, False), range(SEGMENTS)))


def _wait_active(ddb: Any, table: str, delay: float, attempts: int) -> None:
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})


def _wait_job(backup: Any, p: Planned, delay: float, attempts: int) -> None:
    for _ in range(attempts):
        job = backup.describe_restore_job(RestoreJobId=p.job_id)
        if job.get("Status") in _JOB_DONE:
            if job["Status"] != "COMPLETED":
                raise RuntimeError(f"AWS Backup restore job {p.job_id} {job['Status']}: {job.get('StatusMessage', '')}")
            return
        time.sleep(delay)
    raise RuntimeError(f"AWS Backup restore job {p.job_id} not finished in time")


def _updated(ddb: Any, table: str, delay: float, attempts: int, **change: Any) -> None:
    """One UpdateTable (DynamoDB takes one kind of change at a time), then ACTIVE again."""
    ddb.update_table(TableName=table, **change)
    _wait_active(ddb, table, delay, attempts)


def _add_index(ddb: Any, spec: TableSpec, index: dict[str, Any], delay: float, attempts: int) -> None:
    needed = {k["AttributeName"] for k in index["KeySchema"]}
    definitions = [d for d in spec.properties["AttributeDefinitions"] if d["AttributeName"] in needed]
    ddb.update_table(
        TableName=spec.name, AttributeDefinitions=definitions, GlobalSecondaryIndexUpdates=[{"Create": index}]
    )
    for _ in range(attempts):
        live = ddb.describe_table(TableName=spec.name)["Table"]
        statuses = {g["IndexName"]: g.get("IndexStatus", "ACTIVE") for g in live.get("GlobalSecondaryIndexes", [])}
        if statuses.get(index["IndexName"]) == "ACTIVE":
            _wait_active(ddb, spec.name, delay, attempts)  # the next UpdateTable needs the table ACTIVE too
            return
        time.sleep(delay)
    raise RuntimeError(f"{spec.name}: index {index['IndexName']} not ACTIVE in time")


def _enable_pitr(ddb: Any, table: str, pitr: dict[str, Any], delay: float, attempts: int) -> None:
    """A table restored a moment ago can answer ContinuousBackupsUnavailableException until its backups
    are set up: ask again rather than leave the table without point-in-time recovery."""
    for attempt in range(attempts):
        try:
            ddb.update_continuous_backups(TableName=table, PointInTimeRecoverySpecification=pitr)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ContinuousBackupsUnavailableException" or attempt == attempts - 1:
                raise
            time.sleep(delay)


_NOT_IN_TAGS = re.compile(r"[^\w\s+=._:/-]")
"""DynamoDB tag values take letters, digits, spaces and ``+ = . _ : / -`` only."""


def _tags(p: Planned) -> list[dict[str, str]]:
    tags = [{"Key": TAG_SOURCE, "Value": _NOT_IN_TAGS.sub("", p.source.detail)[:256]}]
    if p.restore_point is not None:
        tags.append({"Key": TAG_POINT, "Value": _instant(p.restore_point)})
    return tags


def _instant(at: dt.datetime) -> str:
    """As the audit trail writes ``at`` (IST, milliseconds), so the two compare as strings."""
    return at.astimezone(clock.IST).isoformat(timespec="milliseconds")


def apply_settings(ddb: Any, p: Planned, delay: float, attempts: int) -> None:
    """What a restore does not carry over, as the template sets it: indexes the backup predates, billing
    mode, the KMS key, deletion protection, point-in-time recovery, TTL and tags (the template's, and
    where the items came from). Each one is noted in ``p.applied``."""
    spec, props = p.spec, p.spec.properties
    table = ddb.describe_table(TableName=p.name)["Table"]
    present = {g["IndexName"] for g in table.get("GlobalSecondaryIndexes", [])}
    for index in props.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] not in present:
            _add_index(ddb, spec, index, delay, attempts)
            p.applied.append(f"index {index['IndexName']} added")
    billing = props.get("BillingMode", "PAY_PER_REQUEST")
    if table.get("BillingModeSummary", {}).get("BillingMode", billing) != billing:
        _updated(ddb, p.name, delay, attempts, BillingMode=billing)
        p.applied.append(f"billing {billing}")
    if _sse_override(spec):
        sse = table.get("SSEDescription", {})
        if sse.get("Status") not in ("ENABLED", "UPDATING") or sse.get("SSEType") != "KMS":
            _updated(ddb, p.name, delay, attempts, SSESpecification={"Enabled": True, "SSEType": "KMS"})
        p.applied.append("KMS key")
    if props.get("DeletionProtectionEnabled"):
        if not table.get("DeletionProtectionEnabled"):
            _updated(ddb, p.name, delay, attempts, DeletionProtectionEnabled=True)
        p.applied.append("deletion protection")
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr and pitr.get("PointInTimeRecoveryEnabled"):
        _enable_pitr(ddb, p.name, pitr, delay, attempts)
        p.applied.append("PITR")
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        current = ddb.describe_time_to_live(TableName=p.name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            ddb.update_time_to_live(TableName=p.name, TimeToLiveSpecification=ttl)
        p.applied.append(f"TTL {ttl['AttributeName']}")
    ddb.tag_resource(ResourceArn=table["TableArn"], Tags=[*props.get("Tags", []), *_tags(p)])
    p.applied.append("tags")


def restore_tables(
    ddb: Any,
    backup: Any,
    stage: str,
    planned: list[Planned],
    vault: str | None = None,
    role_arn: str | None = None,
    delay: float = backups.WAIT_DELAY_SECONDS,
    wait_minutes: float = WAIT_MINUTES,
) -> list[Planned]:
    """Check, start every restore (they run side by side in AWS), wait for each table, copy the live
    tables that are kept, then re-apply the template's settings. RestoreRefused before anything is
    made; RestoreFailed naming what was."""
    preflight(ddb, backup, stage, planned, vault, role_arn)
    attempts = max(1, int(wait_minutes * 60 / delay)) if delay > 0 else 1
    started: list[str] = []
    try:
        for p in planned:
            _start(ddb, backup, p, vault, role_arn)
            started.append(p.name)
        for p in planned:
            if p.job_id is not None:
                _wait_job(backup, p, delay, attempts)
            _wait_active(ddb, p.name, delay, attempts)
            if p.source.kind == LIVE_COPY:
                assert p.source.table is not None
                p.applied.append(f"{copy_all(ddb, p.source.table, p.name)} items copied")
            apply_settings(ddb, p, delay, attempts)
    except (BotoCoreError, ClientError, RuntimeError) as exc:
        raise RestoreFailed(str(exc), started) from exc
    return planned


def refresh_copies(ddb: Any, stage: str, prefix: str, dry_run: bool = False) -> dict[str, CopyBack]:
    """Make each table ``restore tables`` copied from a live one equal to it again (writes that reached
    the live tables after the copy): by table, what was put and deleted.

    Only before the cut-over. Refused when this shell's stage already uses ``prefix`` (TABLE_PREFIX),
    and when the new audit table holds an entry the old one lacks: the audit trail is append-only, so
    such an entry was written by the stage running on the new tables, and making the copy equal to the
    old tables would delete it (and every other write since the cut-over)."""
    check_table_prefix(prefix, stage, "--prefix")
    if prefix == settings().table_prefix:
        raise ValueError(f"the stage uses {prefix} now (TABLE_PREFIX): refresh is only for before the cut-over")
    copies: dict[str, str] = {}
    for spec in backups.stage_tables(stage, prefix):
        source = _table_tags(ddb, spec.name).get(TAG_SOURCE, "")
        if source.startswith("copy of "):
            copies[spec.name] = source.removeprefix("copy of ")
    audit = f"{prefix}audit"
    if audit in copies:
        written = copy_back(ddb, audit, copies[audit], dry_run=True).deletes
        if written:
            raise ValueError(
                f"{audit} has {written} audit entries {copies[audit]} lacks: the stage has been writing to the "
                "new tables, so they are live now; nothing was changed"
            )
    return {name: copy_back(ddb, name, source, dry_run=dry_run) for name, source in copies.items()}


# ---- checking the new tables -----------------------------------------------------------------------


@dataclass
class Difference:
    """Against the live table, by item key: items only one side has, and items both have but differ."""

    only_restored: int
    only_live: int
    changed: int
    live: backups.Digest

    @property
    def none(self) -> bool:
        return not (self.only_restored or self.only_live or self.changed)


@dataclass
class TableCheck:
    short: str
    table: str
    digest: backups.Digest | None = None
    source: str = "-"
    restore_point: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    against_live: Difference | None = None


@dataclass
class VerifyReport:
    prefix: str
    tables: list[TableCheck]
    reconciliation: ReconciliationRun | None = None
    reconciliation_problem: str | None = None
    lost: list[dict[str, Any]] = field(default_factory=list)
    """With a live audit table to read: its entries after the restore point, oldest first, in the
    shape ``GET /api/v1/audit`` gives them. The successful ones are the writes the rollback undoes."""

    @property
    def restore_point(self) -> str | None:
        """The earliest instant any restored table holds: every write after it may be missing somewhere."""
        points = [t.restore_point for t in self.tables if t.restore_point]
        return min(points) if points else None

    @property
    def ok(self) -> bool:
        return self.reconciliation_problem is None and not any(t.problems for t in self.tables)


def _settings_problems(ddb: Any, spec: TableSpec, table: dict[str, Any]) -> tuple[list[str], list[str]]:
    props = spec.properties
    problems: list[str] = []
    notes: list[str] = []
    if table.get("TableStatus") != "ACTIVE":
        problems.append(f"status {table.get('TableStatus')}")
    if table["KeySchema"] != props["KeySchema"]:
        problems.append("key schema differs from the template")
    statuses = {g["IndexName"]: g.get("IndexStatus", "ACTIVE") for g in table.get("GlobalSecondaryIndexes", [])}
    wanted = {g["IndexName"] for g in props.get("GlobalSecondaryIndexes", [])}
    problems += [f"index {name} missing" for name in sorted(wanted - set(statuses))]
    problems += [f"index {n} {statuses[n]}" for n in sorted(wanted & set(statuses)) if statuses[n] != "ACTIVE"]
    notes += [f"index {name} not in the template" for name in sorted(set(statuses) - wanted)]
    if props.get("DeletionProtectionEnabled") and not table.get("DeletionProtectionEnabled"):
        problems.append("deletion protection off")
    if props.get("SSESpecification", {}).get("SSEEnabled"):
        sse = table.get("SSEDescription", {})
        if sse.get("Status") not in ("ENABLED", "UPDATING") or sse.get("SSEType") != "KMS":
            problems.append("not encrypted with the KMS key")
    if props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
        described = ddb.describe_continuous_backups(TableName=spec.name)["ContinuousBackupsDescription"]
        if described.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") != "ENABLED":
            problems.append("point-in-time recovery off")
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        current = ddb.describe_time_to_live(TableName=spec.name)["TimeToLiveDescription"]
        on = current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
        if not on or current.get("AttributeName") != ttl.get("AttributeName"):
            problems.append(f"TTL on {ttl['AttributeName']} off")
    return problems, notes


def _table_tags(ddb: Any, table: str) -> dict[str, str]:
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    tags: dict[str, str] = {}
    kwargs: dict[str, Any] = {"ResourceArn": arn}
    while True:
        answer = ddb.list_tags_of_resource(**kwargs)
        tags.update({t["Key"]: t["Value"] for t in answer.get("Tags", [])})
        if not answer.get("NextToken"):
            return tags
        kwargs["NextToken"] = answer["NextToken"]


def _item_digests(
    ddb: Any, table: str, keys: list[str], keep: Callable[[dict[str, Any]], bool] | None = None
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Each item's digest by its key, and the items ``keep`` picks (raw)."""
    digests: dict[str, int] = {}
    kept: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            digests[_key_of(item, keys)] = backups.item_digest(item)
            if keep is not None and keep(item):
                kept.append(item)
    return digests, kept


def _audit_json(item: dict[str, Any]) -> dict[str, Any]:
    return audit_dict(item_to_audit(AuditModel.from_raw_data(item)))


def _compare(ddb: Any, check: TableCheck, spec: TableSpec, live: str, after: str | None, report: VerifyReport) -> None:
    """Item by item against ``live``; for the audit table, also collect the live entries after ``after``."""
    keys = [k["AttributeName"] for k in spec.properties["KeySchema"]]
    restored, _ = _item_digests(ddb, check.table, keys)
    lost_after = None if check.short != "audit" or after is None else after

    def later(item: dict[str, Any]) -> bool:
        return lost_after is not None and str(item.get("at", {}).get("S", "")) > lost_after

    current, lost = _item_digests(ddb, live, keys, later)
    check.digest = backups.combined(restored.values())
    only_restored = sum(1 for k in restored if k not in current)
    only_live = sum(1 for k in current if k not in restored)
    changed = sum(1 for k, d in restored.items() if k in current and current[k] != d)
    check.against_live = Difference(only_restored, only_live, changed, backups.combined(current.values()))
    if check.source.startswith("copy of ") and not check.against_live.none:
        check.problems.append("differs from the live table it was copied from: written since? freeze writes, refresh")
    if check.short == "audit":
        report.lost = sorted((_audit_json(i) for i in lost), key=lambda e: (e["at"], e["audit_id"]))


class _Quiet:
    """Metrics of a check that is not the stage's: nothing to CloudWatch."""

    def count(self, name: str, times: int = 1, **dimensions: str) -> None:
        return None

    def measure(self, name: str, value: float, unit: str, **dimensions: str) -> None:
        return None


class _RunsHere:
    """The reconciliation's run record, kept in this process: ``verify`` must not write to the tables it
    is checking (a second verify would see other checksums), so the run is never stored."""

    def __init__(self) -> None:
        self._runs: dict[str, ReconciliationRun] = {}
        self._segments: dict[str, dict[str, SegmentProgress]] = {}
        self._lock = threading.Lock()

    def create(self, run: ReconciliationRun, segments: Sequence[SegmentProgress]) -> None:
        with self._lock:
            self._runs[run.run_id] = run
            self._segments[run.run_id] = {s.name: s for s in segments}

    def get(self, run_id: str) -> ReconciliationRun | None:
        return self._runs.get(run_id)

    def latest(self) -> ReconciliationRun | None:
        return None

    def segments(self, run_id: str) -> list[SegmentProgress]:
        with self._lock:
            return list(self._segments.get(run_id, {}).values())

    def checkpoint(self, run_id: str, segment: SegmentProgress) -> bool:
        with self._lock:
            self._segments[run_id][segment.name] = segment
        return True

    def hand_over(self, run_id: str) -> int:
        run = self._runs[run_id]
        run.continuations += 1
        return run.continuations

    def finish(self, run: ReconciliationRun) -> bool:
        self._runs[run.run_id] = run
        return True


def reconcile_prefix(prefix: str) -> ReconciliationRun:
    """The reconciliation of the ledger held by the tables under ``prefix``, run here, read-only: the
    services are built on settings naming those tables, with no scores written and the run not stored."""
    config = replace(settings(), table_prefix_override=prefix)
    try:
        built = wiring.build(config)
        check = replace(
            built.reconciliation,
            runs=_RunsHere(),
            metrics=_Quiet(),
            dispatcher=RunHere(),
            flags=None,
            scores=None,
            assignments=None,
        )
        return check.start("ops:restore-verify")
    finally:
        wiring.reset()  # the next services() binds the models to the configured tables again


def verify_prefix(ddb: Any, stage: str, prefix: str, live_prefix: str | None = None) -> VerifyReport:
    """Check the tables under ``prefix`` (see :class:`VerifyReport`); with ``live_prefix``, also compare
    each with the table of that prefix and list the live audit entries after the restore point."""
    check_table_prefix(prefix, stage, "--prefix")
    report = VerifyReport(prefix, [])
    existing = _existing(ddb)
    pairs = []
    for template, spec in zip(table_specs(stage), backups.stage_tables(stage, prefix), strict=True):
        check = TableCheck(backups.short_name(template, stage), spec.name)
        report.tables.append(check)
        if spec.name not in existing:
            check.problems.append("missing")
            continue
        table = ddb.describe_table(TableName=spec.name)["Table"]
        tags = _table_tags(ddb, spec.name)
        check.source = tags.get(TAG_SOURCE, "-")
        check.restore_point = tags.get(TAG_POINT)
        check.problems, check.notes = _settings_problems(ddb, spec, table)
        pairs.append((check, spec))
    for check, spec in pairs:  # the restore point is known once every table's tags are read
        live = None if live_prefix is None else live_prefix + check.short
        if live is not None and live in existing:
            _compare(ddb, check, spec, live, report.restore_point, report)
        else:
            check.digest = backups.table_digest(ddb, spec.name)
            if live is not None:
                check.notes.append(f"no live table {live} to compare with")
    if any("missing" in t.problems for t in report.tables):
        report.reconciliation_problem = "not run: tables are missing"
        return report
    run = reconcile_prefix(prefix)
    report.reconciliation = run
    if run.status is not ReconciliationStatus.COMPLETED:
        report.reconciliation_problem = f"reconciliation {run.status.value}: {run.error or ''}".strip()
    elif run.mismatch_count:
        report.reconciliation_problem = f"reconciliation found {run.mismatch_count} mismatches"
    return report


# ---- commands ----------------------------------------------------------------------------------------

PrefixOption = Annotated[
    str, typer.Option("--prefix", help="Prefix of the new tables: loan-crm-<stage>-<something>-, e.g. ...-r1-.")
]


def _backup_client() -> Any:
    return boto3.client("backup", region_name=settings().region)


def _vault_and_role(ctx: typer.Context, role_arn: str | None) -> tuple[str, str | None]:
    """The stage's backup vault and the role AWS Backup restores under, from the stack (a recovery point
    is read from the vault and restored by AWS Backup, not by DynamoDB)."""
    info = stack.current(ctx)
    vault = info.backup_vault or f"{settings().stage_prefix}backups"
    return vault, role_arn or info.backup_role_arn


@app.command("tables")
def tables_command(
    ctx: typer.Context,
    prefix: PrefixOption,
    to_time: Annotated[
        str | None,
        typer.Option("--to-time", help="Point-in-time restore to this instant, ISO-8601 with offset (+05:30)."),
    ] = None,
    from_backup: Annotated[
        list[str] | None,
        typer.Option(
            "--from-backup",
            metavar="NAME=ARN",
            help="A DynamoDB backup or AWS Backup recovery point per restored table (repeat for each).",
        ),
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="The newest `backup create` run that covers every restored table.")
    ] = False,
    restore_users: Annotated[
        bool, typer.Option("--restore-users", help="Roll users back too (only when users were the damage).")
    ] = False,
    role_arn: Annotated[
        str | None, typer.Option(help="Role AWS Backup restores recovery points under (default: the stack's).")
    ] = None,
    wait_minutes: Annotated[float, typer.Option(help="Give up waiting for a table after this long.")] = WAIT_MINUTES,
) -> None:
    """Make EVERY table of the stage anew as <prefix><name>: the ledger restored to one instant
    (--to-time) or one set of backups (--latest, --from-backup); audit, reminders and users copied from
    the live tables; the TTL tables empty. PITR, deletion protection, TTL, the KMS key and tags re-applied.
    Refuses if any of those tables exists. Nothing live is written."""
    if target(ctx).local_ports is not None:
        raise fail("DynamoDB Local cannot restore tables; this is for a deployed stage", 2)
    config = settings()
    ddb, backup = _ddb(), _backup_client()
    try:
        if sum((to_time is not None, bool(from_backup), latest)) != 1:
            raise RestoreRefused("give exactly one of --to-time, --latest and --from-backup")
        check_table_prefix(prefix, config.stage, "--prefix")
        at = parse_instant(to_time) if to_time is not None else None
        chosen: dict[str, str] | None = None
        if latest:
            label, chosen = latest_backup_set(ddb, config.stage, config.table_prefix, restore_users)
            err.print(f"restoring the backups of `backup create` run {label}", highlight=False)
        elif from_backup:
            chosen = parse_backups(config.stage, from_backup, restore_users)
        planned = plan(config.stage, prefix, config.table_prefix, at, chosen, restore_users)
    except (RestoreRefused, ValueError) as exc:
        raise fail(str(exc), 2) from None
    vault = None
    if any(p.source.kind == RECOVERY_POINT for p in planned):
        vault, role_arn = _vault_and_role(ctx, role_arn)
    try:
        made = restore_tables(ddb, backup, config.stage, planned, vault, role_arn, wait_minutes=wait_minutes)
    except RestoreRefused as exc:
        raise fail(str(exc)) from None
    except RestoreFailed as exc:
        for name in exc.started:
            err.print(f"[bold red]made or being made (delete it, or use another --prefix):[/] {name}", highlight=False)
        raise fail(f"restore failed: {exc}") from None
    table = Table("table", "new table", "from", "done", title=f"stage {config.stage} made anew under {prefix}")
    for p in made:
        table.add_row(p.short, p.name, p.source.detail, ", ".join(p.applied) or "-")
    out.print(table)
    out.print(f"next: python -m ops restore verify --prefix {prefix} --against-live", highlight=False)


@app.command("refresh")
def refresh_command(
    prefix: PrefixOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be put and deleted.")] = False,
) -> None:
    """Copy again, from the live tables, the tables `restore tables` copied (audit, reminders, users):
    for writes that reached the live tables after the copy. Freeze writes first. Before the cut-over
    only: refused once the stage writes to the new tables."""
    config = settings()
    try:
        done = refresh_copies(_ddb(), config.stage, prefix, dry_run)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    put, deleted = ("would put", "would delete") if dry_run else ("put", "deleted")
    for name, copied in done.items():
        out.print(f"{name} <- {copied.restored}: {put} {copied.puts}, {deleted} {copied.deletes}", highlight=False)
    if not done:
        raise fail(f"no copied tables under {prefix}")


@app.command("verify")
def verify_command(
    prefix: PrefixOption,
    against_live: Annotated[
        bool, typer.Option("--against-live", help="Also compare each table with the live one: what differs.")
    ] = False,
    live_prefix: Annotated[
        str | None, typer.Option(help="Prefix of the tables to compare with (default: the stage's, TABLE_PREFIX).")
    ] = None,
    lost_out: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="With --against-live: write the live audit entries after the restore point as JSONL.",
        ),
    ] = None,
) -> None:
    """Check the tables under PREFIX: each present, ACTIVE and set as the template says; item count and
    checksum; a reconciliation of the restored ledger; with --against-live, what differs from the live
    tables and which audited writes came after the restore point. Exit 1 on any failure."""
    config = settings()
    try:
        check_table_prefix(prefix, config.stage, "--prefix")
        compare_with = (live_prefix or config.table_prefix) if against_live else None
        if compare_with is not None:
            check_table_prefix(compare_with, config.stage, "--live-prefix")
            if compare_with == prefix:
                raise ValueError(f"{prefix} is the prefix being checked; name the live one with --live-prefix")
        if lost_out is not None and compare_with is None:
            raise ValueError("--lost-out needs --against-live")
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    report = verify_prefix(_ddb(), config.stage, prefix, compare_with)
    _print_report(report, compare_with)
    if lost_out is not None:
        with lost_out.open("w", encoding="utf-8") as target_file:
            for entry in report.lost:
                target_file.write(json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n")
        out.print(f"{len(report.lost)} audit entries written to {lost_out}", highlight=False)
    if not report.ok:
        failed = [t.short for t in report.tables if t.problems]
        if report.reconciliation_problem:
            failed.append("reconciliation")
        raise fail("restore verify failed: " + ", ".join(failed))
    out.print(f"all tables under {prefix} verified")


def _print_report(report: VerifyReport, live_prefix: str | None) -> None:
    columns = ["table", "items", "checksum", "from", "result"]
    if live_prefix is not None:
        columns[3:3] = ["live items", "only restored", "only live", "changed"]
    table = Table(*columns, title=f"tables under {report.prefix}")
    for t in report.tables:
        result = "[red]" + escape("; ".join(t.problems)) + "[/]" if t.problems else "[green]OK[/]"
        if t.notes:
            result += " (" + escape("; ".join(t.notes)) + ")"
        row = [t.table, str(t.digest.items) if t.digest else "-", t.digest.checksum[:16] if t.digest else "-"]
        if live_prefix is not None:
            d = t.against_live
            row += [str(d.live.items), str(d.only_restored), str(d.only_live), str(d.changed)] if d else ["-"] * 4
        table.add_row(*row, escape(t.source), result)
    out.print(table)
    out.print(f"restore point: {report.restore_point or 'unknown (no restored table is tagged)'}", highlight=False)
    run = report.reconciliation
    if run is not None:
        print_run(run, "reconciliation of the restored ledger")
    if report.reconciliation_problem:
        err.print(f"[bold red]{escape(report.reconciliation_problem)}[/]", highlight=False)
    if live_prefix is not None:
        by_action: dict[str, int] = {}
        for entry in report.lost:
            if entry["outcome"] == "SUCCESS":
                by_action[entry["action"]] = by_action.get(entry["action"], 0) + 1
        summary = ", ".join(f"{action} {n}" for action, n in sorted(by_action.items())) or "none"
        out.print(f"audited writes after the restore point (undone by the rollback): {summary}", highlight=False)
