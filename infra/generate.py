"""Write the generated parts of infra/template.json (every alarm, the dashboard, the functions' and state
machines' log groups and each one's logging configuration pointing at its group) and the threshold table
of docs/runbook/alarms.md, from ``infra.alarms`` and ``infra.dashboard``.

    python -m infra.generate          # rewrite both files
    python -m infra.generate --check  # exit 1 if either is out of date (the test suite runs this)

The rest of the template (tables, flags, topics, schedules, backups) is written by hand. Alarms,
dashboards and log groups appear nowhere else in it, so everything of those types is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from infra import dashboard
from infra.alarms import APP_NAME, ROOT, Alarm, all_alarms, functions, load_config, number, state_machines
from infra.provision import TEMPLATE_PATH, load_template

GENERATED_TYPES = frozenset({"AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard", "AWS::Logs::LogGroup"})
LOG_RETENTION_DAYS = 365
"""The audit table is the lasting record of every change; logs are for diagnosis. A year covers the
look-back of an annual audit or a complaint about last year's collections, at a small storage cost."""
THRESHOLDS_PAGE = ROOT / "docs" / "runbook" / "alarms.md"


def log_group_name(function_name: str) -> str:
    """Named by the stage and the function's name in .chalice/config.json, not by Lambda's generated
    function name: a group the stack creates must not collide with the ``/aws/lambda/<function>`` group
    Lambda has already made for a function deployed before the template had log groups (creating it
    would fail the deploy), and a static name is one the runbook can print."""
    return f"/aws/lambda/{APP_NAME}-${{Stage}}/{function_name}"


def log_groups(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One per function, so retention is set rather than Lambda's default of forever. Kept if the stack
    is deleted: the logs of an incident outlive the stack that had it."""
    return {
        f"{function.logical_id}LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "LogGroupName": {"Fn::Sub": log_group_name(function.name)},
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        }
        for function in functions(config)
    }


def state_machine_log_groups(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One per state machine, under ``/aws/vendedlogs/``: Step Functions writes there through a log
    delivery, and that prefix keeps CloudWatch's resource policy for the deliveries small."""
    return {
        f"{logical_id}LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/vendedlogs/states/{APP_NAME}-${{Stage}}-{logical_id}"},
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        }
        for logical_id in state_machines(template)
    }


def state_machine_logging(resources: dict[str, Any], template: dict[str, Any]) -> None:
    """Errors only, without the executions' data: each failed step is logged with its error, and the
    run's own step lines (docs/logging.md) are in the job's group."""
    for logical_id in state_machines(template):
        resources[logical_id]["Properties"]["LoggingConfiguration"] = {
            "Level": "ERROR",
            "IncludeExecutionData": False,
            "Destinations": [
                {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": [f"{logical_id}LogGroup", "Arn"]}}}
            ],
        }


def logging_configs(resources: dict[str, Any], config: dict[str, Any]) -> None:
    """Point each function (its merge-template entry, made if missing) at its group."""
    for function in functions(config):
        entry = resources.setdefault(function.logical_id, {"Properties": {}})
        entry.setdefault("Properties", {})["LoggingConfig"] = {"LogGroup": {"Ref": f"{function.logical_id}LogGroup"}}


def generated(template: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The template with its generated resources rebuilt (after the hand-written ones, in catalogue order)."""
    kept = {k: v for k, v in template["Resources"].items() if v.get("Type") not in GENERATED_TYPES}
    resources = dict(kept)
    for alarm in all_alarms(template, config):
        resources[alarm.logical_id] = alarm.resource()
    resources["Dashboard"] = dashboard.resource(template, config)
    resources.update(log_groups(config))
    resources.update(state_machine_log_groups(template))
    logging_configs(resources, config)
    state_machine_logging(resources, template)
    return {**template, "Resources": resources}


def thresholds_page(alarms: list[Alarm]) -> str:
    lines = [
        "# Alarms: what fires, when, and why that threshold",
        "",
        "Generated by `python -m infra.generate` from `infra/alarms.py` (edit the reasons there). Every alarm",
        "is named `loan-crm-<stage>-<name>`, notifies the alerts topic when it fires and again when it clears,",
        "and its notification ends with its runbook page. `python -m ops alarms` shows their state;",
        "`python -m ops --local alarms` shows the local stack's metrics against the same rules.",
        "",
        "| Alarm | Fires when | Why this threshold | Runbook |",
        "|---|---|---|---|",
    ]
    # A family (every table's read throttling, every function's errors) is one row: same rule, same page.
    families: dict[tuple[str, str], list[Alarm]] = {}
    for alarm in alarms:
        families.setdefault((alarm.page, alarm.why), []).append(alarm)
    for (page, why), members in families.items():
        names = ", ".join(f"`{a.suffix}`" for a in members)
        rule = members[0].condition() + (" (each alone; the first shown)" if len(members) > 1 else "")
        if len({a.threshold for a in members}) > 1:
            rule += "; thresholds: " + ", ".join(f"`{a.suffix}` {number(a.threshold)}" for a in members)
        lines.append(f"| {names} | {rule} | {why} | [{page}](alerts/{page}) |")
    return "\n".join(lines) + "\n"


def render(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    template, config = load_template(), load_config()
    wanted = {
        TEMPLATE_PATH: render(generated(template, config)),
        THRESHOLDS_PAGE: thresholds_page(all_alarms(template, config)),
    }
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python -m infra.generate", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
