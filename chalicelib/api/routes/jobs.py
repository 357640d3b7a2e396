"""Day-end job history and manual runs, legal escalations, and flags."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib import clock
from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, endpoint, query_date
from chalicelib.api.operations import LIMIT, PAGING, date_param
from chalicelib.api.paging import page_params
from chalicelib.api.schemas import RunDpdIn
from chalicelib.domain.roles import ADMIN_ONLY, READ_ALL, READ_FLAGS
from chalicelib.domain.runs import RunOutcome, RunRequest
from chalicelib.services.day_end import Dispatched
from chalicelib.services.views import case_dict, run_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)


@endpoint(
    bp,
    "/api/v1/jobs/dpd/runs",
    roles=READ_ALL,
    summary="Day-end run history, newest first",
    query=(LIMIT, date_param("before", "Only runs for earlier business dates")),
    answers={200: "RunList"},
    tag="jobs",
)
def list_runs(call: Call) -> list[dict[str, Any]]:
    """The history is a plain list, newest first. ``limit`` (default 50) bounds it;
    ``before=YYYY-MM-DD`` pages back: pass the oldest date of the previous answer."""
    params = call.query()
    limit, _ = page_params(params)
    before = query_date(params, "before")
    return [run_dict(r) for r in services().runs.history(limit, before)]


@endpoint(
    bp,
    "/api/v1/jobs/dpd/runs",
    methods=("POST",),
    roles=ADMIN_ONLY,
    summary="Run the day-end job for a business date",
    body=RunDpdIn,
    answers={200: "RunStartOut", 202: "RunStartOut"},
    tag="jobs",
)
def start_run(call: Call) -> Response:
    """`business_date` defaults to the last completed one (yesterday, IST). Exactly once per date: 200
    when the run has finished (COMPLETED, SKIPPED, ALREADY_COMPLETED), 202 while it continues
    (IN_PROGRESS, CONTINUING, FANNED_OUT) or when it was handed to the job's own function (DISPATCHED, on AWS; the
    history shows its progress)."""
    body = call.parse(RunDpdIn)
    business_date = body.business_date or clock.last_completed_business_date()
    request = RunRequest(business_date, trigger=f"manual:{call.ctx.actor.sub}", full_scan=body.full_scan)
    result = services().dpd_job.request_run(request)
    if isinstance(result, Dispatched):
        return json_response(202, {"outcome": "DISPATCHED", "run": run_dict(result.record) if result.record else None})
    status = 202 if result.outcome in (RunOutcome.IN_PROGRESS, RunOutcome.CONTINUING, RunOutcome.FANNED_OUT) else 200
    run = run_dict(result.record) if result.record else None
    return json_response(status, {"outcome": result.outcome.value, "run": run})


@endpoint(
    bp,
    "/api/v1/escalations",
    roles=READ_ALL,
    summary="Legal cases opened by escalation",
    query=PAGING,
    answers={200: "CasePage"},
    tag="jobs",
)
def list_escalations(call: Call) -> dict[str, Any]:
    limit, cursor = page_params(call.query())
    page = services().delinquency.cases(limit, cursor)
    return {"items": [case_dict(c) for c in page.items], "next_cursor": page.next_cursor}


@endpoint(
    bp,
    "/api/v1/flags",
    roles=READ_FLAGS,
    summary="Feature flags and kill switches as the app reads them",
    answers={200: "FlagsOut"},
    tag="jobs",
)
def list_flags(call: Call) -> dict[str, Any]:
    flags = services().flags
    return {
        "items": [
            {"name": f.name.value, "enabled": f.enabled, "source": f.source.value, "value": f.raw} for f in flags.all()
        ],
        "cache_seconds": flags.cache_seconds,
    }
