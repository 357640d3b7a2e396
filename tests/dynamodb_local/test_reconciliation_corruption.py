"""The reconciliation (docs/reconciliation.md) against the real engine: every kind of corruption it
exists to find, planted with raw writes behind the services' back, is reported with its kind and
entity (and nothing else but what the corruption itself implies); and a run made while other processes
post and reverse payments on the book reports nothing.

The clean book is built once through the services (loans in every state that matters, payments dated
this month and last, a reversal, a reassignment, a day-end run), checked clean, and its items kept;
each corruption case copies those items into its own fresh tables, so every case starts from the same
clean book and cases cannot leak into each other.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from chalicelib import clock
from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import Bucket
from chalicelib.domain.loan import Borrower
from chalicelib.domain.payment import PaymentMode
from chalicelib.domain.portfolio import bucket_loans, bucket_outstanding, day_paise
from chalicelib.domain.reconciliation import MismatchKind, ReconciliationRun, ReconciliationStatus
from chalicelib.domain.roles import Role
from chalicelib.domain.runs import RunOutcome
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.services.payments import NewPayment
from chalicelib.wiring import services
from tests.dynamodb_local import processes

pytestmark = pytest.mark.dynamodb_local

ADMIN = RequestContext(actor=Actor("recon-test", "admin"))
BUILT_AT = dt.datetime(2026, 3, 2, 12, 0, tzinfo=IST)
"""The book is made on 2 Mar (payments may be dated a week back: into February)..."""
NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=IST)
"""... and checked on 15 Mar, after the day-end run for 14 Mar: the months checked are Feb and Mar."""
DAY_END = dt.date(2026, 3, 14)
LATER_ROWS = [("2026-04-05", 300_000, 10_000)]

LOANS: dict[str, tuple[str | None, str | None, list[tuple[str, int, int]]]] = {
    # loan id: (collector, branch, imported schedule)
    "R-OVER": ("collector1", "PUNE", [("2025-12-05", 300_000, 20_000), ("2026-01-05", 300_000, 15_000), *LATER_ROWS]),
    "R-LATE": ("collector2", "PUNE", [("2026-02-05", 300_000, 15_000), *LATER_ROWS]),
    "R-CUR": ("collector1", "NASHIK", [("2026-04-05", 500_000, 30_000), ("2026-05-05", 500_000, 25_000)]),
    "R-SOON": ("collector2", "NASHIK", [("2026-03-12", 200_000, 10_000), ("2026-04-12", 200_000, 8_000)]),
    "R-CLOSE": (None, None, [("2026-04-05", 500_000, 30_000), ("2026-05-05", 500_000, 25_000)]),
}
"""R-OVER and R-LATE in arrears, R-SOON falling due between the build and the day-end run (the run
writes it), R-CUR current with a part-paid future instalment, R-CLOSE paid off."""

# UTR: (loan, amount, payment date)
PAID = "UTRRECON0001"
"""A standing March payment on R-OVER (collector1, PUNE): it clears the oldest instalment."""
BOUNCED = "UTRRECON0002"
"""Reversed right after it was posted: it keeps its claim and is on no ledger."""
FEBRUARY = "UTRRECON0003"
"""A standing February payment on R-CUR: 100,000 into the instalment due 5 Apr (interest first)."""
CLOSING = "UTRRECON0004"
LATE = "UTRRECON0005"
"""On R-LATE while collector2 held it; the loan then moved to collector1."""
TODAY = "UTRRECON0006"
PAYMENTS: dict[str, tuple[str, int, dt.date]] = {
    PAID: ("R-OVER", 320_000, dt.date(2026, 3, 2)),
    BOUNCED: ("R-OVER", 1_000, dt.date(2026, 3, 2)),
    FEBRUARY: ("R-CUR", 100_000, dt.date(2026, 2, 27)),
    CLOSING: ("R-CLOSE", 1_055_000, dt.date(2026, 3, 1)),
    LATE: ("R-LATE", 50_000, dt.date(2026, 2, 28)),
}
COPIED = ("loans", "payments", "utr-claims", "aggregates")
"""The tables a run reads; the copy of the clean book is these tables' items."""

Items = dict[str, list[dict[str, Any]]]
_clean_book: Items = {}
"""The clean book's items, kept by the first test that builds it (one per test process)."""


# --- raw access to the stage's tables ------------------------------------------------------------------


def _ddb() -> Any:
    return boto3.client("dynamodb")  # AWS_ENDPOINT_URL_DYNAMODB points it at DynamoDB Local


def table(short: str) -> str:
    return f"loan-crm-{os.environ['STAGE']}-{short}"


def scan(short: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in _ddb().get_paginator("scan").paginate(TableName=table(short), ConsistentRead=True):
        items += page["Items"]
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def dump() -> Items:
    return {short: scan(short) for short in COPIED}


def load(items: Items) -> None:
    for short, rows in items.items():
        for start in range(0, len(rows), 25):
            requests = [{"PutRequest": {"Item": row}} for row in rows[start : start + 25]]
            unprocessed: dict[str, Any] = {table(short): requests}
            while unprocessed:
                unprocessed = _ddb().batch_write_item(RequestItems=unprocessed).get("UnprocessedItems") or {}


def raw_loan(loan_id: str) -> dict[str, Any]:
    item: dict[str, Any] = _ddb().get_item(TableName=table("loans"), Key={"loan_id": {"S": loan_id}})["Item"]
    return item


def set_attributes(short: str, key: dict[str, Any], values: dict[str, dict[str, str]]) -> None:
    names = {f"#a{n}": name for n, name in enumerate(values)}
    _ddb().update_item(
        TableName=table(short),
        Key=key,
        UpdateExpression="SET " + ", ".join(f"#a{n} = :v{n}" for n in range(len(values))),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={f":v{n}": value for n, value in enumerate(values.values())},
    )


def add_to_counter(prefix: str, counter: str, by: int) -> None:
    """ADD to one stored shard of a counter set, without counting a write (a console edit would not):
    the run compares that set rather than calling it moving."""
    pk = next(i["pk"]["S"] for i in scan("aggregates") if i["pk"]["S"].startswith(prefix))
    _ddb().update_item(
        TableName=table("aggregates"),
        Key={"pk": {"S": pk}},
        UpdateExpression="ADD #c :d",
        ExpressionAttributeNames={"#c": counter},
        ExpressionAttributeValues={":d": {"N": str(by)}},
    )


def payment_of(utr: str) -> dict[str, Any]:
    claim = _ddb().get_item(TableName=table("utr-claims"), Key={"utr": {"S": utr}})["Item"]
    item: dict[str, Any] = _ddb().get_item(TableName=table("payments"), Key={"payment_id": claim["payment_id"]})["Item"]
    return item


def pid(utr: str) -> str:
    return str(payment_of(utr)["payment_id"]["S"])


# --- the clean book ------------------------------------------------------------------------------------


def _build() -> None:
    svc = services()
    for username in ("collector1", "collector2"):
        svc.auth.add_user(username, "collector-password-123", Role.COLLECTOR)
    with use_clock(FixedClock(BUILT_AT)):
        for loan_id, (collector, branch, rows) in LOANS.items():
            svc.loans.create(
                ADMIN,
                NewLoan(
                    loan_id=loan_id,
                    borrower=Borrower("Reconcile Borrower", "9876543210"),
                    principal_paise=sum(p for _, p, _ in rows),
                    disbursement_date=dt.date(2025, 10, 1),
                    imported_schedule=[(dt.date.fromisoformat(d), p, i) for d, p, i in rows],
                    collector_id=collector,
                    branch=branch,
                ),
            )
        for utr, (loan_id, amount, day) in PAYMENTS.items():
            posted = svc.payments.post(ADMIN, NewPayment(loan_id, utr, amount, day, PaymentMode.UPI))
            if utr == BOUNCED:
                svc.payments.reverse(ADMIN, posted.payment.payment_id, "cheque bounced")
        assert svc.loans.stored(ADMIN, "R-CLOSE").status.value == "CLOSED"
        svc.loans.assign(ADMIN, "R-LATE", "collector1")
    with use_clock(FixedClock(NOW)):
        result = svc.dpd_job.run(DAY_END, "test")
        assert result.outcome is RunOutcome.COMPLETED and result.record is not None
        assert result.record.loans_updated >= 1  # R-SOON at least: it fell due on 12 Mar
        svc.payments.post(ADMIN, NewPayment("R-SOON", TODAY, 5_000, NOW.date(), PaymentMode.UPI))


@dataclass
class Checked:
    run: ReconciliationRun
    found: set[tuple[str, str]]
    """(kind, entity id) of every listed mismatch."""
    by_entity: dict[tuple[str, str], dict[str, Any]]
    metrics: float
    """The sum of the ``ReconciliationMismatch`` data points the run printed (one per run, of value the
    number of mismatches)."""


def mismatch_metric(stdout: str) -> float:
    """The ``ReconciliationMismatch`` values printed, summed (EMF gives a number or a list of them)."""
    total = 0.0
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line and '"ReconciliationMismatch"' in line:
            value = json.loads(line)["ReconciliationMismatch"]
            total += sum(value) if isinstance(value, list) else value
    return total


def reconcile(capsys: pytest.CaptureFixture[str]) -> Checked:
    capsys.readouterr()
    with use_clock(FixedClock(NOW)):
        run = services().reconciliation.start("test")
    printed = capsys.readouterr().out
    assert run.status is ReconciliationStatus.COMPLETED, run.error
    listed = [m.as_dict() for m in run.mismatches or []]
    return Checked(
        run,
        {(m["kind"], m["entity_id"]) for m in listed},
        {(m["kind"], m["entity_id"]): m for m in listed},
        mismatch_metric(printed),
    )


@pytest.fixture
def clean_book(local_stack: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Items]:
    """This test's tables hold the clean book: built here the first time (and checked clean), copied
    from the kept items afterwards (and checked equal to them)."""
    if not _clean_book:
        _build()
        clean = reconcile(capsys)
        assert clean.found == set() and clean.run.mismatch_count == 0 and clean.metrics == 0
        assert clean.run.unverified == []
        assert (clean.run.loans_checked, clean.run.payments_checked, clean.run.claims_checked) == (5, 6, 6)
        _clean_book.update(dump())
    else:
        load(_clean_book)
        assert dump() == _clean_book
    yield _clean_book


# --- the corruptions -----------------------------------------------------------------------------------


def allocation_interest() -> set[tuple[str, str]]:
    """One paisa less interest paid on R-CUR's first instalment (not yet due): the replay of its ledger
    disagrees; its outstanding (principal only), delinquency (nothing due) and counters do not move."""
    item = raw_loan("R-CUR")
    rows = json.loads(item["schedule"]["S"])
    assert rows[0][3:] == [70_000, 30_000]  # [due, principal, interest, paid principal, paid interest]
    rows[0][4] -= 1
    set_attributes("loans", {"loan_id": {"S": "R-CUR"}}, {"schedule": {"S": json.dumps(rows)}})
    return {(MismatchKind.ALLOCATION, "R-CUR")}


def allocation_principal() -> set[tuple[str, str]]:
    """One paisa more principal paid on R-CUR's first instalment, with the stored outstanding lowered
    to match (so no OUTSTANDING finding): the replay disagrees, and the loan now counts one paisa less
    outstanding than the counters hold in each of its scopes (book, its collector, its branch)."""
    item = raw_loan("R-CUR")
    rows = json.loads(item["schedule"]["S"])
    rows[0][3] += 1
    outstanding = int(item["outstanding_principal_paise"]["N"]) - 1
    set_attributes(
        "loans",
        {"loan_id": {"S": "R-CUR"}},
        {"schedule": {"S": json.dumps(rows)}, "outstanding_principal_paise": {"N": str(outstanding)}},
    )
    return {
        (MismatchKind.ALLOCATION, "R-CUR"),
        (MismatchKind.AGGREGATE, "book"),
        (MismatchKind.AGGREGATE, "collector:collector1"),
        (MismatchKind.AGGREGATE, "branch:NASHIK"),
    }


def wrong_outstanding() -> set[tuple[str, str]]:
    """R-OVER's stored outstanding off by 100: only OUTSTANDING (counters are recounted from the
    schedule's paid amounts, which are right)."""
    item = raw_loan("R-OVER")
    wrong = int(item["outstanding_principal_paise"]["N"]) + 100
    set_attributes("loans", {"loan_id": {"S": "R-OVER"}}, {"outstanding_principal_paise": {"N": str(wrong)}})
    return {(MismatchKind.OUTSTANDING, "R-OVER")}


def wrong_bucket() -> set[tuple[str, str]]:
    """R-LATE's stored bucket no longer matches its dpd: DELINQUENCY_MISMATCH, and, since a loan counts
    in the bucket it is stored in, the recount of each of its scopes (book, collector1 since the
    reassignment, PUNE) moves it between two buckets: AGGREGATE_MISMATCH for each."""
    item = raw_loan("R-LATE")
    stored = Bucket(item["bucket"]["S"])
    assert stored is Bucket.B31_60
    set_attributes("loans", {"loan_id": {"S": "R-LATE"}}, {"bucket": {"S": Bucket.B61_90.value}})
    return {
        (MismatchKind.DELINQUENCY, "R-LATE"),
        (MismatchKind.AGGREGATE, "book"),
        (MismatchKind.AGGREGATE, "collector:collector1"),
        (MismatchKind.AGGREGATE, "branch:PUNE"),
    }


def claim_deleted() -> set[tuple[str, str]]:
    """A standing payment's UTR claim deleted: UTR_CLAIM_MISSING on the payment."""
    payment = pid(LATE)
    _ddb().delete_item(TableName=table("utr-claims"), Key={"utr": {"S": LATE}})
    return {(MismatchKind.UTR_CLAIM_MISSING, payment)}


def reversed_claim_deleted() -> set[tuple[str, str]]:
    """A reversed payment keeps its claim (a UTR is never reused): deleting it is UTR_CLAIM_MISSING too."""
    payment = pid(BOUNCED)
    _ddb().delete_item(TableName=table("utr-claims"), Key={"utr": {"S": BOUNCED}})
    return {(MismatchKind.UTR_CLAIM_MISSING, payment)}


def orphan_claim() -> set[tuple[str, str]]:
    """A claim whose payment does not exist: ORPHAN_UTR_CLAIM on the UTR."""
    claim = {
        "utr": {"S": "UTRORPHAN0001"},
        "payment_id": {"S": "01NOSUCHPAYMENT000000000000"},
        "loan_id": {"S": "R-OVER"},
        "claimed_at": {"S": "2026-03-10T06:30:00+00:00"},
    }
    _ddb().put_item(TableName=table("utr-claims"), Item=claim)
    return {(MismatchKind.ORPHAN_UTR_CLAIM, "UTRORPHAN0001")}


def claim_of_another_payment() -> set[tuple[str, str]]:
    """A claim naming a payment that carries another UTR: ORPHAN_UTR_CLAIM on this UTR only (that
    payment's own claim still names it)."""
    claim = {
        "utr": {"S": "UTRORPHAN0002"},
        "payment_id": {"S": pid(PAID)},
        "loan_id": {"S": "R-OVER"},
        "claimed_at": {"S": "2026-03-10T06:30:00+00:00"},
    }
    _ddb().put_item(TableName=table("utr-claims"), Item=claim)
    return {(MismatchKind.ORPHAN_UTR_CLAIM, "UTRORPHAN0002")}


def two_payments_one_utr() -> set[tuple[str, str]]:
    """A second (reversed) payment carrying the bounced payment's UTR: its UTR's claim names the other
    payment, so UTR_CLAIM_MISSING on the newcomer; being reversed it is on no ledger and in no
    collections, and the claim itself still names a payment with that UTR."""
    copy = dict(payment_of(BOUNCED), payment_id={"S": "01DUPLICATEUTRPAYMENT00000"})
    _ddb().put_item(TableName=table("payments"), Item=copy)
    return {(MismatchKind.UTR_CLAIM_MISSING, "01DUPLICATEUTRPAYMENT00000")}


def payment_off_its_ledger() -> set[tuple[str, str]]:
    """R-CUR's ledger loses its standing payment: LEDGER_PAYMENT_MISMATCH on the payment; and the
    schedule's paid amounts are no longer the replay of the (now empty) ledger: ALLOCATION_MISMATCH."""
    payment = pid(FEBRUARY)
    ledger = json.loads(raw_loan("R-CUR")["ledger"]["S"])
    assert [row[0] for row in ledger] == [payment]
    set_attributes("loans", {"loan_id": {"S": "R-CUR"}}, {"ledger": {"S": "[]"}})
    return {(MismatchKind.LEDGER_PAYMENT, payment), (MismatchKind.ALLOCATION, "R-CUR")}


def ledger_entry_reversed() -> set[tuple[str, str]]:
    """R-OVER's standing March payment marked REVERSED in the payments table while still on the loan's
    ledger: LEDGER_PAYMENT_MISMATCH on the loan; and, a reversed payment no longer counting as
    collected, COLLECTIONS_MISMATCH for March in each scope it was credited to (book, collector1, PUNE)."""
    payment = payment_of(PAID)
    assert (payment["collector_id"]["S"], payment["branch"]["S"]) == ("collector1", "PUNE")
    set_attributes("payments", {"payment_id": payment["payment_id"]}, {"status": {"S": "REVERSED"}})
    return {
        (MismatchKind.LEDGER_PAYMENT, "R-OVER"),
        (MismatchKind.COLLECTIONS, "book@2026-03"),
        (MismatchKind.COLLECTIONS, "collector:collector1@2026-03"),
        (MismatchKind.COLLECTIONS, "branch:PUNE@2026-03"),
    }


def book_counter() -> set[tuple[str, str]]:
    """One book shard's ``loans_total`` +1: AGGREGATE_MISMATCH of ``book``."""
    add_to_counter("counters#book#", "loans_total", 1)
    return {(MismatchKind.AGGREGATE, "book")}


def collector_counter() -> set[tuple[str, str]]:
    """One of collector1's shards' ``overdue`` -5: AGGREGATE_MISMATCH of ``collector:collector1``."""
    add_to_counter("counters#collector:collector1#", "overdue", -5)
    return {(MismatchKind.AGGREGATE, "collector:collector1")}


def collections_this_month() -> set[tuple[str, str]]:
    """The book's collections of today (15 Mar) +7 paise in one shard: COLLECTIONS_MISMATCH of
    ``book@2026-03``."""
    add_to_counter("collections#book#2026-03#", day_paise(15), 7)
    return {(MismatchKind.COLLECTIONS, "book@2026-03")}


def collections_last_month() -> set[tuple[str, str]]:
    """NASHIK's February count +1 (last month is checked too): COLLECTIONS_MISMATCH of
    ``branch:NASHIK@2026-02``."""
    add_to_counter("collections#branch:NASHIK#2026-02#", "month_count", 1)
    return {(MismatchKind.COLLECTIONS, "branch:NASHIK@2026-02")}


CORRUPTIONS: list[Callable[[], set[tuple[str, str]]]] = [
    allocation_interest,
    allocation_principal,
    wrong_outstanding,
    wrong_bucket,
    claim_deleted,
    reversed_claim_deleted,
    orphan_claim,
    claim_of_another_payment,
    two_payments_one_utr,
    payment_off_its_ledger,
    ledger_entry_reversed,
    book_counter,
    collector_counter,
    collections_this_month,
    collections_last_month,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=[c.__name__ for c in CORRUPTIONS])
def test_each_corruption_is_reported_with_its_kind_and_entity_and_nothing_else(
    clean_book: Items, corrupt: Callable[[], set[tuple[str, str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    """On a copy of the clean book, one corruption planted by a raw write is reported as exactly the
    findings the corruption implies (each function's docstring says why each is there), every one
    confirmed by the second look (a planted corruption does not go away when read again), counted in
    ``mismatch_count`` and in the run's ``ReconciliationMismatch`` data point; every counter set is compared
    (nothing wrote during the run); and the run changed nothing in the ledger."""
    expected = {(MismatchKind(kind).value, entity) for kind, entity in corrupt()}
    planted = dump()

    checked = reconcile(capsys)

    assert checked.found == expected
    assert checked.run.mismatch_count == len(expected) == len(checked.run.mismatches or [])
    assert checked.metrics == len(expected)
    assert checked.run.unverified == []
    assert dump() == planted  # it reports; it never repairs


def test_the_findings_carry_the_values_expected_and_found(
    clean_book: Items, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several corruptions at once are all reported, each with the values the rules give and the
    values stored: the paid amounts, the outstanding, the delinquency, the claim and the counters
    (only the counters that differ)."""
    allocation_interest()
    wrong_outstanding()
    late_outstanding = int(raw_loan("R-LATE")["outstanding_principal_paise"]["N"])
    wrong_bucket()
    bounced = pid(BOUNCED)
    reversed_claim_deleted()
    book_counter()

    found = reconcile(capsys).by_entity

    assert found[("ALLOCATION_MISMATCH", "R-CUR")]["expected"] == {
        "paid_principal_paise": 70_000,
        "paid_interest_paise": 30_000,
    }
    assert found[("ALLOCATION_MISMATCH", "R-CUR")]["actual"] == {
        "paid_principal_paise": 70_000,
        "paid_interest_paise": 29_999,
    }
    outstanding = found[("OUTSTANDING_MISMATCH", "R-OVER")]
    assert outstanding["actual"] == outstanding["expected"] + 100
    delinquency = found[("DELINQUENCY_MISMATCH", "R-LATE")]
    assert (delinquency["expected"]["bucket"], delinquency["actual"]["bucket"]) == ("31-60", "61-90")
    assert delinquency["expected"]["dpd"] == delinquency["actual"]["dpd"]  # only the bucket is wrong
    assert delinquency["expected"]["as_of"] == DAY_END.isoformat()
    claim = found[("UTR_CLAIM_MISSING", bounced)]
    assert (claim["expected"], claim["actual"]) == (BOUNCED, None)
    # The book: one loan too many, and R-LATE counted in 61-90 by the recount, in 31-60 by the counters.
    book = found[("AGGREGATE_MISMATCH", "book")]
    moved = (bucket_loans(Bucket.B31_60), bucket_loans(Bucket.B61_90))
    money = (bucket_outstanding(Bucket.B31_60), bucket_outstanding(Bucket.B61_90))
    assert set(book["expected"]) == set(book["actual"]) == {"loans_total", *moved, *money}
    assert book["actual"]["loans_total"] - book["expected"]["loans_total"] == 1
    assert book["actual"][moved[0]] - book["expected"][moved[0]] == 1
    assert book["expected"][moved[1]] - book["actual"][moved[1]] == 1
    assert book["actual"][money[0]] - book["expected"][money[0]] == late_outstanding
    collector = found[("AGGREGATE_MISMATCH", "collector:collector1")]
    assert set(collector["expected"]) == {*moved, *money}


# --- a run while the book is being written to -------------------------------------------------------------

RACERS = 2
RACE_LOANS = ("RACE-A", "RACE-B")
MAX_OPS = 150
"""A bound on each racer's writes, in case the test never tells it to stop."""


def _racer(env: dict[str, str], n: int, ready: Any, stop: Any, done: Any, out: Any) -> None:
    """A process of its own posting payments through the API in process, reversing every other
    one, until told to stop; counts each committed write in ``done`` and reports its statuses."""
    os.environ.update(env)
    from chalice.test import Client

    import app as app_module
    from chalicelib.services.auth import issue_token

    token = issue_token("racer", "admin", env["JWT_SECRET"], 600).access_token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    statuses: list[int] = []
    with tempfile.TemporaryDirectory() as empty, Client(app_module.app, project_dir=empty) as client:
        for op in range(MAX_OPS):
            if op == 2:
                ready.release()  # two payments in: the run may start
            if stop.is_set():
                break
            body = {
                "loan_id": RACE_LOANS[op % len(RACE_LOANS)],
                "utr": f"UTRRACER{n}X{op:04d}",
                "amount_paise": 300_000 + op,
                "payment_date": env["RACE_DAY"],
                "mode": "UPI",
            }
            posted = client.http.post("/api/v1/payments", headers=headers, body=json.dumps(body))
            statuses.append(posted.status_code)
            if posted.status_code == 201:
                with done.get_lock():
                    done.value += 1
                if op % 2:
                    payment_id = json.loads(posted.body)["payment_id"]
                    path = f"/api/v1/payments/{payment_id}/reverse"
                    reversed_ = client.http.post(path, headers=headers, body=json.dumps({"reason": "bounced"}))
                    statuses.append(reversed_.status_code)
                    if reversed_.status_code == 200:
                        with done.get_lock():
                            done.value += 1
    out.put(statuses)


def test_a_run_while_payments_and_reversals_land_reports_no_mismatch(local_stack: str) -> None:
    """Other processes post and reverse payments on the book (collector1's loans in PUNE) all through a
    run: the second look clears every finding a write between two reads made, and the counters written
    to during the run are listed as unverified (the book, collector1, PUNE), never as mismatches, while
    the scopes nobody touched (collector2, NASHIK) are compared. A run once the writers stop is clean
    with nothing unverified: the book really did stay consistent."""
    svc = services()
    svc.auth.add_user("collector1", "collector-password-123", Role.COLLECTOR)
    svc.auth.add_user("collector2", "collector-password-123", Role.COLLECTOR)
    svc.auth.add_user("racer", "racer-password-123", Role.ADMIN)
    today = clock.today_ist()
    for loan_id, collector, branch in (
        *((x, "collector1", "PUNE") for x in RACE_LOANS),
        ("QUIET", "collector2", "NASHIK"),
    ):
        svc.loans.create(
            ADMIN,
            NewLoan(
                loan_id=loan_id,
                borrower=Borrower("Race Borrower", "9876543210"),
                principal_paise=50_000_000,
                disbursement_date=today - dt.timedelta(days=10),
                terms=GeneratedTerms(120, 24, today + dt.timedelta(days=20)),
                collector_id=collector,
                branch=branch,
            ),
        )
    svc.payments.post(ADMIN, NewPayment("QUIET", "UTRQUIET0001", 10_000, today, PaymentMode.UPI))

    ctx = processes.context()
    ready, stop, done, out = ctx.Semaphore(0), ctx.Event(), ctx.Value("i", 0), ctx.Queue()
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
    env.update(STAGE=local_stack, RACE_DAY=today.isoformat())
    racers = [ctx.Process(target=_racer, args=(env, n, ready, stop, done, out)) for n in range(RACERS)]
    for p in racers:
        p.start()
    runs: list[ReconciliationRun] = []
    try:
        for _ in range(RACERS):
            assert ready.acquire(timeout=180), "a racer never started writing"
        # Three runs back to back while the racers write, more if none of them had a write land while it
        # ran (each racer writes until told to stop, so they nearly always all do); every run must be
        # clean whatever landed.
        overlapped: list[ReconciliationRun] = []
        while len(runs) < 3 or (not overlapped and len(runs) < 6):
            before = done.value
            runs.append(svc.reconciliation.start("during-writes"))
            if done.value > before and runs[-1].unverified:
                overlapped.append(runs[-1])
    finally:
        stop.set()
        statuses = [s for _ in racers for s in out.get(timeout=180)]
        for p in racers:
            p.join(60)
    assert all(p.exitcode == 0 for p in racers)
    assert set(statuses) <= {200, 201}, statuses  # every write a racer made was accepted

    for run in runs:
        assert run.status is ReconciliationStatus.COMPLETED, run.error
        assert [m.as_dict() for m in run.mismatches or []] == [] and run.mismatch_count == 0
    assert overlapped, "no run had a write land while it ran"
    raced = overlapped[-1]
    assert raced.unverified and set(raced.unverified) <= {
        "book",
        "collector:collector1",
        "branch:PUNE",
        f"book@{today:%Y-%m}",
        f"collector:collector1@{today:%Y-%m}",
        f"branch:PUNE@{today:%Y-%m}",
    }
    # Every payment and reversal writes the book's collections; at 1.2% a year the first instalment's
    # interest is under 50,000 paise, so each of these (300,000+) moves principal: the loan counters too.
    assert {"book", f"book@{today:%Y-%m}"} <= set(raced.unverified)

    quiet = svc.reconciliation.start("after-writes")
    assert quiet.mismatch_count == 0 and quiet.unverified == []
    assert quiet.loans_checked == 3
    assert quiet.payments_checked == quiet.claims_checked == 1 + statuses.count(201)
