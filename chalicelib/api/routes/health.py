"""``GET /health``: no auth, 503 when a dependency check fails so load balancers and the
post-deploy checklist see it."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, endpoint
from chalicelib.wiring import services

bp = Blueprint(__name__)


@endpoint(
    bp,
    "/health",
    authenticated=False,
    summary="Liveness and dependency checks (no auth)",
    answers={200: "HealthOut", 503: "HealthOut"},
    tag="health",
)
def health(call: Call) -> Response:
    """503, with the same body, when DynamoDB or SSM cannot be reached."""
    svc = services()
    checks = {
        "dynamodb": "ok" if svc.health.dynamodb() else "fail",
        "ssm": "ok" if svc.health.ssm() else "fail",
    }
    healthy = all(v == "ok" for v in checks.values())
    body = {
        "status": "ok" if healthy else "fail",
        "checks": checks,
        "version": svc.settings.app_version,
        "stage": svc.settings.stage,
    }
    return json_response(200 if healthy else 503, body)
