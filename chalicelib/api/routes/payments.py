"""Payment endpoints (docs/rules.md)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, created, endpoint
from chalicelib.api.operations import PAGING
from chalicelib.api.paging import page_params
from chalicelib.api.schemas import PaymentIn, ReverseIn
from chalicelib.domain.errors import (
    AlreadyReversed,
    AmountOutOfRange,
    Conflict,
    DuplicateUtr,
    LoanNotPayable,
    NotFound,
    Overpayment,
    PaymentDateInFuture,
    PaymentDateTooOld,
)
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


@endpoint(
    bp,
    "/api/v1/payments",
    methods=("POST",),
    roles=PAY_LOANS,
    summary="Record a payment against a loan",
    body=PaymentIn,
    answers={201: "PostedPaymentOut"},
    errors=(
        AmountOutOfRange,
        PaymentDateInFuture,
        PaymentDateTooOld,
        NotFound,
        LoanNotPayable,
        Overpayment,
        DuplicateUtr,
        Conflict,
    ),
    tag="payments",
    receipt_in_view=True,
)
def post_payment(call: Call) -> Response:
    """Checks, in order: the UTR (spaces trimmed, upper-cased, 6-35 of A-Z0-9: 400); the amount a JSON
    integer (400) of ₹1 to ₹1 crore (422 AMOUNT_OUT_OF_RANGE), except that exactly the loan's whole
    remaining unpaid amount is always accepted; the payment date not after today and not before today
    − 7 days, IST (422); the loan visible to the caller (404), ACTIVE (422 LOAN_NOT_PAYABLE) and owing at
    least the amount (422 OVERPAYMENT); the UTR never used before (409 DUPLICATE_UTR, with the original
    `payment_id`). The money goes to the oldest instalment first, interest before principal; the
    payment, its UTR claim, the loan and the audit entry are written together or not at all."""
    body = call.parse(PaymentIn)
    cmd = NewPayment(
        loan_id=body.loan_id,
        utr=body.utr,
        amount_paise=body.amount_paise,
        payment_date=body.payment_date,
        mode=body.mode,
    )
    receipt = call.receipt_for(lambda posted: created(posted_dict(posted)))
    result = services().payments.post(call.ctx, cmd, call.fingerprint, receipt)
    if result.replayed:
        return json_response(201, posted_dict(result), {"Idempotent-Replayed": "true"})
    return created(posted_dict(result))


@endpoint(
    bp,
    "/api/v1/payments/{payment_id}/reverse",
    methods=("POST",),
    roles=MANAGE_LOANS,
    summary="Reverse (bounce) a payment",
    body=ReverseIn,
    answers={200: "PostedPaymentOut"},
    errors=(AlreadyReversed, Conflict),
    tag="payments",
)
def reverse_payment(call: Call, payment_id: str) -> dict[str, Any]:
    """Afterwards the loan is exactly what it would be had the payment never been posted: the standing
    payments are re-allocated in order (payment date, then posting time) and a closed loan reopens. The
    payment keeps its UTR."""
    body = call.parse(ReverseIn)
    return posted_dict(services().payments.reverse(call.ctx, payment_id, body.reason))


@endpoint(
    bp,
    "/api/v1/payments/{payment_id}",
    summary="Read a payment",
    answers={200: "PaymentOut"},
    tag="payments",
)
def get_payment(call: Call, payment_id: str) -> dict[str, Any]:
    return payment_dict(services().payments.get(call.ctx, payment_id))


@endpoint(
    bp,
    "/api/v1/loans/{loan_id}/payments",
    summary="A loan's payments, reversed ones included",
    query=PAGING,
    answers={200: "PaymentPage"},
    tag="payments",
)
def list_loan_payments(call: Call, loan_id: str) -> dict[str, Any]:
    limit, cursor = page_params(call.query())
    page = services().payments.list_for_loan(call.ctx, loan_id, limit, cursor)
    return {"items": [payment_dict(p) for p in page.items], "next_cursor": page.next_cursor}
