"""A payment whose transaction commits but whose answer is lost (docs/rules.md, issue "fault test").

A botocore ``after-call`` hook fails the TransactWriteItems call after DynamoDB Local has committed it,
exactly what a network timeout on the way back looks like. The client retries; there must be exactly
one payment, and with the same Idempotency-Key the retry must get the original 201 back.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.session import Session
from chalice.test import Client

import app as app_module
from bench.dynamo import DynamoMeter, install_meter
from chalicelib import clock
from chalicelib.adapters.dynamodb.models import LoanModel, bind
from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.loan import Borrower
from chalicelib.domain.roles import Role
from chalicelib.services.auth import issue_token
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.wiring import services
from tests.dynamodb_local.faults import Fault, hooked

pytestmark = pytest.mark.dynamodb_local


class FailAfterCommit:
    """Raise once, after the k-th TransactWriteItems response has arrived (so after the commit)."""

    def __init__(self, error: Exception, on_call: int = 1) -> None:
        self.error = error
        self.on_call = on_call
        self.calls = 0

    def __call__(self, **_kwargs: Any) -> None:
        self.calls += 1
        if self.calls == self.on_call:
            raise self.error


@pytest.fixture
def api(local_stack: str, tmp_path: Any) -> Iterator[Client]:
    services().auth.add_user("manager1", "fault-test-manager-password", Role.MANAGER)  # tokens name a stored user
    services().loans.create(
        RequestContext(actor=Actor("setup", "admin")),
        NewLoan(
            loan_id="FAULT-1",
            borrower=Borrower("Fault Borrower", "9876543210"),
            principal_paise=10_000_000,
            disbursement_date=dt.date(2026, 6, 1),
            terms=GeneratedTerms(1800, 12, dt.date(2026, 7, 5)),
        ),
    )
    with Client(app_module.app, project_dir=str(tmp_path)) as client:
        yield client


def _headers(key: str | None) -> dict[str, str]:
    token = issue_token("manager1", "manager", "test-secret-that-is-long-enough-for-hs256-0123456789", 600)
    headers = {"Authorization": f"Bearer {token.access_token}", "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


def _post(client: Client, utr: str, key: str | None) -> Any:
    body = {
        "loan_id": "FAULT-1",
        "utr": utr,
        "amount_paise": 123_456,
        "payment_date": clock.today_ist().isoformat(),
        "mode": "NEFT",
    }
    return client.http.post("/api/v1/payments", headers=_headers(key), body=json.dumps(body))


def _install(hook: FailAfterCommit) -> None:
    events = LoanModel._get_connection().connection.client.meta.events
    events.register("after-call.dynamodb.TransactWriteItems", hook)


def _payments(client: Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        client.http.get("/api/v1/loans/FAULT-1/payments", headers=_headers(None)).body
    )["items"]
    return items


@pytest.mark.parametrize(
    ("error", "first_status"),
    [
        (ReadTimeoutError(endpoint_url="http://dynamodb"), 503),
        (RuntimeError("connection reset after commit"), 500),
    ],
)
def test_retry_with_same_key_after_lost_answer_gives_the_original_payment(
    api: Client, error: Exception, first_status: int
) -> None:
    _install(FailAfterCommit(error))
    first = _post(api, "UTRFAULT001", "retry-key-1")
    assert first.status_code == first_status
    stored = _payments(api)
    assert len(stored) == 1, "the transaction did commit"

    retry = _post(api, "UTRFAULT001", "retry-key-1")
    assert retry.status_code == 201
    assert retry.headers.get("Idempotent-Replayed") == "true"
    body = json.loads(retry.body)
    assert body["payment_id"] == stored[0]["payment_id"]
    assert body["amount_paise"] == 123_456

    # A third try is an ordinary idempotent replay now, and still one payment.
    again = _post(api, "UTRFAULT001", "retry-key-1")
    assert again.status_code == 201 and json.loads(again.body)["payment_id"] == stored[0]["payment_id"]
    assert len(_payments(api)) == 1
    loan = services().loans.loans.get("FAULT-1")
    assert loan is not None and sum(i.paid_paise for i in loan.schedule) == 123_456


def test_retry_without_key_is_a_duplicate_not_a_second_payment(api: Client) -> None:
    _install(FailAfterCommit(ReadTimeoutError(endpoint_url="http://dynamodb")))
    assert _post(api, "UTRFAULT002", None).status_code == 503
    retry = _post(api, "UTRFAULT002", None)
    assert retry.status_code == 409
    error = json.loads(retry.body)["error"]
    assert error["code"] == "DUPLICATE_UTR"
    assert error["details"]["payment_id"] == _payments(api)[0]["payment_id"]
    assert len(_payments(api)) == 1


@pytest.mark.parametrize("k", [1, 2, 3])
def test_failure_on_the_kth_write_never_double_counts(api: Client, k: int) -> None:
    """Payments 1..3 each retried until they succeed, with the k-th commit's answer lost."""
    _install(FailAfterCommit(ReadTimeoutError(endpoint_url="http://dynamodb"), on_call=k))
    for n in range(1, 4):
        for _attempt in range(3):
            response = _post(api, f"UTRKTH{k}N{n}", f"key-{k}-{n}")
            if response.status_code == 201:
                break
        assert response.status_code == 201
    assert len(_payments(api)) == 3
    loan = services().loans.loans.get("FAULT-1")
    assert loan is not None and sum(i.paid_paise for i in loan.schedule) == 3 * 123_456


# --- what a keyed payment costs (docs/api.md, "Idempotency-Key") -----------------------------------


@pytest.fixture
def meter(api: Client, monkeypatch: pytest.MonkeyPatch) -> DynamoMeter:
    """Every DynamoDB request from here on, counted (clients made afresh so the meter sees them)."""
    monkeypatch.setattr(Session, "create_client", Session.create_client)  # put back afterwards
    counting = DynamoMeter()
    install_meter(counting)
    bind(settings())
    # The caller's user record is read (and cached) by the first authenticated request: not the payment's.
    assert api.http.get("/api/v1/loans/FAULT-1", headers=_headers(None)).status_code == 200
    counting.reset("")
    return counting


def test_a_first_keyed_payment_is_one_read_and_one_transaction_and_its_replay_one_read(
    api: Client, meter: DynamoMeter
) -> None:
    first = _post(api, "UTRCOUNT001", "count-key-1")
    assert first.status_code == 201, first.body
    assert dict(meter.requests) == {"BatchGetItem": 1, "TransactWriteItems": 1}

    meter.reset("")
    again = _post(api, "UTRCOUNT001", "count-key-1")
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert json.loads(again.body) == json.loads(first.body)
    assert dict(meter.requests) == {"BatchGetItem": 1}


def test_an_answer_lost_after_the_commit_is_replayed_from_the_record_in_one_read(
    api: Client, meter: DynamoMeter
) -> None:
    lost = Fault(1, lambda: ReadTimeoutError(endpoint_url="http://dynamodb"))
    with hooked(LoanModel, "after-call.dynamodb.TransactWriteItems", lost):
        assert _post(api, "UTRCRASH001", "crash-key-1").status_code == 503
    assert lost.fired
    [stored] = _payments(api)

    meter.reset("")
    retry = _post(api, "UTRCRASH001", "crash-key-1")

    assert retry.status_code == 201, retry.body
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert json.loads(retry.body)["payment_id"] == stored["payment_id"]
    assert dict(meter.requests) == {"BatchGetItem": 1}
    assert len(_payments(api)) == 1
