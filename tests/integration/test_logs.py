"""The logs on-call reads and the day-end metrics the dashboard shows (docs/logging.md).

- every request the app answers is exactly one ``request`` line, refusals and 500s included;
- the jobs write a line per step (run started, each phase, run finished; a reconciliation, a scoring
  pass, a sending pass), never one per loan;
- a completed day-end run emits ``DayEndDuration``, ``LoansUpdated`` and ``LoansInBucket``, the 06:00
  check a ``DpdRunMissing`` point every time, a reconciliation one ``ReconciliationMismatch`` point;
- a whole session through the local API server and the jobs leaves no phone number, e-mail address,
  borrower name, password or token anywhere in what the processes printed.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.adapters.dynamodb.delinquency import DynamoDelinquencyStore
from chalicelib.adapters.logging import app_logger
from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.roles import Role
from chalicelib.jobs.lambda_handlers import DpdRunFailedError, dpd_job, reconciliation_job, reminders_job
from chalicelib.wiring import services
from tests.fakes import Measurement as Point
from tests.integration.api_helpers import (
    FROZEN_AT,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    emf_documents,
    imported_body,
    loan_body,
    local_server,
)
from tests.integration.test_reconciliation import plant_counter_drift

NIGHT_RUN = {"scheduled_time": "2026-03-14T19:00:00Z"}
"""00:30 IST on 15 March: the run for 14 March."""
AT_NIGHT = dt.datetime(2026, 3, 15, 0, 30, tzinfo=IST)
"""When the schedule makes that run: outside the contact window, so it sends no reminder itself."""
IN_THE_MORNING = dt.datetime(2026, 3, 15, 9, 0, tzinfo=IST)
MORNING_CHECK = {"check": "completed", "scheduled_time": "2026-03-15T00:30:00Z"}
OVERDUE_90_PLUS = [("2025-12-01", 50_000, 2_000), ("2026-06-01", 50_000, 2_000)]
"""dpd 104 on 14 March: bucket 90+, escalated by the run."""
OVERDUE_31_60 = [("2026-02-01", 50_000, 2_000), ("2026-06-01", 50_000, 2_000)]
"""dpd 42 on 14 March: bucket 31-60."""


class LambdaContext:
    aws_request_id = "lambda-req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


# --- reading what the app wrote -----------------------------------------------------------------------


@dataclass
class AppLog:
    """The app's log handler, writing into a buffer for one test."""

    buffer: io.StringIO

    def lines(self, message: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.buffer.getvalue().splitlines() if line.strip()]
        return [line for line in parsed if message is None or line["message"] == message]

    def clear(self) -> None:
        self.buffer.seek(0)
        self.buffer.truncate()


@pytest.fixture
def app_log() -> Iterator[AppLog]:
    handler = app_logger().registered_handler
    assert isinstance(handler, logging.StreamHandler)
    log = AppLog(io.StringIO())
    previous = handler.setStream(log.buffer)
    try:
        yield log
    finally:
        handler.setStream(previous)


def emf_points(stdout: str) -> list[Point]:
    """Every EMF data point printed (the value a number or a list of them, the dimensions top-level
    keys), in the shape the fake metrics record."""
    points: list[Point] = []
    for doc in emf_documents(stdout):
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            dimensions = {name: doc[name] for group in directive["Dimensions"] for name in group}
            for metric in directive["Metrics"]:
                values = doc[metric["Name"]]
                for value in values if isinstance(values, list) else [values]:
                    points.append(Point(metric["Name"], value, metric["Unit"], dimensions))
    return points


def named(points: list[Point], name: str) -> list[Point]:
    return [p for p in points if p.name == name]


# --- one line per request -----------------------------------------------------------------------------

REQUEST_FIELDS = {"request_id", "method", "route", "actor", "status", "outcome", "duration_ms"}


def request_line(app_log: AppLog, request_id: str | None) -> dict[str, Any]:
    """The one request line of ``request_id``; fails on none or more."""
    assert request_id
    [line] = [line for line in app_log.lines("request") if line["request_id"] == request_id]
    assert set(line) >= REQUEST_FIELDS, line
    assert line["level"] == "INFO" and line["service"] == "loan-crm"
    assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
    return line


def test_every_request_is_one_line_with_who_what_which_loan_and_how_it_ended(
    api: Api, app_log: AppLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    loan_id = api.create_loan()["loan_id"]
    app_log.clear()

    def line_of(reply: Any) -> dict[str, Any]:
        return request_line(app_log, reply.header("X-Request-Id"))

    read = line_of(api.get(f"/api/v1/loans/{loan_id}", as_="manager"))
    assert {k: read[k] for k in ("method", "route", "actor", "role", "loan_id", "status", "outcome")} == {
        "method": "GET",
        "route": "/api/v1/loans/{loan_id}",
        "actor": "manager1",
        "role": "manager",
        "loan_id": loan_id,
        "status": 200,
        "outcome": "ok",
    }

    payment = {"loan_id": loan_id, "utr": "UTRLOG0000001", "amount_paise": 10_000, "payment_date": "2026-03-15"}
    paid = api.post("/api/v1/payments", {**payment, "mode": "UPI"}, headers={"Idempotency-Key": "log-key-1"})
    assert paid.status == 201
    posted = line_of(paid)
    assert (posted["route"], posted["loan_id"], posted["status"], posted["outcome"]) == (
        "/api/v1/payments",
        loan_id,
        201,
        "ok",
    )
    replayed = line_of(
        api.post("/api/v1/payments", {**payment, "mode": "UPI"}, headers={"Idempotency-Key": "log-key-1"})
    )
    assert replayed["replayed"] is True and replayed["loan_id"] == loan_id
    assert line_of(api.post("/api/v1/payments", {**payment, "mode": "UPI"}))["outcome"] == "DUPLICATE_UTR"

    refusals = {
        "UNAUTHENTICATED": api.get("/api/v1/loans", as_=None),
        "FORBIDDEN": api.post("/api/v1/loans", loan_body(), as_="collector"),
        "NOT_FOUND": api.get("/api/v1/no/such/path"),
        "METHOD_NOT_ALLOWED": api.request("DELETE", "/api/v1/loans"),
        "UNSUPPORTED_MEDIA_TYPE": api.post("/api/v1/payments", raw="x", headers={"Content-Type": "text/plain"}),
        "VALIDATION_ERROR": api.post("/api/v1/payments", {"loan_id": loan_id}),
    }
    for code, reply in refusals.items():
        line = line_of(reply)
        assert (line["status"], line["outcome"]) == (reply.status, code), line
    assert line_of(refusals["UNAUTHENTICATED"])["actor"] == "anonymous"
    assert "role" not in line_of(refusals["UNAUTHENTICATED"])
    assert line_of(refusals["FORBIDDEN"])["actor"] == "collector1"
    assert line_of(refusals["NOT_FOUND"])["route"] == "unmatched"
    assert line_of(refusals["VALIDATION_ERROR"])["loan_id"] == loan_id

    def broken(*_args: Any) -> Any:
        raise RuntimeError("storage exploded for borrower 9876543210, asha@example.in")

    monkeypatch.setattr(services().payments.payments, "post", broken)
    failed = api.post("/api/v1/payments", {**payment, "utr": "UTRLOG0000002", "mode": "UPI"})
    assert failed.status == 500
    assert line_of(failed)["outcome"] == "INTERNAL_ERROR"
    [unhandled] = app_log.lines("unhandled error")
    assert unhandled["request_id"] == failed.header("X-Request-Id") and "RuntimeError" in unhandled["exception"]

    everything = app_log.buffer.getvalue()
    assert "9876543210" not in everything and "asha@example.in" not in everything
    assert len(app_log.lines("request")) == 4 + len(refusals) + 1  # one line per request, no more


# --- the jobs: a line per step -------------------------------------------------------------------------


def test_the_jobs_write_a_line_per_step_never_per_loan(api: Api, app_log: AppLog) -> None:
    loans = [
        api.create_loan(imported_body(OVERDUE_90_PLUS))["loan_id"],
        api.create_loan(imported_body(OVERDUE_31_60))["loan_id"],
        api.create_loan(first_due_date="2026-03-17")["loan_id"],  # owed PRE_DUE_3 by the run for 14 March
    ]
    app_log.clear()

    with use_clock(FixedClock(AT_NIGHT)):
        answer = dpd_job(NIGHT_RUN, LambdaContext())
    assert answer["outcome"] == "COMPLETED"
    day_end = [line for line in app_log.lines() if line["message"].startswith("day-end")]
    assert [line["message"] for line in day_end] == [
        "day-end run started",
        "day-end phase finished",  # loans (a first run scans the table)
        "day-end run finished",
    ]
    started, phase, finished = day_end
    run_id = started["run_id"]
    assert {line["run_id"] for line in day_end} == {run_id}
    assert all(line["business_date"] == "2026-03-14" for line in day_end)
    assert all((line["job"], line["aws_request_id"]) == ("dpd_job", "lambda-req-1") for line in day_end)
    assert (started["mode"], started["trigger"]) == ("scan", "scheduler")
    assert (phase["phase"], phase["loans_updated"], phase["escalations"]) == (
        "loans",
        answer["run"]["loans_updated"],
        1,
    )
    assert {k: finished[k] for k in ("outcome", "loans_updated", "escalations", "reminders_queued")} == {
        "outcome": "COMPLETED",
        "loans_updated": answer["run"]["loans_updated"],
        "escalations": 1,
        "reminders_queued": 1,
    }
    assert finished["duration_ms"] >= phase["duration_ms"] >= 0
    assert not any("loan_id" in line for line in day_end)
    assert not any(loan_id in json.dumps(line) for line in day_end for loan_id in loans)

    app_log.clear()
    assert dpd_job(NIGHT_RUN, LambdaContext())["outcome"] == "ALREADY_COMPLETED"
    [again] = app_log.lines()
    assert (again["message"], again["outcome"], again["run_id"]) == (
        "day-end run finished",
        "ALREADY_COMPLETED",
        run_id,
    )

    app_log.clear()
    report = reconciliation_job({}, LambdaContext())
    [reconciled] = app_log.lines("reconciliation run finished")
    assert (reconciled["run_id"], reconciled["outcome"], reconciled["mismatches"]) == (report["run_id"], "COMPLETED", 0)
    assert reconciled["loans_checked"] == 3 and reconciled["job"] == "reconciliation_job"
    [scored] = app_log.lines("scoring pass finished")
    assert (scored["run_id"], scored["outcome"]) == (report["run_id"], "COMPLETED") and scored["months_written"]

    app_log.clear()
    with use_clock(FixedClock(IN_THE_MORNING)):
        sent = reminders_job({}, LambdaContext())
    assert sent["sent"] == 1
    [sending] = app_log.lines("reminders sending pass")
    assert {k: sending[k] for k in ("sent", "failed", "outcome", "job")} == {
        "sent": 1,
        "failed": 0,
        "outcome": "DONE",
        "job": "reminders_job",
    }
    [one] = app_log.lines("reminder sent")
    assert one["phone"].endswith("3210") and "9876543210" not in json.dumps(one)


# --- the day-end metrics -------------------------------------------------------------------------------


def test_a_completed_run_reports_its_duration_the_loans_it_updated_and_the_book_by_bucket(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt fails (its scan is refused); the retry two minutes later completes the run, so
    its duration runs from the first start. ``LoansInBucket`` is the dashboard's own count."""
    api.create_loan(imported_body(OVERDUE_90_PLUS))
    api.create_loan(imported_body(OVERDUE_31_60))
    api.create_loan(first_due_date="2026-03-17")
    real = DynamoDelinquencyStore.scan_segment

    def refusing(*_args: Any) -> Any:
        raise RuntimeError("loans table unavailable")

    monkeypatch.setattr(DynamoDelinquencyStore, "scan_segment", refusing)
    with pytest.raises(DpdRunFailedError):
        dpd_job(NIGHT_RUN, LambdaContext())
    monkeypatch.setattr(DynamoDelinquencyStore, "scan_segment", real)
    capsys.readouterr()
    with use_clock(FixedClock(FROZEN_AT + dt.timedelta(minutes=2))):
        answer = dpd_job(NIGHT_RUN, LambdaContext())
    assert answer["outcome"] == "COMPLETED"
    points = emf_points(capsys.readouterr().out)

    service = {"service": "loan-crm"}
    run = answer["run"]
    took = dt.datetime.fromisoformat(run["finished_at"]) - dt.datetime.fromisoformat(run["started_at"])
    assert took >= dt.timedelta(minutes=1)  # from the failed attempt's start
    assert named(points, "DayEndDuration") == [Point("DayEndDuration", took.total_seconds(), "Seconds", service)]
    assert named(points, "LoansUpdated") == [Point("LoansUpdated", answer["run"]["loans_updated"], "Count", service)]
    buckets = {p.dimensions["bucket"]: p.value for p in named(points, "LoansInBucket")}
    assert buckets == {"CURRENT": 1, "1-30": 0, "31-60": 1, "61-90": 0, "90+": 1}
    assert all(p.unit == "Count" and set(p.dimensions) == {"service", "bucket"} for p in named(points, "LoansInBucket"))
    summary = api.get("/api/v1/dashboard/summary").json
    assert {bucket: figures["count"] for bucket, figures in summary["buckets"].items()} == buckets

    # The 06:00 check reports 0 after a completed night: a point every morning, so none at all is a miss.
    dpd_job(MORNING_CHECK, LambdaContext())
    assert named(emf_points(capsys.readouterr().out), "DpdRunMissing") == [Point("DpdRunMissing", 0, "Count", service)]


def test_a_reconciliation_counts_its_mismatches_in_one_data_point(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.create_loan(collector_id="collector1")
    assert reconciliation_job({}, LambdaContext())["mismatch_count"] == 0
    assert named(emf_points(capsys.readouterr().out), "ReconciliationMismatch") == []
    plant_counter_drift(api.stage, "book", "loans_total", 3)
    plant_counter_drift(api.stage, "collector:collector1", "loans_total", 1)
    assert reconciliation_job({}, LambdaContext())["mismatch_count"] == 2
    [point] = named(emf_points(capsys.readouterr().out), "ReconciliationMismatch")
    assert (point.value, point.unit) == (2, "Count")


# --- a whole session through the local API server: nothing personal or secret is printed ------------------

PASSWORD = "Tulsi-Garden-7731"
WRONG_PASSWORD = "Marigold-Lane-5518"
BORROWERS = [
    {"name": "Kavya Iyer", "phone": "+919123456789", "email": "kavya.iyer@example.org", "address": "12 MG Road, Pune"},
    {"name": "Farhan Qureshi", "phone": "9812345670", "email": "farhan.q@example.net", "address": "4 Park St, Kolkata"},
    {"name": "Lakshmi Menon", "phone": "07012345678", "email": "lmenon@example.com", "address": "9 Beach Rd, Kochi"},
]


@dataclass
class Http:
    base: str
    token: str | None = None

    def __call__(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read() or b"null")


@pytest.fixture
def served(moto_stack: str) -> Iterator[str]:
    """The local API server (what ``make run`` serves) on a free port, in this process."""
    with local_server() as url:
        yield url


def test_a_whole_local_session_prints_no_personal_data_password_or_token(
    served: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Log in with a password, create loans for three borrowers, post and replay payments, be refused,
    run the day-end job and the reconciliation, send the reminders; everything the process printed
    (the app's log lines, the EMF metrics, the server's own lines) is grepped afterwards."""
    handler = app_logger().registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(sys.stdout)  # where they go on Lambda; captured here with the rest
    requests = 0
    try:
        with use_clock(FixedClock(FROZEN_AT)):
            services().auth.add_user("ops-admin", PASSWORD, Role.ADMIN)
            services().auth.add_user("col-east", PASSWORD, Role.COLLECTOR)
            http = Http(served)
            assert http("POST", "/api/v1/auth/token", {"username": "ops-admin", "password": WRONG_PASSWORD})[0] == 401
            status, token = http("POST", "/api/v1/auth/token", {"username": "ops-admin", "password": PASSWORD})
            assert status == 200
            http.token = token["access_token"]
            _, collector = http("POST", "/api/v1/auth/token", {"username": "col-east", "password": PASSWORD})
            requests += 3

            schedules = [
                imported_body(OVERDUE_90_PLUS),
                imported_body(OVERDUE_31_60),
                loan_body(first_due_date="2026-03-17"),
            ]
            loan_ids = []
            for borrower, body in zip(BORROWERS, schedules, strict=True):
                status, loan = http("POST", "/api/v1/loans", {**body, "borrower": borrower, "collector_id": "col-east"})
                assert status == 201, loan
                loan_ids.append(loan["loan_id"])
                assert http("GET", f"/api/v1/loans/{loan['loan_id']}")[0] == 200
                requests += 2
            note = {"notes": f"call back on {BORROWERS[1]['phone']} or {BORROWERS[1]['email']}"}
            assert http("PATCH", f"/api/v1/loans/{loan_ids[1]}", note)[0] == 200
            new_phone = {"borrower": {"phone": "8899776655", "email": "farhan.new@example.net"}}
            assert http("PATCH", f"/api/v1/loans/{loan_ids[1]}", new_phone)[0] == 200
            requests += 2

            payment = {
                "loan_id": loan_ids[1],
                "utr": "UTRSESSION0001",
                "amount_paise": 20_000,
                "payment_date": "2026-03-15",
                "mode": "UPI",
            }
            key = {"Idempotency-Key": "session-pay-1"}
            assert http("POST", "/api/v1/payments", payment, key)[0] == 201
            assert http("POST", "/api/v1/payments", payment, key)[0] == 201  # replayed
            assert http("POST", "/api/v1/payments", payment)[0] == 409  # the UTR is taken
            as_collector = Http(served, collector["access_token"])
            assert (
                as_collector("PATCH", f"/api/v1/loans/{loan_ids[0]}", {"borrower": {"phone": "9000000001"}, "dpd": 0})[
                    0
                ]
                == 403
            )
            assert Http(served, "not-a-token")("GET", "/api/v1/loans")[0] == 401
            requests += 5

            status, run = http("POST", "/api/v1/jobs/dpd/runs", {"business_date": "2026-03-14"})
            assert (status, run["outcome"]) == (200, "COMPLETED"), run
            assert http("POST", "/api/v1/reconciliation/runs", {})[0] in (200, 201, 202)
            requests += 2
            # The run completed inside the contact window, so it sent the reminder it queued at once.
            assert reminders_job({}, LambdaContext())["sent"] == 0
            assert dpd_job(MORNING_CHECK, LambdaContext())["completed"] is True
    finally:
        handler.setStream(previous)
    printed = capfd.readouterr()
    everything = printed.out + printed.err

    app_lines = [json.loads(line) for line in printed.out.splitlines() if line.startswith('{"level"')]
    assert len([line for line in app_lines if line["message"] == "request"]) == requests  # the capture saw them
    assert any(line["message"] == "day-end run finished" for line in app_lines)
    assert "reminder sent" in everything and "_aws" in everything

    secrets = [PASSWORD, WRONG_PASSWORD, token["access_token"], collector["access_token"], "not-a-token"]
    personal = [
        *(b[field] for b in BORROWERS for field in ("name", "email", "address")),
        *(b["phone"][-10:] for b in BORROWERS),
        "8899776655",
        "farhan.new@example.net",
        "9000000001",
        *(part for b in BORROWERS for part in b["name"].split()),
    ]
    for value in secrets + personal:
        assert value not in everything, f"{value!r} was printed"
