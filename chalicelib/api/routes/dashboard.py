"""``GET /api/v1/dashboard/summary``: the book's, a collector's or a branch's figures (docs/dashboard.md)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import Call, endpoint
from chalicelib.api.operations import QueryParam
from chalicelib.api.schemas import IDENTIFIER_PATTERN
from chalicelib.domain.errors import Forbidden, ValidationFailed
from chalicelib.services.views import summary_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)


@endpoint(
    bp,
    "/api/v1/dashboard/summary",
    summary="Portfolio figures: the book's, one collector's or one branch's",
    query=(
        QueryParam(
            "collector_id", {"type": "string", "pattern": IDENTIFIER_PATTERN.pattern}, "One collector's portfolio."
        ),
        QueryParam("branch", {"type": "string", "minLength": 1, "maxLength": 200}, "One branch's portfolio."),
    ),
    answers={200: "SummaryOut"},
    errors=(Forbidden,),
    tag="dashboard",
)
def dashboard_summary(call: Call) -> dict[str, Any]:
    """Answered from maintained aggregates, never a scan. A collector sees only their own portfolio
    (403 for another's)."""
    params = call.query()
    collector_id = params.get("collector_id") or None
    if collector_id is not None and not IDENTIFIER_PATTERN.fullmatch(collector_id):
        raise ValidationFailed("unknown collector_id", [{"field": "collector_id", "message": "not a username"}])
    branch = params.get("branch") or None
    return summary_dict(services().dashboard.summary(call.ctx, collector_id, branch))
