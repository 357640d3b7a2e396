"""``GET /api/v1/audit`` (SPEC §8): read-only; no route changes or deletes an entry."""

from __future__ import annotations

import datetime as dt
from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import Call, endpoint
from chalicelib.api.paging import page_params
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.roles import READ_AUDIT
from chalicelib.services.ports import AuditFilter
from chalicelib.wiring import services

bp = Blueprint(__name__)


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


def _day(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValidationFailed(f"{name} must be a date", [{"field": name, "message": "YYYY-MM-DD (IST)"}]) from None


@endpoint(bp, "/api/v1/audit", roles=READ_AUDIT)
def list_audit(call: Call) -> dict[str, Any]:
    params = call.query({"entity_id", "actor", "action", "from", "to", "limit", "cursor"})
    limit, cursor = page_params(params)
    filters = AuditFilter(
        entity_id=params.get("entity_id") or None,
        actor=params.get("actor") or None,
        action=params.get("action") or None,
        from_day=_day(params, "from"),
        to_day=_day(params, "to"),
    )
    if filters.from_day and filters.to_day and filters.from_day > filters.to_day:
        raise ValidationFailed("from is after to", [{"field": "from", "message": "must not be after to"}])
    page = services().audit.list(filters, limit, cursor)
    return {"items": [audit_dict(e) for e in page.items], "next_cursor": page.next_cursor}
