"""The copy-back step of a data rollback (docs/runbook/backups-and-restore.md): ``restore copy-back`` and
``restore clear-idempotency``.

DynamoDB restores only into a new table and cannot rename one, and the application finds its tables by
name, so a rollback restores ``loan-crm-<stage>-<name>`` into ``<that>-restored``, has people verify
it, and then makes the live table equal to the restored copy: put every restored item, delete every
live item the copy does not have. The live table is never deleted, so it keeps its point-in-time
recovery, deletion protection, indexes and CloudFormation identity. Items are copied raw (DynamoDB's
typed JSON), so every attribute type survives unchanged.

``--dry-run`` only counts what would be put and deleted: run it first, and have two people read the
numbers. The audit table is refused outright: it is the evidence and append-only, and is restored
only to a side table to be read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

import boto3
import typer
from botocore.exceptions import ClientError

from chalicelib.config import settings
from ops.console import err, fail, out

SEGMENTS = 8
"""Parallel scan segments: a restore is done in a maintenance window, so speed matters, and one
on-demand table takes eight scanners easily."""
BATCH_WRITE = 25
BATCH_GET = 100
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


def _write(ddb: Any, table: str, requests: list[dict[str, Any]]) -> None:
    """One BatchWriteItem, repeating whatever DynamoDB hands back unprocessed (throttling) until done."""
    while requests:
        answer = ddb.batch_write_item(RequestItems={table: requests})
        requests = answer.get("UnprocessedItems", {}).get(table, [])
        if requests:
            time.sleep(0.2)


def _key_of(item: dict[str, Any], keys: list[str]) -> str:
    return json.dumps({k: item[k] for k in keys}, sort_keys=True)


def _present(ddb: Any, table: str, chunk: list[dict[str, Any]], keys: list[str]) -> set[str]:
    """Which of these keys exist in ``table`` (BatchGetItem, repeating unprocessed keys)."""
    found: set[str] = set()
    want: dict[str, Any] = {"Keys": chunk, "ConsistentRead": True}
    while want["Keys"]:
        answer = ddb.batch_get_item(RequestItems={table: want})
        found.update(_key_of(item, keys) for item in answer["Responses"].get(table, []))
        want = answer.get("UnprocessedKeys", {}).get(table, {"Keys": []})
    return found


def _copy_segment(ddb: Any, live: str, restored: str, segment: int, dry_run: bool) -> int:
    count, batch = 0, []
    for item in _scan(ddb, restored, segment, None):
        count += 1
        batch.append({"PutRequest": {"Item": item}})
        if len(batch) == BATCH_WRITE:
            if not dry_run:
                _write(ddb, live, batch)
            batch = []
    if batch and not dry_run:
        _write(ddb, live, batch)
    return count


def _prune_segment(ddb: Any, live: str, restored: str, keys: list[str], segment: int, dry_run: bool) -> int:
    gone: list[dict[str, Any]] = []
    chunk: list[dict[str, Any]] = []
    for key in _scan(ddb, live, segment, keys):
        chunk.append(key)
        if len(chunk) == BATCH_GET:
            have = _present(ddb, restored, chunk, keys)
            gone.extend(k for k in chunk if _key_of(k, keys) not in have)
            chunk = []
    if chunk:
        have = _present(ddb, restored, chunk, keys)
        gone.extend(k for k in chunk if _key_of(k, keys) not in have)
    if not dry_run:
        for i in range(0, len(gone), BATCH_WRITE):
            _write(ddb, live, [{"DeleteRequest": {"Key": k}} for k in gone[i : i + BATCH_WRITE]])
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
        for i in range(0, len(keys), BATCH_WRITE):
            _write(ddb, table, [{"DeleteRequest": {"Key": k}} for k in keys[i : i + BATCH_WRITE]])
    out.print(f"{table}: {'would delete' if dry_run else 'deleted'} {len(keys)} records", highlight=False)
    if not dry_run:
        err.print("wait 2 minutes before reopening: API containers keep flags and the latest run date up to 60 s")
