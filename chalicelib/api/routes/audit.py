"""``GET /api/v1/audit``: read-only; no route changes or deletes an entry."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from chalice.app import Blueprint

from chalicelib import clock
from chalicelib.api.http import Call, endpoint, query_date
from chalicelib.api.operations import PAGING, QueryParam, date_param
from chalicelib.api.paging import page_params
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.roles import READ_AUDIT
from chalicelib.services.ports import AuditFilter
from chalicelib.wiring import services

bp = Blueprint(__name__)

MAX_RANGE_DAYS = 366
"""``from``..``to`` may be at most this many days apart: a year, leap day included."""
MAX_FILTER_CHARS = 256
ACTION_PATTERN = re.compile(r"^[A-Z][A-Z_]{0,63}$")


def audit_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "audit_id": entry.audit_id,
        "at": entry.at,
        "actor": {"sub": entry.actor.sub, "role": entry.actor.role},
        "source_ip": entry.source_ip,
        "request_id": entry.request_id,
        "action": entry.action.value,
        "entity_type": entry.entity_type,
        "entity_id": entry.entity_id,
        "before": entry.before,
        "after": entry.after,
        "outcome": entry.outcome.value,
        "reason": entry.reason,
    }


def _filter(params: dict[str, str], name: str) -> str | None:
    value = params.get(name) or None
    if value is None:
        return None
    if len(value) > MAX_FILTER_CHARS or (name == "action" and not ACTION_PATTERN.fullmatch(value)):
        shape = "an action name (A-Z and _)" if name == "action" else f"at most {MAX_FILTER_CHARS} characters"
        raise ValidationFailed(f"invalid {name}", [{"field": name, "message": shape}])
    return value


def _day_range(params: dict[str, str]) -> tuple[dt.date | None, dt.date | None]:
    """``from`` and ``to`` as given, checked: in order, and at most a year apart (a missing ``to``
    means today, so ``from`` alone cannot reach back further either)."""
    first, last = query_date(params, "from"), query_date(params, "to")
    if first and last and first > last:
        raise ValidationFailed("from is after to", [{"field": "from", "message": "must not be after to"}])
    if first and ((last or clock.today_ist()) - first).days > MAX_RANGE_DAYS:
        raise ValidationFailed(
            "from and to are too far apart",
            [{"field": "from", "message": f"at most {MAX_RANGE_DAYS} days before to (or today)"}],
        )
    return first, last


AUDIT_QUERY = (
    QueryParam(
        "entity_id",
        {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_CHARS},
        "A loan id, payment id or username.",
    ),
    QueryParam(
        "actor",
        {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_CHARS},
        "Who acted: a username or `system:<job>`.",
    ),
    QueryParam("action", {"type": "string", "pattern": ACTION_PATTERN.pattern}, "An action name, e.g. PAYMENT_POSTED."),
    date_param("from", "First IST day included"),
    date_param("to", f"Last IST day included; at most {MAX_RANGE_DAYS} days after `from`"),
    *PAGING,
)


@endpoint(
    bp,
    "/api/v1/audit",
    roles=READ_AUDIT,
    summary="Read the audit trail, newest first",
    query=AUDIT_QUERY,
    answers={200: "AuditPage"},
    tag="audit",
)
def list_audit(call: Call) -> dict[str, Any]:
    """Append-only: no route changes or deletes an entry. Denied attempts are on it too."""
    params = call.query()
    limit, cursor = page_params(params)
    first, last = _day_range(params)
    filters = AuditFilter(
        entity_id=_filter(params, "entity_id"),
        actor=_filter(params, "actor"),
        action=_filter(params, "action"),
        from_day=first.isoformat() if first else None,
        to_day=last.isoformat() if last else None,
    )
    page = services().audit.list(filters, limit, cursor)
    return {"items": [audit_dict(e) for e in page.items], "next_cursor": page.next_cursor}
