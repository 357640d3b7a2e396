"""``ops verify``: the post-deployment checks (docs/runbook/post-deployment-checks.md) as one command
with one exit status, so a deploy pipeline can stop on it and a person reads one table instead of
running eight steps by hand.

Each check is a row, PASS, FAIL or SKIP, with the figure it was judged on. SKIP is only for what the
target cannot have (DynamoDB Local keeps no backups); anything that could be
checked and was not is a FAIL, so a broken deployment is never waved through because a check errored.

What it checks, and why that way:

- health: ``GET /health`` answers 200 for the stage named (a URL pointing at another stage fails);
- routes: every route the Chalice app registers, each method, called without a token, answers
  something other than a 5xx or a 404. The list comes from the app itself (``chalicelib.api.http``),
  so a route added tomorrow is checked tomorrow. Without a token every route stops at the 401
  (login at its 400), before any view runs: nothing is read or written;
- day-end: yesterday's (IST) run is COMPLETED. Before 06:00 IST, when the watchdog would first
  complain, the day before's completed run is enough;
- payment probe: ``POST /api/v1/payments`` with a token and a well-formed body whose amount is 0. It
  passes authentication, the role check and the request schema and is refused by the payment service's
  amount check (422 ``AMOUNT_OUT_OF_RANGE``) before any loan is read; then the stored data is read to
  show that nothing was written (no claim on the probe's UTR, which every stored payment has, and no
  audit entry naming the probe's loan). A test payment in production would be a financial record for
  ever (the UTR is burnt); this exercises the same path without one;
- audit: the newest audit entry is less than a day old. Every posting, every change a night's run
  makes is audited, so a silent trail on a working stage means audits are not being written;
- backups: each data table's newest backup (on-demand, or AWS Backup's recovery point in the stage's
  vault) is less than 26 hours old: the daily plan runs at 06:30 IST, plus slack for its window;
- alarms: the stage has alarms, and none is in ALARM (locally: no alarm rule would fire on the
  local metrics).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import boto3
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from rich.table import Table

from chalicelib import clock
from chalicelib.api.http import BODY_METHODS, is_catch_all, served_methods
from chalicelib.domain.errors import DomainError
from chalicelib.domain.payment import PaymentMode
from chalicelib.domain.roles import PAY_LOANS
from chalicelib.domain.runs import RunRecord, RunStatus
from chalicelib.services.ports import AuditFilter, AuditLog, PaymentRepository
from chalicelib.wiring import services
from ops import api_client, observe, stack
from ops.backups import list_backups, stage_tables
from ops.console import err, fail, out
from ops.target import target

RUN_DUE_BY = dt.time(6, 0)
"""The watchdog's hour (IST): until then last night's run may still be going."""
BACKUP_MAX_AGE = dt.timedelta(hours=26)
AUDIT_MAX_AGE = dt.timedelta(hours=26)
PROBE_LOAN_ID = "VERIFY-PROBE"
"""The loan the payment probe names; it never exists, and the probe is refused before it is looked up."""
PLACEHOLDER = "verify-probe"
"""Stands for every path parameter of a route (valid for each id's pattern)."""
EXPECTED_REFUSAL = (422, "AMOUNT_OUT_OF_RANGE")

HEALTH = "health"
ROUTES = "every route answers"
DAY_END = "day-end run"
PAYMENT_PROBE = "payment path (changes nothing)"
AUDIT = "audit trail written"
BACKUPS = "latest backups"
ALARMS = "alarms"


class Verdict(StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Row:
    check: str
    verdict: Verdict
    detail: str


def passed(check: str, detail: str) -> Row:
    return Row(check, Verdict.PASS, detail)


def failed(check: str, detail: str) -> Row:
    return Row(check, Verdict.FAIL, detail)


def skipped(check: str, detail: str) -> Row:
    return Row(check, Verdict.SKIP, detail)


def _ist(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone(clock.IST).strftime("%Y-%m-%d %H:%M IST")


def _ago(delta: dt.timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    return f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h ago"


# ---- the API ---------------------------------------------------------------------------------------


@dataclass
class Http:
    """Calls to the stage's API: anonymous ones, and the probe's, as the user ``ops login`` keeps (or
    logs in now) with one fresh login if the kept token is refused, as ``ops api`` does."""

    caller: api_client.Caller
    session: api_client.Session | None = None

    def anonymous(self, method: str, path: str, data: str | None = None) -> api_client.Reply:
        return api_client.request(self.caller.transport, self.caller.url, None, method, path, data)

    def logged_in(self) -> api_client.Session:
        if self.session is None:
            self.session = self.caller.session()
        return self.session

    def authenticated(self, method: str, path: str, data: str | None = None) -> api_client.Reply:
        session = self.logged_in()
        reply = api_client.request(self.caller.transport, self.caller.url, session.token, method, path, data)
        if reply.status == 401:
            self.session = self.caller.fresh_session(previous=session.username)
            reply = api_client.request(self.caller.transport, self.caller.url, self.session.token, method, path, data)
        return reply


def _code(reply: api_client.Reply) -> str:
    try:
        return str(reply.json()["error"]["code"])
    except (ValueError, TypeError, KeyError):
        return ""


def check_health(http: Http, stage: str) -> Row:
    name = HEALTH
    reply = http.anonymous("GET", "/health")
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return failed(name, f"GET /health: HTTP {reply.status}, not JSON")
    checks = ", ".join(f"{k} {v}" for k, v in sorted((body.get("checks") or {}).items()))
    if reply.status != 200 or body.get("status") != "ok":
        return failed(name, f"GET /health: HTTP {reply.status}, {body.get('status')} ({checks})")
    if body.get("stage") != stage:
        return failed(name, f"the API at this URL is stage {body.get('stage')!r}, not {stage!r}")
    return passed(name, f"200 ok ({checks}), stage {stage}, version {body.get('version')}")


def app_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the Chalice app serves, catch-alls left out."""
    # Imported here: only this check needs every route module, and the rest of the CLI starts faster.
    from app import app

    routes = []
    for path in sorted(app.routes):
        if is_catch_all(path):
            continue
        routes += [(method, path) for method in served_methods(path) or ["GET"]]
    return routes


def check_routes(http: Http, routes: list[tuple[str, str]]) -> Row:
    name = ROUTES
    statuses: Counter[int] = Counter()
    broken: list[str] = []
    for method, template in routes:
        path = re.sub(r"\{[^}]+\}", PLACEHOLDER, template)
        reply = http.anonymous(method, path, "{}" if method in BODY_METHODS else None)
        statuses[reply.status] += 1
        if reply.status == 404 or reply.status >= 500:
            broken.append(f"{method} {template}: {reply.status} {_code(reply)}".rstrip())
    tally = ", ".join(f"{status} x{n}" for status, n in sorted(statuses.items()))
    if not routes:
        return failed(name, "the app registers no routes")
    if broken:
        return failed(name, f"{len(broken)} of {len(routes)} not answering: " + "; ".join(broken))
    paths = len({template for _, template in routes})
    return passed(name, f"{paths} routes, {len(routes)} methods, without a token: {tally}")


def check_payment_probe(http: Http, payments: PaymentRepository, audit: AuditLog) -> Row:
    name = PAYMENT_PROBE
    session = http.logged_in()
    if session.role not in PAY_LOANS:
        allowed = ", ".join(sorted(PAY_LOANS))
        return failed(name, f"{session.username} is {session.role}: log in as a user who may post payments ({allowed})")
    now = clock.now_ist()
    utr = f"VERIFY{now:%y%m%d%H%M%S}{secrets.token_hex(4).upper()}"
    body = (
        f'{{"loan_id": "{PROBE_LOAN_ID}", "utr": "{utr}", "amount_paise": 0, '
        f'"payment_date": "{now.date().isoformat()}", "mode": "{PaymentMode.UPI.value}"}}'
    )
    reply = http.authenticated("POST", "/api/v1/payments", body)
    answer = (reply.status, _code(reply))
    written = []
    if payments.payment_id_for_utr(utr) is not None:
        written.append(f"a payment claims UTR {utr}")
    if audit.list(AuditFilter(entity_id=PROBE_LOAN_ID), 1, None).items:
        written.append(f"an audit entry names {PROBE_LOAN_ID}")
    if written:
        return failed(name, f"the probe answered {answer[0]} {answer[1]} and WROTE: " + "; ".join(written))
    if answer != EXPECTED_REFUSAL:
        expected = " ".join(map(str, EXPECTED_REFUSAL))
        return failed(name, f"POST /api/v1/payments answered {answer[0]} {answer[1] or '-'}, expected {expected}")
    return passed(
        name,
        f"as {session.username} ({session.role}): amount 0 refused 422 AMOUNT_OUT_OF_RANGE; "
        "nothing stored (no UTR claim, no audit entry)",
    )


# ---- stored data -------------------------------------------------------------------------------------


def check_day_end(get_run: Callable[[dt.date], RunRecord | None], now: dt.datetime) -> Row:
    name = DAY_END
    yesterday = now.date() - dt.timedelta(days=1)
    record = get_run(yesterday)
    if record is not None and record.status is RunStatus.COMPLETED:
        return passed(
            name,
            f"{yesterday} COMPLETED, finished {_ist(record.finished_at) if record.finished_at else '-'}: "
            f"scanned {record.loans_scanned}, "
            f"updated {record.loans_updated}, errors {record.errors}",
        )
    state = record.status.value if record else "no run"
    if now.time() < RUN_DUE_BY and (record is None or record.status is RunStatus.RUNNING):
        before = get_run(yesterday - dt.timedelta(days=1))
        if before is not None and before.status is RunStatus.COMPLETED:
            return passed(name, f"{yesterday}: {state}, not due before 06:00 IST; {before.business_date} COMPLETED")
    error = f" ({record.last_error})" if record and record.last_error else ""
    return failed(name, f"yesterday ({yesterday}): {state}{error}; see python -m ops dpd runs")


def check_audit(audit: AuditLog, now: dt.datetime) -> Row:
    name = AUDIT
    since = now.date() - dt.timedelta(days=1)
    newest = audit.list(AuditFilter(from_day=since.isoformat()), 1, None).items
    if not newest:
        return failed(name, f"no audit entry since {since}: nothing audited for more than a day")
    entry = newest[0]
    age = now - dt.datetime.fromisoformat(entry.at)
    detail = f"newest: {entry.action.value} {entry.outcome.value} by {entry.actor.sub}, {_ist(entry.at)} ({_ago(age)})"
    return passed(name, detail) if age < AUDIT_MAX_AGE else failed(name, f"{detail}: older than a day")


# ---- AWS: backups and alarms -------------------------------------------------------------------------


def data_tables(stage: str, prefix: str) -> list[str]:
    """The tables the backup plan covers: every table that keeps its rows (the TTL tables, login
    attempts and idempotency records, are left out by design, as for point-in-time recovery)."""
    return [spec.name for spec in stage_tables(stage, prefix) if "TimeToLiveSpecification" not in spec.properties]


def newest_backups(ddb: Any, backup: Any, stage: str, prefix: str, vault: str | None) -> dict[str, dt.datetime | None]:
    """Each data table's newest usable backup: on-demand (``ops backup create``) or, when the stage
    has a vault, AWS Backup's recovery points in it."""
    newest: dict[str, dt.datetime | None] = dict.fromkeys(data_tables(stage, prefix))

    def note(table: str, at: dt.datetime) -> None:
        seen = newest.get(table)
        if table in newest and (seen is None or at > seen):
            newest[table] = at

    for table, found in list_backups(ddb, stage, prefix).items():
        for b in found:
            if b.status == "AVAILABLE":
                note(table, b.created)
    if vault:
        pages = backup.get_paginator("list_recovery_points_by_backup_vault").paginate(
            BackupVaultName=vault, ByResourceType="DynamoDB"
        )
        for page in pages:
            for point in page["RecoveryPoints"]:
                if point.get("Status") == "COMPLETED":
                    note(point["ResourceArn"].rsplit("/", 1)[-1], point["CreationDate"])
    return newest


def check_backups(newest: dict[str, dt.datetime | None], now: dt.datetime) -> Row:
    name = BACKUPS
    missing = [table for table, at in newest.items() if at is None]
    ages = {table: now - at for table, at in newest.items() if at is not None}
    old = [f"{table} ({_ago(age)})" for table, age in sorted(ages.items()) if age >= BACKUP_MAX_AGE]
    if missing or old:
        problems = ([f"none: {', '.join(missing)}"] if missing else []) + (
            [f"older than 26 h: {', '.join(old)}"] if old else []
        )
        return failed(name, "; ".join(problems))
    oldest_table, oldest = max(ages.items(), key=lambda item: item[1])
    return passed(name, f"{len(ages)} data tables, each backed up within 26 h (oldest: {oldest_table}, {_ago(oldest)})")


def check_alarms(cw: Any, stage: str) -> Row:
    name = ALARMS
    prefix = observe.ALARM_PREFIX.format(stage=stage)
    alarms = observe.alarm_states(cw, prefix)
    if not alarms:
        return failed(name, f"no alarm named {prefix}*: the stage's monitoring is not deployed here")
    firing = [a for a in alarms if a.state == "ALARM"]
    if firing:
        return failed(name, "in ALARM: " + "; ".join(f"{a.name} (see {a.page(prefix)})" for a in firing))
    states = ", ".join(f"{state} {n}" for state, n in sorted(Counter(a.state for a in alarms).items()))
    return passed(name, f"{len(alarms)} alarms, none in ALARM ({states})")


def check_local_alarms(cw: Any, stage: str) -> Row:
    """The local stack has no alarms, but its metrics reach the local CloudWatch: judged by the stage's
    alarm rules (``ops --local alarms``), one that would fire on the data fails the row. Nothing runs
    the watchdog's schedule locally, so a rule firing only for want of data does not count here."""
    judged, _ = observe.local_verdicts(cw, stage)
    firing = [v.alarm for v in judged if v.verdict == "WOULD FIRE" and any(x is not None for x in v.values)]
    if firing:
        return failed(ALARMS, "would fire locally: " + "; ".join(f"{a.suffix} (see {a.page_path})" for a in firing))
    return passed(ALARMS, f"{len(judged)} rules on the application's metrics, none would fire (ops --local alarms)")


# ---- the command -------------------------------------------------------------------------------------


def _guarded(check: str, run: Callable[[], Row]) -> Row:
    """A check that cannot run is a FAIL with the reason, never a crash that hides the other rows."""
    try:
        return run()
    except typer.Exit:
        return failed(check, "could not log in (the error is above)")
    except DomainError as exc:
        return failed(check, f"{exc.code}: {exc.message}")
    except (BotoCoreError, ClientError, OSError, ValueError) as exc:
        return failed(check, f"{type(exc).__name__}: {exc}")


def _stack_or_none(ctx: typer.Context) -> stack.StackInfo | None:
    """The stage's stack, for its backup vault; None when these credentials find none (a stage served
    from elsewhere, ``--url``): the backups row then judges the on-demand backups alone."""
    chosen = target(ctx)
    try:
        return stack.resolve(
            boto3.client("cloudformation", region_name=chosen.region),
            boto3.client("ssm", region_name=chosen.region),
            boto3.client("sts", region_name=chosen.region),
            chosen.stage,
        )
    except (stack.StackMissing, BotoCoreError, ClientError):
        return None


def run_checks(ctx: typer.Context, http: Http) -> list[Row]:
    chosen = target(ctx)
    local = chosen.local_ports is not None
    info = None if local else _stack_or_none(ctx)
    svc = services()
    now = clock.now_ist()
    rows = [
        _guarded(HEALTH, lambda: check_health(http, chosen.stage)),
        _guarded(ROUTES, lambda: check_routes(http, app_routes())),
        _guarded(DAY_END, lambda: check_day_end(svc.runs.get, now)),
        _guarded(PAYMENT_PROBE, lambda: check_payment_probe(http, svc.payments.payments, svc.audit)),
        _guarded(AUDIT, lambda: check_audit(svc.audit, clock.now_ist())),
    ]
    if local:
        rows += [
            skipped(BACKUPS, "DynamoDB Local keeps no backups"),
            _guarded(
                ALARMS, lambda: check_local_alarms(boto3.client("cloudwatch", region_name=chosen.region), chosen.stage)
            ),
        ]
        return rows
    ddb = boto3.client("dynamodb", region_name=chosen.region)
    backup = boto3.client("backup", region_name=chosen.region)
    vault = info.backup_vault if info else None
    prefix = svc.settings.table_prefix
    rows += [
        _guarded(BACKUPS, lambda: check_backups(newest_backups(ddb, backup, chosen.stage, prefix, vault), now)),
        _guarded(ALARMS, lambda: check_alarms(boto3.client("cloudwatch", region_name=chosen.region), chosen.stage)),
    ]
    return rows


def verify_command(
    ctx: typer.Context,
    user: api_client.UserOption = None,
    password_stdin: api_client.PasswordStdinOption = False,
    url: api_client.UrlOption = None,
) -> None:
    """The post-deployment checks as a pass/fail table: health, every route, last night's run, a payment
    probe that writes nothing, the audit trail, backups, alarms. Exit 0 only if none fails."""
    chosen = target(ctx)
    base = (url or stack.api_url(ctx)).rstrip("/")
    http = Http(api_client.Caller(chosen.stage, base, user, password_stdin))
    rows = run_checks(ctx, http)
    table = Table("check", "result", "detail", title=f"post-deployment checks of stage {chosen.stage} at {base}")
    colours = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.SKIP: "yellow"}
    for row in rows:
        table.add_row(row.check, f"[{colours[row.verdict]}]{row.verdict.value}[/]", escape(row.detail))
    out.print(table)
    bad = [row.check for row in rows if row.verdict is Verdict.FAIL]
    skips = sum(row.verdict is Verdict.SKIP for row in rows)
    if bad:
        raise fail(f"{len(bad)} of {len(rows)} checks failed: {', '.join(bad)}")
    err.print(f"all {len(rows) - skips} checks passed" + (f", {skips} skipped" if skips else ""), highlight=False)
