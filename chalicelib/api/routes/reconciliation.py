"""Reconciliation runs on demand and the latest report (docs/reconciliation.md)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, endpoint
from chalicelib.api.schemas import StartReconciliationIn
from chalicelib.domain.errors import NotFound
from chalicelib.domain.reconciliation import ReconciliationStatus
from chalicelib.domain.roles import ADMIN_ONLY, READ_ALL
from chalicelib.services.views import reconciliation_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)


@endpoint(
    bp,
    "/api/v1/reconciliation/runs",
    methods=("POST",),
    roles=ADMIN_ONLY,
    summary="Check the ledger's invariants now",
    body=StartReconciliationIn,
    body_required=False,
    answers={200: "ReconciliationOut", 202: "ReconciliationOut"},
    tag="reconciliation",
)
def start_reconciliation(call: Call) -> Response:
    """Start a run. Where the job has its own function (AWS) it runs there: 202 with the run as it
    starts; anywhere else it runs here and answers 200 with the finished report."""
    if call.raw_body().strip():
        call.parse(StartReconciliationIn)
    run = services().reconciliation.start_as(call.ctx)
    status = 202 if run.status is ReconciliationStatus.RUNNING else 200
    return json_response(status, reconciliation_dict(run))


@endpoint(
    bp,
    "/api/v1/reconciliation/latest",
    roles=READ_ALL,
    summary="The latest finished reconciliation report",
    answers={200: "ReconciliationOut"},
    errors=(NotFound,),
    tag="reconciliation",
)
def latest_reconciliation(call: Call) -> dict[str, Any]:
    return reconciliation_dict(services().reconciliation.latest())
