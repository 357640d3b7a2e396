"""Create every table and SSM parameter that ``infra/template.json`` defines, idempotently.

The template is the one schema source: CloudFormation builds AWS from it, and this module builds
DynamoDB Local, moto and the test fixtures from the same resources, so code and infra cannot drift.
Endpoints come from the standard AWS variables (``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL_SSM``,
...) that boto3 reads itself; ``STAGE`` names the stage.

Re-running is safe: existing tables are checked against the template (a key or index mismatch is an
error, never silently "fixed"), and existing flag parameters keep the value ops may have set.

    python -m infra.provision [--stage dev]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

TEMPLATE_PATH = Path(__file__).with_name("template.json")


def load_template() -> dict[str, Any]:
    with TEMPLATE_PATH.open(encoding="utf-8") as fh:
        template: dict[str, Any] = json.load(fh)
    return template


def resolve(value: Any, stage: str) -> Any:
    """Resolve the only intrinsics the data resources use: ``Fn::Sub`` and ``Ref`` of ``Stage``."""
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return re.sub(r"\$\{Stage\}", stage, value["Fn::Sub"])
        if value == {"Ref": "Stage"}:
            return stage
        return {k: resolve(v, stage) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, stage) for v in value]
    return value


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    properties: dict[str, Any]

    @property
    def key_schema(self) -> list[dict[str, str]]:
        return list(self.properties["KeySchema"])

    @property
    def indexes(self) -> dict[str, list[dict[str, str]]]:
        return {g["IndexName"]: g["KeySchema"] for g in self.properties.get("GlobalSecondaryIndexes", [])}


def table_specs(stage: str, template: dict[str, Any] | None = None) -> list[TableSpec]:
    template = template or load_template()
    specs = []
    for logical_id, res in template["Resources"].items():
        if res.get("Type") == "AWS::DynamoDB::Table":
            props = resolve(res["Properties"], stage)
            specs.append(TableSpec(logical_id, props["TableName"], props))
    return specs


def parameter_specs(stage: str, template: dict[str, Any] | None = None) -> dict[str, str]:
    """SSM parameter name -> default value."""
    template = template or load_template()
    return {
        resolve(res["Properties"]["Name"], stage): res["Properties"]["Value"]
        for res in template["Resources"].values()
        if res.get("Type") == "AWS::SSM::Parameter"
    }


def table_layout(spec: TableSpec) -> dict[str, Any]:
    """The ``create_table`` arguments that give a table its template layout: name, keys, billing and
    indexes (encryption and protection are each caller's: a restore sets them its own way)."""
    props = spec.properties
    kwargs: dict[str, Any] = {
        "TableName": spec.name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    return kwargs


def _create_table(ddb: Any, spec: TableSpec) -> None:
    props = spec.properties
    kwargs = table_layout(spec)
    if props.get("SSESpecification", {}).get("SSEEnabled"):
        # CloudFormation spells it SSEEnabled, the API Enabled.
        kwargs["SSESpecification"] = {"Enabled": True}
    if props.get("DeletionProtectionEnabled"):
        kwargs["DeletionProtectionEnabled"] = True
    created = ddb.create_table(**kwargs)
    if created["TableDescription"].get("TableStatus") != "ACTIVE":
        # AWS answers CREATING and takes seconds; DynamoDB Local and moto answer ACTIVE, and a test suite
        # that provisions a stage per test would otherwise pay a describe per table for nothing.
        ddb.get_waiter("table_exists").wait(TableName=spec.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def _add_index(ddb: Any, spec: TableSpec, index_name: str) -> None:
    """Add an index the template gained since the table was made (what CloudFormation does on deploy)."""
    index = next(g for g in spec.properties["GlobalSecondaryIndexes"] if g["IndexName"] == index_name)
    needed = {k["AttributeName"] for k in index["KeySchema"]}
    definitions = [d for d in spec.properties["AttributeDefinitions"] if d["AttributeName"] in needed]
    ddb.update_table(
        TableName=spec.name,
        AttributeDefinitions=definitions,
        GlobalSecondaryIndexUpdates=[{"Create": index}],
    )
    for _ in range(300):
        live = ddb.describe_table(TableName=spec.name)["Table"]
        statuses = {g["IndexName"]: g.get("IndexStatus", "ACTIVE") for g in live.get("GlobalSecondaryIndexes", [])}
        if statuses.get(index_name) == "ACTIVE":
            return
        time.sleep(1)
    raise RuntimeError(f"{spec.name}: index {index_name} did not become ACTIVE")


def _check_table(ddb: Any, spec: TableSpec, say: Any) -> list[str]:
    """Bring a live table up to the template where that is safe (new indexes); describe the rest."""
    live = ddb.describe_table(TableName=spec.name)["Table"]
    problems = []
    if live["KeySchema"] != spec.key_schema:
        problems.append(f"{spec.name}: key schema {live['KeySchema']} != template {spec.key_schema}")
    live_indexes = {g["IndexName"]: g["KeySchema"] for g in live.get("GlobalSecondaryIndexes", [])}
    for name in sorted(set(spec.indexes) - set(live_indexes)):
        # DynamoDB adds one index per UpdateTable call.
        _add_index(ddb, spec, name)
        live_indexes[name] = spec.indexes[name]
        say(f"table {spec.name}: index {name} added")
    if live_indexes != spec.indexes:
        problems.append(f"{spec.name}: indexes {sorted(live_indexes)} != template {sorted(spec.indexes)}")
    return problems


def _apply_table_settings(ddb: Any, spec: TableSpec, say: Any) -> None:
    """TTL and PITR are separate API calls. DynamoDB Local has no PITR, which is why a refusal there
    is reported and not fatal: it is a local-engine limitation, not a drift."""
    ttl = spec.properties.get("TimeToLiveSpecification")
    if ttl:
        current = ddb.describe_time_to_live(TableName=spec.name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            ddb.update_time_to_live(TableName=spec.name, TimeToLiveSpecification=ttl)
    pitr = spec.properties.get("PointInTimeRecoverySpecification")
    if pitr:
        try:
            ddb.update_continuous_backups(TableName=spec.name, PointInTimeRecoverySpecification=pitr)
        except ClientError as exc:
            say(f"  note: {spec.name}: point-in-time recovery not available here ({exc.response['Error']['Code']})")


def topic_specs(stage: str, template: dict[str, Any] | None = None) -> dict[str, dict[str, str]]:
    """SNS topic name -> its attributes (FIFO ones), as the template defines them."""
    resources = (template or load_template())["Resources"]
    topics: dict[str, dict[str, str]] = {}
    for resource in resources.values():
        if resource.get("Type") != "AWS::SNS::Topic":
            continue
        props = resolve(resource["Properties"], stage)
        attributes = {k: str(props[k]).lower() for k in ("FifoTopic", "ContentBasedDeduplication") if k in props}
        topics[props["TopicName"]] = attributes
    return topics


def provision(stage: str, ddb: Any = None, ssm: Any = None, quiet: bool = False, sns: Any = None) -> None:
    """Create what is missing, verify what exists. Raises RuntimeError on drift. Called with no clients
    (the local stack) it also makes the template's SNS topics; a caller passing its own clients gets
    topics only if it passes an SNS client too."""
    if sns is None and ddb is None:
        sns = boto3.client("sns")
    ddb = ddb or boto3.client("dynamodb")
    ssm = ssm or boto3.client("ssm")
    say = (lambda _msg: None) if quiet else print
    existing: set[str] = set()
    for page in ddb.get_paginator("list_tables").paginate():
        existing.update(page["TableNames"])
    problems: list[str] = []
    for spec in table_specs(stage):
        if spec.name in existing:
            problems += _check_table(ddb, spec, say)
            say(f"table {spec.name}: exists")
        else:
            _create_table(ddb, spec)
            say(f"table {spec.name}: created")
        _apply_table_settings(ddb, spec, say)
    for name, default in parameter_specs(stage).items():
        try:
            ssm.put_parameter(Name=name, Value=default, Type="String", Overwrite=False)
            say(f"parameter {name}: created = {default}")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ParameterAlreadyExists":
                raise
            say(f"parameter {name}: exists (value kept)")
    if sns is not None:
        for name, attributes in topic_specs(stage).items():
            sns.create_topic(Name=name, Attributes=attributes)  # idempotent for the same attributes
            say(f"topic {name}: ready")
    if problems:
        raise RuntimeError("live tables differ from infra/template.json:\n  " + "\n  ".join(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stage", default=os.environ.get("STAGE", "dev"))
    args = parser.parse_args(argv)
    try:
        provision(args.stage)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
