"""infra/template.json is the one schema source: the models, provisioning and the template agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.adapters.dynamodb.models import ALL_MODELS, bind
from chalicelib.config import reset_settings, settings
from infra.provision import load_template, parameter_specs, provision, resolve, table_specs


def _hash_first(keys: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(keys, key=lambda k: k["KeyType"] != "HASH")


def _model_schema(model: Any) -> tuple[list[dict[str, str]], dict[str, list[dict[str, str]]]]:
    schema = model._get_schema()
    keys = _hash_first([{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in schema["key_schema"]])
    indexes = {
        g["index_name"]: _hash_first(
            [{"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in g["key_schema"]]
        )
        for g in schema["global_secondary_indexes"]
    }
    return keys, indexes


def test_every_model_matches_a_template_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "prod")
    reset_settings()
    bind(settings())
    # The idempotency table's layout belongs to chalicelib.adapters.dynamodb.idempotency (its model is
    # for transactions only).
    specs = {s.name: s for s in table_specs("prod") if s.logical_id != "IdempotencyTable"}
    assert len(specs) == len(ALL_MODELS)
    for model in ALL_MODELS:
        spec = specs[model.Meta.table_name]
        keys, indexes = _model_schema(model)
        assert keys == spec.key_schema, model.__name__
        assert indexes == spec.indexes, model.__name__
        projections = {g["index_name"]: g["projection"] for g in model._get_schema()["global_secondary_indexes"]}
        template_projections = {
            g["IndexName"]: g["Projection"] for g in spec.properties.get("GlobalSecondaryIndexes", [])
        }
        assert projections == template_projections, model.__name__
    reset_settings()


def test_data_tables_are_protected() -> None:
    for spec in table_specs("prod"):
        props = spec.properties
        assert props["SSESpecification"] == {"SSEEnabled": True}, spec.name
        assert props["BillingMode"] == "PAY_PER_REQUEST", spec.name
        if spec.logical_id not in {"LoginAttemptsTable", "IdempotencyTable"}:  # short-lived rows with a TTL
            assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, spec.name
            assert props["DeletionProtectionEnabled"] is True, spec.name
            resource = load_template()["Resources"][spec.logical_id]
            assert resource["DeletionPolicy"] == "Retain", spec.name


def test_every_flag_of_the_spec_is_a_parameter_defaulting_to_true() -> None:
    params = parameter_specs("prod")
    names = {n.rsplit("/", 1)[1] for n in params}
    assert names == {"CRON_ENABLED", "ESCALATION_ENABLED", "SCORING_ENABLED", "REMINDERS_ENABLED"}
    assert all(n.startswith("/loan-crm/prod/flags/") for n in params)
    assert set(params.values()) == {"true"}


def test_provision_is_idempotent_and_keeps_flag_values() -> None:
    with mock_aws():
        ddb, ssm = boto3.client("dynamodb"), boto3.client("ssm")
        provision("ci", ddb, ssm, quiet=True)
        ssm.put_parameter(Name="/loan-crm/ci/flags/CRON_ENABLED", Value="false", Type="String", Overwrite=True)
        provision("ci", ddb, ssm, quiet=True)
        tables = ddb.list_tables()["TableNames"]
        assert sorted(tables) == sorted(s.name for s in table_specs("ci"))
        assert ssm.get_parameter(Name="/loan-crm/ci/flags/CRON_ENABLED")["Parameter"]["Value"] == "false"
        ttl = ddb.describe_time_to_live(TableName="loan-crm-ci-login-attempts")["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expires_at"
        pitr = ddb.describe_continuous_backups(TableName="loan-crm-ci-loans")["ContinuousBackupsDescription"]
        assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


def test_provision_reports_drift_instead_of_hiding_it() -> None:
    with mock_aws():
        ddb, ssm = boto3.client("dynamodb"), boto3.client("ssm")
        ddb.create_table(
            TableName="loan-crm-ci-loans",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        with pytest.raises(RuntimeError, match="loan-crm-ci-loans"):
            provision("ci", ddb, ssm, quiet=True)


def test_provision_adds_an_index_the_template_gained() -> None:
    with mock_aws():
        ddb, ssm = boto3.client("dynamodb"), boto3.client("ssm")
        ddb.create_table(
            TableName="loan-crm-ci-legal-cases",
            AttributeDefinitions=[{"AttributeName": "loan_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "loan_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        provision("ci", ddb, ssm, quiet=True)
        live = ddb.describe_table(TableName="loan-crm-ci-legal-cases")["Table"]
        assert [g["IndexName"] for g in live["GlobalSecondaryIndexes"]] == ["status-index"]


RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook" / "backups-and-restore.md"
BACKUP_RULES_MARKER = "<!-- backup-rules:"
BACKUP_RULE_ROW = re.compile(
    r"^\| `(?P<name>[\w.-]+)` \| [^|]*?(?P<ist>\d\d:\d\d)[^|]* \| `(?P<cron>cron\([^`]+\))` \| (?P<days>\d+) days"
)


def _runbook_backup_rules() -> dict[str, tuple[str, int, str]]:
    """Rule name -> (cron, retention days, IST time) from the table under the runbook page's marker."""
    text = RUNBOOK.read_text(encoding="utf-8")
    assert BACKUP_RULES_MARKER in text, "docs/runbook/backups-and-restore.md lost its backup-rules table"
    after_marker = text.split(BACKUP_RULES_MARKER, 1)[1]
    table = after_marker.split("\n\n", 1)[0].splitlines()[1:]
    rows = [m for line in table if (m := BACKUP_RULE_ROW.match(line))]
    return {m["name"]: (m["cron"], int(m["days"]), m["ist"]) for m in rows}


def _ist_of_utc_cron(cron: str) -> str:
    """AWS Backup cron is UTC: the IST (+05:30) wall-clock time of its minute and hour fields."""
    minute, hour = (int(field) for field in cron.removeprefix("cron(").split()[:2])
    ist = (hour * 60 + minute + 330) % (24 * 60)
    return f"{ist // 60:02d}:{ist % 60:02d}"


def test_backup_plan_covers_every_table_with_point_in_time_recovery() -> None:
    resources = load_template()["Resources"]
    tables = {k: v["Properties"] for k, v in resources.items() if v.get("Type") == "AWS::DynamoDB::Table"}
    with_pitr = {
        k for k, p in tables.items() if p.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled")
    }
    # Every table that keeps its rows for good (no TTL) is a data table: PITR on, and backed up.
    assert with_pitr == {k for k, p in tables.items() if "TimeToLiveSpecification" not in p}
    selections = [v["Properties"] for v in resources.values() if v.get("Type") == "AWS::Backup::BackupSelection"]
    assert selections
    selected = set()
    for selection in selections:
        assert selection["BackupPlanId"] == {"Ref": "BackupPlan"}
        assert selection["BackupSelection"]["IamRoleArn"] == {"Fn::GetAtt": ["BackupRole", "Arn"]}
        for arn in selection["BackupSelection"]["Resources"]:
            logical_id, attribute = arn["Fn::GetAtt"]
            assert attribute == "Arn"
            selected.add(logical_id)
    assert selected == with_pitr

    role = resources["BackupRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "backup.amazonaws.com"}
    policies = {p["Fn::Sub"].rsplit("/", 1)[1] for p in role["ManagedPolicyArns"]}
    assert {"AWSBackupServiceRolePolicyForBackup", "AWSBackupServiceRolePolicyForRestores"} <= policies
    vault = resources["BackupVault"]
    assert resolve(vault["Properties"]["BackupVaultName"], "prod") == "loan-crm-prod-backups"
    assert vault["DeletionPolicy"] == "Retain"
    for rule in resources["BackupPlan"]["Properties"]["BackupPlan"]["BackupPlanRule"]:
        assert rule["TargetBackupVault"] == {"Ref": "BackupVault"}


def test_backup_retention_is_what_the_runbook_says() -> None:
    plan = load_template()["Resources"]["BackupPlan"]["Properties"]["BackupPlan"]
    in_template = {r["RuleName"]: r for r in plan["BackupPlanRule"]}
    in_runbook = _runbook_backup_rules()
    assert in_runbook, "docs/runbook/backups-and-restore.md has no backup-rules table"
    assert {name: (r["ScheduleExpression"], r["Lifecycle"]["DeleteAfterDays"]) for name, r in in_template.items()} == {
        name: (cron, days) for name, (cron, days, _ist) in in_runbook.items()
    }
    for name, (cron, _days, ist) in in_runbook.items():
        assert "ScheduleExpressionTimezone" not in in_template[name], "the crons are UTC, as the runbook says"
        assert _ist_of_utc_cron(cron) == ist, name
    retention = sorted(days for _cron, days, _ist in in_runbook.values())
    assert retention[0] >= 35, "no rule may keep less than the PITR window"
    assert retention[-1] >= 8 * 365, "the FY-close backup is kept for the 8 years of Companies Act s.128(5)"
