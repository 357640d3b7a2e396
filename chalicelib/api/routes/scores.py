"""``GET /api/v1/collectors/scores``: each collector's month, efficiency and score (docs/scoring.md)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import Call, endpoint
from chalicelib.api.operations import QueryParam
from chalicelib.domain.scoring import READ_SCORES
from chalicelib.services.scoring import score_row_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)


@endpoint(
    bp,
    "/api/v1/collectors/scores",
    roles=READ_SCORES,
    summary="Collector scores for a month",
    query=(
        QueryParam(
            "month", {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}$"}, "YYYY-MM (IST); this month when absent."
        ),
    ),
    answers={200: "ScoresOut"},
    tag="scores",
)
def collector_scores(call: Call) -> dict[str, Any]:
    """``?month=YYYY-MM`` (this IST month when absent). Admins and managers get every collector's row,
    a collector their own; with SCORING_ENABLED off the answer says ``enabled: false`` and lists none."""
    params = call.query()
    answer = services().scoring.month(call.ctx, params.get("month"))
    return {
        "month": answer.month,
        "enabled": answer.enabled,
        "as_of": answer.as_of,
        "frozen": answer.frozen,
        "items": [score_row_dict(row) for row in answer.rows],
    }
