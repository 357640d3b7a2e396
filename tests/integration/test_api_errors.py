"""Bad input, oversized bodies, unexpected failures and a dead database all end in the API's error
shape with the right status, and none of them changes anything."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from chalicelib import wiring
from chalicelib.config import settings
from chalicelib.services.loans import LoanService
from tests.integration.api_helpers import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    detail_fields,
    imported_body,
    loan_body,
)


def assert_nothing_stored(api: Api) -> None:
    assert api.get("/api/v1/loans").json["items"] == []
    assert api.audit() == []


def test_unparseable_bodies_are_400_naming_the_body(api: Api) -> None:
    loan_id = api.create_loan(loan_id="LN-E1")["loan_id"]
    stored = api.raw_loan(loan_id)
    bodies = {
        "malformed": '{"borrower": {"name": "Asha"',
        "trailing garbage": '{"notes": "x"} {}',
        "array": "[]",
        "array of object": json.dumps([{"notes": "x"}]),
        "string": '"hello"',
        "number": "42",
        "null": "null",
        "empty": "",
        "whitespace": "   ",
        "not utf-8": b'{"notes": "\xff\xfe"}',
    }
    # Readable but not acceptable: the details name where the bad number is. (On a PATCH a protected
    # name is the guard's, whatever its value: tests/integration/test_hostile_input.py.)
    non_finite = {
        "NaN": '{"notes": "x", "tenure_months": NaN}',
        "Infinity": '{"notes": "x", "tenure_months": Infinity}',
        "-Infinity": '{"notes": "x", "tenure_months": -Infinity}',
        "overflowing float": '{"notes": "x", "tenure_months": 1e400}',
    }
    targets = [
        ("POST", "/api/v1/loans"),
        ("PATCH", f"/api/v1/loans/{loan_id}"),
        ("POST", f"/api/v1/loans/{loan_id}/assign"),
        ("POST", "/api/v1/auth/token"),
    ]
    for method, path in targets:
        for name, raw in bodies.items():
            reply = api.request(method, path, raw=raw)
            details = assert_error(reply, 400, "VALIDATION_ERROR")
            assert detail_fields(details) == ["body"], (method, path, name, details)
        for name, raw in non_finite.items():
            reply = api.request(method, path, raw=raw)
            details = assert_error(reply, 400, "VALIDATION_ERROR")
            assert detail_fields(details) == ["tenure_months"], (method, path, name, details)
    assert api.raw_loan(loan_id) == stored
    assert [e["action"] for e in api.audit()] == ["LOAN_CREATED"]


def test_wrong_types_are_400_naming_the_field(api: Api) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (loan_body(principal_paise="10000000"), "principal_paise"),
        (loan_body(principal_paise=10000000.0), "principal_paise"),
        (loan_body(principal_paise=10000000.5), "principal_paise"),
        (loan_body(principal_paise=True), "principal_paise"),
        (loan_body(principal_paise=None), "principal_paise"),
        (loan_body(principal_paise=[1]), "principal_paise"),
        (loan_body(annual_rate_bps=1.0), "annual_rate_bps"),
        (loan_body(tenure_months=12.0), "tenure_months"),
        (loan_body(tenure_months="12"), "tenure_months"),
        (loan_body(borrower="Asha"), "borrower"),
        (loan_body(borrower=None), "borrower"),
        (loan_body(borrower={"name": "Asha", "phone": 9876543210}), "borrower.phone"),
        (loan_body(borrower={"name": ["Asha"], "phone": "9876543210"}), "borrower.name"),
        (loan_body(branch=5), "branch"),
        (loan_body(collector_id=False), "collector_id"),
        (loan_body(loan_id=17), "loan_id"),
        (imported_body([("2026-04-01", 1000, 0)], principal_paise=1000.0), "principal_paise"),
        (
            {**imported_body([("2026-04-01", 1000, 0)]), "schedule": [{**_row(), "interest_paise": 0.0}]},
            "schedule.0.interest_paise",
        ),
        ({**imported_body([("2026-04-01", 1000, 0)]), "schedule": [{**_row(), "principal_paise": "1000"}]}, ""),
        ({**imported_body([("2026-04-01", 1000, 0)]), "schedule": {"0": _row()}}, "schedule"),
    ]
    for body, field in cases:
        details = assert_error(api.post("/api/v1/loans", body), 400, "VALIDATION_ERROR")
        fields = detail_fields(details)
        assert (field or "schedule.0.principal_paise") in fields, (body, fields)
    assert_nothing_stored(api)


def _row() -> dict[str, Any]:
    return {"due_date": "2026-04-01", "principal_paise": 1000, "interest_paise": 0}


def test_missing_fields_are_400_naming_each(api: Api) -> None:
    body = loan_body()
    del body["principal_paise"], body["disbursement_date"]
    fields = detail_fields(assert_error(api.post("/api/v1/loans", body), 400, "VALIDATION_ERROR"))
    assert {"principal_paise", "disbursement_date"} <= set(fields)
    no_phone = loan_body(borrower={"name": "Asha"})
    assert "borrower.phone" in detail_fields(assert_error(api.post("/api/v1/loans", no_phone), 400, "VALIDATION_ERROR"))
    # Which kind of schedule a body asks for is a rule across fields: the detail is about the body,
    # and its message names the fields concerned.
    for missing in ("annual_rate_bps", "tenure_months", "first_due_date"):
        partial = loan_body()
        del partial[missing]
        (detail,) = assert_error(api.post("/api/v1/loans", partial), 400, "VALIDATION_ERROR")
        assert detail["field"] == "body" and missing in detail["message"], detail
    both = {**loan_body(), "schedule": [_row()]}
    (detail,) = assert_error(api.post("/api/v1/loans", both), 400, "VALIDATION_ERROR")
    assert "schedule" in detail["message"] and "tenure_months" in detail["message"], detail
    assert_nothing_stored(api)


def test_unknown_fields_are_400_naming_them(api: Api) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (loan_body(colour="blue"), "colour"),
        (loan_body(Borrower={"name": "x"}), "Borrower"),
        (loan_body(borrower={"name": "Asha", "phone": "9876543210", "age": 31}), "borrower.age"),
        (
            {**imported_body([("2026-04-01", 1000, 0)]), "schedule": [{**_row(), "penalty_rate": 2}]},
            "schedule.0.penalty_rate",
        ),
    ]
    for body, field in cases:
        fields = detail_fields(assert_error(api.post("/api/v1/loans", body), 400, "VALIDATION_ERROR"))
        assert field in fields, (body, fields)

    loan_id = api.create_loan()["loan_id"]
    stored = api.raw_loan(loan_id)
    for body, field in [
        ({"nickname": "A"}, "nickname"),
        ({"borrower": {"whatsapp": "9876543210"}}, "borrower.whatsapp"),
        ({"notes": "ok", "borrower": {"phone": "9123456789", "pan": "ABCDE1234F"}}, "borrower.pan"),
    ]:
        fields = detail_fields(assert_error(api.patch(f"/api/v1/loans/{loan_id}", body), 400, "VALIDATION_ERROR"))
        assert field in fields, (body, fields)
    fields = detail_fields(
        assert_error(
            api.post(f"/api/v1/loans/{loan_id}/assign", {"collector_id": "collector1", "force": True}),
            400,
            "VALIDATION_ERROR",
        )
    )
    assert fields == ["force"]
    assert api.raw_loan(loan_id) == stored  # the valid phone beside the unknown field was not applied


def test_bad_dates_are_400_naming_the_field(api: Api) -> None:
    for bad in ("2026-13-01", "01-02-2026", 20260101, "2026-02-30", "2026-1-5", "2026-03-01T00:00:00", "", 1.5):
        for field in ("disbursement_date", "first_due_date"):
            reply = api.post("/api/v1/loans", loan_body(**{field: bad}))
            fields = detail_fields(assert_error(reply, 400, "VALIDATION_ERROR"))
            assert field in fields, (field, bad, fields)
        body = {**imported_body([("2026-04-01", 1000, 0)]), "schedule": [{**_row(), "due_date": bad}]}
        fields = detail_fields(assert_error(api.post("/api/v1/loans", body), 400, "VALIDATION_ERROR"))
        assert "schedule.0.due_date" in fields, (bad, fields)
    assert_nothing_stored(api)


def test_oversized_body_is_413(api: Api) -> None:
    limit = settings().max_body_bytes
    loan_id = api.create_loan()["loan_id"]
    stored = api.raw_loan(loan_id)

    def padded(body: dict[str, Any], size: int) -> str:
        text = json.dumps(body)
        return text + " " * (size - len(text))

    for method, path, body in [
        ("POST", "/api/v1/loans", loan_body(loan_id="LN-BIG")),
        ("PATCH", f"/api/v1/loans/{loan_id}", {"notes": "big"}),
        ("POST", f"/api/v1/loans/{loan_id}/assign", {"collector_id": "collector2"}),
        ("POST", "/api/v1/auth/token", {"username": "admin1", "password": "x" * 10}),
    ]:
        details = assert_error(api.request(method, path, raw=padded(body, limit + 1)), 413, "PAYLOAD_TOO_LARGE")
        assert details == {"max_bytes": limit}
    assert api.raw_loan(loan_id) == stored
    assert api.raw_loan("LN-BIG") is None

    # Exactly at the limit is still accepted.
    reply = api.request("POST", "/api/v1/loans", raw=padded(loan_body(loan_id="LN-EDGE"), limit))
    assert reply.status == 201, reply.body


def test_unknown_query_parameters_are_400(api: Api) -> None:
    for path, name in [
        ("/api/v1/loans?colour=blue", "colour"),
        ("/api/v1/loans?status=ACTIVE&Bucket=CURRENT", "Bucket"),
        ("/api/v1/loans?page=2", "page"),
        ("/api/v1/audit?entity=LN1", "entity"),
        ("/api/v1/audit?user=admin1", "user"),
    ]:
        assert detail_fields(assert_error(api.get(path), 400, "VALIDATION_ERROR")) == [name], path


def test_a_query_parameter_on_a_write_route_is_400_and_nothing_runs(api: Api) -> None:
    """No write route takes query parameters: one sent is refused, not silently ignored (a run of the
    day-end job or of the reconciliation must not start on a request the client got wrong)."""
    for method, path, body in [
        ("POST", "/api/v1/reconciliation/runs?dry_run=1", {}),
        ("POST", "/api/v1/jobs/dpd/runs?business_date=2026-03-14", {}),
        ("POST", "/api/v1/loans?validate_only=true", {}),
        ("PATCH", "/api/v1/loans/LN-NONE?force=1", {"notes": "x"}),
    ]:
        assert detail_fields(assert_error(api.request(method, path, body=body), 400, "VALIDATION_ERROR")) != [], path
    assert_error(api.get("/api/v1/reconciliation/latest"), 404, "NOT_FOUND")
    assert api.get("/api/v1/jobs/dpd/runs").json == []


def test_bad_limit_is_400(api: Api) -> None:
    api.create_loan()
    for limit in ("0", "-1", "abc", "201", "1.5", "1e2", "", "%20", "+5", "%C2%B2", "%D9%A3", "99999999999999999999"):
        for path in ("/api/v1/loans", "/api/v1/audit"):
            reply = api.get(f"{path}?limit={limit}")
            assert detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")) == ["limit"], (path, limit)
    for limit in ("1", "200"):
        assert api.get(f"/api/v1/loans?limit={limit}").status == 200


def test_unexpected_exception_is_a_bare_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    loan_id = api.create_loan()["loan_id"]

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret-detail: connection string postgres://admin:hunter2@db")

    monkeypatch.setattr(LoanService, "get", explode)
    reply = api.get(f"/api/v1/loans/{loan_id}")
    details = assert_error(reply, 500, "INTERNAL_ERROR")
    request_id = reply.header("X-Request-Id")
    assert request_id and details == {"request_id": request_id}
    text = reply.body.decode()
    for leak in ("Traceback", "RuntimeError", "secret-detail", "hunter2", 'File "', "line "):
        assert leak not in text, leak


def test_dynamodb_unreachable_is_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    healthy = api.get("/health", as_=None)
    assert healthy.status == 200
    assert healthy.json == {
        "status": "ok",
        "checks": {"dynamodb": "ok", "ssm": "ok"},
        "version": settings().app_version,
        "stage": api.stage,
    }

    # Point DynamoDB at a local port nobody listens on (production timeouts and retries).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{port}")
    wiring.reset()

    for method, path, body, alias in [
        ("GET", "/api/v1/loans", None, "admin"),
        ("GET", "/api/v1/loans/LN-ANY", None, "collector"),
        ("POST", "/api/v1/loans", loan_body(), "manager"),
        ("PATCH", "/api/v1/loans/LN-ANY", {"notes": "x"}, "manager"),
        ("POST", "/api/v1/loans/LN-ANY/assign", {"collector_id": "collector1"}, "admin"),
        ("GET", "/api/v1/audit", None, "auditor"),
        ("POST", "/api/v1/auth/token", {"username": "admin1", "password": "whatever-it-is"}, None),
    ]:
        reply = api.request(method, path, alias, body=body)
        assert_error(reply, 503, "UNAVAILABLE")
        assert "127.0.0.1" not in reply.body.decode(), (method, path)  # no endpoint or exception text

    # Every authenticated request first checks that its user is still active (docs/auth.md, "Ending
    # tokens"); with the users table unreachable that cannot be known, so the API fails closed: 503,
    # never a refusal or an answer given to a user who may have been deactivated.
    assert_error(api.patch("/api/v1/loans/LN-ANY", {"dpd": 0}, as_="manager"), 503, "UNAVAILABLE")
    assert_error(api.post("/api/v1/loans", loan_body(), as_="collector"), 503, "UNAVAILABLE")

    health = api.get("/health", as_=None)
    assert health.status == 503
    assert health.json["status"] == "fail"
    assert health.json["checks"] == {"dynamodb": "fail", "ssm": "ok"}
