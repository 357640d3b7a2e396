"""Lambda entry points of the jobs (not behind API Gateway).

``dpd_job`` is invoked by EventBridge Scheduler at 00:30 Asia/Kolkata with ``{"scheduled_time":
"<aws.scheduler.scheduled-time>"}``, by ops with ``{"business_date": ...}``, by the API's manual run,
and by itself (``"continuation": true``) to continue a run that reached the time limit; outside AWS
Lambda the continuation runs in this process instead (docs/day-end.md, "Time budget"). At 06:00 IST
the same function is invoked with ``{"check": "completed", ...}`` and only reports whether the night's
run completed, so the "did not complete by 06:00" alarm needs no clock-aware metric maths.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from typing import Any

import boto3
from chalice.app import Blueprint

from chalicelib.domain.runs import RunOutcome, RunStatus
from chalicelib.jobs.dpd import business_date_from_event
from chalicelib.services.views import run_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)

JOB_FUNCTION_ENV = "DPD_JOB_FUNCTION"
"""Set (by the merge template) on the API function to the job Lambda's name, for manual runs."""
LAMBDA_RUNTIME_ENV = "AWS_LAMBDA_FUNCTION_NAME"
"""Set by the AWS Lambda runtime in every function, and by nothing else this project runs under."""


def on_aws_lambda() -> bool:
    """True inside AWS Lambda. ``chalice local`` and ``chalice.test.Client`` call the same handlers in
    this process and leave ``AWS_LAMBDA_FUNCTION_NAME`` unset (Chalice itself sets
    ``AWS_EXECUTION_ENV`` even there, so that one cannot tell): there is no Lambda to hand work to, and
    a run and its continuations go on here."""
    return bool(os.environ.get(LAMBDA_RUNTIME_ENV))


def _invoke_async(function_name: str, payload: dict[str, Any]) -> None:
    boto3.client("lambda").invoke(
        FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload).encode()
    )


def dispatch_to_job_lambda(business_date: dt.date, trigger: str, full_scan: bool) -> bool:
    """Hand a manual run to the job Lambda when there is one; False means run it here."""
    function_name = os.environ.get(JOB_FUNCTION_ENV)
    if not (function_name and on_aws_lambda()):
        return False
    _invoke_async(
        function_name, {"business_date": business_date.isoformat(), "trigger": trigger, "full_scan": full_scan}
    )
    return True


def _budget_like(time_left_ms: int) -> Callable[[], int]:
    """The clock of a fresh invocation with ``time_left_ms`` to spend, for a continuation run here."""
    deadline = time.monotonic() + time_left_ms / 1000
    return lambda: int((deadline - time.monotonic()) * 1000)


@bp.lambda_function(name="dpd_job")
def dpd_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    svc = services()
    business_date = business_date_from_event(event)
    if event.get("check") == "completed":
        record = svc.runs.get(business_date)
        completed = record is not None and record.status is RunStatus.COMPLETED
        if not completed:
            svc.dpd_job.metrics.count("DpdRunMissing")
        return {"business_date": business_date.isoformat(), "completed": completed}
    trigger = str(event.get("trigger") or ("scheduler" if "scheduled_time" in event else "manual"))
    budget_ms = int(context.get_remaining_time_in_millis())
    result = svc.dpd_job.run(
        business_date,
        trigger,
        time_left_ms=context.get_remaining_time_in_millis,
        full_scan=bool(event.get("full_scan")),
        continuation=bool(event.get("continuation")),
    )
    if result.outcome is RunOutcome.CONTINUING and on_aws_lambda():
        # The continuation keeps the run's own trigger, so the history says who started it.
        _invoke_async(
            context.function_name,
            {"business_date": business_date.isoformat(), "trigger": trigger, "full_scan": False, "continuation": True},
        )
    while result.outcome is RunOutcome.CONTINUING and not on_aws_lambda():
        # No Lambda to hand over to: each continuation runs here, with the budget this invocation had.
        # The chain ends: every continuation does some work, and the run record bounds how many there are.
        result = svc.dpd_job.run(business_date, trigger, time_left_ms=_budget_like(budget_ms), continuation=True)
    summary = {"outcome": result.outcome.value, "run": run_dict(result.record) if result.record else None}
    if result.outcome is RunOutcome.FAILED:
        # Fail the invocation, so Lambda's own retries of an asynchronous invocation (the Scheduler's)
        # resume the run from its checkpoints; the record is FAILED with its lease released already.
        raise DpdRunFailedError(json.dumps(summary))
    return summary


class DpdRunFailedError(Exception):
    """The run for the date failed and is recorded FAILED; raised so the invocation is retried."""
