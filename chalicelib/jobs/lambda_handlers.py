"""Lambda entry points of the jobs (not behind API Gateway): each reads its event, calls its service and
answers with the result, as the HTTP routes do.

``dpd_job`` is invoked by EventBridge Scheduler at 00:30 Asia/Kolkata with ``{"scheduled_time":
"<aws.scheduler.scheduled-time>"}``, by ops with ``{"business_date": ...}``, by the API's manual run,
and by itself (``"continuation": true``) to continue a run that reached the time limit; outside AWS
Lambda the continuation runs in this process instead (docs/day-end.md, "Time budget and continuation").
At 06:00 IST the same function is invoked with ``{"check": "completed", ...}`` and only reports whether
the night's run completed, so the "did not complete by 06:00" alarm needs no clock-aware metric maths.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from chalice.app import Blueprint

from chalicelib import clock
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.runs import RunOutcome, RunRequest
from chalicelib.services.views import reconciliation_dict, run_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)


def business_date_from_event(event: dict[str, Any]) -> dt.date:
    """``{"business_date": "YYYY-MM-DD"}`` for manual runs, or the Scheduler's
    ``{"scheduled_time": "<ISO UTC>"}``: the IST date of the firing minus one (00:30 IST on the 2nd
    closes the 1st), never the clock, so a late or repeated delivery names the same date."""
    if "business_date" in event:
        try:
            return dt.date.fromisoformat(str(event["business_date"]))
        except ValueError:
            raise ValidationFailed("business_date must be YYYY-MM-DD") from None
    if "scheduled_time" in event:
        try:
            fired = dt.datetime.fromisoformat(str(event["scheduled_time"]).replace("Z", "+00:00"))
        except ValueError:
            raise ValidationFailed("scheduled_time must be an ISO-8601 timestamp") from None
        if fired.tzinfo is None:
            raise ValidationFailed("scheduled_time must carry its offset")
        return fired.astimezone(clock.IST).date() - dt.timedelta(days=1)
    raise ValidationFailed("the event names neither business_date nor scheduled_time")


def run_request_from_event(event: dict[str, Any], business_date: dt.date) -> RunRequest:
    """The event ``chalicelib.adapters.lambda_dispatch.job_event`` writes, or the Scheduler's, or ops'.
    Without a trigger, the Scheduler's event says ``scheduler`` and anything else ``manual``."""
    trigger = str(event.get("trigger") or ("scheduler" if "scheduled_time" in event else "manual"))
    return RunRequest(
        business_date,
        trigger,
        full_scan=bool(event.get("full_scan")),
        continuation=bool(event.get("continuation")),
    )


@bp.lambda_function(name="dpd_job")
def dpd_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    day_end = services().dpd_job
    business_date = business_date_from_event(event)
    if event.get("check") == "completed":
        return {"business_date": business_date.isoformat(), "completed": day_end.check_completed(business_date)}
    request = run_request_from_event(event, business_date)
    result = day_end.run_invocation(request, context.get_remaining_time_in_millis)
    summary = {"outcome": result.outcome.value, "run": run_dict(result.record) if result.record else None}
    if result.outcome is RunOutcome.FAILED:
        # Fail the invocation, so Lambda's own retries of an asynchronous invocation (the Scheduler's)
        # resume the run from its checkpoints; the record is FAILED with its lease released already.
        raise DpdRunFailedError(json.dumps(summary))
    return summary


class DpdRunFailedError(Exception):
    """The run for the date failed and is recorded FAILED; raised so the invocation is retried."""


@bp.lambda_function(name="reconciliation_job")
def reconciliation_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``{"run_id": ...}`` continues a run (the API's, the day-end's, or its own hand-over);
    ``{"trigger": ...}`` or ``{}`` (ops) starts one. Answers with the run as it stands."""
    reconciliation = services().reconciliation
    run_id = event.get("run_id")
    if run_id:
        run = reconciliation.run_invocation(str(run_id), context.get_remaining_time_in_millis)
    else:
        started = reconciliation.begin(str(event.get("trigger") or "manual"), clock.last_completed_business_date())
        run = reconciliation.run_invocation(started.run_id, context.get_remaining_time_in_millis)
    return reconciliation_dict(run)


@bp.lambda_function(name="reminders_job")
def reminders_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The reminders sender: EventBridge Scheduler every 10 minutes inside the contact window, or ops with
    ``{}``. Sends what is due within the invocation's time; what is left waits for the next one (the
    work is idempotent, docs/reminders.md)."""
    return services().reminders.send_due(context.get_remaining_time_in_millis).as_dict()
