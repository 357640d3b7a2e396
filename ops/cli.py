"""Operations CLI: the stage's stack and API, monitoring, kill switches, the day-end job, users, the demo
book, loan import/export, checks, backups and the copy-back of a data restore.

    python -m ops [--stage STAGE] [--local] COMMAND ...

    stack [--export | --get NAME]         dates [NAME]
    login | logout | api METHOD PATH [--data JSON] [--all]
    verify [--user NAME --password-stdin]   (the post-deployment checks; exit 1 if one fails)
    alarms [--state ALARM | --history 24h] | logs [--function api|job|reconciliation|reminders] [--since 10m] [--errors]
    metrics NAME... [--since 1h] [--function api|job|reconciliation|reminders | --table loans] [--dimension K=V]
    flags list | flags set NAME true|false
    dpd run [--date YYYY-MM-DD] | dpd runs
    check loan ID... [--per-bucket N] | check portfolio | check buckets
    reconcile [--json] | rebuild-aggregates
    reminders list [--date D] [--status S] | reminders send | reminders resend ID
    users add NAME --role ROLE | users list | users deactivate NAME [--reassign-to C]
    users reset-password NAME | users failed-logins
    seed --loans N
    import loans.csv [--errors-out errors.csv]
    export loans [--bucket 90+] [--classification NPA] [--status ACTIVE] [--collector col-ravi]
    backup create | backup list | backup verify | backup prune [--older-than 35d] | backup pitr
    restore copy-back NAME [--dry-run] | restore clear-idempotency
    restore tables --prefix P (--to-time T | --latest | --from-backup NAME=ARN...)
    restore verify --prefix P [--against-live [--lost-out FILE]]

It talks to whatever the standard variables name (``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL_SSM``,
credentials, region; nothing set = real AWS) for the stage ``STAGE`` (or ``--stage``); ``--local``
points everything at the stack ``make run`` starts. It uses the same services as the API, so every rule
and audit entry is the API's. An operator's tool: typer and rich come from requirements-dev.txt and are
never imported by the Lambda package. docs/runbook/ says when to use which command.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Annotated

import boto3
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from chalicelib import clock, wiring
from chalicelib.domain.audit import Action, Actor
from chalicelib.domain.delinquency import Bucket, Classification
from chalicelib.domain.errors import DomainError, ValidationFailed
from chalicelib.domain.flags import FlagName
from chalicelib.domain.loan import LoanStatus
from chalicelib.domain.roles import Role
from chalicelib.domain.runs import RunOutcome
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import LoanFilter
from chalicelib.services.views import run_dict
from chalicelib.wiring import services
from local.demo import seed as seed_book
from local.environment import STAGE as LOCAL_STAGE
from local.environment import Ports, aws_environment
from ops import (
    api_client,
    backups,
    checks,
    csv_io,
    dates,
    observe,
    reconcile,
    reminders,
    restore,
    stack,
    users,
    verify,
)
from ops.console import duration, err, fail, out
from ops.console import operator as _operator
from ops.target import Target, target

app = typer.Typer(help=__doc__.split("\n\n")[0] if __doc__ else None, no_args_is_help=True, add_completion=False)
flags_app = typer.Typer(help="Kill switches: SSM parameters /loan-crm/{stage}/flags/{NAME}.", no_args_is_help=True)
dpd_app = typer.Typer(help="The day-end DPD job: run a date here, read the run history.", no_args_is_help=True)
export_app = typer.Typer(help="Portfolio exports as CSV on stdout.", no_args_is_help=True)
backup_app = typer.Typer(help="On-demand DynamoDB backups of every table of the stage.", no_args_is_help=True)
app.add_typer(flags_app, name="flags")
app.add_typer(dpd_app, name="dpd")
app.add_typer(export_app, name="export")
app.add_typer(backup_app, name="backup")
app.add_typer(checks.app, name="check")
app.add_typer(users.app, name="users")
app.add_typer(restore.app, name="restore")
app.add_typer(reminders.app, name="reminders")
app.command("reconcile")(reconcile.reconcile)
app.command("rebuild-aggregates")(reconcile.rebuild_aggregates)
app.command("stack")(stack.stack_command)
app.command("dates")(dates.dates_command)
app.command("login")(api_client.login_command)
app.command("logout")(api_client.logout_command)
app.command("api")(api_client.api_command)
app.command("alarms")(observe.alarms_command)
app.command("logs")(observe.logs_command)
app.command("metrics")(observe.metrics_command)
app.command("verify")(verify.verify_command)


@app.callback()
def main(
    ctx: typer.Context,
    stage: Annotated[str | None, typer.Option(help="Stage to work on (default: $STAGE, else dev).")] = None,
    local: Annotated[bool, typer.Option("--local", help="Use the local stack of `make run` (stage local).")] = False,
) -> None:
    ports = Ports.from_env() if local else None
    if ports is not None:
        os.environ.update(aws_environment(ports))
    if stage:
        os.environ["STAGE"] = stage
    wiring.reset()
    ctx.obj = Target(local_ports=ports)


# ---- flags ---------------------------------------------------------------------------------------


@flags_app.command("list")
def flags_list() -> None:
    """Each flag's effective value as a job sees it now (read fresh), and where it comes from."""
    flags = services().flags
    table = Table("flag", "enabled", "source", "stored value", title=f"flags of stage {services().settings.stage}")
    for name in FlagName:
        value = flags.read(name, fresh=True)
        table.add_row(name.value, "true" if value.enabled else "false", value.source.value, value.raw or "-")
    out.print(table)
    out.print(f"The API caches flags for FLAG_CACHE_SECONDS ({flags.cache_seconds} s); jobs read them fresh.")


@flags_app.command("set")
def flags_set(
    name: Annotated[str, typer.Argument(help="One of " + ", ".join(FlagName) + ".")],
    value: Annotated[str, typer.Argument(help="true or false.")],
) -> None:
    """Turn an automation on or off (SSM String parameter, overwritten): no deploy needed."""
    if name not in {f.value for f in FlagName}:
        raise fail(f"unknown flag {name!r}; flags are {', '.join(FlagName)}", 2)
    if value not in ("true", "false"):
        raise fail(f"value must be true or false, not {value!r}", 2)
    flag = FlagName(name)
    config = services().settings
    flags = services().flags
    before = flags.read(flag, fresh=True)
    parameter = f"{config.parameter_prefix}flags/{flag.value}"
    written = boto3.client("ssm", region_name=config.region).put_parameter(
        Name=parameter, Value=value, Type="String", Overwrite=True
    )
    by = clock.now_ist() + dt.timedelta(seconds=flags.cache_seconds)
    was = "true" if before.enabled else "false"
    # Every flip is on the audit trail, whoever made it and whatever it was before (docs/rules.md).
    ops_ctx = RequestContext(actor=Actor(sub=f"ops:{_operator()}", role=Role.ADMIN.value))
    services().audit.append(
        ops_ctx.audit_entry(
            Action.FLAG_CHANGED,
            "flag",
            flag.value,
            {"enabled": before.enabled, "source": before.source.value},
            {"enabled": value == "true", "parameter_version": written.get("Version")},
        )
    )
    out.print(f"{flag.value} on stage {config.stage}: {was} ({before.source.value}) -> {value}", highlight=False)
    out.print(f"  {parameter} version {written.get('Version', '?')}", highlight=False)
    out.print(
        "Takes effect now for jobs (they read fresh), within FLAG_CACHE_SECONDS "
        f"({flags.cache_seconds} s) for the API, by {by.strftime('%Y-%m-%d %H:%M:%S')} IST.",
        highlight=False,
    )


# ---- day-end job ---------------------------------------------------------------------------------


@dpd_app.command("run")
def dpd_run(
    date: Annotated[
        str | None, typer.Option("--date", help="Business date YYYY-MM-DD (default: yesterday, IST).")
    ] = None,
    full_scan: Annotated[bool, typer.Option(help="Evaluate every loan, not only the watched ones.")] = False,
) -> None:
    """Run the day-end job for one date in this process, against the configured endpoints."""
    try:
        business_date = dt.date.fromisoformat(date) if date else clock.last_completed_business_date()
    except ValueError:
        raise fail(f"--date must be YYYY-MM-DD, not {date!r}", 2) from None
    try:
        # The job's metric lines (EMF) are for CloudWatch; keep them off this command's output.
        with redirect_stdout(sys.stderr):
            result = services().dpd_job.run(business_date, trigger=f"cli:{_operator()}", full_scan=full_scan)
    except ValidationFailed as exc:
        raise fail(exc.message, 2) from None
    except DomainError as exc:
        raise fail(f"{exc.code}: {exc.message}") from None
    out.print(f"dpd run {business_date}: {result.outcome.value}", highlight=False)
    record = result.record
    if record is not None:
        out.print(
            f"  status {record.status.value}  scanned {record.loans_scanned}  updated {record.loans_updated}  "
            f"escalated {record.escalated}  pending escalation {record.pending_escalation}  errors {record.errors}",
            highlight=False,
        )
        if record.last_error:
            out.print(f"  last error: {record.last_error}", highlight=False)
    if result.outcome is RunOutcome.FAILED:
        raise typer.Exit(1)


@dpd_app.command("runs")
def dpd_runs(
    limit: Annotated[int, typer.Option(min=1, help="How many dates.")] = 30,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per run (the API's shape, last_error included).")
    ] = False,
) -> None:
    """Run history, newest business date first."""
    if as_json:
        for record in services().runs.history(limit, None):
            typer.echo(json.dumps(run_dict(record), separators=(",", ":")))
        return
    table = Table(
        "business date", "status", "trigger", "mode", "started", "finished", "scanned", "updated", "escalated",
        "pending", "errors",
    )  # fmt: skip
    for r in services().runs.history(limit, None):
        table.add_row(
            r.business_date.isoformat(), r.status.value, r.trigger, r.mode or "-", r.started_at, r.finished_at or "-",
            str(r.loans_scanned), str(r.loans_updated), str(r.escalated), str(r.pending_escalation), str(r.errors),
        )  # fmt: skip
    out.print(table)


# ---- demo book -----------------------------------------------------------------------------------


@app.command()
def seed(loans: Annotated[int, typer.Option(min=0, help="Loans in the demo book.")] = 300) -> None:
    """Demo users and loans (local.demo), for the local stage only: their passwords are published."""
    stage = services().settings.stage
    if stage != LOCAL_STAGE:
        raise fail(f"the demo passwords are published; seed the {LOCAL_STAGE} stage only, not {stage!r}", 2)
    out.print(seed_book(loans).summary(), highlight=False)


# ---- import / export -----------------------------------------------------------------------------

_IMPORT_HELP = (
    "Import loans from a CSV file, one loan per row, generated EMI schedule. Columns (header row, any order): "
    + ", ".join(f"{c} (optional)" if c in csv_io.OPTIONAL_COLUMNS else c for c in csv_io.IMPORT_COLUMNS)
    + ". principal_paise is whole paise; annual_rate_bps basis points (12 % = 1200); dates YYYY-MM-DD. Every row"
    " is validated exactly as POST /api/v1/loans validates it; bad rows are reported (row, field, message) and"
    " skipped (exit code 1 if any row was). Safe to re-run: a loan_id already stored is reported as already"
    " imported."
)


@app.command("import", help=_IMPORT_HELP)
def import_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file.")],
    errors_out: Annotated[
        Path | None, typer.Option("--errors-out", dir_okay=False, help="Also write the row errors to this CSV.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Loans created at once.")] = csv_io.DEFAULT_WORKERS,
) -> None:
    with path.open(encoding="utf-8-sig", newline="") as source:
        total = csv_io.count_rows(source)
        progress = Progress(
            TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
        )
        with progress:
            task = progress.add_task("rows", total=total)
            try:
                report = csv_io.import_loans(
                    source,
                    services().loans,
                    workers,
                    on_row=lambda _outcome: progress.advance(task),
                    stored=csv_io.stored_loan_ids,
                )
            except csv_io.ImportFileError as exc:
                raise fail(f"{path}: {exc}; nothing was imported", 2) from None
    for e in report.errors[:20]:
        out.print(f"  row {e.row} [{e.loan_id or '-'}] {e.field}: {e.message}", highlight=False, markup=False)
    if len(report.errors) > 20:
        out.print(f"  ... and {len(report.errors) - 20} more", highlight=False)
    if errors_out is not None:
        with errors_out.open("w", encoding="utf-8", newline="") as target:
            csv_io.write_errors(report.errors, target)
        out.print(f"row errors written to {errors_out}", highlight=False)
    out.print(f"{path.name}: {report.summary()}", highlight=False)
    out.print(f"  stored {report.stored}  already present {report.already_present}  errors {len(report.errors)}")
    out.print(f"  audit entries of this run: actor system:import, request_id {report.batch}", highlight=False)
    if report.errors:
        raise typer.Exit(1)


@export_app.command("loans")
def export_loans(
    bucket: Annotated[Bucket | None, typer.Option(help="Only this bucket.")] = None,
    classification: Annotated[Classification | None, typer.Option(help="Only this classification.")] = None,
    status: Annotated[LoanStatus | None, typer.Option(help="Only this status.")] = None,
    collector: Annotated[str | None, typer.Option(help="Only this collector's loans.")] = None,
) -> None:
    """Loans as the API shows them, CSV on stdout; money in integer paise (outstanding_inr is for people)."""
    filters = LoanFilter(
        bucket=bucket.value if bucket else None,
        classification=classification.value if classification else None,
        status=status.value if status else None,
        collector_id=collector,
    )
    written = csv_io.export_loans(services().loans, filters, sys.stdout)
    err.print(f"{written} loans exported", highlight=False)


# ---- backups -------------------------------------------------------------------------------------

ManifestOption = Annotated[
    Path | None,
    typer.Option(help="Backup manifest (default: $BACKUP_MANIFEST, else .local/backups/<stage>.json)."),
]


def _ddb() -> object:
    return boto3.client("dynamodb", region_name=services().settings.region)


@backup_app.command("create")
def backup_create(manifest: ManifestOption = None) -> None:
    """Back up every table of the stage; name and record each with the git revision and an IST time."""
    stage, prefix = services().settings.stage, services().settings.table_prefix
    path = manifest or backups.default_manifest(stage)
    created = backups.create_backups(_ddb(), stage, path, prefix=prefix)
    table = Table("table", "backup", "items", "checksum", title=f"backups of stage {stage}")
    for r in created:
        checksum = r.checksum[:16] if r.checksum else "none: table written during the backup"
        table.add_row(r.table, r.backup_name, "-" if r.items is None else str(r.items), checksum)
    out.print(table)
    out.print(f"recorded in {path}", highlight=False)


@backup_app.command("list")
def backup_list(manifest: ManifestOption = None) -> None:
    """Backups of each table of the stage, newest first."""
    stage, prefix = services().settings.stage, services().settings.table_prefix
    records = backups.Manifest.load(manifest or backups.default_manifest(stage)).backups
    table = Table("table", "backup", "created (IST)", "status", "type", "revision", "checksum recorded")
    for name, found in backups.list_backups(_ddb(), stage, prefix).items():
        if not found:
            table.add_row(name, "-", "-", "none", "-", "-", "-")
        for b in found:
            record = records.get(b.arn)
            table.add_row(
                name, b.name, b.created.astimezone(clock.IST).strftime("%Y-%m-%d %H:%M:%S"), b.status, b.kind,
                record.revision if record else "-", "yes" if record and record.checksum else "no",
            )  # fmt: skip
    out.print(table)


@backup_app.command("verify")
def backup_verify(
    manifest: ManifestOption = None,
    wait_minutes: Annotated[float, typer.Option(help="Give up on a restore after this long.")] = backups.WAIT_MINUTES,
) -> None:
    """Restore the newest backup of each table to a temporary table, compare item count and checksum with
    what was recorded at backup time (else with the live table, and say so); temporaries are always deleted."""
    stage, prefix = services().settings.stage, services().settings.table_prefix
    path = manifest or backups.default_manifest(stage)
    run = backups.verify_backups(_ddb(), stage, path, wait_minutes=wait_minutes, prefix=prefix)
    table = Table("table", "backup", "revision", "compared with", "items restored/expected", "checksum", "result")
    for r in run.results:
        items = f"{r.restored.items}/{r.expected.items}" if r.restored and r.expected else "-"
        checksum = r.restored.checksum[:16] if r.restored else "-"
        result = "[green]OK[/]" if r.ok else f"[red]{r.problem or 'DIFFERENT'}[/]"
        table.add_row(
            r.table, r.backup.name if r.backup else "-", r.revision or "-", r.compared_with or "-", items, checksum,
            result,
        )  # fmt: skip
    out.print(table)
    out.print(f"temporary tables deleted: {len(run.temporaries) - len(run.left_behind)}/{len(run.temporaries)}")
    for name in run.left_behind:
        err.print(f"[bold red]NOT deleted, delete it by hand:[/] {name}", highlight=False)
    if not run.ok:
        failed = [r.table for r in run.results if not r.ok]
        raise fail("backup verify failed for: " + ", ".join(failed or ["temporary table cleanup"]))
    out.print("all backups verified")


@backup_app.command("prune")
def backup_prune(
    older_than: Annotated[str, typer.Option(help="Delete on-demand backups older than this, e.g. 35d.")] = "35d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list them.")] = False,
) -> None:
    """Delete old on-demand backups (kept until deleted); AWS Backup's recovery points expire by themselves."""
    stage, prefix = services().settings.stage, services().settings.table_prefix
    cutoff = clock.now_ist() - duration(older_than)
    pruned = backups.prune_backups(_ddb(), stage, cutoff, dry_run, prefix)
    for b in pruned:
        created = b.created.astimezone(clock.IST).strftime("%Y-%m-%d %H:%M")
        out.print(f"{'would delete' if dry_run else 'deleted'} {b.name} ({created} IST)", highlight=False)
    out.print(f"{len(pruned)} on-demand backups older than {older_than} {'found' if dry_run else 'deleted'}")


@backup_app.command("pitr")
def backup_pitr(ctx: typer.Context) -> None:
    """Point-in-time recovery of every data table: status and how far back a restore can go (IST)."""
    if target(ctx).local_ports is not None:
        raise fail("DynamoDB Local has no point-in-time recovery; this is for a deployed stage", 2)
    stage = services().settings.stage
    table = Table("table", "point-in-time recovery", "earliest restorable (IST)", title=f"PITR of stage {stage}")
    windows = backups.point_in_time_recovery(_ddb(), stage, services().settings.table_prefix)
    for w in windows:
        status = w.status if w.status == "ENABLED" else f"[bold red]{w.status}[/]"
        earliest = w.earliest.astimezone(clock.IST).strftime("%Y-%m-%d %H:%M:%S") if w.earliest else "-"
        table.add_row(w.table, status, earliest)
    out.print(table)
    if any(w.status != "ENABLED" for w in windows):
        raise fail("point-in-time recovery is off for a data table: switch it back on before anything else")


def cli() -> None:
    """``python -m ops``: an unreachable or refusing AWS endpoint is one line, not a stack trace."""
    try:
        app(prog_name="python -m ops")
    except DomainError as exc:
        err.print(f"[bold red]error:[/] {exc.code}: {escape(exc.message)}", highlight=False)
        sys.exit(1)
    except (BotoCoreError, ClientError) as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    cli()
