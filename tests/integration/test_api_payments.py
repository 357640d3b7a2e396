"""Payment endpoints end to end (docs/rules.md, docs/day-end.md) through chalice.test.Client against moto.

Expected figures are computed here from the loan's schedule as the API shows it, not by calling the
domain code under test.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import boto3

from tests.integration.api_helpers import (
    FROZEN_AT,
    YESTERDAY,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    detail_fields,
    imported_body,
    loan_body,
)

TODAY = (FROZEN_AT + dt.timedelta(hours=5, minutes=30)).date().isoformat()
"""The IST date at the frozen instant: 2026-03-15."""

CONTRACT_KEYS = {"payment_id", "utr", "loan_id", "amount_paise", "payment_date", "mode", "status", "allocation", "loan"}
EXTRA_KEYS = {"posted_at", "posted_by", "reversed_at", "reversed_by", "reversal_reason"}
"""Not in docs/rules.md's list but documented by the route; anything beyond these is unexpected."""
LOAN_KEYS = {"outstanding_principal_paise", "overdue_paise", "dpd", "bucket", "classification", "status"}

# Overdue on 14 Mar 2026 (the last completed business date): 5 Jan, 5 Feb, 5 Mar; 5 Apr is not yet due.
ROWS = [
    ("2026-01-05", 1_000_000, 100_000),
    ("2026-02-05", 1_000_000, 90_000),
    ("2026-03-05", 1_000_000, 80_000),
    ("2026-04-05", 1_000_000, 70_000),
]
OWED = sum(p + i for _, p, i in ROWS)
OVERDUE = sum(p + i for _, p, i in ROWS[:3])


def new_loan(api: Api, loan_id: str = "LN-PAY", rows: list[tuple[str, int, int]] | None = None, **kw: Any) -> Any:
    body = imported_body(rows or ROWS, **{"loan_id": loan_id, "collector_id": "collector1", **kw})
    return api.create_loan(body)


def payment(loan_id: str = "LN-PAY", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "loan_id": loan_id,
        "utr": "SBIN0000001",
        "amount_paise": 500_000,
        "payment_date": TODAY,
        "mode": "UPI",
    }
    body.update(overrides)
    return body


def expected_allocation(schedule: list[dict[str, Any]], amount: int) -> tuple[int, int]:
    """Instalments by due date; within one, interest before principal; the rest moves on."""
    interest = principal = 0
    for row in sorted(schedule, key=lambda r: r["due_date"]):
        take = min(amount, row["interest_paise"] - row["paid_interest_paise"])
        interest += take
        amount -= take
        take = min(amount, row["principal_paise"] - row["paid_principal_paise"])
        principal += take
        amount -= take
    assert amount == 0
    return interest, principal


def expected_delinquency(schedule: list[dict[str, Any]], business_date: str) -> tuple[int, int]:
    """(dpd, overdue) for the schedule at the end of ``business_date``, counting the due date as day 1."""
    unpaid = [
        r
        for r in schedule
        if r["due_date"] <= business_date
        and r["paid_principal_paise"] + r["paid_interest_paise"] < r["principal_paise"] + r["interest_paise"]
    ]
    if not unpaid:
        return 0, 0
    oldest = min(dt.date.fromisoformat(r["due_date"]) for r in unpaid)
    overdue = sum(
        r["principal_paise"] + r["interest_paise"] - r["paid_principal_paise"] - r["paid_interest_paise"]
        for r in unpaid
    )
    return (dt.date.fromisoformat(business_date) - oldest).days + 1, overdue


def stored_payments(api: Api) -> list[dict[str, Any]]:
    ddb = boto3.client("dynamodb")
    items: list[dict[str, Any]] = ddb.scan(TableName=f"loan-crm-{api.stage}-payments", ConsistentRead=True)["Items"]
    return items


def claimed_utrs(api: Api) -> set[str]:
    ddb = boto3.client("dynamodb")
    items = ddb.scan(TableName=f"loan-crm-{api.stage}-utr-claims", ConsistentRead=True)["Items"]
    return {item["utr"]["S"] for item in items}


def list_payments(api: Api, loan_id: str, as_: str = "admin", query: str = "") -> Any:
    reply = api.get(f"/api/v1/loans/{loan_id}/payments{query}", as_=as_)
    assert reply.status == 200, (reply.status, reply.body[:500])
    return reply.json


def actions(api: Api, loan_id: str) -> list[str]:
    """The loan's audit trail, newest first; denied attempts marked as such."""
    return [e["action"] + ("/DENIED" if e["outcome"] == "DENIED" else "") for e in api.audit(entity_id=loan_id)]


# --- accepted ---------------------------------------------------------------------------------


def test_201_has_the_spec_shape_and_an_independently_computed_allocation(api: Api) -> None:
    # A generated schedule: interest differs from one instalment to the next.
    loan = api.create_loan(
        loan_body(
            loan_id="LN-GEN",
            collector_id="collector1",
            disbursement_date="2025-12-01",
            first_due_date="2026-01-05",
        )
    )
    before = api.loan("LN-GEN")
    assert before["version"] == 1
    schedule = before["schedule"]
    amount = schedule[0]["principal_paise"] + schedule[0]["interest_paise"] + schedule[1]["interest_paise"] + 12_345
    interest, principal = expected_allocation(schedule, amount)
    assert interest == schedule[0]["interest_paise"] + schedule[1]["interest_paise"]

    reply = api.post(
        "/api/v1/payments",
        payment("LN-GEN", utr="  hdfc0000123abc \t", amount_paise=amount, payment_date=YESTERDAY, mode="NEFT"),
        as_="collector",
    )

    assert reply.status == 201, reply.body
    body = reply.json
    assert CONTRACT_KEYS <= set(body) <= CONTRACT_KEYS | EXTRA_KEYS, set(body) ^ CONTRACT_KEYS
    assert isinstance(body["payment_id"], str) and body["payment_id"]
    assert {k: body[k] for k in CONTRACT_KEYS - {"payment_id", "allocation", "loan"}} == {
        "utr": "HDFC0000123ABC",
        "loan_id": "LN-GEN",
        "amount_paise": amount,
        "payment_date": YESTERDAY,
        "mode": "NEFT",
        "status": "POSTED",
    }
    assert (body["allocation"]["interest_paise"], body["allocation"]["principal_paise"]) == (interest, principal)
    assert type(body["amount_paise"]) is int
    assert body["posted_by"] == "collector1"

    after = api.loan("LN-GEN")
    assert set(body["loan"]) == LOAN_KEYS
    assert body["loan"] == {k: after[k] for k in LOAN_KEYS}
    assert after["version"] == 2
    assert after["outstanding_principal_paise"] == loan["principal_paise"] - principal
    # Instalment 1 is paid; instalment 2 (due 5 Feb) only partly: it is the oldest unpaid.
    dpd, overdue = expected_delinquency(after["schedule"], YESTERDAY)
    assert (after["dpd"], after["overdue_paise"], after["dpd_as_of"]) == (dpd, overdue, YESTERDAY)
    assert dpd == (dt.date(2026, 3, 14) - dt.date(2026, 2, 5)).days + 1 == 38
    assert (after["bucket"], after["classification"]) == ("31-60", "SMA-1")
    paid = [(r["paid_interest_paise"], r["paid_principal_paise"]) for r in after["schedule"]]
    assert paid[0] == (schedule[0]["interest_paise"], schedule[0]["principal_paise"])
    assert paid[1] == (schedule[1]["interest_paise"], 12_345)
    assert set(paid[2:]) == {(0, 0)}

    [posted] = api.audit(entity_id="LN-GEN", action="PAYMENT_POSTED")
    assert posted["actor"] == {"sub": "collector1", "role": "collector"}
    assert posted["after"]["payment"]["payment_id"] == body["payment_id"]
    assert posted["after"]["version"] == after["version"]
    assert posted["before"]["outstanding_principal_paise"] == loan["principal_paise"]
    assert claimed_utrs(api) == {"HDFC0000123ABC"}


def test_full_payoff_closes_the_loan_and_a_further_payment_is_not_payable(api: Api) -> None:
    new_loan(api)
    reply = api.post("/api/v1/payments", payment(amount_paise=OWED))
    assert reply.status == 201, reply.body
    assert reply.json["loan"] == {
        "outstanding_principal_paise": 0,
        "overdue_paise": 0,
        "dpd": 0,
        "bucket": "CURRENT",
        "classification": "STANDARD",
        "status": "CLOSED",
    }
    assert (reply.json["allocation"]["interest_paise"], reply.json["allocation"]["principal_paise"]) == (
        340_000,
        4_000_000,
    )
    stored = api.raw_loan("LN-PAY")

    assert_error(api.post("/api/v1/payments", payment(utr="SBIN0000002", amount_paise=100)), 422, "LOAN_NOT_PAYABLE")
    assert api.raw_loan("LN-PAY") == stored
    assert len(stored_payments(api)) == 1
    assert actions(api, "LN-PAY") == ["DELINQUENCY_CHANGED", "PAYMENT_POSTED", "LOAN_CREATED"]


# --- refused ----------------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    (payment(utr="ABC12"), "utr"),  # 5 characters
    (payment(utr="A" * 36), "utr"),
    (payment(utr="ABC-12345"), "utr"),
    (payment(utr="ABC 12345"), "utr"),
    (payment(utr=1234567), "utr"),
    (payment(amount_paise=500_000.0), "amount_paise"),
    (payment(amount_paise="500000"), "amount_paise"),
    (payment(amount_paise=True), "amount_paise"),
    (payment(amount_paise=None), "amount_paise"),
    (payment(mode="PAYTM"), "mode"),
    (payment(mode="upi"), "mode"),
    (payment(payment_date="15-03-2026"), "payment_date"),
    (payment(payment_date="2026-03-15T10:00:00"), "payment_date"),
    ({**payment(), "remarks": "paid at branch"}, "remarks"),
    ({k: v for k, v in payment().items() if k != "utr"}, "utr"),
]


def test_malformed_requests_are_400_and_store_nothing(api: Api) -> None:
    new_loan(api)
    stored = api.raw_loan("LN-PAY")
    for body, field in BAD_REQUESTS:
        details = assert_error(api.post("/api/v1/payments", body), 400, "VALIDATION_ERROR")
        assert field in detail_fields(details), (body, details)
    # Schema problems come first (docs/rules.md step 1 and 2): a bad UTR with an out-of-range amount is a 400.
    assert_error(api.post("/api/v1/payments", payment(utr="BAD", amount_paise=99)), 400, "VALIDATION_ERROR")
    assert_error(api.post("/api/v1/payments", raw=b'{"loan_id": "LN-PAY",'), 400, "VALIDATION_ERROR")

    assert api.raw_loan("LN-PAY") == stored
    assert stored_payments(api) == []
    assert claimed_utrs(api) == set()
    assert list_payments(api, "LN-PAY") == {"items": [], "next_cursor": None}
    assert actions(api, "LN-PAY") == ["LOAN_CREATED"]


def test_business_refusals_have_their_codes_and_store_nothing(api: Api) -> None:
    new_loan(api)
    new_loan(api, "LN-OTHER", collector_id="collector2")
    stored = {loan_id: api.raw_loan(loan_id) for loan_id in ("LN-PAY", "LN-OTHER")}
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("admin", payment(amount_paise=99), 422, "AMOUNT_OUT_OF_RANGE"),
        ("admin", payment(amount_paise=1_000_000_001), 422, "AMOUNT_OUT_OF_RANGE"),
        ("admin", payment(amount_paise=0), 422, "AMOUNT_OUT_OF_RANGE"),
        ("admin", payment(payment_date="2026-03-07"), 422, "PAYMENT_DATE_TOO_OLD"),
        ("admin", payment(payment_date="2026-03-16"), 422, "PAYMENT_DATE_IN_FUTURE"),
        ("admin", payment(amount_paise=99, payment_date="2026-03-01"), 422, "AMOUNT_OUT_OF_RANGE"),
        ("admin", payment(loan_id="LN-NOPE", payment_date="2026-03-01"), 422, "PAYMENT_DATE_TOO_OLD"),
        ("admin", payment(amount_paise=OWED + 1), 422, "OVERPAYMENT"),
        ("admin", payment(loan_id="LN-NOPE"), 404, "NOT_FOUND"),
        ("collector", payment(loan_id="LN-OTHER"), 404, "NOT_FOUND"),
        ("collector2", payment(loan_id="LN-PAY"), 404, "NOT_FOUND"),
        ("auditor", payment(), 403, "FORBIDDEN"),
    ]
    for as_, body, status, code in cases:
        details = assert_error(api.post("/api/v1/payments", body, as_=as_), status, code)
        if code == "OVERPAYMENT":
            assert details == {"max_payable_paise": OWED}
    assert_error(api.post("/api/v1/payments", payment(), as_=None), 401, "UNAUTHENTICATED")

    assert {loan_id: api.raw_loan(loan_id) for loan_id in stored} == stored
    assert stored_payments(api) == []
    assert claimed_utrs(api) == set()
    for loan_id in stored:
        assert list_payments(api, loan_id)["items"] == []
        assert actions(api, loan_id) == ["LOAN_CREATED"]

    # The same request from the assigned collector goes through: the refusals above were real.
    assert api.post("/api/v1/payments", payment(), as_="collector").status == 201


def test_duplicate_utr_is_409_with_the_original_payment_id_whatever_its_case_or_spacing(api: Api) -> None:
    new_loan(api)
    new_loan(api, "LN-TWO")
    first = api.post("/api/v1/payments", payment(utr="icic0000777"))
    assert first.status == 201
    stored = {loan_id: api.raw_loan(loan_id) for loan_id in ("LN-PAY", "LN-TWO")}

    for loan_id in ("LN-PAY", "LN-TWO"):
        reply = api.post("/api/v1/payments", payment(loan_id, utr="  ICIC0000777 ", amount_paise=100_000))
        details = assert_error(reply, 409, "DUPLICATE_UTR")
        assert details["payment_id"] == first.json["payment_id"]

    assert {loan_id: api.raw_loan(loan_id) for loan_id in stored} == stored
    assert len(stored_payments(api)) == 1
    assert list_payments(api, "LN-TWO")["items"] == []


def test_business_date_and_payment_window_follow_ist_not_utc(api: Api) -> None:
    rows = [("2026-10-05", 1_000_000, 50_000), ("2026-11-30", 1_000_000, 40_000), ("2026-12-05", 1_000_000, 30_000)]
    # 20:00 UTC on 30 Nov is 01:30 IST on 1 Dec: today is 1 Dec, the last completed business date 30 Nov.
    with api.at(dt.datetime(2026, 11, 30, 20, 0, tzinfo=dt.UTC)):
        new_loan(api, "LN-IST", rows, disbursement_date="2026-09-01")
        today = api.post(
            "/api/v1/payments", payment("LN-IST", utr="IST0000001", payment_date="2026-12-01", amount_paise=100)
        )
        assert today.status == 201, today.body
        assert_error(
            api.post("/api/v1/payments", payment("LN-IST", utr="IST0000002", payment_date="2026-12-02")),
            422,
            "PAYMENT_DATE_IN_FUTURE",
        )
        assert_error(
            api.post("/api/v1/payments", payment("LN-IST", utr="IST0000003", payment_date="2026-11-23")),
            422,
            "PAYMENT_DATE_TOO_OLD",
        )
        oldest = api.post(
            "/api/v1/payments", payment("LN-IST", utr="IST0000004", payment_date="2026-11-24", amount_paise=1_049_900)
        )
        assert oldest.status == 201, oldest.body
        loan = api.loan("LN-IST")

    # The two payments cleared instalment 1 (due 5 Oct); 30 Nov's instalment is day 1 on 30 Nov.
    assert loan["dpd_as_of"] == "2026-11-30"
    assert (loan["dpd"], loan["overdue_paise"]) == (1, 1_040_000)
    assert oldest.json["loan"]["dpd"] == 1
    assert [p["utr"] for p in list_payments(api, "LN-IST")["items"]] == ["IST0000004", "IST0000001"]


# --- reversal ---------------------------------------------------------------------------------


def test_reversal_reopens_the_loan_and_puts_its_amounts_back(api: Api) -> None:
    new_loan(api)
    before = api.loan("LN-PAY")
    posted = api.post("/api/v1/payments", payment(amount_paise=OWED), as_="collector")
    assert posted.json["loan"]["status"] == "CLOSED"
    payment_id = posted.json["payment_id"]
    path = f"/api/v1/payments/{payment_id}/reverse"

    assert_error(api.post(path, {"reason": "cheque bounced"}, as_="collector"), 403, "FORBIDDEN")
    assert_error(api.post(path, {"reason": "cheque bounced"}, as_="auditor"), 403, "FORBIDDEN")
    assert_error(api.post(path, {}, as_="manager"), 400, "VALIDATION_ERROR")
    assert api.loan("LN-PAY")["status"] == "CLOSED"

    reply = api.post(path, {"reason": "cheque bounced"}, as_="manager")

    assert reply.status == 200, reply.body
    body = reply.json
    assert (body["payment_id"], body["status"], body["utr"]) == (payment_id, "REVERSED", "SBIN0000001")
    assert (body["reversed_by"], body["reversal_reason"]) == ("manager1", "cheque bounced")
    assert body["allocation"] == posted.json["allocation"]
    assert body["loan"] == {k: before[k] for k in LOAN_KEYS}
    after = api.loan("LN-PAY")
    assert after["status"] == "ACTIVE"
    assert after["schedule"] == before["schedule"]
    assert (after["dpd"], after["overdue_paise"], after["outstanding_principal_paise"]) == (
        (dt.date(2026, 3, 14) - dt.date(2026, 1, 5)).days + 1,
        OVERDUE,
        4_000_000,
    )
    assert after["version"] == before["version"] + 2

    stored = api.raw_loan("LN-PAY")
    assert_error(api.post(path, {"reason": "again"}, as_="manager"), 409, "ALREADY_REVERSED")
    assert api.raw_loan("LN-PAY") == stored
    assert_error(api.post("/api/v1/payments/NOPE/reverse", {"reason": "bounced"}), 404, "NOT_FOUND")

    # The loan is payable again, but the bounced UTR stays used.
    assert_error(api.post("/api/v1/payments", payment(amount_paise=100)), 409, "DUPLICATE_UTR")
    assert api.post("/api/v1/payments", payment(utr="SBIN0000002", amount_paise=100)).status == 201

    assert actions(api, "LN-PAY") == [
        "PAYMENT_POSTED",
        "PAYMENT_POSTED/DENIED",  # the bounced UTR offered again
        "DELINQUENCY_CHANGED",
        "PAYMENT_REVERSED",
        "DELINQUENCY_CHANGED",
        "PAYMENT_POSTED",
        "LOAN_CREATED",
    ]
    [reversal] = api.audit(entity_id="LN-PAY", action="PAYMENT_REVERSED")
    assert (reversal["actor"], reversal["reason"]) == ({"sub": "manager1", "role": "manager"}, "cheque bounced")
    assert (reversal["before"]["status"], reversal["after"]["status"]) == ("CLOSED", "ACTIVE")

    shown = api.get(f"/api/v1/payments/{payment_id}", as_="collector")
    assert shown.status == 200
    assert shown.json["status"] == "REVERSED"
    assert shown.json["reversed_at"] == body["reversed_at"]


def test_reversing_the_payment_that_upgraded_an_npa_restores_npa_and_its_date(api: Api) -> None:
    dues = ["2025-11-05", "2025-12-05", "2026-01-05", "2026-02-05", "2026-03-05", "2026-04-05"]
    new_loan(api, "LN-NPA", [(due, 1_000_000, 50_000) for due in dues], disbursement_date="2025-10-01")
    # 5 Nov is day 1, so 14 Mar is day 130; dpd reached 91 on 5 Nov + 90 days = 3 Feb.
    npa = api.loan("LN-NPA")
    assert (npa["dpd"], npa["classification"], npa["npa_since"]) == (130, "NPA", "2026-02-03")

    partial = api.post("/api/v1/payments", payment("LN-NPA", utr="NPA0000001", amount_paise=2_100_000))
    # Oldest unpaid is now 5 Jan (day 69), but an NPA stays NPA until all overdue is paid.
    assert partial.json["loan"] == {
        "outstanding_principal_paise": 4_000_000,
        "overdue_paise": 3_150_000,
        "dpd": 69,
        "bucket": "61-90",
        "classification": "NPA",
        "status": "ACTIVE",
    }
    assert api.loan("LN-NPA")["npa_since"] == "2026-02-03"

    upgrade = api.post("/api/v1/payments", payment("LN-NPA", utr="NPA0000002", amount_paise=3_150_000))
    assert (upgrade.json["loan"]["classification"], upgrade.json["loan"]["dpd"]) == ("STANDARD", 0)
    assert api.loan("LN-NPA")["npa_since"] is None

    reversed_ = api.post(f"/api/v1/payments/{upgrade.json['payment_id']}/reverse", {"reason": "cheque bounced"})

    assert reversed_.status == 200, reversed_.body
    assert reversed_.json["loan"] == partial.json["loan"]
    loan = api.loan("LN-NPA")
    assert (loan["dpd"], loan["classification"], loan["npa_since"]) == (69, "NPA", "2026-02-03")


# --- reading ----------------------------------------------------------------------------------


def test_get_and_list_payments_newest_first_with_paging_and_collector_scope(api: Api) -> None:
    new_loan(api)
    new_loan(api, "LN-ELSE")
    posted = [
        api.post("/api/v1/payments", payment(utr=f"UTR00000{n}", amount_paise=10_000 + n), as_="collector").json
        for n in range(5)
    ]
    api.post("/api/v1/payments", payment("LN-ELSE", utr="ELSE00001"))

    shown = api.get(f"/api/v1/payments/{posted[2]['payment_id']}", as_="collector")
    assert shown.status == 200
    assert shown.json == {k: v for k, v in posted[2].items() if k != "loan"}

    first = list_payments(api, "LN-PAY", "collector", "?limit=2")
    second = list_payments(api, "LN-PAY", "collector", f"?limit=2&cursor={first['next_cursor']}")
    third = list_payments(api, "LN-PAY", "collector", f"?limit=2&cursor={second['next_cursor']}")
    listed = [p["payment_id"] for page in (first, second, third) for p in page["items"]]
    assert listed == [p["payment_id"] for p in reversed(posted)]
    assert third["next_cursor"] is None
    assert list_payments(api, "LN-PAY", "auditor")["items"] == list_payments(api, "LN-PAY")["items"]
    assert all(p["loan_id"] == "LN-PAY" for p in list_payments(api, "LN-PAY")["items"])

    assert_error(api.get(f"/api/v1/payments/{posted[0]['payment_id']}", as_="collector2"), 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/loans/LN-PAY/payments", as_="collector2"), 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/payments/NOPE"), 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/loans/LN-NOPE/payments"), 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/loans/LN-PAY/payments?limit=0"), 400, "VALIDATION_ERROR")
