"""The stage's CloudWatch dashboard (``loan-crm-<stage>``): what the on-call engineer and the collections
head look at first. Written into infra/template.json by ``python -m infra.generate``.

Rows follow the day: money in (payments and their refusals), the night's run (duration, loans updated,
escalations, the book by bucket), borrowers reached (reminders), then the machinery (API, Lambda,
DynamoDB). The body is one ``Fn::Sub`` string, so ``${Stage}``, ``${AWS::Region}`` and the functions'
generated names (``${DpdJob}``) are resolved by CloudFormation.
"""

from __future__ import annotations

import json
from typing import Any

from infra.alarms import APP_NAME, Function, Table, functions, tables

NAMESPACE = "LoanCRM/${Stage}"
SERVICE = ["service", APP_NAME]
WIDTH = 12
HEIGHT = 6
DAY = 86400


def _business(name: str, stat: str = "Sum", label: str | None = None) -> list[Any]:
    return [NAMESPACE, name, *SERVICE, {"stat": stat, "label": label or name}]


def _search(metric: str, dimension: str, stat: str, period: int, label: str, id_: str) -> list[Any]:
    """Every value of ``dimension`` (a rejection reason, a bucket), found by a search: a new reason or
    bucket appears without a dashboard change."""
    query = f'{{{NAMESPACE},{dimension},service}} MetricName="{metric}"'
    return [{"expression": f"SEARCH('{query}', '{stat}', {period})", "label": label, "id": id_}]


def _widget(title: str, metrics: list[Any], period: int = 300, stat: str = "Sum", **extra: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "title": title,
        "region": "${AWS::Region}",
        "view": "timeSeries",
        "stacked": False,
        "period": period,
        "stat": stat,
        "metrics": metrics,
    }
    properties.update(extra)
    return {"type": "metric", "width": WIDTH, "height": HEIGHT, "properties": properties}


def _api(metric: str, stat: str, label: str) -> list[Any]:
    return ["AWS/ApiGateway", metric, "ApiName", APP_NAME, "Stage", "${Stage}", {"stat": stat, "label": label}]


def _lambda(metric: str, function: Function, stat: str, label: str = "") -> list[Any]:
    shown = f"{function.name} {label}".strip()
    return ["AWS/Lambda", metric, "FunctionName", f"${{{function.logical_id}}}", {"stat": stat, "label": shown}]


def _table(metric: str, table: Table) -> list[Any]:
    return ["AWS/DynamoDB", metric, "TableName", f"{APP_NAME}-${{Stage}}-{table.short}", {"label": table.short}]


def _stage_tables(metric: str, dimensions: str, label: str, id_: str) -> list[Any]:
    """``metric`` of every table of the stage (and index, for throttling), one line each."""
    query = f'{{AWS/DynamoDB,{dimensions}}} MetricName="{metric}" {APP_NAME}-${{Stage}}-'
    return [{"expression": f"SEARCH('{query}', 'Sum', 300)", "label": label, "id": id_}]


def widgets(template: dict[str, Any], config: dict[str, Any]) -> list[dict[str, Any]]:
    fns = functions(config)
    tbls = tables(template)
    rejected = _search("PaymentRejected", "reason", "Sum", 3600, "rejected: ", "rejected")
    buckets = _search("LoansInBucket", "bucket", "Maximum", DAY, "", "buckets")
    return [
        _widget(
            "Payments per hour",
            [_business("PaymentPosted", label="posted"), _business("PaymentReversed", label="reversed"), rejected],
            period=3600,
        ),
        _widget(
            "Duplicate UTRs, guard triggers, failed payments",
            [
                _business("DuplicateUtr"),
                _business("FinancialGuardTriggered"),
                _business("PaymentFailed"),
                _business("AuthFailed", label="failed logins"),
            ],
        ),
        _widget(
            "Day-end run: duration (s) and outcome",
            [
                _business("DayEndDuration", stat="Maximum", label="duration (s)"),
                _business("DpdRunSucceeded", label="completed"),
                _business("DpdRunFailed", label="failed"),
                _business("DpdRunMissing", stat="Maximum", label="missing after 06:00"),
            ],
            period=DAY,
        ),
        _widget(
            "Day-end run: loans updated and escalated",
            [_business("LoansUpdated"), _business("LoansEscalated"), _business("EscalationFailed")],
            period=DAY,
        ),
        _widget("Loans by DPD bucket (after each night's run)", [buckets], period=DAY, stat="Maximum"),
        _widget(
            "Reminders",
            [_business("RemindersQueued"), _business("RemindersSent"), _business("RemindersFailed")],
            period=3600,
        ),
        _widget(
            "API requests, 4xx and 5xx",
            [_api("Count", "Sum", "requests"), _api("4XXError", "Sum", "4xx"), _api("5XXError", "Sum", "5xx")],
        ),
        _widget(
            "API latency",
            [
                _api("Latency", "p99", "p99"),
                _api("Latency", "p50", "p50"),
                _api("IntegrationLatency", "p99", "Lambda p99"),
            ],
        ),
        _widget("Lambda duration (maximum, ms)", [_lambda("Duration", f, "Maximum") for f in fns], stat="Maximum"),
        _widget(
            "Lambda errors and throttles",
            [_lambda("Errors", f, "Sum", "errors") for f in fns]
            + [_lambda("Throttles", f, "Sum", "throttles") for f in fns],
        ),
        _widget(
            "DynamoDB consumed capacity (read units)",
            [_table("ConsumedReadCapacityUnits", t) for t in tbls],
        ),
        _widget(
            "DynamoDB consumed capacity (write units)",
            [_table("ConsumedWriteCapacityUnits", t) for t in tbls],
        ),
        _widget(
            "DynamoDB throttled requests and system errors",
            [
                _stage_tables("ReadThrottleEvents", "TableName", "read throttled ", "d1"),
                _stage_tables("WriteThrottleEvents", "TableName", "write throttled ", "d2"),
                _stage_tables(
                    "ReadThrottleEvents", "GlobalSecondaryIndexName,TableName", "index read throttled ", "d4"
                ),
                _stage_tables(
                    "WriteThrottleEvents", "GlobalSecondaryIndexName,TableName", "index write throttled ", "d5"
                ),
                _stage_tables("SystemErrors", "Operation,TableName", "system errors ", "d3"),
            ],
        ),
    ]


def resource(template: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    body = {"widgets": widgets(template, config)}
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {
            "DashboardName": {"Fn::Sub": f"{APP_NAME}-${{Stage}}"},
            "DashboardBody": {"Fn::Sub": json.dumps(body, separators=(",", ":"))},
        },
    }
