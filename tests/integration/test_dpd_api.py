"""The day-end job through the API and its Lambda entry point (docs/day-end.md), against moto.

The clock stands at 12:00 IST on 15 Mar 2026 (api_helpers.FROZEN_AT), so the latest date that can run
is 14 Mar. Loans created then are shown as of 14 Mar; runs for later dates are made at a later instant
with ``api.at``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import boto3
import pytest

from chalicelib.clock import IST
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import bucket_for, dpd_on, overdue_paise
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.loan import ESCALATION_DPD, Loan
from chalicelib.domain.runs import MAX_CONTINUATIONS, RunStatus, Segment
from chalicelib.jobs.lambda_handlers import dpd_job
from chalicelib.services.context import RequestContext
from chalicelib.wiring import services
from local.demo import DEFAULT_SEED, demo_loan
from tests.integration.api_helpers import (
    YESTERDAY,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    emf_documents,
    emitted_metrics,
    imported_body,
    loan_body,
)

RUNS = "/api/v1/jobs/dpd/runs"
RUN_FIELDS: dict[str, Any] = {
    "business_date": str,
    "status": str,
    "trigger": str,
    "started_at": str,
    "finished_at": (str, type(None)),
    "loans_scanned": int,
    "loans_updated": int,
    "escalated": int,
    "pending_escalation": int,
    "errors": int,
}
LATER = dt.datetime(2026, 3, 25, 12, 0, tzinfo=IST)
"""Ten days on: the run for 24 Mar can be made."""
NEXT_DAY = dt.datetime(2026, 3, 16, 12, 0, tzinfo=IST)


class LambdaContext:
    function_name = "loan-crm-test-dpd_job"

    def __init__(self, remaining_ms: int = 850_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def set_flag(api: Api, name: str, value: str) -> None:
    boto3.client("ssm").put_parameter(
        Name=f"/loan-crm/{api.stage}/flags/{name}", Value=value, Type="String", Overwrite=True
    )


def run(api: Api, body: dict[str, Any] | None = None, as_: str = "admin") -> dict[str, Any]:
    reply = api.post(RUNS, {} if body is None else body, as_=as_)
    assert reply.status == 200, (reply.status, reply.body[:500])
    result: dict[str, Any] = reply.json
    return result


def history(api: Api, as_: str = "admin", **params: str) -> list[dict[str, Any]]:
    """Every run record, paging back with ``before`` (the history is a plain list)."""
    items: list[dict[str, Any]] = []
    before = None
    while True:
        query = dict(params, **({"before": before} if before else {}))
        reply = api.get(RUNS + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""), as_=as_)
        assert reply.status == 200, (reply.status, reply.body[:500])
        assert isinstance(reply.json, list)
        if not reply.json:
            return items
        items += reply.json
        before = reply.json[-1]["business_date"]


# --- POST /api/v1/jobs/dpd/runs ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["manager", "collector", "auditor"])
def test_only_an_admin_may_run_the_job(api: Api, role: str) -> None:
    assert_error(api.post(RUNS, {"business_date": YESTERDAY}, as_=role), 403, "FORBIDDEN")
    assert_error(api.post(RUNS, {"business_date": YESTERDAY}, as_=None), 401, "UNAUTHENTICATED")
    assert history(api) == []


def test_the_default_date_is_yesterday_ist_and_a_completed_date_runs_once(api: Api) -> None:
    loan = api.create_loan(imported_body([("2025-12-01", 50_000, 2_000), ("2026-06-01", 50_000, 2_000)]))
    first = run(api)
    assert first["outcome"] == "COMPLETED"
    assert first["run"]["business_date"] == YESTERDAY
    assert first["run"]["status"] == "COMPLETED"
    assert first["run"]["trigger"] == "manual:admin1"
    assert first["run"]["escalated"] == 1
    stored = api.raw_loan(loan["loan_id"])
    assert stored is not None

    second = run(api, {"business_date": YESTERDAY})
    assert second["outcome"] == "ALREADY_COMPLETED"
    assert second["run"]["status"] == "COMPLETED"
    assert second["run"]["escalated"] == 1
    assert api.raw_loan(loan["loan_id"]) == stored
    assert len(api.get("/api/v1/escalations").json["items"]) == 1
    assert len(history(api)) == 1


@pytest.mark.parametrize("date", ["2026-03-15", "2026-03-16", "2027-01-01"])
def test_today_or_a_future_date_is_refused(api: Api, date: str) -> None:
    assert_error(api.post(RUNS, {"business_date": date}), 400, "VALIDATION_ERROR")
    assert history(api) == []


@pytest.mark.parametrize("body", [{"business_date": "14-03-2026"}, {"business_date": 20260314}, {"date": "2026-03-14"}])
def test_a_malformed_body_is_refused(api: Api, body: dict[str, Any]) -> None:
    assert_error(api.post(RUNS, body), 400, "VALIDATION_ERROR")
    assert history(api) == []


# --- GET /api/v1/jobs/dpd/runs -----------------------------------------------------------------


def test_history_newest_first_with_the_spec_fields_and_cursor_paging(api: Api) -> None:
    api.create_loan(loan_body())
    assert run(api, {"business_date": "2026-03-12"})["outcome"] == "COMPLETED"
    set_flag(api, "CRON_ENABLED", "false")
    skipped = run(api, {"business_date": "2026-03-13"})
    assert skipped["outcome"] == "SKIPPED"
    set_flag(api, "CRON_ENABLED", "true")
    assert run(api, {"business_date": "2026-03-14"})["outcome"] == "COMPLETED"
    assert run(api, {"business_date": "2026-03-10"})["outcome"] == "COMPLETED"

    items = history(api)
    assert [i["business_date"] for i in items] == ["2026-03-14", "2026-03-13", "2026-03-12", "2026-03-10"]
    assert [i["status"] for i in items] == ["COMPLETED", "SKIPPED", "COMPLETED", "COMPLETED"]
    for item in items:
        for name, kind in RUN_FIELDS.items():
            assert name in item, name
            assert isinstance(item[name], kind) and not isinstance(item[name], bool), (name, item[name])
        dt.datetime.fromisoformat(item["started_at"])
        assert item["finished_at"] is not None and item["finished_at"] >= item["started_at"]
        assert item["errors"] == 0
        assert item["trigger"] == "manual:admin1"
    assert items[1]["loans_scanned"] == 0  # skipped: nothing read, nothing changed
    assert items[2]["loans_scanned"] == 1  # the first completed run reads the whole (one-loan) book

    page1 = api.get(RUNS + "?limit=3")
    assert page1.status == 200
    assert [i["business_date"] for i in page1.json] == ["2026-03-14", "2026-03-13", "2026-03-12"]
    page2 = api.get(RUNS + "?limit=3&before=2026-03-12")
    assert [i["business_date"] for i in page2.json] == ["2026-03-10"]
    assert history(api, limit="1") == items
    assert_error(api.get(RUNS + "?before=yesterday"), 400, "VALIDATION_ERROR")
    assert_error(api.get(RUNS + "?limit=0"), 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(("role", "status"), [("manager", 200), ("auditor", 200), ("collector", 403)])
def test_who_may_read_the_history_and_escalations(api: Api, role: str, status: int) -> None:
    run(api)
    for path in (RUNS, "/api/v1/escalations"):
        reply = api.get(path, as_=role)
        assert reply.status == status, (path, reply.body[:300])
        if status == 403:
            assert_error(reply, 403, "FORBIDDEN")
    if status == 200:
        assert [i["business_date"] for i in api.get(RUNS, as_=role).json] == [YESTERDAY]


# --- what a run does to loans --------------------------------------------------------------------


def test_after_a_run_loans_show_the_run_date_and_the_escalated_loan_has_a_legal_case(api: Api) -> None:
    current = api.create_loan(loan_body())  # first due 5 Apr: nothing due
    sma = api.create_loan(imported_body([("2026-02-10", 50_000, 2_000), ("2026-05-10", 50_000, 2_000)]))
    npa = api.create_loan(
        imported_body(
            [("2025-12-01", 50_000, 2_000), ("2026-01-01", 50_000, 2_000), ("2026-06-01", 50_000, 2_000)],
            branch="Pune-1",
        )
    )
    assert (sma["dpd"], sma["bucket"], sma["dpd_as_of"]) == (33, "31-60", YESTERDAY)
    assert (npa["dpd"], npa["classification"], npa["npa_since"]) == (104, "NPA", "2026-03-01")
    assert npa["legal"] == {"escalated": False, "escalated_on": None}

    with api.at(LATER):
        result = run(api, {"business_date": "2026-03-24"})
        assert result["outcome"] == "COMPLETED"
        assert (result["run"]["escalated"], result["run"]["pending_escalation"]) == (1, 0)

        shown = {
            "current": api.loan(current["loan_id"]),
            "sma": api.loan(sma["loan_id"]),
            "npa": api.loan(npa["loan_id"]),
        }
        expected = {
            "current": (0, "CURRENT", "STANDARD", None),
            "sma": (43, "31-60", "SMA-1", None),
            "npa": (114, "90+", "NPA", "2026-03-01"),
        }
        for name, (dpd, bucket, classification, npa_since) in expected.items():
            loan = shown[name]
            assert (loan["dpd"], loan["bucket"], loan["classification"], loan["npa_since"]) == (
                dpd,
                bucket,
                classification,
                npa_since,
            ), name
            assert loan["dpd_as_of"] == "2026-03-24", name
        assert shown["npa"]["legal"] == {"escalated": True, "escalated_on": "2026-03-24"}
        assert shown["npa"]["overdue_paise"] == 104_000
        assert shown["sma"]["overdue_paise"] == 52_000

        # The SMA and current loans did not change bucket: the run did not write them; they are shown
        # derived for the run's date. The escalated loan was written.
        for name, loan_id in (("sma", sma["loan_id"]), ("current", current["loan_id"])):
            raw = api.raw_loan(loan_id)
            assert raw is not None and raw["dpd_as_of"]["S"] == YESTERDAY, name
        raw_npa = api.raw_loan(npa["loan_id"])
        assert raw_npa is not None and raw_npa["dpd_as_of"]["S"] == "2026-03-24"

        listed = {i["loan_id"]: i for i in api.get("/api/v1/loans?limit=10").json["items"]}
        assert listed[sma["loan_id"]]["dpd"] == 43 and listed[sma["loan_id"]]["dpd_as_of"] == "2026-03-24"

        cases = api.get("/api/v1/escalations").json
        assert cases["next_cursor"] is None
        assert len(cases["items"]) == 1
        case = cases["items"][0]
        assert case["loan_id"] == npa["loan_id"]
        assert (case["escalated_on"], case["dpd"], case["status"]) == ("2026-03-24", 114, "OPEN")
        assert (case["overdue_paise"], case["outstanding_principal_paise"]) == (104_000, 150_000)
        assert case["branch"] == "Pune-1"

        audits = api.audit(entity_id=npa["loan_id"], action="LEGAL_ESCALATED")
        assert len(audits) == 1
        assert audits[0]["actor"]["sub"] == "system:dpd_job"
        assert (audits[0]["entity_type"], audits[0]["entity_id"]) == ("loan", npa["loan_id"])
        assert audits[0]["after"]["case_id"] == case["case_id"]

        # A second run of the date changes nothing and escalates nothing again.
        assert run(api, {"business_date": "2026-03-24"})["outcome"] == "ALREADY_COMPLETED"
        assert len(api.get("/api/v1/escalations").json["items"]) == 1


def test_escalation_switched_off_counts_the_loan_as_pending(api: Api) -> None:
    npa = api.create_loan(imported_body([("2025-12-01", 50_000, 2_000), ("2026-06-01", 50_000, 2_000)]))
    set_flag(api, "ESCALATION_ENABLED", "false")
    off = run(api)
    assert (off["run"]["escalated"], off["run"]["pending_escalation"]) == (0, 1)
    assert api.get("/api/v1/escalations").json["items"] == []
    assert api.loan(npa["loan_id"])["legal"]["escalated"] is False
    set_flag(api, "ESCALATION_ENABLED", "true")
    with api.at(NEXT_DAY):
        on = run(api)
        assert on["run"]["business_date"] == "2026-03-15"
        assert on["run"]["mode"] == "watch"
        assert (on["run"]["escalated"], on["run"]["pending_escalation"]) == (1, 0)
        assert api.loan(npa["loan_id"])["legal"] == {"escalated": True, "escalated_on": "2026-03-15"}


# --- the Lambda entry point ----------------------------------------------------------------------


def test_the_scheduler_event_runs_the_date_before_the_firing_in_ist(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    api.create_loan(imported_body([("2025-12-01", 50_000, 2_000), ("2026-06-01", 50_000, 2_000)]))
    capsys.readouterr()
    # 00:30 IST on 15 Mar (19:00 UTC on the 14th) closes 14 Mar.
    answer = dpd_job({"scheduled_time": "2026-03-14T19:00:00Z"}, LambdaContext())
    assert answer["outcome"] == "COMPLETED"
    assert answer["run"]["business_date"] == "2026-03-14"
    assert answer["run"]["trigger"] == "scheduler"
    assert answer["run"]["escalated"] == 1
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics.count("DpdRunSucceeded") == 1
    assert metrics.count("LoansEscalated") == 1
    assert [i["business_date"] for i in history(api)] == ["2026-03-14"]

    # A late or repeated delivery of the same firing names the same date.
    again = dpd_job({"scheduled_time": "2026-03-15T00:30:00+05:30"}, LambdaContext())
    assert again["outcome"] == "ALREADY_COMPLETED"


def test_the_scheduler_cannot_run_a_date_that_has_not_ended(api: Api) -> None:
    # Fired at 00:30 IST on 16 Mar: names 15 Mar, which is today at the frozen clock.
    with pytest.raises(ValidationFailed, match="has not ended"):
        dpd_job({"scheduled_time": "2026-03-15T19:00:00Z"}, LambdaContext())
    assert history(api) == []


def dpd_run_missing(stdout: str) -> list[float]:
    """The value of every ``DpdRunMissing`` data point printed (EMF gives a number or a list of them)."""
    points: list[float] = []
    for doc in emf_documents(stdout):
        if "DpdRunMissing" in doc:
            value = doc["DpdRunMissing"]
            points += value if isinstance(value, list) else [value]
    return points


def test_the_watchdog_reports_whether_the_night_run_completed(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    """Every check emits a data point: 1 when the run is due (06:00 IST) and missing, 0 otherwise, so the
    alarm can take no data at all (a check that stopped running) as a miss too."""
    watchdog = {"check": "completed", "scheduled_time": "2026-03-15T00:30:00Z"}  # 06:00 IST on 15 Mar
    after_midnight = {"check": "completed", "scheduled_time": "2026-03-15T19:00:00Z"}  # 00:30 IST 16 Mar
    capsys.readouterr()
    # 05:45 IST on 15 Mar: the run for the 14th is not due yet, but no run ever completed, so the 13th
    # (due yesterday) is missing.
    early = {"check": "completed", "scheduled_time": "2026-03-15T00:15:00Z"}
    assert dpd_job(early, LambdaContext()) == {"business_date": "2026-03-14", "completed": False}
    assert dpd_run_missing(capsys.readouterr().out) == [1]
    assert dpd_job(watchdog, LambdaContext()) == {"business_date": "2026-03-14", "completed": False}
    assert dpd_run_missing(capsys.readouterr().out) == [1]
    assert history(api) == []  # the check runs nothing

    set_flag(api, "CRON_ENABLED", "false")
    assert dpd_job({"scheduled_time": "2026-03-14T19:00:00Z"}, LambdaContext())["outcome"] == "SKIPPED"
    capsys.readouterr()
    assert dpd_job(watchdog, LambdaContext())["completed"] is False  # skipped is not completed
    assert dpd_run_missing(capsys.readouterr().out) == [1]
    # Past midnight the 14th is still missing: the alarm must not clear because the date moved on.
    assert dpd_job(after_midnight, LambdaContext())["business_date"] == "2026-03-15"
    assert dpd_run_missing(capsys.readouterr().out) == [1]

    set_flag(api, "CRON_ENABLED", "true")
    assert dpd_job({"business_date": "2026-03-14"}, LambdaContext())["outcome"] == "COMPLETED"
    capsys.readouterr()
    assert dpd_job(watchdog, LambdaContext()) == {"business_date": "2026-03-14", "completed": True}
    assert dpd_run_missing(capsys.readouterr().out) == [0]
    # Past midnight the check moves on to the 15th, not due until 06:00 on the 16th: the book is closed
    # through the 14th, so nothing is missing.
    assert dpd_job(after_midnight, LambdaContext()) == {"business_date": "2026-03-15", "completed": False}
    assert dpd_run_missing(capsys.readouterr().out) == [0]
    record = services().runs.get(dt.date(2026, 3, 14))
    assert record is not None and record.trigger == "manual"


def test_a_failed_run_fails_the_invocation_so_lambda_retries_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.jobs import lambda_handlers

    api.create_loan(loan_body())

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("storage broke")

    monkeypatch.setattr(services().delinquency, "scan_segment", broken)
    with pytest.raises(lambda_handlers.DpdRunFailedError, match="FAILED"):
        lambda_handlers.dpd_job({"business_date": YESTERDAY}, LambdaContext())
    monkeypatch.undo()
    # The retry resumes the failed run and completes it.
    assert lambda_handlers.dpd_job({"business_date": YESTERDAY}, LambdaContext())["outcome"] == "COMPLETED"


# --- any time budget: progress, continuation here or on Lambda, the bound ------------------------------

BOOK = 300
BOOK_RUN_DATE = dt.date(2026, 3, 24)


def seed_book(count: int) -> list[Loan]:
    """The demo book (local/demo.py: every bucket, generated and imported schedules; no collectors here)
    through the loan service, as of 14 Mar."""
    ctx = RequestContext(actor=Actor("seed", "admin"))
    create = services().loans.create
    return [
        create(ctx, dataclasses.replace(demo_loan(n, DEFAULT_SEED, dt.date(2026, 3, 14)), collector_id=None))
        for n in range(1, count + 1)
    ]


def one_segment_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """One segment thread, so an invocation with no time left does exactly one page (with four, one to
    four pages, by how the threads happen to start)."""
    monkeypatch.setattr(services().dpd_job, "workers", 1)


@pytest.mark.long
def test_one_invoke_through_the_test_client_completes_a_300_loan_book(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chalice.test.Client().lambda_.invoke`` with its default context (3 s of remaining time, real
    time) on moto: the job works through its time, hands over, and the continuations run here until
    the run is complete; the one call answers with the completed run."""
    book = seed_book(BOOK)
    # moto's TransactWriteItems deep-copies the tables it writes (to roll back), which another thread's
    # write can change under it ("dictionary changed size during iteration"): on moto the job writes
    # from one thread. The DynamoDB Local tests (tests/dynamodb_local) run it with all its threads.
    one_segment_at_a_time(monkeypatch)
    # The rules, from the schedules alone (no payments): ten days on, a loan is written when its bucket
    # moves, it is escalated (reaching dpd 90 is escalation, every other boundary a bucket edge) or
    # its overdue amount grows (another instalment fell due unpaid).
    dpd = {loan.loan_id: dpd_on(loan.schedule, BOOK_RUN_DATE) for loan in book}
    escalated = {k for k, v in dpd.items() if v >= ESCALATION_DPD}
    moved = {loan.loan_id for loan in book if bucket_for(dpd[loan.loan_id]) is not loan.delinquency.bucket}
    moved |= {
        loan.loan_id for loan in book if overdue_paise(loan.schedule, BOOK_RUN_DATE) != loan.delinquency.overdue_paise
    }
    assert len(escalated) >= 10 and len(moved) >= 20

    with api.at(LATER):
        started = time.monotonic()
        answer = api.client.lambda_.invoke("dpd_job", {"business_date": BOOK_RUN_DATE.isoformat()}).payload
        took = time.monotonic() - started
    assert answer["outcome"] == "COMPLETED", answer
    run = answer["run"]
    assert run["status"] == "COMPLETED" and run["mode"] == "scan"
    assert (run["loans_scanned"], run["loans_updated"], run["escalated"], run["pending_escalation"]) == (
        BOOK,
        len(moved | escalated),
        len(escalated),
        0,
    )
    record = services().runs.get(BOOK_RUN_DATE)
    assert record is not None and record.status is RunStatus.COMPLETED
    # Each invocation here had 3 s (and kept 600 ms in hand, finishing the page it was on): a run that
    # took well over that was continued in process (on this machine: 10-12 s, 3 continuations).
    assert record.continuations >= 1 or took < 5.0
    assert record.continuations < MAX_CONTINUATIONS
    print(f"\n300-loan book: one invoke, {took:.1f} s, {record.continuations} continuations in process")
    with api.at(LATER):
        shown = {loan.loan_id: api.loan(loan.loan_id) for loan in book[:40]}
    assert all(x["dpd_as_of"] == BOOK_RUN_DATE.isoformat() for x in shown.values())
    assert {k for k, x in shown.items() if x["legal"]["escalated"]} == escalated & shown.keys()


def test_with_no_time_left_every_invocation_still_does_a_page_and_the_chain_completes_the_run(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_book(40)
    one_segment_at_a_time(monkeypatch)
    pages: list[Segment] = []
    job = services().dpd_job
    fetch = job._fetch

    def counting(segment_id: Segment, cursor: dict[str, Any] | None) -> Any:
        pages.append(segment_id)
        return fetch(segment_id, cursor)

    job._fetch = counting  # type: ignore[method-assign]
    try:
        answer = dpd_job({"business_date": YESTERDAY}, LambdaContext(remaining_ms=0))
    finally:
        del job._fetch
    assert answer["outcome"] == "COMPLETED"
    record = services().runs.get(dt.date(2026, 3, 14))
    assert record is not None and record.status is RunStatus.COMPLETED
    # Sixteen scan segments of one page each: one page an invocation, each read once.
    assert record.continuations == 15
    assert sorted(pages) == sorted(set(pages)) and len(pages) == 16
    assert record.loans_scanned == 40


def test_on_aws_lambda_the_continuation_is_a_new_asynchronous_invocation(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.adapters import lambda_dispatch

    seed_book(40)
    one_segment_at_a_time(monkeypatch)
    invoked: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", LambdaContext.function_name)
    monkeypatch.setattr(lambda_dispatch, "_invoke_async", lambda name, payload: invoked.append((name, payload)))
    first = dpd_job({"scheduled_time": "2026-03-14T19:00:00Z"}, LambdaContext(remaining_ms=0))
    assert first["outcome"] == "CONTINUING"
    assert invoked == [
        (
            LambdaContext.function_name,
            {"business_date": "2026-03-14", "trigger": "scheduler", "full_scan": False, "continuation": True},
        )
    ]
    record = services().runs.get(dt.date(2026, 3, 14))
    assert record is not None and record.continuations == 1 and record.loans_scanned > 0
    # The continuation (as Lambda delivers it) carries on with the run's trigger and count.
    while invoked:
        _name, payload = invoked.pop()
        answer = dpd_job(payload, LambdaContext(remaining_ms=0))
    assert answer["outcome"] == "COMPLETED"
    record = services().runs.get(dt.date(2026, 3, 14))
    assert record is not None and record.trigger == "scheduler" and record.continuations == 15


def test_a_chain_longer_than_the_bound_fails_the_run_with_a_clear_error(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.jobs import lambda_handlers
    from chalicelib.services import day_end as dpd_module

    seed_book(40)
    one_segment_at_a_time(monkeypatch)
    monkeypatch.setattr(dpd_module, "MAX_CONTINUATIONS", 2)
    with pytest.raises(lambda_handlers.DpdRunFailedError, match="FAILED"):
        dpd_job({"business_date": YESTERDAY}, LambdaContext(remaining_ms=0))
    record = services().runs.get(dt.date(2026, 3, 14))
    assert record is not None and record.status is RunStatus.FAILED
    assert record.last_error == (
        "the run was handed over 2 times and still had 13 of 16 segments to do; run the date again to carry "
        "on from its checkpoints"
    )
    assert [i["status"] for i in history(api)] == ["FAILED"]

    # Run again (a new attempt, a new chain), it carries on from its checkpoints and completes.
    monkeypatch.undo()
    assert dpd_job({"business_date": YESTERDAY}, LambdaContext(remaining_ms=0))["outcome"] == "COMPLETED"
    record = services().runs.get(dt.date(2026, 3, 14))
    assert record is not None and record.loans_scanned == 40 and record.errors == 1


def test_the_manual_run_answers_with_its_outcome_when_it_ran_here_even_with_a_job_function_named(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only inside AWS Lambda is a manual run handed to the job's Lambda; ``chalice local`` and the test
    client run it here (a stray DPD_JOB_FUNCTION in a developer's environment changes nothing)."""
    seed_book(5)
    monkeypatch.setenv("DPD_JOB_FUNCTION", "loan-crm-local-dpd_job")
    answer = run(api, {"business_date": YESTERDAY})
    assert answer["outcome"] == "COMPLETED" and answer["run"]["status"] == "COMPLETED"
