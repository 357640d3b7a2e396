"""The alarms, dashboard and log groups as CloudFormation receives them: the template ``chalice package
--merge-template`` makes from infra/template.json and the app, not the hand-written half alone. An
alarm naming a function or table the package does not have, a threshold past a function's timeout, or
an alarm without its runbook page is a monitoring hole found at 2 a.m.; here it fails the build."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra import alarms as catalogue
from infra import generate
from infra.provision import load_template

ROOT = Path(__file__).resolve().parents[2]
CHALICE = Path(sys.executable).with_name("chalice")


@pytest.fixture(name="packaged", scope="module")
def packaged_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("package")
    env = {**os.environ, "AWS_DEFAULT_REGION": "ap-south-1"}
    subprocess.run(
        [str(CHALICE), "package", "--stage", "dev", "--merge-template", "infra/template.json", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    packaged: dict[str, Any] = json.loads((out / "sam.json").read_text(encoding="utf-8"))
    return packaged


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v.get("Type") == kind}


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in _of_type(template, "AWS::CloudWatch::Alarm").items()}


def _watched(props: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric an alarm reads: its one metric, or each metric of its metric-math expression."""
    if "MetricName" in props:
        return [{k: props[k] for k in ("Namespace", "MetricName", "Dimensions")}]
    return [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]


def _dims(metric: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in metric["Dimensions"]}


def test_generated_parts_of_the_template_and_the_threshold_page_are_up_to_date() -> None:
    assert generate.main(["--check"]) == 0, "run python -m infra.generate and commit the result"


def test_every_packaged_alarm_is_the_catalogued_one(packaged: dict[str, Any]) -> None:
    expected = {a.logical_id: a for a in catalogue.all_alarms(load_template(), catalogue.load_config())}
    found = _alarms(packaged)
    assert set(found) == set(expected)
    for logical_id, props in found.items():
        alarm = expected[logical_id]
        assert props == alarm.resource()["Properties"], logical_id
        assert props["AlarmName"] == {"Fn::Sub": f"loan-crm-${{Stage}}-{alarm.suffix}"}
        assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert props["Threshold"] > 0, logical_id  # a threshold of 0 would fire on every quiet period
        assert props["TreatMissingData"] in {"notBreaching", "breaching"}, logical_id
        # Fires and clears on the one topic on-call subscribes to.
        assert props["AlarmActions"] == props["OKActions"] == [{"Ref": "AlertsTopic"}], logical_id
        period = props.get("Period") or props["Metrics"][0]["MetricStat"]["Period"]
        assert period % 60 == 0 and period * props["EvaluationPeriods"] <= 86_400, logical_id
        if "Metrics" in props:
            assert len(props["Metrics"]) <= 10, logical_id  # CloudWatch's limit for one alarm
            assert [m["Id"] for m in props["Metrics"] if m.get("ReturnData")] == ["e1"], logical_id
        page = ROOT / alarm.page_path
        assert props["AlarmDescription"].endswith(f"Runbook: {alarm.page_path}"), logical_id
        assert page.is_file(), alarm.page_path
        assert f"loan-crm-<stage>-{alarm.suffix}" in page.read_text(encoding="utf-8"), alarm.page_path


def test_alarm_names_are_unique_and_every_alarm_metric_names_a_packaged_resource(packaged: dict[str, Any]) -> None:
    found = _alarms(packaged)
    names = [p["AlarmName"]["Fn::Sub"] for p in found.values()]
    assert len(names) == len(set(names))
    resources = set(packaged["Resources"])
    for logical_id, props in found.items():
        for metric in _watched(props):
            for value in _dims(metric).values():
                if isinstance(value, dict) and "Ref" in value:
                    assert value["Ref"] in resources | {"Stage"}, (logical_id, value)


def test_every_table_and_every_index_has_read_and_write_throttling_and_system_error_alarms(
    packaged: dict[str, Any],
) -> None:
    watched: set[tuple[str, str, str | None]] = set()
    system_errors: dict[str, set[str]] = {}
    for props in _alarms(packaged).values():
        for metric in _watched(props):
            if metric["Namespace"] != "AWS/DynamoDB":
                continue
            dims = _dims(metric)
            table = dims["TableName"]["Ref"]
            if metric["MetricName"] == "SystemErrors":
                system_errors.setdefault(table, set()).add(dims["Operation"])
            else:
                watched.add((metric["MetricName"], table, dims.get("GlobalSecondaryIndexName")))
    tables = _of_type(packaged, "AWS::DynamoDB::Table")
    assert len(tables) == 13
    for logical_id, table in tables.items():
        indexes = [None] + [g["IndexName"] for g in table["Properties"].get("GlobalSecondaryIndexes", [])]
        for metric_name in ("ReadThrottleEvents", "WriteThrottleEvents"):
            for index in indexes:
                assert (metric_name, logical_id, index) in watched, (metric_name, logical_id, index)
        # Every write and read the application makes (transactions included) is covered.
        assert {"GetItem", "PutItem", "UpdateItem", "Query", "TransactWriteItems"} <= system_errors[logical_id]


def test_every_function_has_error_throttle_and_near_timeout_alarms_below_its_timeout(
    packaged: dict[str, Any],
) -> None:
    functions = _of_type(packaged, "AWS::Serverless::Function")
    assert {"APIHandler", "DpdJob", "ReconciliationJob", "RemindersJob", "DigestJob"} <= set(functions)
    by_function: dict[str, dict[str, dict[str, Any]]] = {}
    for props in _alarms(packaged).values():
        if props.get("Namespace") == "AWS/Lambda":
            by_function.setdefault(_dims(props)["FunctionName"]["Ref"], {})[props["MetricName"]] = props
    assert set(by_function) == set(functions)
    for logical_id, function in functions.items():
        timeout_ms = function["Properties"]["Timeout"] * 1000
        watched = by_function[logical_id]
        assert set(watched) == {"Errors", "Throttles", "Duration"}, logical_id
        duration = watched["Duration"]
        assert duration["Statistic"] == "Maximum"
        assert duration["Threshold"] < timeout_ms, logical_id
        if logical_id == "APIHandler":
            assert duration["Threshold"] < 29_000  # API Gateway gives up at 29 s, whatever Lambda's timeout
        else:
            # The jobs hand over 60 s before their timeout by design: only a page that overran past that
            # may alarm, or every long run would page.
            assert duration["Threshold"] > timeout_ms - 60_000, logical_id


def test_each_deployed_stage_runs_the_functions_with_the_timeouts_the_alarms_assume() -> None:
    config = catalogue.load_config()
    assumed = {f.logical_id: f.timeout for f in catalogue.functions(config)}
    for stage in ("dev", "prod"):
        assert {f.logical_id: f.timeout for f in catalogue.functions(config, stage)} == assumed, stage
        # The API alarms' Stage dimension is the template's Stage parameter: it must be the API stage.
        staged = config["stages"][stage]
        assert staged["api_gateway_stage"] == staged["environment_variables"]["STAGE"] == stage


def test_api_alarms_watch_the_packaged_api(packaged: dict[str, Any]) -> None:
    api = packaged["Resources"]["RestAPI"]["Properties"]
    api_name = api["DefinitionBody"]["info"]["title"]
    found = [p for p in _alarms(packaged).values() if any(m["Namespace"] == "AWS/ApiGateway" for m in _watched(p))]
    assert {m["MetricName"] for p in found for m in _watched(p)} == {"5XXError", "Count", "Latency"}
    for props in found:
        for metric in _watched(props):
            assert _dims(metric) == {"ApiName": api_name, "Stage": {"Ref": "Stage"}}
    latency = next(p for p in found if p.get("MetricName") == "Latency")
    assert latency["ExtendedStatistic"] == "p99"


SUB = re.compile(r"\$\{([^}]+)\}")


def test_the_dashboard_is_valid_and_shows_what_the_on_call_engineer_needs(packaged: dict[str, Any]) -> None:
    (dashboard,) = _of_type(packaged, "AWS::CloudWatch::Dashboard").values()
    body_template = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(SUB.findall(body_template))
    assert names <= set(packaged["Resources"]) | {"Stage", "AWS::Region"}, names
    body = json.loads(SUB.sub(lambda m: f"resolved-{m.group(1)}", body_template))
    shown: set[str] = set()
    searched = ""
    for widget in body["widgets"]:
        for line in widget["properties"]["metrics"]:
            if isinstance(line[0], dict):
                searched += line[0]["expression"]
            else:
                shown.add(line[1])
    for metric in (
        "PaymentPosted",
        "DuplicateUtr",
        "FinancialGuardTriggered",
        "DayEndDuration",
        "LoansUpdated",
        "LoansEscalated",
        "RemindersSent",
        "RemindersFailed",
        "4XXError",
        "5XXError",
        "Latency",
        "Duration",
        "Errors",
        "ConsumedReadCapacityUnits",
        "ConsumedWriteCapacityUnits",
    ):
        assert metric in shown, metric
    for metric in ("PaymentRejected", "LoansInBucket", "ReadThrottleEvents", "WriteThrottleEvents", "SystemErrors"):
        assert metric in searched, metric
    functions = _of_type(packaged, "AWS::Serverless::Function")
    assert {f"${{{name}}}" for name in functions} <= {f"${{{n}}}" for n in names}, (
        "a function missing from the dashboard"
    )


def test_every_function_and_state_machine_logs_to_its_own_group_with_a_retention(packaged: dict[str, Any]) -> None:
    groups = _of_type(packaged, "AWS::Logs::LogGroup")
    functions = _of_type(packaged, "AWS::Serverless::Function")
    machines = _of_type(packaged, "AWS::StepFunctions::StateMachine")
    assert machines, "the day-end state machine"
    assert {f"{name}LogGroup" for name in [*functions, *machines]} == set(groups)
    for name, function in functions.items():
        assert function["Properties"]["LoggingConfig"] == {"LogGroup": {"Ref": f"{name}LogGroup"}}, name
        # Not Lambda's default /aws/lambda/<function>: a function deployed before the stack made groups
        # already has that one, and creating it again would fail the deploy.
        name_of_group = groups[f"{name}LogGroup"]["Properties"]["LogGroupName"]["Fn::Sub"]
        assert name_of_group.startswith("/aws/lambda/loan-crm-${Stage}/"), name
    for name, machine in machines.items():
        logging = machine["Properties"]["LoggingConfiguration"]
        assert logging["Level"] == "ERROR" and logging["IncludeExecutionData"] is False, name
        [destination] = logging["Destinations"]
        assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {"Fn::GetAtt": [f"{name}LogGroup", "Arn"]}
        name_of_group = groups[f"{name}LogGroup"]["Properties"]["LogGroupName"]["Fn::Sub"]
        assert name_of_group.startswith("/aws/vendedlogs/states/loan-crm-${Stage}-"), name
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == generate.LOG_RETENTION_DAYS
        assert group["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("machine", ["DayEndStateMachine", "ReconciliationStateMachine"])
def test_an_execution_that_does_not_succeed_alarms(packaged: dict[str, Any], machine: str) -> None:
    props = _alarms(packaged)[f"{machine}FailedAlarm"]
    watched = {metric["MetricName"]: _dims(metric) for metric in _watched(props)}
    arn = {"StateMachineArn": {"Ref": machine}}
    assert watched == {"ExecutionsFailed": arn, "ExecutionsTimedOut": arn, "ExecutionsAborted": arn}
