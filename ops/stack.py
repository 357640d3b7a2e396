"""The deployed stack of a stage, by name: what the runbook used to resolve in pasted shell.

CloudFormation generates the physical names of the Lambda functions (``loan-crm-<stage>-APIHandler-<random>``)
and of the backup plan, and ``chalice package`` adds the API's URL as the output ``EndpointURL``, so
nobody should type them: every command that needs one asks here. Everything comes from the stack
``loan-crm-<stage>`` itself (``describe_stacks`` for status and outputs, ``list_stack_resources`` for
physical names), plus the commit the deploy procedure recorded in SSM and the account the caller's
credentials belong to, so an operator sees at once which account and release they are about to touch.

``python -m ops stack --export`` prints the same values as ``export NAME=value`` lines for those who
still want them in a shell; the names are the ones the old runbook used.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Annotated, Any

import boto3
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.table import Table

from infra.provision import table_specs
from local.environment import Ports, url
from ops.console import fail, out
from ops.target import target

STACK_NAME = "loan-crm-{stage}"
"""The stack the deploy procedure creates for a stage (``--stack-name`` in docs/runbook/deploy.md)."""
DEPLOYED_COMMIT_PARAMETER = "/loan-crm/{stage}/deployed-commit"
"""Written by the deploy procedure after every successful deploy; ``/health`` cannot tell the commit."""


class StackMissing(Exception):
    """The stage has no stack in this account and region (not deployed, or the wrong credentials)."""


@dataclass(frozen=True)
class StackInfo:
    stage: str
    stack: str
    status: str
    region: str
    account: str | None = None
    deployed_commit: str | None = None
    api_url: str | None = None
    api_function: str | None = None
    job_function: str | None = None
    reconciliation_function: str | None = None
    reminders_function: str | None = None
    digest_function: str | None = None
    alerts_topic_arn: str | None = None
    backup_vault: str | None = None
    backup_role_arn: str | None = None
    backup_plan_id: str | None = None
    tables: tuple[str, ...] = ()
    log_groups: tuple[tuple[str, str], ...] = ()
    """(function's logical id, its log group) for the groups the stack itself creates."""

    def log_group(self, logical_id: str, function_name: str | None) -> str | None:
        """The stack's own group for the function, or Lambda's default for a stack made before the
        template created them (``/aws/lambda/<function>``)."""
        return dict(self.log_groups).get(logical_id) or log_group(function_name)

    def variables(self) -> dict[str, str | None]:
        """The shell names (``--export``, ``--get``) and their values, in a stable order."""
        return {
            "STAGE": self.stage,
            "STACK": self.stack,
            "API": self.api_url,
            "API_FN": self.api_function,
            "DPD_FN": self.job_function,
            "API_LOG_GROUP": self.log_group("APIHandler", self.api_function),
            "DPD_LOG_GROUP": self.log_group("DpdJob", self.job_function),
            "RECON_FN": self.reconciliation_function,
            "RECON_LOG_GROUP": self.log_group("ReconciliationJob", self.reconciliation_function),
            "REMINDERS_FN": self.reminders_function,
            "REMINDERS_LOG_GROUP": self.log_group("RemindersJob", self.reminders_function),
            "DIGEST_FN": self.digest_function,
            "DIGEST_LOG_GROUP": self.log_group("DigestJob", self.digest_function),
            "TOPIC_ARN": self.alerts_topic_arn,
            "VAULT": self.backup_vault,
            "BACKUP_ROLE_ARN": self.backup_role_arn,
            "BACKUP_PLAN_ID": self.backup_plan_id,
            "DEPLOYED_COMMIT": self.deployed_commit,
        }


def log_group(function_name: str | None) -> str | None:
    """Lambda's default group, ``/aws/lambda/<function>``, used when the stack does not create one."""
    return f"/aws/lambda/{function_name}" if function_name else None


def _described(cfn: Any, stack: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationError":
            raise StackMissing(stack) from None
        raise
    return found


def endpoint_url(cfn: Any, stack: str) -> str:
    """The API's base URL without its trailing slash (output ``EndpointURL`` ends in ``/<stage>/``)."""
    outputs = {o["OutputKey"]: o["OutputValue"] for o in _described(cfn, stack).get("Outputs", [])}
    if "EndpointURL" not in outputs:
        raise StackMissing(f"{stack} has no EndpointURL output (was it deployed from `chalice package`?)")
    return str(outputs["EndpointURL"]).rstrip("/")


def _physical_ids(cfn: Any, stack: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Logical id -> physical id of every resource, and the stack's table names."""
    physical: dict[str, str] = {}
    tables: list[str] = []
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack):
        for r in page["StackResourceSummaries"]:
            if "PhysicalResourceId" not in r:
                continue
            physical[r["LogicalResourceId"]] = r["PhysicalResourceId"]
            if r["ResourceType"] == "AWS::DynamoDB::Table":
                tables.append(r["PhysicalResourceId"])
    return physical, tuple(sorted(tables))


def _deployed_commit(ssm: Any, stage: str) -> str | None:
    try:
        value: str = ssm.get_parameter(Name=DEPLOYED_COMMIT_PARAMETER.format(stage=stage))["Parameter"]["Value"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ParameterNotFound":
            return None
        raise
    return value


def _account(sts: Any) -> str | None:
    try:
        return str(sts.get_caller_identity()["Account"])
    except (BotoCoreError, ClientError):
        return None


def resolve(cfn: Any, ssm: Any, sts: Any, stage: str, stack: str | None = None) -> StackInfo:
    """Everything the runbook needs to know about the stage's stack, read from AWS."""
    name = stack or STACK_NAME.format(stage=stage)
    described = _described(cfn, name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    physical, tables = _physical_ids(cfn, name)
    api = outputs.get("EndpointURL")
    return StackInfo(
        stage=stage,
        stack=name,
        status=described["StackStatus"],
        region=cfn.meta.region_name,
        account=_account(sts),
        deployed_commit=_deployed_commit(ssm, stage),
        api_url=str(api).rstrip("/") if api else None,
        api_function=outputs.get("APIHandlerName") or physical.get("APIHandler"),
        job_function=physical.get("DpdJob"),
        reconciliation_function=physical.get("ReconciliationJob"),
        reminders_function=physical.get("RemindersJob"),
        digest_function=physical.get("DigestJob"),
        alerts_topic_arn=outputs.get("AlertsTopicArn"),
        backup_vault=outputs.get("BackupVaultName"),
        backup_role_arn=outputs.get("BackupRoleArn"),
        backup_plan_id=physical.get("BackupPlan"),
        tables=tables,
        log_groups=tuple(
            sorted((k.removesuffix("LogGroup"), v) for k, v in physical.items() if k.endswith("LogGroup"))
        ),
    )


def local_info(stage: str, region: str, ports: Ports) -> StackInfo:
    """The ``make run`` stack has no CloudFormation, no Lambda and no backups: only the API and tables."""
    return StackInfo(
        stage=stage,
        stack="(local: make run, no CloudFormation)",
        status="LOCAL",
        region=region,
        api_url=url(ports.api),
        tables=tuple(spec.name for spec in table_specs(stage)),
    )


def current(ctx: typer.Context, stack: str | None = None) -> StackInfo:
    """The stack of the command's target, or a clean error if it has none."""
    chosen = target(ctx)
    if chosen.local_ports is not None:
        return local_info(chosen.stage, chosen.region, chosen.local_ports)
    region = chosen.region
    try:
        return resolve(
            boto3.client("cloudformation", region_name=region),
            boto3.client("ssm", region_name=region),
            boto3.client("sts", region_name=region),
            chosen.stage,
            stack,
        )
    except StackMissing as exc:
        raise fail(f"no stack {exc} in {region} for these credentials: deployed? right account and STAGE?") from None


def api_url(ctx: typer.Context) -> str:
    """Only the API's base URL: one ``describe_stacks``, for commands that need nothing else."""
    chosen = target(ctx)
    if chosen.local_ports is not None:
        return url(chosen.local_ports.api)
    name = STACK_NAME.format(stage=chosen.stage)
    try:
        return endpoint_url(boto3.client("cloudformation", region_name=chosen.region), name)
    except StackMissing as exc:
        raise fail(f"no API URL for stage {chosen.stage}: {exc}; pass --url to name it") from None


StackOption = Annotated[str | None, typer.Option("--stack-name", help="Default: loan-crm-<stage>.")]


def stack_command(
    ctx: typer.Context,
    export: Annotated[bool, typer.Option("--export", help="Print `export NAME=value` lines for a shell.")] = False,
    get: Annotated[str | None, typer.Option("--get", metavar="NAME", help="Print one value, e.g. DPD_FN.")] = None,
    stack: StackOption = None,
) -> None:
    """The stage's stack: status, account, deployed commit, API URL, Lambda names, topic, backups, tables."""
    info = current(ctx, stack)
    variables = info.variables()
    if get is not None:
        if get not in variables:
            raise fail(f"unknown name {get!r}; names are {', '.join(variables)}", 2)
        value = variables[get]
        if value is None:
            raise fail(f"{get} is not known for stage {info.stage} ({info.stack})")
        typer.echo(value)  # plain, for $(...): no markup, no wrapping
        return
    if export:
        for name, value in variables.items():
            if value is not None:
                typer.echo(f"export {name}={shlex.quote(value)}")
        return
    _print_stack(info)


def _print_stack(info: StackInfo) -> None:
    variables = info.variables()
    table = Table("what", "value", "name", title=f"stack of stage {info.stage}")
    table.add_row("stack", f"{info.stack} ({info.status})", "STACK")
    table.add_row("region / account", f"{info.region} / {info.account or '-'}", "")
    table.add_row("deployed commit", info.deployed_commit or "not recorded", "DEPLOYED_COMMIT")
    for name, label in (
        ("API", "API URL"),
        ("API_FN", "API function"),
        ("DPD_FN", "day-end job function"),
        ("API_LOG_GROUP", "API log group"),
        ("DPD_LOG_GROUP", "job log group"),
        ("RECON_FN", "reconciliation job function"),
        ("RECON_LOG_GROUP", "reconciliation log group"),
        ("REMINDERS_FN", "reminders sender function"),
        ("REMINDERS_LOG_GROUP", "reminders sender log group"),
        ("DIGEST_FN", "morning digest function"),
        ("DIGEST_LOG_GROUP", "morning digest log group"),
        ("TOPIC_ARN", "alerts topic"),
        ("VAULT", "backup vault"),
        ("BACKUP_ROLE_ARN", "backup role"),
        ("BACKUP_PLAN_ID", "backup plan"),
    ):
        table.add_row(label, variables[name] or "-", name)
    table.add_row("tables", "\n".join(info.tables) or "-", "")
    out.print(table)
