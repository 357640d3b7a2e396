"""Payment endpoints (docs/rules.md)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, created, endpoint
from chalicelib.api.paging import page_params
from chalicelib.api.schemas import PaymentIn, ReverseIn
from chalicelib.domain.roles import MANAGE_LOANS, PAY_LOANS
from chalicelib.services.payments import NewPayment, PostedPayment
from chalicelib.services.views import loan_money_dict, payment_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)

POSTED_LOAN_FIELDS = (
    "outstanding_principal_paise",
    "overdue_paise",
    "dpd",
    "bucket",
    "classification",
    "status",
)
"""The loan as docs/rules.md shows it after a payment."""


def posted_dict(result: PostedPayment) -> dict[str, Any]:
    money = loan_money_dict(result.loan)
    return {**payment_dict(result.payment), "loan": {key: money[key] for key in POSTED_LOAN_FIELDS}}


@endpoint(bp, "/api/v1/payments", methods=("POST",), roles=PAY_LOANS)
def post_payment(call: Call) -> Response:
    body = call.parse(PaymentIn)
    cmd = NewPayment(
        loan_id=body.loan_id,
        utr=body.utr,
        amount_paise=body.amount_paise,
        payment_date=body.payment_date,
        mode=body.mode,
    )
    result = services().payments.post(call.ctx, cmd, call.fingerprint)
    if result.replayed:
        return json_response(201, posted_dict(result), {"Idempotent-Replayed": "true"})
    return created(posted_dict(result))


@endpoint(bp, "/api/v1/payments/{payment_id}/reverse", methods=("POST",), roles=MANAGE_LOANS)
def reverse_payment(call: Call, payment_id: str) -> dict[str, Any]:
    body = call.parse(ReverseIn)
    return posted_dict(services().payments.reverse(call.ctx, payment_id, body.reason))


@endpoint(bp, "/api/v1/payments/{payment_id}")
def get_payment(call: Call, payment_id: str) -> dict[str, Any]:
    call.query(set())
    return payment_dict(services().payments.get(call.ctx, payment_id))


@endpoint(bp, "/api/v1/loans/{loan_id}/payments")
def list_loan_payments(call: Call, loan_id: str) -> dict[str, Any]:
    limit, cursor = page_params(call.query({"limit", "cursor"}))
    page = services().payments.list_for_loan(call.ctx, loan_id, limit, cursor)
    return {"items": [payment_dict(p) for p in page.items], "next_cursor": page.next_cursor}
