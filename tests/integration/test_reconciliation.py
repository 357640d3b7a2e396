"""The reconciliation (docs/reconciliation.md) through the API, its Lambda entry point, the service's
rebuild and the ops CLI, against moto: who may run it and read it, the report's shape and counts on a
clean book, the run after a completed day-end run, a whole run inside Chalice's 3 s test context, the
hand-overs on AWS Lambda, a planted counter drift found, rebuilt (audited) and found gone, and a failed
run. The corruptions of the ledger itself are planted in tests/dynamodb_local/test_reconciliation_corruption.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner, Result

from chalicelib import wiring
from chalicelib.adapters.dynamodb.reconciliation import DynamoLedgerReader
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import Forbidden
from chalicelib.domain.payment import PaymentMode
from chalicelib.domain.reconciliation import MismatchKind, ReconciliationStatus
from chalicelib.domain.runs import MAX_CONTINUATIONS
from chalicelib.jobs.lambda_handlers import reconciliation_job
from chalicelib.services.context import RequestContext
from chalicelib.services.payments import NewPayment
from chalicelib.wiring import services
from local.demo import DEFAULT_SEED, demo_loan
from ops.cli import app
from tests.integration.api_helpers import (
    YESTERDAY,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
)
from tests.integration.test_api_dashboard import book, pay

RUNS = "/api/v1/reconciliation/runs"
LATEST = "/api/v1/reconciliation/latest"
REPORT_KEYS = {
    "run_id",
    "status",
    "trigger",
    "as_of",
    "started_at",
    "finished_at",
    "loans_checked",
    "payments_checked",
    "claims_checked",
    "mismatch_count",
    "mismatches",
    "unverified",
    "error",
}
"""docs/reconciliation.md: the fields of a run as the API answers it, exactly."""
ADMIN = RequestContext(actor=Actor(sub="test-admin", role="admin"))


def small_book(api: Api) -> tuple[int, int]:
    """The dashboard tests' four loans (two collectors, two branches, one unassigned), four standing
    payments (one closes its loan), one reversed payment and one reassignment. Returns (loans, payments)."""
    book(api)
    pay(api, "D-OVER-1", "UTRRECON0001", 320_000)
    pay(api, "D-OVER-2", "UTRRECON0002", 50_000, day="2026-03-10")
    pay(api, "D-CUR-1", "UTRRECON0003", 530_000, day="2026-03-08")
    assert pay(api, "D-CUR-2", "UTRRECON0004", 1_055_000)["loan"]["status"] == "CLOSED"
    bounced = pay(api, "D-OVER-1", "UTRRECON0005", 1_000)
    assert api.post(f"/api/v1/payments/{bounced['payment_id']}/reverse", {"reason": "bounced"}).status == 200
    assert api.post("/api/v1/loans/D-OVER-2/assign", {"collector_id": "collector1"}).status == 200
    return 4, 5


def start_run(api: Api, body: Any = None, raw: str | None = None) -> dict[str, Any]:
    reply = api.post(RUNS, body, raw=raw) if raw is not None else api.post(RUNS, body)
    assert reply.status == 200, (reply.status, reply.body[:500])
    report: dict[str, Any] = reply.json
    return report


def latest(api: Api, as_: str = "admin") -> dict[str, Any]:
    reply = api.get(LATEST, as_=as_)
    assert reply.status == 200, (reply.status, reply.body[:500])
    report: dict[str, Any] = reply.json
    return report


def counts(report: dict[str, Any]) -> tuple[Any, ...]:
    return (
        report["status"],
        report["loans_checked"],
        report["payments_checked"],
        report["claims_checked"],
        report["mismatch_count"],
        report["mismatches"],
    )


def plant_counter_drift(stage: str, scope: str, counter: str, by: int) -> str:
    """Add ``by`` to one counter of one stored shard of ``scope`` with a raw write that does not count
    itself in ``writes`` (as a console edit would not): the run compares that scope. Returns the key."""
    ddb = boto3.client("dynamodb")
    table = f"loan-crm-{stage}-aggregates"
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    pk = str(sorted(i["pk"]["S"] for i in items if i["pk"]["S"].startswith(f"counters#{scope}#"))[0])
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": pk}},
        UpdateExpression="ADD #c :d",
        ExpressionAttributeNames={"#c": counter},
        ExpressionAttributeValues={":d": {"N": str(by)}},
    )
    return pk


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


# --- the API: roles, validation, the report ---------------------------------------------------------


def test_latest_is_404_before_any_run_and_roles_are_enforced(api: Api) -> None:
    """Before any run the latest report is 404 NOT_FOUND; only an admin may start a run (401 without
    a token, 403 FORBIDDEN for the other roles, nothing run); admin, manager and auditor may read the
    latest report, a collector may not."""
    assert_error(api.get(LATEST), 404, "NOT_FOUND")
    for role in ("manager", "auditor", "collector", "collector2"):
        assert_error(api.post(RUNS, {}, as_=role), 403, "FORBIDDEN")
    assert_error(api.post(RUNS, {}, as_=None), 401, "UNAUTHENTICATED")
    assert_error(api.get(LATEST, as_=None), 401, "UNAUTHENTICATED")
    assert_error(api.get(LATEST), 404, "NOT_FOUND")  # the refused starts ran nothing

    run = start_run(api, {})
    for role in ("admin", "manager", "auditor"):
        assert latest(api, as_=role) == run
    for role in ("collector", "collector2"):
        assert_error(api.get(LATEST, as_=role), 403, "FORBIDDEN")


def test_unknown_query_parameters_and_body_fields_are_400(api: Api) -> None:
    """The latest report takes no query parameters and a run takes no fields: each is a 400 naming
    what was wrong, and a refused start runs nothing."""
    start_run(api)
    before = latest(api)
    details = assert_error(api.get(f"{LATEST}?limit=1"), 400, "VALIDATION_ERROR")
    assert [d["field"] for d in details] == ["limit"]
    assert_error(api.get(f"{LATEST}?as_of={YESTERDAY}"), 400, "VALIDATION_ERROR")
    assert_error(api.post(RUNS, {"as_of": YESTERDAY}), 400, "VALIDATION_ERROR")
    assert_error(api.post(RUNS, {"full_scan": True}), 400, "VALIDATION_ERROR")
    assert_error(api.post(RUNS, raw="[]"), 400, "VALIDATION_ERROR")
    assert latest(api) == before


def test_an_empty_body_or_an_empty_object_starts_a_run_answered_finished(api: Api) -> None:
    """Without a Lambda to hand it to, a run started through the API (no body, a blank one, or ``{}``)
    runs in the request and the 200 answer is the finished report, which is then the latest."""
    for body in ("", "  \n", "{}"):
        report = start_run(api, raw=body)
        assert report["status"] == "COMPLETED" and report["finished_at"] is not None, body
        assert report["trigger"] == "manual:admin1"
        assert latest(api) == report


def test_a_clean_book_reports_no_mismatch_with_exact_counts_and_fields(api: Api) -> None:
    """The report has exactly the documented fields; a book built through the API (payments, a closing
    payment, a reversal, a reassignment) is clean, and every loan, payment (reversed included) and UTR
    claim was checked once."""
    loans, payments = small_book(api)
    report = start_run(api, {})

    assert set(report) == REPORT_KEYS
    assert report["status"] == "COMPLETED" and report["error"] is None
    assert report["mismatches"] == [] and report["mismatch_count"] == 0
    assert report["unverified"] == []  # nothing wrote to the counters while it ran
    assert (report["loans_checked"], report["payments_checked"], report["claims_checked"]) == (
        loans,
        payments,
        payments,
    )
    assert report["as_of"] == YESTERDAY
    assert report["started_at"] <= report["finished_at"]
    assert latest(api) == report
    # A second run is a new run, and becomes the latest.
    again = start_run(api)
    assert again["run_id"] != report["run_id"] and counts(again) == counts(report)
    assert latest(api)["run_id"] == again["run_id"]


# --- after the day-end run --------------------------------------------------------------------------


def test_a_completed_day_end_run_is_followed_by_a_reconciliation_for_its_date(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With RECONCILE_AFTER_DAY_END on, a completed day-end run leaves a new latest reconciliation for
    that date (trigger ``after-day-end:<date>``), clean on a clean book; the day-end answer itself is
    the day-end run's, unchanged."""
    monkeypatch.setenv("RECONCILE_AFTER_DAY_END", "true")
    wiring.reset()
    loans, payments = small_book(api)
    earlier = start_run(api)

    reply = api.post("/api/v1/jobs/dpd/runs", {"business_date": YESTERDAY})

    assert reply.status == 200, reply.body[:500]
    assert reply.json["outcome"] == "COMPLETED"
    report = latest(api)
    assert report["run_id"] != earlier["run_id"]
    assert report["trigger"] == f"after-day-end:{YESTERDAY}"
    assert report["as_of"] == YESTERDAY
    assert counts(report) == ("COMPLETED", loans, payments, payments, 0, [])


def test_without_the_setting_a_day_end_run_starts_no_reconciliation(api: Api) -> None:
    """With RECONCILE_AFTER_DAY_END off (the fixtures' default) a completed day-end run starts none."""
    small_book(api)
    reply = api.post("/api/v1/jobs/dpd/runs", {"business_date": YESTERDAY})
    assert reply.status == 200 and reply.json["outcome"] == "COMPLETED", reply.body[:500]
    assert_error(api.get(LATEST), 404, "NOT_FOUND")


# --- the job's Lambda entry point -------------------------------------------------------------------

BIG_BOOK = 80
"""Enough pages for the 3 s context to matter on a loaded machine; the no-time-left test below forces
hand-overs whatever the machine."""
PAID_EVERY = 10


def seed_book(count: int) -> None:
    """The demo book through the services (every bucket; no collectors), with a payment on every tenth
    loan, dated today."""
    create = services().loans.create
    post = services().payments.post
    for n in range(1, count + 1):
        loan = create(ADMIN, dataclasses.replace(demo_loan(n, DEFAULT_SEED, dt.date(2026, 3, 14)), collector_id=None))
        if n % PAID_EVERY == 0:
            post(ADMIN, NewPayment(loan.loan_id, f"UTRBIG{n:06d}", 100_000, dt.date(2026, 3, 15), PaymentMode.UPI))


def test_the_job_through_the_test_client_completes_a_run_in_its_3_s_context(api: Api) -> None:
    """``chalice.test.Client().lambda_.invoke("reconciliation_job", {})`` with its default context (3 s
    of real time): the job begins a run, works while its time lasts and continues in this process as
    often as it needs; the one call answers with the completed run, whose counts equal a direct run's."""
    seed_book(BIG_BOOK)
    answer: dict[str, Any] = api.client.lambda_.invoke("reconciliation_job", {}).payload

    assert set(answer) == REPORT_KEYS
    assert answer["status"] == "COMPLETED", answer
    assert answer["trigger"] == "manual" and answer["as_of"] == YESTERDAY
    direct = services().reconciliation.start("direct")
    assert counts(answer) == counts(
        {
            "status": direct.status.value,
            "loans_checked": direct.loans_checked,
            "payments_checked": direct.payments_checked,
            "claims_checked": direct.claims_checked,
            "mismatch_count": direct.mismatch_count,
            "mismatches": [m.as_dict() for m in direct.mismatches or []],
        }
    )
    assert counts(answer) == ("COMPLETED", BIG_BOOK, BIG_BOOK // PAID_EVERY, BIG_BOOK // PAID_EVERY, 0, [])
    stored = services().reconciliation.runs.get(answer["run_id"])
    assert stored is not None and stored.continuations < MAX_CONTINUATIONS
    assert latest(api)["run_id"] == direct.run_id  # the later of the two
    print(f"\n{BIG_BOOK}-loan book: one invoke, {stored.continuations} continuations in process")


class NoTimeLeft:
    function_name = "loan-crm-test-reconciliation_job"

    def get_remaining_time_in_millis(self) -> int:
        return 0


def test_with_no_time_left_every_invocation_does_one_page_and_the_chain_completes(api: Api) -> None:
    """An invocation with no time at all still checks one page before it stops; off AWS the
    continuations run here, one page each (moto runs one segment thread), until every one of the 24
    segments (8 per table, each one page on this book) is done: 23 hand-overs. ``{"run_id": ...}``
    continues a run, and a finished run answers as it is."""
    small_book(api)
    answer = reconciliation_job({"trigger": "ops"}, NoTimeLeft())
    assert answer["status"] == "COMPLETED" and answer["trigger"] == "ops"
    assert counts(answer) == ("COMPLETED", 4, 5, 5, 0, [])
    stored = services().reconciliation.runs.get(answer["run_id"])
    assert stored is not None and stored.continuations == 3 * 8 - 1
    assert reconciliation_job({"run_id": answer["run_id"]}, NoTimeLeft()) == answer


def test_on_aws_a_run_goes_to_the_job_function_and_each_invocation_hands_on_to_itself(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside AWS Lambda, with the job function named, a POST answers 202 with the run as it starts
    (RUNNING, nothing listed, not yet the latest) and sends ``{"run_id": ...}`` to the job's function
    asynchronously; there an invocation that runs out of time hands the same event to its own function,
    and replaying those events finishes the run, which then is the latest."""
    from chalicelib.adapters import lambda_dispatch

    small_book(api)
    job = "loan-crm-test-reconciliation_job"
    invoked: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(lambda_dispatch, "_invoke_async", lambda name, payload: invoked.append((name, payload)))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "loan-crm-test-api")
    monkeypatch.setenv("RECONCILIATION_JOB_FUNCTION", job)

    reply = api.post(RUNS, {})

    assert reply.status == 202, reply.body[:500]
    started = reply.json
    assert set(started) == REPORT_KEYS
    assert (started["status"], started["finished_at"], started["mismatches"]) == ("RUNNING", None, [])
    assert invoked == [(job, {"run_id": started["run_id"]})]
    assert_error(api.get(LATEST), 404, "NOT_FOUND")

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", job)
    answer: dict[str, Any] = {"status": "RUNNING"}
    for _ in range(3 * 8):  # one page per invocation at most 24 segments, each one page on this book
        name, event = invoked[-1]
        assert (name, event) == (job, {"run_id": started["run_id"]})
        answer = reconciliation_job(event, NoTimeLeft())
        if answer["status"] != "RUNNING":
            break
    assert counts(answer) == ("COMPLETED", 4, 5, 5, 0, [])
    assert len(invoked) == 3 * 8  # the API's start and 23 hand-overs
    assert latest(api) == answer


# --- a drifted counter: found, rebuilt with an audit entry, gone --------------------------------------


def test_a_drifted_book_counter_is_reported_then_rebuilt_with_an_audit_entry(api: Api) -> None:
    """A counter changed outside the API (here ``loans_total`` of one book shard, +3) is reported as an
    AGGREGATE_MISMATCH of ``book`` naming only that counter; a rebuild by an admin corrects exactly that
    set, audited AGGREGATES_REBUILT (portfolio / book, before and after); the next run is clean. Anyone
    else is refused the rebuild and nothing is written."""
    loans, payments = small_book(api)
    plant_counter_drift(api.stage, "book", "loans_total", 3)

    report = start_run(api)
    assert report["mismatches"] == [
        {
            "kind": MismatchKind.AGGREGATE.value,
            "entity_id": "book",
            "expected": {"loans_total": loans},
            "actual": {"loans_total": loans + 3},
        }
    ]
    assert report["mismatch_count"] == 1

    for role in ("manager", "auditor", "collector"):
        with pytest.raises(Forbidden):
            services().reconciliation.rebuild(RequestContext(actor=Actor(sub=f"{role}1", role=role)))
    assert api.audit(action="AGGREGATES_REBUILT") == []

    rebuilt = services().reconciliation.rebuild(ADMIN)
    assert (rebuilt.corrected, rebuilt.moving) == (["book"], [])
    assert rebuilt.unchanged > 0  # every other set (collectors, branches, collections) already right

    entries = api.audit(action="AGGREGATES_REBUILT")
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["entity_type"], entry["entity_id"], entry["outcome"]) == ("portfolio", "book", "SUCCESS")
    assert entry["before"] == {"loans_total": loans + 3} and entry["after"] == {"loans_total": loans}
    assert entry["actor"]["sub"] == "test-admin"

    clean = start_run(api)
    assert counts(clean) == ("COMPLETED", loans, payments, payments, 0, [])
    assert clean["unverified"] == []
    # A rebuild of a right book corrects nothing.
    assert services().reconciliation.rebuild(ADMIN).corrected == []


def test_the_ops_commands_reconcile_and_rebuild_aggregates(api: Api) -> None:
    """``python -m ops reconcile`` exits 0 on a clean book and 1 on a mismatch, which it names (also as
    JSON with ``--json``, the API's report); ``rebuild-aggregates`` corrects the counters, after which
    ``reconcile`` exits 0 again. The metric lines go to stderr, so ``--json``'s stdout is one document."""
    loans, payments = small_book(api)
    clean = cli("reconcile")
    assert clean.exit_code == 0, clean.output
    assert f"COMPLETED  loans {loans}  payments {payments}  claims {payments}  mismatches 0" in clean.stdout

    plant_counter_drift(api.stage, "collector:collector1", "outstanding", -7)
    found = cli("reconcile")
    assert found.exit_code == 1, found.output
    assert "mismatches 1" in found.stdout
    assert "AGGREGATE_MISMATCH" in found.stdout and "collector:collector1" in found.stdout

    as_json = cli("reconcile", "--json")
    assert as_json.exit_code == 1, as_json.output
    report = json.loads(as_json.stdout)
    assert set(report) == REPORT_KEYS
    assert [(m["kind"], m["entity_id"]) for m in report["mismatches"]] == [
        ("AGGREGATE_MISMATCH", "collector:collector1")
    ]
    (mismatch,) = report["mismatches"]
    assert set(mismatch["expected"]) == set(mismatch["actual"]) == {"outstanding"}
    assert mismatch["actual"]["outstanding"] == mismatch["expected"]["outstanding"] - 7
    assert latest(api) == report

    rebuilt = cli("rebuild-aggregates")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "corrected 1," in rebuilt.stdout and "corrected collector:collector1" in rebuilt.stdout
    (entry,) = api.audit(action="AGGREGATES_REBUILT")
    assert entry["entity_id"] == "collector:collector1" and entry["actor"]["sub"].startswith("system:ops:")

    again = cli("reconcile", "--json")
    assert again.exit_code == 0, again.output
    assert counts(json.loads(again.stdout)) == ("COMPLETED", loans, payments, payments, 0, [])


def test_a_run_that_fails_is_recorded_failed_and_ops_exits_1(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose reads fail is recorded FAILED with a reason safe to show (no exception text), still
    becomes the latest, and ``reconcile`` exits 1 for it."""
    small_book(api)

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("scan failed on arn:aws:dynamodb:ap-south-1:123456789012:table/loans")

    monkeypatch.setattr(DynamoLedgerReader, "claims_segment", broken)  # the CLI builds its own services
    report = start_run(api)
    assert report["status"] == ReconciliationStatus.FAILED.value
    assert report["error"].startswith("internal error (RuntimeError)") and "arn:aws" not in report["error"]
    assert latest(api) == report
    failed = cli("reconcile")
    assert failed.exit_code == 1 and "FAILED" in failed.stdout
