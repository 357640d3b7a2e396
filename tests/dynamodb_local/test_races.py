"""Races on the real engine, with processes (Chalice keeps the current request on the shared app object,
so threads would race on the test harness itself; moto is not linearizable, so DynamoDB Local it is)."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from typing import Any

import boto3
import pytest

from chalicelib.adapters.dynamodb.models import bind
from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.loan import Borrower
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.wiring import services
from tests.dynamodb_local.racing import race

pytestmark = pytest.mark.dynamodb_local

WORKERS = 8
ROUNDS = 5


def _race(stage: str, method: str, path: str, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    results = race(stage, [[(method, path, body, {})] for body in bodies])
    return [(status, body) for [(status, body, _headers)] in results]


def _loan_body(loan_id: str, name: str) -> dict[str, Any]:
    return {
        "loan_id": loan_id,
        "borrower": {"name": name, "phone": "9876543210"},
        "principal_paise": 50_000_000,
        "annual_rate_bps": 1800,
        "tenure_months": 24,
        "disbursement_date": "2026-10-01",
        "first_due_date": "2026-11-05",
    }


def _audit_count(stage: str, loan_id: str) -> int:
    ddb = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
    resp = ddb.query(
        TableName=f"loan-crm-{stage}-audit",
        IndexName="entity-index",
        KeyConditionExpression="entity_id = :e",
        ExpressionAttributeValues={":e": {"S": loan_id}},
        Select="COUNT",
    )
    return int(resp["Count"])


def test_concurrent_creates_of_one_loan_id_store_exactly_one(local_stack: str) -> None:
    for round_no in range(ROUNDS):
        loan_id = f"RACE-{round_no}"
        bodies = [_loan_body(loan_id, f"Borrower {w}") for w in range(WORKERS)]
        results = _race(local_stack, "post", "/api/v1/loans", bodies)
        statuses = Counter(status for status, _ in results)
        assert statuses == {201: 1, 409: WORKERS - 1}, results
        assert all(body["error"]["code"] == "LOAN_EXISTS" for status, body in results if status == 409)
        winner = next(body for status, body in results if status == 201)
        bind(settings())
        stored = services().loans.loans.get(loan_id)
        assert stored is not None and stored.borrower.name == winner["borrower"]["name"]
        assert stored.version == 1
        assert _audit_count(local_stack, loan_id) == 1


def test_concurrent_contact_updates_all_land_once_each(local_stack: str) -> None:
    ctx = RequestContext(actor=Actor("setup", "admin"))
    services().loans.create(
        ctx,
        NewLoan(
            loan_id="RACE-PATCH",
            borrower=Borrower("Original", "9876543210"),
            principal_paise=10_000_000,
            disbursement_date=dt.date(2026, 10, 1),
            terms=GeneratedTerms(1200, 12, dt.date(2026, 11, 5)),
        ),
    )
    # Four workers each write a distinct note, four a distinct address: every one is a real change.
    bodies = [{"notes": f"note {w}"} if w % 2 else {"borrower": {"address": f"addr {w}"}} for w in range(WORKERS)]
    results = _race(local_stack, "patch", "/api/v1/loans/RACE-PATCH", bodies)
    ok = [body for status, body in results if status == 200]
    conflicts = [body for status, body in results if status == 409]
    assert len(ok) + len(conflicts) == WORKERS, results
    assert all(b["error"]["code"] == "CONFLICT" for b in conflicts)
    stored = services().loans.loans.get("RACE-PATCH")
    assert stored is not None
    # Every successful write bumped the version exactly once and left exactly one audit entry.
    assert stored.version == 1 + len(ok)
    assert _audit_count(local_stack, "RACE-PATCH") == 1 + len(ok)
    # Nothing was lost between the two kinds of change: the last note and address both stuck.
    assert stored.notes is not None and stored.borrower.address is not None
