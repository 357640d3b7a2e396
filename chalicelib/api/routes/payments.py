"""Payment endpoints (SPEC §5)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, created, endpoint
from chalicelib.api.paging import page_params
from chalicelib.api.schemas import PaymentIn, ReverseIn
from chalicelib.domain.payment import Payment
from chalicelib.domain.roles import MANAGE_LOANS, PAY_LOANS
from chalicelib.services.payments import NewPayment, PostedPayment
from chalicelib.wiring import services

bp = Blueprint(__name__)


def payment_dict(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.payment_id,
        "utr": payment.utr,
        "loan_id": payment.loan_id,
        "amount_paise": payment.amount_paise,
        "payment_date": payment.payment_date.isoformat(),
        "mode": payment.mode.value,
        "status": payment.status.value,
        "allocation": {
            "interest_paise": payment.allocation.interest_paise,
            "principal_paise": payment.allocation.principal_paise,
            "instalments": [
                {"seq": line.seq, "interest_paise": line.interest_paise, "principal_paise": line.principal_paise}
                for line in payment.allocation.lines
            ],
        },
        "posted_at": payment.posted_at,
        "posted_by": payment.posted_by.sub,
        "reversed_at": payment.reversed_at,
        "reversed_by": payment.reversed_by.sub if payment.reversed_by else None,
        "reversal_reason": payment.reversal_reason,
    }


def posted_dict(result: PostedPayment) -> dict[str, Any]:
    loan = result.loan
    d = loan.delinquency
    return {
        **payment_dict(result.payment),
        "loan": {
            "outstanding_principal_paise": loan.outstanding_principal_paise,
            "overdue_paise": d.overdue_paise,
            "dpd": d.dpd,
            "bucket": d.bucket.value,
            "classification": d.classification.value,
            "status": loan.status.value,
        },
    }


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
