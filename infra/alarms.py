"""Every CloudWatch alarm of a stage, with the reason for its threshold: the one place they are defined.

``python -m infra.generate`` writes them into infra/template.json (and the threshold table of
docs/runbook/alarms.md); a test fails when either is out of date. Alarms on AWS's own metrics are made
per table and per function from what the template and .chalice/config.json define, so a new table or
function is alarmed without anyone remembering to.

Every alarm notifies the one alerts topic when it fires and when it clears, and its description ends
with its runbook page, so the page is in the notification itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "loan-crm"
"""Chalice's ``app_name``: the API's name in API Gateway's metrics and the service dimension."""
BUSINESS_NAMESPACE: dict[str, str] = {"Fn::Sub": "LoanCRM/${Stage}"}
SERVICE = (("service", APP_NAME),)
"""The dimension ``chalicelib.adapters.metrics`` adds to every business metric: an alarm on a business
metric must name exactly this dimension set, or it watches a metric nobody emits."""
PAGES_DIR = "docs/runbook/alerts"
FIVE_MINUTES = 300
HOUR = 3600

Dimensions = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Metric:
    namespace: Any
    name: str
    dimensions: Dimensions = ()

    def cfn(self) -> dict[str, Any]:
        return {
            "Namespace": self.namespace,
            "MetricName": self.name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
        }


def business(name: str, *extra: tuple[str, str]) -> Metric:
    return Metric(BUSINESS_NAMESPACE, name, SERVICE + extra)


@dataclass(frozen=True)
class Expression:
    """A metric-math alarm: ``expression`` over ``metrics`` (id -> metric), each read with ``stat``.
    CloudWatch takes at most 10 entries in one alarm, the expression included."""

    expression: str
    label: str
    metrics: tuple[tuple[str, Metric], ...]
    stat: str = "Sum"


@dataclass(frozen=True)
class Alarm:
    logical_id: str
    suffix: str
    """The alarm's name after ``loan-crm-<stage>-``."""
    page: str
    """Its page under docs/runbook/alerts/ (one page may serve a family, e.g. every table's throttling)."""
    says: str
    """What firing means, for the notification."""
    why: str
    """Why this threshold, period and evaluation count (docs/runbook/alarms.md)."""
    watches: Metric | Expression
    threshold: float = 1
    statistic: str = "Sum"
    period: int = FIVE_MINUTES
    evaluation_periods: int = 1
    datapoints_to_alarm: int | None = None
    missing: str = "notBreaching"
    depends_on: tuple[str, ...] = field(default=())

    @property
    def page_path(self) -> str:
        return f"{PAGES_DIR}/{self.page}"

    def resource(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "AlarmName": {"Fn::Sub": f"{APP_NAME}-${{Stage}}-{self.suffix}"},
            "AlarmDescription": f"{self.says} Runbook: {self.page_path}",
        }
        if isinstance(self.watches, Metric):
            props.update(self.watches.cfn())
            props["ExtendedStatistic" if self.statistic.startswith("p") else "Statistic"] = self.statistic
            props["Period"] = self.period
            if self.statistic.startswith("p"):
                # A quiet night's period holds a handful of requests, and one cold start would be its p99:
                # too few samples to judge, so such a period neither fires nor clears the alarm.
                props["EvaluateLowSampleCountPercentile"] = "ignore"
        else:
            props["Metrics"] = [
                {
                    "Id": metric_id,
                    "MetricStat": {"Metric": metric.cfn(), "Period": self.period, "Stat": self.watches.stat},
                    "ReturnData": False,
                }
                for metric_id, metric in self.watches.metrics
            ] + [{"Id": "e1", "Expression": self.watches.expression, "Label": self.watches.label, "ReturnData": True}]
        props["EvaluationPeriods"] = self.evaluation_periods
        if self.datapoints_to_alarm is not None:
            props["DatapointsToAlarm"] = self.datapoints_to_alarm
        props.update(
            {
                "Threshold": self.threshold,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": self.missing,
                "AlarmActions": [{"Ref": "AlertsTopic"}],
                "OKActions": [{"Ref": "AlertsTopic"}],
            }
        )
        resource: dict[str, Any] = {"Type": "AWS::CloudWatch::Alarm", "Properties": props}
        if self.depends_on:
            resource["DependsOn"] = list(self.depends_on)
        return resource

    def condition(self) -> str:
        """The rule in words, for the threshold table."""
        what = self.watches.name if isinstance(self.watches, Metric) else self.watches.label
        stat = "" if isinstance(self.watches, Expression) else f"{self.statistic} of "
        window = _duration(self.period)
        periods = (
            f"{self.datapoints_to_alarm or self.evaluation_periods} of {self.evaluation_periods} periods of {window}"
            if self.evaluation_periods > 1
            else f"one period of {window}"
        )
        missing = "; no data counts as breaching" if self.missing == "breaching" else ""
        return f"{stat}`{what}` ≥ {number(self.threshold)} in {periods}{missing}"


def _duration(seconds: int) -> str:
    if seconds % HOUR == 0:
        hours = seconds // HOUR
        return "1 hour" if hours == 1 else f"{hours} hours"
    return f"{seconds // 60} minutes"


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ---- what the stage consists of ------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    logical_id: str
    short: str
    indexes: tuple[str, ...]


@dataclass(frozen=True)
class Function:
    logical_id: str
    name: str
    """The function's name in .chalice/config.json (``api_handler`` for the API)."""
    timeout: int


def tables(template: dict[str, Any]) -> list[Table]:
    found = []
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        short = props["TableName"]["Fn::Sub"].removeprefix(f"{APP_NAME}-${{Stage}}-")
        indexes = tuple(g["IndexName"] for g in props.get("GlobalSecondaryIndexes", []))
        found.append(Table(logical_id, short, indexes))
    return found


def flags(template: dict[str, Any]) -> list[str]:
    return [
        resource["Properties"]["Name"]["Fn::Sub"].rsplit("/", 1)[1]
        for resource in template["Resources"].values()
        if resource.get("Type") == "AWS::SSM::Parameter" and "/flags/" in resource["Properties"]["Name"]["Fn::Sub"]
    ]


DEPLOYED_STAGE = "prod"
"""Whose Lambda settings the alarms follow; a test checks every deployed stage has the same timeouts."""


def functions(config: dict[str, Any], stage: str = DEPLOYED_STAGE) -> list[Function]:
    """The API handler and every job, with the timeout the stage deploys them with. Chalice names the
    packaged resource after the function: ``dpd_job`` -> ``DpdJob``."""
    default = int(config.get("lambda_timeout", 60))
    staged = config["stages"][stage]
    found = [Function("APIHandler", "api_handler", int(staged.get("lambda_timeout", default)))]
    for name, settings in staged.get("lambda_functions", {}).items():
        logical_id = "".join(part.capitalize() for part in name.split("_"))
        found.append(Function(logical_id, name, int(settings.get("lambda_timeout", default))))
    return found


def state_machines(template: dict[str, Any]) -> list[str]:
    """The logical ids of the template's Step Functions state machines."""
    return [k for k, v in template["Resources"].items() if v.get("Type") == "AWS::StepFunctions::StateMachine"]


def load_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    return config


# ---- the alarms ------------------------------------------------------------------------------------------


def business_alarms(template: dict[str, Any]) -> list[Alarm]:
    """Alarms on what the application counts itself (namespace LoanCRM/<stage>)."""
    flag_metrics = tuple(
        (f"f{i}", business("FlagReadError", ("flag", flag))) for i, flag in enumerate(flags(template), start=1)
    )
    return [
        Alarm(
            "DpdRunFailedAlarm",
            "dpd-run-failed",
            "dpd-run-failed.md",
            "The day-end DPD run failed. It resumes from its checkpoints when run again.",
            "Every failure matters: a night without a run leaves every DPD and bucket a day old. Lambda retries "
            "the invocation twice, each retry resumes, so one page covers the whole episode.",
            business("DpdRunFailed"),
        ),
        Alarm(
            "DpdRunMissingAlarm",
            "dpd-run-not-completed-by-0600",
            "dpd-run-not-completed-by-0600.md",
            "Yesterday's day-end DPD run had not completed by 06:00 IST, or the watchdog that checks it every "
            "15 minutes stopped reporting.",
            "The watchdog reports every 15 minutes (1 = a date due by 06:00 IST has not completed, 0 = the book "
            "is closed through the last due date), so an hour without any report is itself breaching: a broken "
            "watchdog pages too. It clears by itself once a catch-up run completes.",
            business("DpdRunMissing"),
            statistic="Maximum",
            period=HOUR,
            missing="breaching",
        ),
        Alarm(
            "EscalationFailedAlarm",
            "escalation-failed",
            "escalation-failed.md",
            "A legal escalation could not be written; the run failed and will escalate the loan when rerun.",
            "Any one: a loan past 90 days that is not escalated is a missed legal step.",
            business("EscalationFailed"),
        ),
        Alarm(
            "PaymentFailedAlarm",
            "payment-failed",
            "payment-failed.md",
            "A payment or reversal could not be processed (an unexpected error, not a business refusal). Nothing "
            "was half-written; check the logs by request id.",
            "Any one: a collector is holding a receipt the books do not show yet. Business refusals (a bad "
            "amount, a duplicate UTR) are not counted here.",
            business("PaymentFailed"),
        ),
        Alarm(
            "DuplicateUtrAlarm",
            "duplicate-utr",
            "duplicate-utr.md",
            "A UTR was presented again, 5 or more times in 5 minutes: a feed or a client may be replaying.",
            "One repeat is normal (a collector re-entering a receipt) and harmless (refused); five in five "
            "minutes is more than hand entry produces.",
            business("DuplicateUtr"),
            threshold=5,
        ),
        Alarm(
            "FinancialGuardAlarm",
            "financial-guard-triggered",
            "financial-guard-triggered.md",
            "Someone tried to change a protected financial field through the API. Read the "
            "FINANCIAL_GUARD_BLOCKED audit entries.",
            "Any one: no legitimate client sends those fields, so each attempt is a bug or an abuse.",
            business("FinancialGuardTriggered"),
        ),
        Alarm(
            "RepeatedFailedAuthAlarm",
            "repeated-failed-auth",
            "repeated-failed-auth.md",
            "20 or more failed logins in 5 minutes: possible credential stuffing.",
            "A collector mistyping is a handful a day; the per-username throttle stops one account being guessed "
            "after 5, so 20 in 5 minutes means many accounts or many sources.",
            business("AuthFailed"),
            threshold=20,
        ),
        Alarm(
            "DependencyUnavailableAlarm",
            "dependency-unavailable",
            "dependency-unavailable.md",
            "The API answered 503 UNAVAILABLE 5 or more times in 5 minutes: DynamoDB or SSM errored, timed out or "
            "throttled.",
            "Clients retry a 503 safely, so an isolated one is not worth a page; five in five minutes is users "
            "noticing.",
            business("DependencyUnavailable"),
            threshold=5,
        ),
        Alarm(
            "ReconciliationMismatchAlarm",
            "reconciliation-mismatch",
            "reconciliation-mismatch.md",
            "The reconciliation found the ledger disagreeing with itself: an allocation, an outstanding amount, a "
            "UTR claim or the dashboard's counters. Nothing was changed; people repair.",
            "Any one: the ledger is either exact or wrong.",
            business("ReconciliationMismatch"),
        ),
        Alarm(
            "ReconciliationFailedAlarm",
            "reconciliation-failed",
            "reconciliation-failed.md",
            "A reconciliation run failed or could not start, so the ledger went unchecked.",
            "Any one: the nightly check is the evidence the books are right.",
            business("ReconciliationFailed"),
        ),
        Alarm(
            "ScoringFailedAlarm",
            "scoring-failed",
            "scoring-failed.md",
            "Collector scores could not be computed or written by the nightly pass, so they are stale (the books "
            "are not affected).",
            "Any one in an hour: the pass runs once a night; an hour's period keeps one failed pass to one page.",
            business("ScoringFailed"),
            period=HOUR,
        ),
        Alarm(
            "RemindersFailedAlarm",
            "reminders-failed",
            "reminders-failed.md",
            "Borrower reminders could not be queued or sent after every retry.",
            "Any one in 15 minutes: the sender runs every 10 minutes, so a 15-minute period spans one pass and "
            "does not page twice for it.",
            business("RemindersFailed"),
            period=900,
        ),
        Alarm(
            "AuditWriteFailedAlarm",
            "audit-write-failed",
            "audit-write-failed.md",
            "A refused attempt could not be written to the audit trail (the attempt itself was refused).",
            "Any one: the audit trail is the regulator's evidence, and a gap in it must be explained.",
            business("AuditWriteFailed"),
        ),
        Alarm(
            "FlagReadErrorAlarm",
            "flag-read-error",
            "flag-read-error.md",
            "A kill switch could not be read from SSM, so the automation it guards stayed off for that use.",
            "Any one: a flag that cannot be read counts as off for that use, and some uses happen once a day "
            "(one failed read of CRON_ENABLED at 00:30 skips the night's run).",
            Expression("SUM(METRICS())", "FlagReadError (every flag)", flag_metrics),
            period=900,
        ),
        Alarm(
            "DigestFailedAlarm",
            "digest-failed",
            "digest-failed.md",
            "The 09:00 IST morning digest could not be compiled or sent.",
            "Any one in an hour: the digest is the daily checklist; without it someone must run it by hand.",
            business("DigestFailed"),
            period=HOUR,
        ),
    ]


def backup_alarms() -> list[Alarm]:
    return [
        Alarm(
            "BackupJobFailedAlarm",
            "backup-job-failed",
            "backup-job-failed.md",
            "An AWS Backup job for the data tables failed.",
            "Any one in an hour: backups run once a day, and a missing backup is a missing restore point.",
            Metric("AWS/Backup", "NumberOfBackupJobsFailed", (("BackupVaultName", {"Ref": "BackupVault"}),)),
            period=HOUR,
        )
    ]


def _table_name(table: Table) -> dict[str, str]:
    return {"Ref": table.logical_id}


SYSTEM_ERROR_OPERATIONS = (
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactWriteItems",
)
"""The operations the application uses (DynamoDB reports system errors per operation only; nine metrics
and the sum make the ten an alarm may hold)."""


def table_alarms(template: dict[str, Any]) -> list[Alarm]:
    """Read throttling, write throttling (each summed over the table and its indexes: an index that cannot
    keep up throttles the table's writes) and system errors, for every table."""
    alarms = []
    for table in tables(template):
        base = (("TableName", _table_name(table)),)
        for kind, metric_name in (("read", "ReadThrottleEvents"), ("write", "WriteThrottleEvents")):
            metrics = [("t", Metric("AWS/DynamoDB", metric_name, base))] + [
                (f"i{i}", Metric("AWS/DynamoDB", metric_name, (*base, ("GlobalSecondaryIndexName", index))))
                for i, index in enumerate(table.indexes, start=1)
            ]
            alarms.append(
                Alarm(
                    f"{table.logical_id.removesuffix('Table')}{kind.capitalize()}ThrottledAlarm",
                    f"{table.short}-{kind}-throttled",
                    "dynamodb-throttled.md",
                    f"DynamoDB throttled {kind}s on the {table.short} table or its indexes for 10 minutes.",
                    "10 or more throttled requests in each of two 5-minute periods: the SDK retries a throttled "
                    "request, so a short burst (the day-end run's first minute) costs nothing; ten minutes of it "
                    "means requests are failing.",
                    Expression("SUM(METRICS())", f"{metric_name} ({table.short} and its indexes)", tuple(metrics)),
                    threshold=10,
                    evaluation_periods=2,
                )
            )
        alarms.append(
            Alarm(
                f"{table.logical_id.removesuffix('Table')}SystemErrorsAlarm",
                f"{table.short}-system-errors",
                "dynamodb-system-errors.md",
                f"DynamoDB answered 5 or more internal errors (HTTP 500) on the {table.short} table in 5 minutes.",
                "The SDK retries an internal error, so one is noise; five in five minutes is DynamoDB itself "
                "degrading in the region.",
                Expression(
                    "SUM(METRICS())",
                    f"SystemErrors ({table.short}, every operation)",
                    tuple(
                        (f"o{i}", Metric("AWS/DynamoDB", "SystemErrors", (*base, ("Operation", operation))))
                        for i, operation in enumerate(SYSTEM_ERROR_OPERATIONS, start=1)
                    ),
                ),
                threshold=5,
            )
        )
    return alarms


NEAR_TIMEOUT_MARGIN_SECONDS = 30
NEAR_TIMEOUT_SHARE = 5


def near_timeout_ms(timeout_seconds: int) -> int:
    """Where "close to the timeout" starts: 30 s before it, or a fifth of it when that is less. The jobs
    hand over to a continuation 60 s before their timeout (docs/day-end.md), so a job over this line
    started a page it could not finish in time."""
    return (timeout_seconds - min(NEAR_TIMEOUT_MARGIN_SECONDS, timeout_seconds // NEAR_TIMEOUT_SHARE)) * 1000


def function_alarms(config: dict[str, Any]) -> list[Alarm]:
    alarms = []
    for function in functions(config):
        dims = (("FunctionName", {"Ref": function.logical_id}),)
        slug = "api" if function.logical_id == "APIHandler" else function.name.replace("_", "-")
        margin = number(function.timeout - near_timeout_ms(function.timeout) / 1000)
        alarms += [
            Alarm(
                f"{function.logical_id}ErrorsAlarm",
                f"{slug}-lambda-errors",
                "lambda-errors.md",
                f"The {function.name} Lambda function failed (an unhandled error, a timeout or out of memory).",
                "Any one: the API turns every error it expects into an answer, so a Lambda error is a crash or a "
                "timeout; for a job it is a failed invocation that Lambda retries.",
                Metric("AWS/Lambda", "Errors", dims),
            ),
            Alarm(
                f"{function.logical_id}ThrottlesAlarm",
                f"{slug}-lambda-throttled",
                "lambda-throttled.md",
                f"Lambda refused to run the {function.name} function (account or reserved concurrency exhausted).",
                "Any one: a throttled API call is an error to a collector, a throttled job is a delayed run.",
                Metric("AWS/Lambda", "Throttles", dims),
            ),
            Alarm(
                f"{function.logical_id}NearTimeoutAlarm",
                f"{slug}-lambda-near-timeout",
                "lambda-near-timeout.md",
                f"An invocation of {function.name} ran within {margin} s of its {function.timeout} s timeout.",
                "Maximum duration past the timeout less 30 s (or a fifth of it when shorter): the jobs hand over "
                "60 s before their timeout, so crossing this line means a page of work ran long; the next "
                "invocation like it may be killed mid-page.",
                Metric("AWS/Lambda", "Duration", dims),
                statistic="Maximum",
                threshold=near_timeout_ms(function.timeout),
            ),
        ]
    return alarms


API_MIN_REQUESTS = 20
API_LATENCY_P99_MS = 3000


def api_alarms() -> list[Alarm]:
    dims = (("ApiName", APP_NAME), ("Stage", {"Ref": "Stage"}))
    return [
        Alarm(
            "ApiServerErrorsAlarm",
            "api-5xx",
            "api-5xx.md",
            "2% or more of API requests answered 5xx in 5 minutes (or 3 or more 5xx in a quiet 5 minutes).",
            f"A rate, so a busy morning's one 503 does not page; below {API_MIN_REQUESTS} requests in 5 minutes "
            "(night, a holiday) a rate means nothing, so three 5xx answers page instead.",
            Expression(
                f"IF(requests >= {API_MIN_REQUESTS}, 100 * errors / requests, IF(errors >= 3, 100, 0))",
                "5xx share of requests (%)",
                (
                    ("errors", Metric("AWS/ApiGateway", "5XXError", dims)),
                    ("requests", Metric("AWS/ApiGateway", "Count", dims)),
                ),
            ),
            threshold=2,
        ),
        Alarm(
            "ApiLatencyAlarm",
            "api-latency-p99",
            "api-latency-p99.md",
            f"The API's 99th-percentile latency was over {API_LATENCY_P99_MS} ms for 15 minutes.",
            "A payment is a few DynamoDB round trips (well under a second); three seconds at p99 for three "
            "periods in a row is collectors waiting on every receipt, not one slow cold start.",
            Metric("AWS/ApiGateway", "Latency", dims),
            statistic="p99",
            threshold=API_LATENCY_P99_MS,
            evaluation_periods=3,
        ),
    ]


STATE_MACHINE_PAGES = {"DayEndStateMachine": "day-end", "ReconciliationStateMachine": "reconciliation"}
"""Each state machine's name in its alarm and its runbook page (``<name>-execution-failed``)."""


def state_machine_alarms(template: dict[str, Any]) -> list[Alarm]:
    """An execution that ends any way but success: failed (a worker kept failing, or the run recorded
    FAILED), timed out, or aborted by hand."""
    alarms = []
    for logical_id in state_machines(template):
        arn = (("StateMachineArn", {"Ref": logical_id}),)
        ended = tuple(
            (metric_id, Metric("AWS/States", name, arn))
            for metric_id, name in (
                ("failed", "ExecutionsFailed"),
                ("timedout", "ExecutionsTimedOut"),
                ("aborted", "ExecutionsAborted"),
            )
        )
        name = STATE_MACHINE_PAGES[logical_id]
        alarms.append(
            Alarm(
                f"{logical_id}FailedAlarm",
                f"{name}-execution-failed",
                f"{name}-execution-failed.md",
                f"An execution of the {name} state machine (the run's parallel segment workers) did not succeed.",
                "Any one: there is one execution a run, each worker already had two retries, and the run it "
                "carried is left FAILED or unfinished until someone runs it again.",
                Expression("failed + timedout + aborted", "Executions not succeeded", ended),
            )
        )
    return alarms


def all_alarms(template: dict[str, Any], config: dict[str, Any]) -> list[Alarm]:
    return [
        *business_alarms(template),
        *state_machine_alarms(template),
        *backup_alarms(),
        *table_alarms(template),
        *function_alarms(config),
        *api_alarms(),
    ]


def pages(template: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """Alarm name after the stage prefix -> its page under docs/runbook/alerts/."""
    return {alarm.suffix: alarm.page for alarm in all_alarms(template, config)}
