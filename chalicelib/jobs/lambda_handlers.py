"""Lambda entry points of the jobs (not behind API Gateway).

``dpd_job`` is invoked by EventBridge Scheduler at 00:30 Asia/Kolkata with ``{"scheduled_time":
"<aws.scheduler.scheduled-time>"}``, by ops with ``{"business_date": ...}``, by the API's manual run,
and by itself to continue a run that reached the time limit. At 06:00 IST the same function is invoked
with ``{"check": "completed", ...}`` and only reports whether the night's run completed, so the
"did not complete by 06:00" alarm needs no clock-aware metric maths.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import boto3
from chalice.app import Blueprint

from chalicelib.domain.runs import RunOutcome, RunStatus
from chalicelib.jobs.dpd import business_date_from_event
from chalicelib.services.views import run_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)

JOB_FUNCTION_ENV = "DPD_JOB_FUNCTION"
"""Set (by the merge template) to the job Lambda's name in AWS; absent locally, where runs are in-process."""


def _invoke_async(function_name: str, payload: dict[str, Any]) -> None:
    boto3.client("lambda").invoke(
        FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload).encode()
    )


def dispatch_to_job_lambda(business_date: dt.date, trigger: str, full_scan: bool) -> bool:
    """Hand a manual run to the job Lambda when there is one; False means run it here."""
    function_name = os.environ.get(JOB_FUNCTION_ENV)
    if not function_name:
        return False
    _invoke_async(
        function_name, {"business_date": business_date.isoformat(), "trigger": trigger, "full_scan": full_scan}
    )
    return True


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
    result = svc.dpd_job.run(
        business_date,
        trigger,
        time_left_ms=context.get_remaining_time_in_millis,
        full_scan=bool(event.get("full_scan")),
    )
    if result.outcome is RunOutcome.CONTINUING:
        # The continuation keeps the run's own trigger, so the history says who started it.
        _invoke_async(
            context.function_name,
            {"business_date": business_date.isoformat(), "trigger": trigger, "full_scan": False},
        )
    summary = {"outcome": result.outcome.value, "run": run_dict(result.record) if result.record else None}
    if result.outcome is RunOutcome.FAILED:
        # Fail the invocation, so Lambda's own retries of an asynchronous invocation (the Scheduler's)
        # resume the run from its checkpoints; the record is FAILED with its lease released already.
        raise DpdRunFailedError(json.dumps(summary))
    return summary


class DpdRunFailedError(Exception):
    """The run for the date failed and is recorded FAILED; raised so the invocation is retried."""
