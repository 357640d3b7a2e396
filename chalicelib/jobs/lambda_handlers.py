"""Lambda entry points of the jobs (not behind API Gateway): each reads its event, calls its service and
answers with the result, as the HTTP routes do.

``dpd_job`` is invoked by EventBridge Scheduler at 00:30 Asia/Kolkata with ``{"scheduled_time":
"<aws.scheduler.scheduled-time>"}``, by ops with ``{"business_date": ...}``, by the API's manual run,
and by itself (``"continuation": true``) to continue a run that reached the time limit; outside AWS
Lambda the continuation runs in this process instead (docs/day-end.md, "Time budget and continuation").
Every 15 minutes the same function is invoked with ``{"check": "completed", ...}`` and only reports
whether the book is closed through the last date due by then (docs/day-end.md, "The watchdog"), so the
"did not complete by 06:00" alarm needs no clock-aware metric maths. On AWS, where the template sets up
the day-end state machine, the same function is also its segment worker (``{"step": "work", ...}``) and
its last step (``{"step": "settle", ...}``) (docs/day-end.md, "Fan-out").
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import AbstractContextManager
from typing import Any

from chalice.app import Blueprint

from chalicelib import clock
from chalicelib.adapters.lambda_dispatch import SETTLE_STEP, WORK_STEP, work_answer, work_item_from_event
from chalicelib.adapters.logging import app_logger, log_context
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.runs import RunOutcome, RunRequest
from chalicelib.services.budget import failure_message
from chalicelib.services.views import reconciliation_dict, run_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)
# The services write the step lines of each job (docs/logging.md) through the app's log handler, which
# this puts in place before any job runs.
app_logger()


def _invocation(job: str, context: Any) -> AbstractContextManager[None]:
    """Every line of the invocation names the job and Lambda's request id (Lambda's own START and
    REPORT lines carry it), so on-call can go from a step line to the invocation's duration and memory."""
    return log_context(job=job, aws_request_id=getattr(context, "aws_request_id", None))


def business_date_from_event(event: dict[str, Any]) -> dt.date:
    """``{"business_date": "YYYY-MM-DD"}`` for manual runs, or the Scheduler's
    ``{"scheduled_time": "<ISO UTC>"}``: the IST date of the firing minus one (00:30 IST on the 2nd
    closes the 1st), never the clock, so a late or repeated delivery names the same date."""
    if "business_date" in event:
        try:
            return dt.date.fromisoformat(str(event["business_date"]))
        except ValueError:
            raise ValidationFailed("business_date must be YYYY-MM-DD") from None
    fired = scheduled_at(event)
    if fired is not None:
        return fired.date() - dt.timedelta(days=1)
    raise ValidationFailed("the event names neither business_date nor scheduled_time")


def scheduled_at(event: dict[str, Any]) -> dt.datetime | None:
    """The Scheduler's firing instant in IST, or None for an event without one (ops, the API)."""
    if "scheduled_time" not in event:
        return None
    try:
        fired = dt.datetime.fromisoformat(str(event["scheduled_time"]).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed("scheduled_time must be an ISO-8601 timestamp") from None
    if fired.tzinfo is None:
        raise ValidationFailed("scheduled_time must carry its offset")
    return fired.astimezone(clock.IST)


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
    with _invocation("dpd_job", context):
        return _dpd_job(event, context)


def _dpd_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    day_end = services().dpd_job
    if event.get("step") == WORK_STEP:
        return _work(event, context)
    if event.get("step") == SETTLE_STEP:
        return _settle(event["execution"])
    business_date = business_date_from_event(event)
    if event.get("check") == "completed":
        # Without a firing time (ops asking by hand) the check is as of now.
        at = scheduled_at(event) or clock.now_ist()
        return {"business_date": business_date.isoformat(), "completed": day_end.check_completed(business_date, at)}
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


class SegmentFailedError(Exception):
    """A segment worker (the day-end's or the reconciliation's) failed; its message is safe for the run's
    history (``failure_message``). Raised so the state machine retries the worker, which carries its
    segments on from the checkpoints."""


def _work(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = work_item_from_event(event)
    try:
        outcome = services().dpd_job.work(item, context.get_remaining_time_in_millis)
    except Exception as exc:  # logged with its traceback by the service
        raise SegmentFailedError(failure_message(exc, item.run_id)) from exc
    return work_answer(item, outcome)


def worker_failure(failure: dict[str, Any] | None, run_id: str) -> str | None:
    """What the history says about a worker that failed after the state machine's retries: its own safe
    message, or the kind of error Step Functions saw (a timeout, a throttled invoke), never its cause."""
    if not failure:
        return None
    error = str(failure.get("Error") or "unknown")
    if error == SegmentFailedError.__name__:
        try:
            return str(json.loads(str(failure.get("Cause")))["errorMessage"])
        except (ValueError, KeyError, TypeError):
            pass
    return f"internal error (a segment worker failed: {error}); see the job's logs for run {run_id}"


def _settle(execution: dict[str, Any]) -> dict[str, Any]:
    business_date = dt.date.fromisoformat(str(execution["business_date"]))
    run_id = str(execution["run_id"])
    result = services().dpd_job.settle(business_date, run_id, worker_failure(execution.get("failure"), run_id))
    return {"outcome": result.outcome.value, "run": run_dict(result.record) if result.record else None}


@bp.lambda_function(name="reconciliation_job")
def reconciliation_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``{"run_id": ...}`` continues a run (the API's, the day-end's, or its own hand-over);
    ``{"trigger": ...}`` or ``{}`` (ops) starts one. Answers with the run as it stands. On AWS with its
    state machine, the function is also the segment worker (``{"step": "work", ...}``) and the last
    step (``{"step": "settle", ...}``) of a fanned-out run (docs/reconciliation.md, "Fan-out")."""
    with _invocation("reconciliation_job", context):
        reconciliation = services().reconciliation
        if event.get("step") == WORK_STEP:
            return _reconcile_segment(event, context)
        if event.get("step") == SETTLE_STEP:
            execution = event["execution"]
            settled = str(execution["run_id"])
            run = reconciliation.settle(settled, worker_failure(execution.get("failure"), settled))
            # Only what the state machine reads: the whole run carries up to 500 mismatches, which could
            # pass Step Functions' 256 KB limit on a state's output and fail the execution for it.
            return {"run_id": run.run_id, "status": run.status.value}
        run_id = event.get("run_id")
        if run_id:
            run = reconciliation.run_invocation(str(run_id), context.get_remaining_time_in_millis)
        else:
            trigger = str(event.get("trigger") or "manual")
            started = reconciliation.begin(trigger, clock.last_completed_business_date())
            run = reconciliation.run_invocation(started.run_id, context.get_remaining_time_in_millis)
        return reconciliation_dict(run)


def _reconcile_segment(event: dict[str, Any], context: Any) -> dict[str, Any]:
    run_id, segment = str(event["run_id"]), str(event["segment"])
    continuations = int(event.get("continuations") or 0)
    try:
        outcome = services().reconciliation.work(run_id, segment, continuations, context.get_remaining_time_in_millis)
    except Exception as exc:  # logged with its traceback by the service
        raise SegmentFailedError(failure_message(exc, run_id)) from exc
    return {**event, "continuations": continuations + 1, "outcome": outcome.value}


@bp.lambda_function(name="reminders_job")
def reminders_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The reminders sender: EventBridge Scheduler every 10 minutes inside the contact window, or ops with
    ``{}``. Sends what is due within the invocation's time; what is left waits for the next one (the
    work is idempotent, docs/reminders.md)."""
    with _invocation("reminders_job", context):
        return services().reminders.send_due(context.get_remaining_time_in_millis).as_dict()
