"""Payments under real concurrency (docs/rules.md): processes against DynamoDB Local."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import boto3
import pytest

from chalicelib import clock
from chalicelib.adapters.dynamodb.sharding import stored_values
from chalicelib.domain.audit import Actor
from chalicelib.domain.loan import Borrower
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.wiring import services
from tests.dynamodb_local.racing import race

pytestmark = pytest.mark.dynamodb_local

WORKERS = 8
ROUNDS = 6


def _loan(loan_id: str, principal_paise: int = 120_000_000) -> None:
    services().loans.create(
        RequestContext(actor=Actor("setup", "admin")),
        NewLoan(
            loan_id=loan_id,
            borrower=Borrower("Race Borrower", "9876543210"),
            principal_paise=principal_paise,
            disbursement_date=dt.date(2026, 6, 1),
            terms=GeneratedTerms(2400, 24, dt.date(2026, 7, 5)),
        ),
    )


def _payment(loan_id: str, utr: str, amount: int) -> dict[str, Any]:
    return {
        "loan_id": loan_id,
        "utr": utr,
        "amount_paise": amount,
        "payment_date": clock.today_ist().isoformat(),
        "mode": "UPI",
    }


def _count_items(stage: str, table: str, index: str, key: str, value: str, outcome: str | None = None) -> int:
    ddb = boto3.client("dynamodb")
    extra: dict[str, object] = {}
    if outcome is not None:
        extra = {"FilterExpression": "#o = :o"}
    resp = ddb.query(
        TableName=f"loan-crm-{stage}-{table}",
        IndexName=index,
        KeyConditionExpression="#k = :v",
        ExpressionAttributeNames={"#k": key, **({"#o": "outcome"} if outcome else {})},
        ExpressionAttributeValues={":v": {"S": value}, **({":o": {"S": outcome}} if outcome else {})},
        Select="COUNT",
        **extra,
    )
    return int(resp["Count"])


def _audit_count(stage: str, action: str, outcome: str) -> int:
    """Entries of ``action`` with ``outcome``, in every shard of the action."""
    return sum(_count_items(stage, "audit", "action-index", "action", v, outcome) for v in stored_values(action))


def test_one_utr_from_eight_processes_is_posted_exactly_once_every_round(local_stack: str) -> None:
    _loan("RACE-UTR")
    before = services().loans.loans.get("RACE-UTR")
    assert before is not None
    amount = 250_000
    calls = [
        [("post", "/api/v1/payments", _payment("RACE-UTR", f"UTRRACE{r:04d}", amount), {}) for r in range(ROUNDS)]
        for _ in range(WORKERS)
    ]
    per_worker = race(local_stack, calls)
    for r in range(ROUNDS):
        results = [worker[r] for worker in per_worker]
        statuses = Counter(status for status, _, _ in results)
        assert statuses == {201: 1, 409: WORKERS - 1}, (r, results)
        winner = next(body for status, body, _ in results if status == 201)
        for status, body, _ in results:
            if status == 409:
                assert body["error"]["code"] == "DUPLICATE_UTR"
                assert body["error"]["details"]["payment_id"] == winner["payment_id"]
    after = services().loans.loans.get("RACE-UTR")
    assert after is not None
    paid_before = sum(i.paid_paise for i in before.schedule)
    paid_after = sum(i.paid_paise for i in after.schedule)
    # The outstanding went down once per round, never once per request.
    assert paid_after - paid_before == amount * ROUNDS
    assert after.version == before.version + ROUNDS
    assert _count_items(local_stack, "payments", "loan-index", "loan_id", "RACE-UTR") == ROUNDS
    assert _audit_count(local_stack, "PAYMENT_POSTED", "SUCCESS") == ROUNDS
    # Every losing attempt is on the audit trail as a denied posting.
    denied = _audit_count(local_stack, "PAYMENT_POSTED", "DENIED")
    assert denied == ROUNDS * (WORKERS - 1)


def test_eight_distinct_payments_to_one_loan_all_land_and_totals_are_exact(local_stack: str) -> None:
    _loan("RACE-MANY")
    before = services().loans.loans.get("RACE-MANY")
    assert before is not None
    amounts = [100_000 + 12_345 * w for w in range(WORKERS)]
    rounds = 3
    calls = [
        [("post", "/api/v1/payments", _payment("RACE-MANY", f"UTRMANY{r}W{w}", amounts[w]), {}) for r in range(rounds)]
        for w in range(WORKERS)
    ]
    per_worker = race(local_stack, calls)
    bodies = [body for worker in per_worker for status, body, _ in worker if status == 201]
    assert len(bodies) == WORKERS * rounds, per_worker
    after = services().loans.loans.get("RACE-MANY")
    assert after is not None
    total = sum(amounts) * rounds
    assert sum(i.paid_paise for i in after.schedule) - sum(i.paid_paise for i in before.schedule) == total
    assert sum(b["allocation"]["interest_paise"] + b["allocation"]["principal_paise"] for b in bodies) == total
    paid_principal = sum(i.paid_principal_paise for i in after.schedule)
    assert after.outstanding_principal_paise == after.principal_paise - paid_principal
    assert after.version == before.version + WORKERS * rounds
    assert _count_items(local_stack, "payments", "loan-index", "loan_id", "RACE-MANY") == WORKERS * rounds
