"""The ops CLI's look-ups of a deployed stage against moto: ``stack`` (names from CloudFormation),
``dates`` (IST), ``alarms``, ``logs`` and ``metrics``.

moto's CloudFormation describes only stacks it created, so each test deploys a tiny stack with the
logical ids and outputs the real one has (``chalice package`` adds ``EndpointURL`` and ``APIHandlerName``;
the merge template adds the rest). moto has no alarm history, so that one read is shown with a stub.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner, Result

from chalicelib import clock
from chalicelib.clock import FixedClock, use_clock
from local.environment import Ports, aws_environment
from ops import observe
from ops.cli import app

ENDPOINT = "https://abc123.execute-api.ap-south-1.amazonaws.com/{stage}/"


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400", **env})


def _stack_template(stage: str) -> dict[str, Any]:
    role = {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    function = {"Runtime": "python3.11", "Handler": "app.app", "Role": role, "Code": {"ZipFile": "x = 1"}}
    return {
        "Resources": {
            "FunctionRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {"AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []}},
            },
            "APIHandler": {"Type": "AWS::Lambda::Function", "Properties": function},
            "DpdJob": {"Type": "AWS::Lambda::Function", "Properties": function},
            "ReconciliationJob": {"Type": "AWS::Lambda::Function", "Properties": function},
            "RemindersJob": {"Type": "AWS::Lambda::Function", "Properties": function},
            "AlertsTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": f"loan-crm-{stage}-alerts"}},
            "ExtraTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": f"loan-crm-{stage}-from-the-stack",
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                },
            },
        },
        "Outputs": {
            "EndpointURL": {"Value": ENDPOINT.format(stage=stage)},
            "APIHandlerName": {"Value": {"Ref": "APIHandler"}},
            "AlertsTopicArn": {"Value": {"Ref": "AlertsTopic"}},
            "BackupVaultName": {"Value": f"loan-crm-{stage}-backups"},
            "BackupRoleArn": {"Value": "arn:aws:iam::123456789012:role/backup"},
        },
    }


@pytest.fixture
def deployed(moto_stack: str) -> Iterator[dict[str, str]]:
    """A stack loan-crm-<stage> in moto; yields the physical names CloudFormation generated."""
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName=f"loan-crm-{moto_stack}", TemplateBody=json.dumps(_stack_template(moto_stack)))
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName=f"loan-crm-{moto_stack}")["StackResourceSummaries"]
    }
    yield physical


def test_stack_resolves_names_from_cloudformation(deployed: dict[str, str], moto_stack: str) -> None:
    boto3.client("ssm").put_parameter(
        Name=f"/loan-crm/{moto_stack}/deployed-commit", Value="abc123def456", Type="String"
    )
    assert re.fullmatch(rf"loan-crm-{moto_stack}-DpdJob-\w+", deployed["DpdJob"]), "generated, never typed"

    shown = run("stack")

    assert shown.exit_code == 0, shown.output
    for value in (
        f"loan-crm-{moto_stack} (CREATE_COMPLETE)",
        "abc123def456",
        ENDPOINT.format(stage=moto_stack).rstrip("/"),
        deployed["APIHandler"],
        deployed["DpdJob"],
        f"/aws/lambda/{deployed['DpdJob']}",
        f"arn:aws:sns:ap-south-1:123456789012:loan-crm-{moto_stack}-alerts",
        f"loan-crm-{moto_stack}-backups",
        f"loan-crm-{moto_stack}-from-the-stack",
        "ap-south-1 / 123456789012",
    ):
        assert value in shown.stdout, value

    exported = run("stack", "--export")
    assert exported.exit_code == 0, exported.output
    lines = dict(line.removeprefix("export ").split("=", 1) for line in exported.stdout.splitlines())
    assert lines["DPD_FN"] == deployed["DpdJob"] and lines["API_FN"] == deployed["APIHandler"]
    assert lines["RECON_FN"] == deployed["ReconciliationJob"]
    assert lines["REMINDERS_LOG_GROUP"] == f"/aws/lambda/{deployed['RemindersJob']}"
    assert lines["API"] == f"https://abc123.execute-api.ap-south-1.amazonaws.com/{moto_stack}"
    assert lines["VAULT"] == f"loan-crm-{moto_stack}-backups" and lines["DEPLOYED_COMMIT"] == "abc123def456"
    assert "BACKUP_PLAN_ID" not in lines, "a name the stack does not have is left out, not exported empty"

    got = run("stack", "--get", "DPD_FN")
    assert got.exit_code == 0 and got.stdout == deployed["DpdJob"] + "\n"
    unknown = run("stack", "--get", "DPD_FUNCTION")
    assert unknown.exit_code == 2 and "names are STAGE, STACK, API" in unknown.stderr
    absent = run("stack", "--get", "BACKUP_PLAN_ID")
    assert absent.exit_code == 1 and "BACKUP_PLAN_ID is not known" in absent.stderr


def test_stack_of_a_stage_never_deployed_is_one_clear_line(moto_stack: str) -> None:
    missing = run("stack")

    assert missing.exit_code == 1
    assert f"no stack loan-crm-{moto_stack} in ap-south-1" in missing.stderr
    assert "Traceback" not in missing.output
    no_commit = run("--stage", moto_stack, "api", "GET", "/health", "--anonymous")
    assert no_commit.exit_code == 1 and "pass --url" in no_commit.stderr


def test_stack_of_the_local_stack_names_its_api(moto_stack: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = Ports(dynamodb=8100, moto=5101, api=8180)
    for name, value in {**aws_environment(ports), **{k: str(v) for k, v in ports.named().items()}}.items():
        monkeypatch.setenv(name, value)  # so --local's own changes to the environment are undone after

    shown = run("--local", "stack", "--get", "API")

    assert shown.exit_code == 0, shown.output
    assert shown.stdout == "http://127.0.0.1:8180\n"
    assert "loan-crm-local-loans" in run("--local", "stack").stdout


def test_dates_are_ist_whatever_the_host_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    at = dt.datetime(2026, 3, 14, 19, 0, tzinfo=dt.UTC)  # 00:30 IST on the 15th; still the 14th in LA and UTC
    with use_clock(FixedClock(at)):
        listed = run("dates")
        yesterday = run("dates", "yesterday")
        today = run("dates", "today")
        week_ago = run("dates", "week-ago")

    assert listed.exit_code == 0, listed.output
    assert "2026-03-15" in listed.stdout and "last completed business date" in listed.stdout
    assert (today.stdout, yesterday.stdout, week_ago.stdout) == ("2026-03-15\n", "2026-03-14\n", "2026-03-08\n")
    refused = run("dates", "tomorrow")
    assert refused.exit_code == 2 and "names are today, yesterday" in refused.stderr


# ---- alarms ----------------------------------------------------------------------------------------


def _alarm(name: str) -> None:
    boto3.client("cloudwatch").put_metric_alarm(
        AlarmName=name,
        MetricName="DpdRunFailed",
        Namespace="LoanCRM/test",
        Statistic="Sum",
        Period=300,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )


def test_alarms_lists_the_stage_alarms_with_state_and_runbook_page(moto_stack: str) -> None:
    for suffix in ("dpd-run-failed", "duplicate-utr"):
        _alarm(f"loan-crm-{moto_stack}-{suffix}")
    _alarm("loan-crm-otherstage-dpd-run-failed")
    boto3.client("cloudwatch").set_alarm_state(
        AlarmName=f"loan-crm-{moto_stack}-dpd-run-failed", StateValue="ALARM", StateReason="runbook test"
    )

    listed = run("alarms")

    assert listed.exit_code == 0, listed.output
    rows = {
        line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if f"loan-crm-{moto_stack}-" in line
    }
    assert set(rows) == {f"loan-crm-{moto_stack}-dpd-run-failed", f"loan-crm-{moto_stack}-duplicate-utr"}
    failed = rows[f"loan-crm-{moto_stack}-dpd-run-failed"]
    assert "ALARM" in failed and "runbook test" in failed and "docs/runbook/alerts/dpd-run-failed.md" in failed
    assert "otherstage" not in listed.stdout

    firing = run("alarms", "--state", "ALARM")
    assert firing.exit_code == 0
    assert "dpd-run-failed" in firing.stdout and "duplicate-utr" not in firing.stdout
    calm = run("--stage", "quiet", "alarms", "--state", "ALARM")
    assert calm.exit_code == 0 and "no alarm of stage quiet in ALARM" in calm.stdout


def test_alarm_history_keeps_the_stage_state_changes_in_order() -> None:
    cw = boto3.client("cloudwatch", region_name="ap-south-1")
    since = dt.datetime(2026, 3, 14, 6, 30, tzinfo=dt.UTC)
    until = since + dt.timedelta(days=1)
    items = [
        {"AlarmName": "loan-crm-prod-dpd-run-failed", "Timestamp": since + dt.timedelta(hours=3),
         "HistorySummary": "Alarm updated from ALARM to OK"},
        {"AlarmName": "loan-crm-dev-dpd-run-failed", "Timestamp": since + dt.timedelta(hours=2),
         "HistorySummary": "Alarm updated from OK to ALARM"},
        {"AlarmName": "loan-crm-prod-dpd-run-failed", "Timestamp": since + dt.timedelta(hours=1),
         "HistorySummary": "Alarm updated from OK to ALARM"},
    ]  # fmt: skip
    with Stubber(cw) as stub:
        stub.add_response(
            "describe_alarm_history",
            {"AlarmHistoryItems": items},
            {"HistoryItemType": "StateUpdate", "StartDate": since, "EndDate": until},
        )
        changes = observe.state_changes(cw, "loan-crm-prod-", since, until)

    assert [(c.name, c.summary) for c in changes] == [
        ("loan-crm-prod-dpd-run-failed", "Alarm updated from OK to ALARM"),
        ("loan-crm-prod-dpd-run-failed", "Alarm updated from ALARM to OK"),
    ]


# ---- logs ------------------------------------------------------------------------------------------


def _log(group: str, *lines: tuple[dt.timedelta, str]) -> None:
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="2026/03/15/[$LATEST]abc")
    now = clock.now_ist()
    logs.put_log_events(
        logGroupName=group,
        logStreamName="2026/03/15/[$LATEST]abc",
        logEvents=[{"timestamp": int((now - ago).timestamp() * 1000), "message": text} for ago, text in lines],
    )


def test_logs_reads_the_function_groups_in_a_window(deployed: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _log(
        f"/aws/lambda/{deployed['DpdJob']}",
        (dt.timedelta(hours=3), '{"level":"ERROR","message":"dpd run failed","run_id":"old"}'),
        (dt.timedelta(minutes=4), '{"level":"INFO","message":"segment done"}'),
        (dt.timedelta(minutes=2), '{"level":"ERROR","message":"unhandled error","request_id":"r-1"}'),
    )
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(observe, "log_lines", _recording(observe.log_lines, sent))

    recent = run("logs", "--function", "job", "--since", "10m")

    assert recent.exit_code == 0, recent.output
    lines = recent.stdout.splitlines()
    assert [line.split(" job ", 1)[1] for line in lines] == [
        '{"level":"INFO","message":"segment done"}',
        '{"level":"ERROR","message":"unhandled error","request_id":"r-1"}',
    ]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d job ", lines[0])
    assert "IST: 2" in recent.stderr

    wider = run("logs", "--function", "job", "--since", "6h", "--pattern", '"unhandled error"')
    assert wider.exit_code == 0 and len(wider.stdout.splitlines()) == 1 and "r-1" in wider.stdout

    _log(f"/aws/lambda/{deployed['RemindersJob']}", (dt.timedelta(minutes=1), '{"message":"reminder sent"}'))
    sender = run("logs", "--function", "reminders", "--function", "job", "--pattern", '"reminder"')
    assert sender.exit_code == 0, sender.output
    assert [line.split(" ", 3)[2] for line in sender.stdout.splitlines()] == ["reminders"]

    both = run("logs", "--errors", "--since", "6h", "--limit", "1")
    assert both.exit_code == 0, both.output
    assert "api: no log group yet" in both.stderr and "reconciliation: no log group yet" in both.stderr
    assert "reminders: no log group yet" not in both.stderr
    assert len(both.stdout.splitlines()) == 1 and "older lines left out" in both.stderr
    assert sent[-1]["pattern"] == '?ERROR ?"Task timed out" ?Traceback'

    assert run("logs", "--since", "ten minutes").exit_code == 2
    assert run("logs", "--errors", "--pattern", "x").exit_code == 2


def _recording(real: Any, sent: list[dict[str, Any]]) -> Any:
    def recorded(logs: Any, group: str, since: dt.datetime, pattern: str | None) -> Any:
        sent.append({"group": group, "pattern": pattern})
        return real(logs, group, since, pattern)

    return recorded


# ---- metrics ---------------------------------------------------------------------------------------


def test_metrics_reads_business_and_aws_metrics_of_the_stage(deployed: dict[str, str], moto_stack: str) -> None:
    cw = boto3.client("cloudwatch")
    now = clock.now_ist()
    service = [{"Name": "service", "Value": "loan-crm"}]
    cw.put_metric_data(
        Namespace=f"LoanCRM/{moto_stack}",
        MetricData=[
            {"MetricName": "AuthFailed", "Dimensions": service, "Timestamp": now - dt.timedelta(minutes=3), "Value": 7},
            {"MetricName": "AuthFailed", "Dimensions": service, "Timestamp": now - dt.timedelta(minutes=2), "Value": 5},
            {"MetricName": "AuthFailed", "Dimensions": service, "Timestamp": now - dt.timedelta(hours=5), "Value": 50},
            {"MetricName": "PaymentRejected", "Timestamp": now - dt.timedelta(minutes=1), "Value": 4,
             "Dimensions": [*service, {"Name": "reason", "Value": "DUPLICATE_UTR"}]},
        ],
    )  # fmt: skip
    cw.put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {"MetricName": "Errors", "Timestamp": now - dt.timedelta(minutes=1), "Value": 2,
             "Dimensions": [{"Name": "FunctionName", "Value": deployed["DpdJob"]}]},
        ],
    )  # fmt: skip

    auth = run("metrics", "AuthFailed", "AuthThrottled", "--since", "1h", "--period", "1h")

    assert auth.exit_code == 0, auth.output
    assert f"LoanCRM/{moto_stack} AuthFailed (service=loan-crm)" in auth.stdout
    assert re.search(r"│ 12 +│", auth.stdout), auth.stdout  # the 50 of five hours ago is outside the window
    assert "AuthThrottled (service=loan-crm): no datapoints in the last 1h" in auth.stdout

    duplicates = run("metrics", "PaymentRejected", "--dimension", "reason=DUPLICATE_UTR", "--period", "1h")
    assert duplicates.exit_code == 0 and re.search(r"│ 4 +│", duplicates.stdout), duplicates.output

    errors = run("metrics", "Errors", "--function", "job", "--period", "1h", "--stat", "Sum", "--stat", "Maximum")
    assert errors.exit_code == 0, errors.output
    assert f"AWS/Lambda Errors (FunctionName={deployed['DpdJob']})" in errors.stdout
    assert re.search(r"│ 2 +│ 2 +│", errors.stdout), errors.stdout

    throttled = run("metrics", "WriteThrottleEvents", "--table", "loans")
    assert throttled.exit_code == 0 and f"TableName=loan-crm-{moto_stack}-loans" in throttled.stdout
    assert run("metrics", "Errors", "--stat", "Median").exit_code == 2
    assert run("metrics", "Errors", "--dimension", "reason").exit_code == 2


def test_log_groups_are_the_stacks_own_when_it_makes_them() -> None:
    """A stack with the generated log groups names them; an older one falls back to Lambda's default."""
    made = observe.stack.StackInfo(
        stage="s",
        stack="loan-crm-s",
        status="UPDATE_COMPLETE",
        region="ap-south-1",
        job_function="loan-crm-s-DpdJob-ABC",
        reminders_function="loan-crm-s-RemindersJob-DEF",
        log_groups=(("DpdJob", "/aws/lambda/loan-crm-s/dpd_job"),),
    )
    names = made.variables()
    assert names["DPD_LOG_GROUP"] == "/aws/lambda/loan-crm-s/dpd_job"
    assert names["REMINDERS_LOG_GROUP"] == "/aws/lambda/loan-crm-s-RemindersJob-DEF"
    assert names["DIGEST_LOG_GROUP"] is None
