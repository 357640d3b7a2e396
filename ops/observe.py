"""What the stage's monitoring says: ``alarms`` (state and recent changes), ``logs`` (the Lambda functions'
CloudWatch Logs, errors only if asked) and ``metrics`` (business and AWS metrics over a window).

Each replaces a family of ``aws`` commands the runbook pasted with resolved names and GNU ``date``
arithmetic: the alarm prefix, log groups and namespace come from the stage, the window from
``--since 6h``, and times are printed in IST, the time the books and the schedules are kept in.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import boto3
import typer
from botocore.exceptions import ClientError
from rich.markup import escape
from rich.table import Table

from chalicelib import clock
from chalicelib.config import settings
from infra import alarms
from infra.provision import load_template, resolve
from ops import stack
from ops.console import duration, err, fail, out
from ops.target import target

ALARM_PREFIX = "loan-crm-{stage}-"
ALERT_PAGES = alarms.pages(load_template(), alarms.load_config())
"""Alarm name after the stage prefix -> its page under docs/runbook/alerts/ (from the alarm catalogue,
``infra.alarms``; the tests check every page exists)."""
ERROR_PATTERN = '?ERROR ?"Task timed out" ?Traceback'
"""Powertools logs JSON with ``"level":"ERROR"``; Lambda's own timeouts and crashes are plain text."""
BUSINESS_NAMESPACE = "LoanCRM/{stage}"
BUSINESS_DIMENSIONS = {"service": "loan-crm"}


def ist(at: dt.datetime) -> str:
    return at.astimezone(clock.IST).strftime("%Y-%m-%d %H:%M:%S")


# ---- alarms ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmState:
    name: str
    state: str
    since: dt.datetime
    reason: str

    def page(self, prefix: str) -> str:
        found = ALERT_PAGES.get(self.name.removeprefix(prefix))
        return f"docs/runbook/alerts/{found}" if found else "-"


def alarm_states(cw: Any, prefix: str, state: str | None = None) -> list[AlarmState]:
    """The stage's alarms, in ``state`` if given (filtered here: a stage has a few dozen alarms at most)."""
    alarms = [
        AlarmState(a["AlarmName"], a["StateValue"], a["StateUpdatedTimestamp"], a.get("StateReason", ""))
        for page in cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix)
        for a in page["MetricAlarms"]
    ]
    return [a for a in alarms if state is None or a.state == state]


@dataclass(frozen=True)
class StateChange:
    at: dt.datetime
    name: str
    summary: str


def state_changes(cw: Any, prefix: str, since: dt.datetime, until: dt.datetime) -> list[StateChange]:
    """Every state change of the stage's alarms in the window, oldest first (also those that fired and
    cleared while nobody looked)."""
    changes = [
        StateChange(item["Timestamp"], item["AlarmName"], item["HistorySummary"])
        for page in cw.get_paginator("describe_alarm_history").paginate(
            HistoryItemType="StateUpdate", StartDate=since, EndDate=until
        )
        for item in page["AlarmHistoryItems"]
        if item["AlarmName"].startswith(prefix)
    ]
    return sorted(changes, key=lambda c: c.at)


class AlarmStateValue(StrEnum):
    ALARM = "ALARM"
    OK = "OK"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


def alarms_command(
    ctx: typer.Context,
    state: Annotated[AlarmStateValue | None, typer.Option(help="Only alarms in this state.")] = None,
    history: Annotated[
        str | None, typer.Option(help="Instead: every state change in this window, e.g. 24h.", metavar="SINCE")
    ] = None,
) -> None:
    """The stage's alarms (loan-crm-<stage>-*): state, since when, why, and the runbook page for each.
    With --local: every alarm's rule against the local stack's recent metrics, and whether it would fire."""
    chosen = target(ctx)
    if chosen.local_ports is not None:
        if state is not None or history is not None:
            raise fail("the local stack has no alarm states or history: without options it shows each rule", 2)
        _show_local_rules(boto3.client("cloudwatch", region_name=chosen.region), chosen.stage)
        return
    prefix = ALARM_PREFIX.format(stage=chosen.stage)
    cw = boto3.client("cloudwatch", region_name=chosen.region)
    if history is not None:
        now = clock.now_ist()
        changes = state_changes(cw, prefix, now - duration(history), now)
        title = f"alarm state changes of stage {chosen.stage}, last {history}"
        table = Table("at (IST)", "alarm", "change", title=title)
        for c in changes:
            table.add_row(ist(c.at), c.name, c.summary)
        out.print(table if changes else f"no alarm of stage {chosen.stage} changed state in the last {history}")
        return
    alarms = alarm_states(cw, prefix, state.value if state else None)
    if not alarms:
        out.print(f"no alarm of stage {chosen.stage}{' in ' + state.value if state else ''}", highlight=False)
        return
    table = Table("alarm", "state", "since (IST)", "reason", "runbook page", title=f"alarms of stage {chosen.stage}")
    for a in alarms:
        colour = {"ALARM": "bold red", "OK": "green"}.get(a.state, "yellow")
        table.add_row(a.name, f"[{colour}]{a.state}[/]", ist(a.since), escape(a.reason), a.page(prefix))
    out.print(table)


@dataclass(frozen=True)
class LocalVerdict:
    """One alarm's rule evaluated on the local CloudWatch (moto), which holds the metrics but no alarms."""

    alarm: alarms.Alarm
    values: tuple[float | None, ...]
    """The watched value in each evaluation period, oldest first; None where there was no data."""
    verdict: str


AWS_ONLY = "AWS metric: deployed stages only"


def _window_value(
    cw: Any, metric: alarms.Metric, stat: str, stage: str, start: dt.datetime, end: dt.datetime
) -> float | None:
    answer = cw.get_metric_statistics(
        Namespace=resolve(metric.namespace, stage),
        MetricName=metric.name,
        Dimensions=[{"Name": k, "Value": resolve(v, stage)} for k, v in metric.dimensions],
        StartTime=start,
        EndTime=end,
        Period=max(60, int((end - start).total_seconds())),
        Statistics=[stat],
    )
    values = [float(p[stat]) for p in answer["Datapoints"]]
    if not values:
        return None
    return max(values) if stat == "Maximum" else sum(values)


def local_verdict(cw: Any, alarm: alarms.Alarm, stage: str, now: dt.datetime) -> LocalVerdict:
    """The rule CloudWatch would apply, applied by hand: each evaluation period's value (a metric-math
    alarm here is always a sum of its metrics), breaching at or over the threshold, missing data as the
    alarm treats it."""
    watches = alarm.watches
    metrics = [watches] if isinstance(watches, alarms.Metric) else [m for _, m in watches.metrics]
    if any(m.namespace != alarms.BUSINESS_NAMESPACE for m in metrics):
        return LocalVerdict(alarm, (), AWS_ONLY)
    stat = alarm.statistic if isinstance(watches, alarms.Metric) else watches.stat
    values: list[float | None] = []
    for back in reversed(range(alarm.evaluation_periods)):
        end = now - dt.timedelta(seconds=back * alarm.period)
        start = end - dt.timedelta(seconds=alarm.period)
        found = [v for v in (_window_value(cw, m, stat, stage, start, end) for m in metrics) if v is not None]
        values.append((max(found) if stat == "Maximum" else sum(found)) if found else None)
    breaching = sum(
        1 for v in values if (v is None and alarm.missing == "breaching") or (v is not None and v >= alarm.threshold)
    )
    needed = alarm.datapoints_to_alarm or alarm.evaluation_periods
    if breaching >= needed:
        verdict = "WOULD FIRE"
    elif all(v is None for v in values):
        verdict = "no data"
    else:
        verdict = "OK"
    return LocalVerdict(alarm, tuple(values), verdict)


def local_verdicts(cw: Any, stage: str) -> tuple[list[LocalVerdict], int]:
    """Every alarm on the application's own metrics judged on the local CloudWatch as of now, and how
    many alarms were left out (those on AWS's metrics, which the local stack has none of)."""
    # Up to the next whole minute, as CloudWatch's periods are: a data point put this second is inside.
    until = clock.now_ist().replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    found = [local_verdict(cw, a, stage, until) for a in alarms.all_alarms(load_template(), alarms.load_config())]
    judged = [v for v in found if v.verdict != AWS_ONLY]
    return judged, len(found) - len(judged)


def _show_local_rules(cw: Any, stage: str) -> None:
    table = Table(
        "alarm",
        "rule",
        "recent values",
        "verdict",
        "runbook page (docs/runbook/alerts/)",
        title=f"alarm rules on the local stack (alarms {ALARM_PREFIX.format(stage=stage)}*)",
    )
    judged, skipped = local_verdicts(cw, stage)
    for found in judged:
        alarm = found.alarm
        shown = ", ".join("-" if v is None else _number(v) for v in found.values)
        colour = {"WOULD FIRE": "bold red", "OK": "green"}.get(found.verdict, "yellow")
        table.add_row(
            ALARM_PREFIX.format(stage=stage) + alarm.suffix,
            escape(alarm.condition()),
            shown,
            f"[{colour}]{found.verdict}[/]",
            alarm.page,
        )
    out.print(table)
    out.print(
        f"{skipped} alarms on AWS's own metrics (DynamoDB, Lambda, API Gateway, Backup) are not shown: "
        "the local stack has none of those metrics.",
        highlight=False,
    )


# ---- logs ------------------------------------------------------------------------------------------


class Function(StrEnum):
    api = "api"
    job = "job"
    """The day-end job."""
    reconciliation = "reconciliation"
    reminders = "reminders"
    """The scheduled reminders sender."""
    digest = "digest"
    """The 09:00 IST morning digest."""


@dataclass(frozen=True)
class LogLine:
    at: dt.datetime
    function: str
    message: str


LOGICAL_IDS = {
    Function.api: "APIHandler",
    Function.job: "DpdJob",
    Function.reconciliation: "ReconciliationJob",
    Function.reminders: "RemindersJob",
    Function.digest: "DigestJob",
}


def function_names(info: stack.StackInfo) -> dict[Function, str | None]:
    return {
        Function.api: info.api_function,
        Function.job: info.job_function,
        Function.reconciliation: info.reconciliation_function,
        Function.reminders: info.reminders_function,
        Function.digest: info.digest_function,
    }


def log_lines(logs: Any, group: str, since: dt.datetime, pattern: str | None) -> Iterator[dict[str, Any]]:
    args: dict[str, Any] = {"logGroupName": group, "startTime": int(since.timestamp() * 1000)}
    if pattern:
        args["filterPattern"] = pattern
    for page in logs.get_paginator("filter_log_events").paginate(**args):
        yield from page["events"]


def read_logs(
    logs: Any, groups: dict[str, str], since: dt.datetime, pattern: str | None
) -> tuple[list[LogLine], list[str]]:
    """Matching lines of each function's log group, oldest first; and the functions with no group yet
    (a Lambda's group appears on its first invocation)."""
    lines: list[LogLine] = []
    missing: list[str] = []
    for function, group in groups.items():
        try:
            for e in log_lines(logs, group, since, pattern):
                at = dt.datetime.fromtimestamp(e["timestamp"] / 1000, dt.UTC)
                lines.append(LogLine(at, function, e["message"].rstrip("\n")))
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            missing.append(function)
    return sorted(lines, key=lambda line: line.at), missing


def logs_command(
    ctx: typer.Context,
    function: Annotated[
        list[Function] | None,
        typer.Option("--function", help="api, job, reconciliation or reminders (repeatable; default all)."),
    ] = None,
    since: Annotated[str, typer.Option(help="Window: 10m, 6h, 24h, 7d.")] = "10m",
    errors: Annotated[bool, typer.Option("--errors", help=f"Only error lines: {ERROR_PATTERN}.")] = False,
    pattern: Annotated[
        str | None, typer.Option(help="A CloudWatch Logs filter pattern, e.g. '\"unhandled error\"' or a request id.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Print at most the newest N lines.")] = 500,
) -> None:
    """Lines of the API's, the day-end job's, the reconciliation job's and the reminders sender's Lambda
    logs (CloudWatch Logs) in a window, oldest first, IST."""
    if errors and pattern:
        raise fail("--errors is a pattern already; give one of --errors and --pattern", 2)
    info = stack.current(ctx)
    if info.status == "LOCAL":
        raise fail("the local stack logs to .local/logs/ (make run), not CloudWatch", 2)
    names = function_names(info)
    # Without --function: every function the stack has (a stack deployed before a job existed lacks it).
    wanted = function or [f for f in Function if names[f]]
    groups = {f.value: group for f in wanted if (group := info.log_group(LOGICAL_IDS[f], names[f]))}
    if len(groups) != len(wanted):
        raise fail(f"stack {info.stack} does not name every function asked for")
    cutoff = clock.now_ist() - duration(since)
    logs = boto3.client("logs", region_name=target(ctx).region)
    lines, missing = read_logs(logs, groups, cutoff, ERROR_PATTERN if errors else pattern)
    for function_name in missing:
        err.print(f"{function_name}: no log group yet (the function has not run)", highlight=False)
    if len(lines) > limit:
        err.print(f"{len(lines) - limit} older lines left out (--limit)", highlight=False)
    for line in collections.deque(lines, maxlen=limit):
        typer.echo(f"{ist(line.at)} {line.function} {line.message}")
    err.print(f"matching lines since {ist(cutoff)} IST: {len(lines)}", highlight=False)


# ---- metrics ---------------------------------------------------------------------------------------

_PERCENTILE = re.compile(r"p\d{1,2}(\.\d+)?")
STANDARD_STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")


@dataclass(frozen=True)
class MetricQuery:
    namespace: str
    dimensions: dict[str, str]
    since: dt.datetime
    until: dt.datetime
    period_seconds: int
    statistics: tuple[str, ...]


def datapoints(cw: Any, name: str, query: MetricQuery) -> list[dict[str, Any]]:
    standard = [s for s in query.statistics if s in STANDARD_STATISTICS]
    extended = [s for s in query.statistics if s not in STANDARD_STATISTICS]
    args: dict[str, Any] = {
        "Namespace": query.namespace,
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in query.dimensions.items()],
        "StartTime": query.since,
        "EndTime": query.until,
        "Period": query.period_seconds,
    }
    if standard:
        args["Statistics"] = standard
    if extended:
        args["ExtendedStatistics"] = extended
    points: list[dict[str, Any]] = cw.get_metric_statistics(**args)["Datapoints"]
    return sorted(points, key=lambda p: p["Timestamp"])


def _statistics(stat: list[str] | None) -> tuple[str, ...]:
    chosen = tuple(stat or ["Sum"])
    for s in chosen:
        if s not in STANDARD_STATISTICS and not _PERCENTILE.fullmatch(s):
            raise fail(f"--stat {s!r}: one of {', '.join(STANDARD_STATISTICS)} or a percentile like p99", 2)
    return chosen


def _dimensions(dimension: list[str] | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for d in dimension or []:
        key, sep, value = d.partition("=")
        if not sep or not key or not value:
            raise fail(f"--dimension {d!r}: write NAME=VALUE", 2)
        pairs[key] = value
    return pairs


def _metric_scope(
    ctx: typer.Context, namespace: str | None, function: Function | None, table: str | None
) -> tuple[str, dict[str, str]]:
    """The namespace and fixed dimensions: the app's business metrics unless a function or table is named."""
    stage = target(ctx).stage
    if function is not None:
        info = stack.current(ctx)
        name = function_names(info)[function]
        if not name:
            raise fail(f"stack {info.stack} does not name the {function.value} function")
        return namespace or "AWS/Lambda", {"FunctionName": name}
    if table is not None:
        # The table the stage uses now: after a rollback onto restored tables, TABLE_PREFIX names them.
        return namespace or "AWS/DynamoDB", {"TableName": settings().table_name(table)}
    if namespace is not None:
        return namespace, {}
    return BUSINESS_NAMESPACE.format(stage=stage), dict(BUSINESS_DIMENSIONS)


def metrics_command(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Metric names, e.g. AuthFailed AuthThrottled.")],
    since: Annotated[str, typer.Option(help="Window: 1h, 24h, 30d.")] = "1h",
    period: Annotated[str, typer.Option(help="One datapoint per: 5m, 1h, 1d.")] = "5m",
    stat: Annotated[
        list[str] | None, typer.Option("--stat", help="Sum (default), Average, Maximum, ..., or p50/p99.")
    ] = None,
    dimension: Annotated[
        list[str] | None, typer.Option("--dimension", help="Extra NAME=VALUE, e.g. reason=DUPLICATE_UTR.")
    ] = None,
    function: Annotated[
        Function | None, typer.Option(help="AWS/Lambda metrics of the api, job, reconciliation or reminders function.")
    ] = None,
    table: Annotated[str | None, typer.Option(help="AWS/DynamoDB metrics of loan-crm-<stage>-<table>.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Default: LoanCRM/<stage> with service=loan-crm.")] = None,
) -> None:
    """Datapoints of CloudWatch metrics in a window, one row per period (IST)."""
    if target(ctx).local_ports is not None:
        raise fail("the local stack's metrics go to its moto server, not CloudWatch", 2)
    if function is not None and table is not None:
        raise fail("name a function or a table, not both", 2)
    space, fixed = _metric_scope(ctx, namespace, function, table)
    until = clock.now_ist()
    query = MetricQuery(
        namespace=space,
        dimensions={**fixed, **_dimensions(dimension)},
        since=until - duration(since),
        until=until,
        period_seconds=int(duration(period).total_seconds()),
        statistics=_statistics(stat),
    )
    cw = boto3.client("cloudwatch", region_name=target(ctx).region)
    scope = ", ".join(f"{k}={v}" for k, v in query.dimensions.items())
    for name in names:
        points = datapoints(cw, name, query)
        label = f"{space} {name} ({scope})"
        if not points:
            out.print(escape(f"{label}: no datapoints in the last {since}"), highlight=False)
            continue
        out.print(escape(f"{label}, last {since}:"), highlight=False)
        table_out = Table("period from (IST)", *query.statistics)
        for p in points:
            values = {**p, **p.get("ExtendedStatistics", {})}
            table_out.add_row(ist(p["Timestamp"]), *(_number(values.get(s)) for s in query.statistics))
        out.print(table_out)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
