"""``Idempotency-Key`` on authenticated POSTs (docs/rules.md) through chalice.test.Client against moto."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import boto3
import pytest

from chalicelib.api.routes import payments as payment_routes
from chalicelib.domain.errors import Unavailable
from chalicelib.wiring import services
from tests.integration.api_helpers import (
    FROZEN_AT,
    Api,
    Reply,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    detail_fields,
    imported_body,
)

TODAY = (FROZEN_AT + dt.timedelta(hours=5, minutes=30)).date().isoformat()
ROWS = [("2026-02-05", 1_000_000, 100_000), ("2026-03-05", 1_000_000, 90_000), ("2026-04-05", 1_000_000, 80_000)]
OWED = sum(p + i for _, p, i in ROWS)
PAYMENTS = "/api/v1/payments"


def new_loan(api: Api, loan_id: str = "LN-IDEM") -> None:
    api.create_loan(imported_body(ROWS, loan_id=loan_id, collector_id="collector1"))


def payment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "loan_id": "LN-IDEM",
        "utr": "AXIS0000001",
        "amount_paise": 250_000,
        "payment_date": TODAY,
        "mode": "IMPS",
    }
    body.update(overrides)
    return body


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def stored_payments(api: Api) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = boto3.client("dynamodb").scan(
        TableName=f"loan-crm-{api.stage}-payments", ConsistentRead=True
    )["Items"]
    return items


def assert_replay(first: Reply, again: Reply) -> None:
    assert again.status == first.status, again.body
    assert again.json == first.json
    assert again.header("Idempotent-Replayed") == "true"
    assert first.header("Idempotent-Replayed") is None


def outstanding(api: Api, loan_id: str = "LN-IDEM") -> int:
    value: int = api.loan(loan_id)["outstanding_principal_paise"]
    return value


# --- replays ----------------------------------------------------------------------------------


def test_same_key_and_body_replays_the_first_answer_and_pays_once(api: Api) -> None:
    new_loan(api)
    first = api.post(PAYMENTS, payment(), headers=keyed("pay-1"))
    assert first.status == 201, first.body
    after_first = api.raw_loan("LN-IDEM")

    again = api.post(PAYMENTS, payment(), headers=keyed("pay-1"))
    # The same JSON with other whitespace and key order is the same request.
    reordered = json.dumps(dict(reversed(list(payment().items()))), indent=4).encode()
    third = api.post(PAYMENTS, raw=reordered, headers=keyed("pay-1"))

    assert_replay(first, again)
    assert_replay(first, third)
    assert api.raw_loan("LN-IDEM") == after_first
    assert len(stored_payments(api)) == 1
    assert outstanding(api) == 3_000_000 - 250_000 + 100_000  # 1,000 interest first, then 1,500 principal
    assert [e["action"] for e in api.audit(entity_id="LN-IDEM")] == ["PAYMENT_POSTED", "LOAN_CREATED"]


def test_same_key_with_another_body_or_endpoint_is_422_and_changes_nothing(api: Api) -> None:
    new_loan(api)
    first = api.post(PAYMENTS, payment(), headers=keyed("pay-2"))
    assert first.status == 201
    stored = api.raw_loan("LN-IDEM")

    details = assert_error(
        api.post(PAYMENTS, payment(amount_paise=250_001), headers=keyed("pay-2")), 422, "IDEMPOTENCY_KEY_REUSED"
    )
    assert details == {"idempotency_key": "pay-2"}
    assert_error(api.post(PAYMENTS, payment(utr="AXIS0000002"), headers=keyed("pay-2")), 422, "IDEMPOTENCY_KEY_REUSED")
    reverse = f"/api/v1/payments/{first.json['payment_id']}/reverse"
    assert_error(api.post(reverse, {"reason": "bounced"}, headers=keyed("pay-2")), 422, "IDEMPOTENCY_KEY_REUSED")
    assert_error(
        api.post("/api/v1/loans", imported_body(ROWS, loan_id="LN-NEW"), headers=keyed("pay-2")),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )

    assert api.raw_loan("LN-IDEM") == stored
    assert api.raw_loan("LN-NEW") is None
    assert len(stored_payments(api)) == 1
    # Still a replay of the original afterwards.
    assert_replay(first, api.post(PAYMENTS, payment(), headers=keyed("pay-2")))


def test_one_key_on_two_reversals_is_not_a_replay_of_the_other(api: Api) -> None:
    new_loan(api)
    ids = [api.post(PAYMENTS, payment(utr=f"AXIS000000{n}", amount_paise=100_000)).json["payment_id"] for n in (1, 2)]
    body = {"reason": "NACH return"}

    first = api.post(f"/api/v1/payments/{ids[0]}/reverse", body, as_="manager", headers=keyed("rev-1"))
    assert first.status == 200, first.body
    second = api.post(f"/api/v1/payments/{ids[1]}/reverse", body, as_="manager", headers=keyed("rev-1"))

    # Another payment is another request: answering with the first reversal would leave it POSTED.
    assert_error(second, 422, "IDEMPOTENCY_KEY_REUSED")
    assert api.get(f"/api/v1/payments/{ids[1]}").json["status"] == "POSTED"
    assert_replay(first, api.post(f"/api/v1/payments/{ids[0]}/reverse", body, as_="manager", headers=keyed("rev-1")))


def test_a_refusal_is_replayed_as_the_same_refusal(api: Api) -> None:
    new_loan(api)
    over = api.post(PAYMENTS, payment(amount_paise=OWED + 1), headers=keyed("over-1"))
    assert_error(over, 422, "OVERPAYMENT")
    assert_replay(over, api.post(PAYMENTS, payment(amount_paise=OWED + 1), headers=keyed("over-1")))

    # A date in the future today is fine tomorrow, but the key still answers what it answered.
    tomorrow = (dt.date.fromisoformat(TODAY) + dt.timedelta(days=1)).isoformat()
    future = api.post(PAYMENTS, payment(payment_date=tomorrow), headers=keyed("future-1"))
    assert_error(future, 422, "PAYMENT_DATE_IN_FUTURE")
    with api.at(FROZEN_AT + dt.timedelta(days=1)):
        assert_replay(future, api.post(PAYMENTS, payment(payment_date=tomorrow), headers=keyed("future-1")))
        assert api.post(PAYMENTS, payment(payment_date=tomorrow), headers=keyed("future-2")).status == 201
    assert len(stored_payments(api)) == 1


def test_a_replay_after_the_loan_closed_is_the_original_answer(api: Api) -> None:
    # The stored answer is replayed before any business rule: the loan this payment closed is not
    # payable any more, and the repeat must not be told LOAN_NOT_PAYABLE.
    new_loan(api)
    first = api.post(PAYMENTS, payment(amount_paise=OWED), headers=keyed("close-1"))
    assert first.status == 201, first.body
    assert first.json["loan"]["status"] == "CLOSED"

    assert_replay(first, api.post(PAYMENTS, payment(amount_paise=OWED), headers=keyed("close-1")))
    assert_error(api.post(PAYMENTS, payment(amount_paise=100_000, utr="AXIS0000002")), 422, "LOAN_NOT_PAYABLE")
    assert len(stored_payments(api)) == 1


def test_keys_are_per_caller(api: Api) -> None:
    new_loan(api)
    first = api.post(PAYMENTS, payment(), as_="manager", headers=keyed("shared-key"))
    assert first.status == 201

    other = api.post(PAYMENTS, payment(), as_="admin", headers=keyed("shared-key"))

    # Not a replay: the admin's request ran, and met the manager's UTR.
    details = assert_error(other, 409, "DUPLICATE_UTR")
    assert details["payment_id"] == first.json["payment_id"]
    assert other.header("Idempotent-Replayed") is None
    assert len(stored_payments(api)) == 1


def test_an_invalid_key_is_400_and_nothing_runs(api: Api) -> None:
    new_loan(api)
    for key in ["k" * 129, "has space", "semi;colon", "ключ", "tab\tkey", ""]:
        details = assert_error(api.post(PAYMENTS, payment(), headers=keyed(key)), 400, "VALIDATION_ERROR")
        assert detail_fields(details) == ["Idempotency-Key"], key
    assert stored_payments(api) == []
    # The longest valid key, with every allowed character class, is accepted.
    assert api.post(PAYMENTS, payment(), headers=keyed("aZ09_.:-" * 16)).status == 201


# --- in flight and failures -------------------------------------------------------------------


def _md5_json(value: Any) -> str:
    return hashlib.md5(json.dumps(value, sort_keys=True).encode()).hexdigest()


def test_a_key_whose_record_is_still_in_progress_is_409(api: Api) -> None:
    new_loan(api)
    ddb = boto3.client("dynamodb")
    table = f"loan-crm-{api.stage}-idempotency"
    first = api.post(PAYMENTS, payment(), as_="manager", headers=keyed("busy-1"))
    assert first.status == 201
    [record] = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    # One record per (caller, key), under a fixed prefix rather than the Lambda function's name.
    assert record["id"]["S"] == "loan-crm-api#" + _md5_json({"key": "busy-1", "sub": "manager1"})
    # Put the record back the way powertools keeps it while the first request is still running.
    ddb.put_item(
        TableName=table,
        Item={
            "id": record["id"],
            "validation": record["validation"],
            "status": {"S": "INPROGRESS"},
            "expiration": {"N": "4102444800"},  # 2100-01-01
            "in_progress_expiration": {"N": "4102444800000"},
        },
    )
    stored = api.raw_loan("LN-IDEM")

    retry = api.post(PAYMENTS, payment(), as_="manager", headers=keyed("busy-1"))

    assert assert_error(retry, 409, "REQUEST_IN_PROGRESS") == {"idempotency_key": "busy-1"}
    assert api.raw_loan("LN-IDEM") == stored
    assert len(stored_payments(api)) == 1
    # Another caller's key of the same name is not blocked.
    assert api.post(PAYMENTS, payment(utr="AXIS0000009"), as_="admin", headers=keyed("busy-1")).status == 201


def test_a_retry_that_arrives_while_the_first_is_running_is_409(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # A generic POST claims its key before it runs: a duplicate meanwhile is told to wait.
    body = imported_body(ROWS, loan_id="LN-RACE")
    original_create = services().loans.create
    inner: list[Reply] = []

    def create_while_a_retry_arrives(*args: Any, **kwargs: Any) -> Any:
        inner.append(api.post("/api/v1/loans", body, headers=keyed("race-0")))
        return original_create(*args, **kwargs)

    monkeypatch.setattr(services().loans, "create", create_while_a_retry_arrives)
    outer = api.post("/api/v1/loans", body, headers=keyed("race-0"))
    monkeypatch.undo()

    assert outer.status == 201, outer.body
    [retry] = inner
    assert_error(retry, 409, "REQUEST_IN_PROGRESS")
    assert_replay(outer, api.post("/api/v1/loans", body, headers=keyed("race-0")))


def test_a_payment_retry_that_commits_first_answers_both(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # A payment claims nothing before it runs (its record is written by its own transaction,
    # docs/api.md): a duplicate that commits while the first is in flight wins, and the first,
    # refused by the record's condition, answers with the duplicate's answer, replayed.
    new_loan(api)
    repository = services().payments.payments
    original_post = repository.post
    inner: list[Reply] = []
    started: list[int] = []

    def post_while_a_retry_arrives(*args: Any, **kwargs: Any) -> Any:
        if not started:  # the outer request's transaction; the duplicate's goes straight through
            started.append(1)
            inner.append(api.post(PAYMENTS, payment(), headers=keyed("race-1")))
        return original_post(*args, **kwargs)

    monkeypatch.setattr(repository, "post", post_while_a_retry_arrives)
    outer = api.post(PAYMENTS, payment(), headers=keyed("race-1"))
    monkeypatch.undo()

    [first] = inner
    assert first.status == 201, first.body
    assert_replay(first, outer)
    assert len(stored_payments(api)) == 1
    assert_replay(first, api.post(PAYMENTS, payment(), headers=keyed("race-1")))


def test_a_5xx_is_not_stored_and_a_retry_runs_again(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    new_loan(api)
    service = services().payments
    original_post = service.post
    calls: list[int] = []

    def fail_twice(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        if len(calls) == 2:
            raise Unavailable("the database is not answering")
        return original_post(*args, **kwargs)

    monkeypatch.setattr(service, "post", fail_twice)

    failed = api.post(PAYMENTS, payment(), headers=keyed("flaky-1"))
    assert failed.status == 500
    assert failed.json["error"]["code"] == "INTERNAL_ERROR"
    assert_error(api.post(PAYMENTS, payment(), headers=keyed("flaky-1")), 503, "UNAVAILABLE")
    assert stored_payments(api) == []

    retried = api.post(PAYMENTS, payment(), headers=keyed("flaky-1"))
    assert retried.status == 201, retried.body
    assert retried.header("Idempotent-Replayed") is None
    assert len(calls) == 3
    assert len(stored_payments(api)) == 1
    assert_replay(retried, api.post(PAYMENTS, payment(), headers=keyed("flaky-1")))
    # The replay is answered inside PaymentService.post (its one read, before any check), so the
    # wrapper sees a fourth call; no payment was posted by it.
    assert len(calls) == 4
    assert len(stored_payments(api)) == 1


def test_a_retry_after_a_committed_payment_lost_its_answer_replays_that_payment(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_loan(api)
    original = payment_routes.posted_dict
    calls: list[int] = []

    def lose_the_first_answer(result: Any) -> Any:
        # The 1st call renders the answer the transaction stores; the 2nd is the view's own answer,
        # after the commit.
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("connection reset after commit")
        return original(result)

    monkeypatch.setattr(payment_routes, "posted_dict", lose_the_first_answer)
    assert api.post(PAYMENTS, payment(), headers=keyed("lost-1")).status == 500
    [stored] = stored_payments(api)

    retried = api.post(PAYMENTS, payment(), headers=keyed("lost-1"))

    assert retried.status == 201, retried.body
    assert retried.json["payment_id"] == stored["payment_id"]["S"]
    assert retried.header("Idempotent-Replayed") == "true"
    assert len(stored_payments(api)) == 1
    assert outstanding(api) == 3_000_000 - 150_000
    # Without the key, the same UTR is the duplicate it is.
    assert_error(api.post(PAYMENTS, payment()), 409, "DUPLICATE_UTR")


def test_a_committed_payment_without_its_record_is_still_recognised_by_its_fingerprint(api: Api) -> None:
    # A payment committed before records were written with it (the old claim was deleted when the
    # request failed after the commit): the retry meets the UTR claim, and the fingerprint stored on
    # the payment makes it a replay, not DUPLICATE_UTR.
    new_loan(api)
    first = api.post(PAYMENTS, payment(), headers=keyed("legacy-1"))
    assert first.status == 201
    ddb = boto3.client("dynamodb")
    table = f"loan-crm-{api.stage}-idempotency"
    [record] = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    ddb.delete_item(TableName=table, Key={"id": record["id"]})

    retried = api.post(PAYMENTS, payment(), headers=keyed("legacy-1"))

    assert retried.status == 201, retried.body
    assert retried.json["payment_id"] == first.json["payment_id"]
    assert retried.header("Idempotent-Replayed") == "true"
    assert len(stored_payments(api)) == 1


def test_loan_creation_is_idempotent_too(api: Api) -> None:
    body = imported_body(ROWS, loan_id="LN-ONCE")
    first = api.post("/api/v1/loans", body, headers=keyed("loan-1"))
    assert first.status == 201, first.body

    assert_replay(first, api.post("/api/v1/loans", body, headers=keyed("loan-1")))
    assert [e["action"] for e in api.audit(entity_id="LN-ONCE")] == ["LOAN_CREATED"]
    # The same body without the key (or with another) is a new request, and the id is taken.
    assert_error(api.post("/api/v1/loans", body), 409, "LOAN_EXISTS")
    assert_error(api.post("/api/v1/loans", body, headers=keyed("loan-2")), 409, "LOAN_EXISTS")
