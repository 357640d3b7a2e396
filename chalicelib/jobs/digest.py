"""The morning digest's Lambda entry point (docs/runbook/monitoring.md, "Daily").

EventBridge Scheduler invokes ``digest_job`` at 09:00 Asia/Kolkata with ``{"scheduled_time":
"<aws.scheduler.scheduled-time>"}``; the digest is about the IST day before the firing, whatever the
delivery delay, the same way the day-end job names its date. Ops may invoke it with ``{"business_date":
"YYYY-MM-DD"}`` to send a given day's digest again, or with ``{}`` for yesterday's.
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib import clock
from chalicelib.jobs.lambda_handlers import business_date_from_event
from chalicelib.wiring import services

bp = Blueprint(__name__)


@bp.lambda_function(name="digest_job")
def digest_job(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Publish the digest; a failure is raised (after ``DigestFailed``) so Lambda retries the invocation."""
    named = "business_date" in event or "scheduled_time" in event
    business_date = business_date_from_event(event) if named else clock.last_completed_business_date()
    return services().digest.send(business_date).as_dict()
