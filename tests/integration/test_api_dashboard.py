"""``GET /api/v1/dashboard/summary`` through the API (moto): its shape, its roles and filters, and its
numbers against a recount made from what the API says about every loan and payment."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from chalicelib.clock import IST
from chalicelib.domain.delinquency import Bucket, Classification
from tests.integration.api_helpers import (
    YESTERDAY,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    imported_body,
)

TODAY = "2026-03-15"
OVERDUE_ROWS = [("2025-12-05", 300_000, 20_000), ("2026-01-05", 300_000, 15_000), ("2026-04-05", 400_000, 10_000)]
CURRENT_ROWS = [("2026-04-05", 500_000, 30_000), ("2026-05-05", 500_000, 25_000)]


def all_loans(api: Api, as_: str = "admin", query: str = "") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        reply = api.get(f"/api/v1/loans?limit=200{query}{suffix}", as_=as_)
        assert reply.status == 200, reply.body[:300]
        items += reply.json["items"]
        cursor = reply.json["next_cursor"]
        if cursor is None:
            return items


def recount(loans: list[dict[str, Any]], payments: list[dict[str, Any]], today: str = TODAY) -> dict[str, Any]:
    """The dashboard computed by hand from loans and payments as the API shows them."""
    active = [loan for loan in loans if loan["status"] == "ACTIVE"]
    in_arrears = [loan["dpd"] for loan in active if loan["dpd"] > 0]
    standing = [p for p in payments if p["status"] == "POSTED"]
    buckets = Counter(loan["bucket"] for loan in active)
    classes = Counter(loan["classification"] for loan in active)
    return {
        "loans": {"total": len(loans), "active": len(active)},
        "outstanding_principal_paise": sum(loan["outstanding_principal_paise"] for loan in active),
        "overdue_paise": sum(loan["overdue_paise"] for loan in active),
        "collections": {
            "today_paise": sum(p["amount_paise"] for p in standing if p["payment_date"] == today),
            "today_count": sum(1 for p in standing if p["payment_date"] == today),
            "mtd_paise": sum(p["amount_paise"] for p in standing if p["payment_date"][:7] == today[:7]),
        },
        "buckets": {
            b.value: {
                "count": buckets[b.value],
                "outstanding_principal_paise": sum(
                    loan["outstanding_principal_paise"] for loan in active if loan["bucket"] == b.value
                ),
            }
            for b in Bucket
        },
        "classification": {c.value: classes[c.value] for c in Classification},
        "avg_dpd": sum(in_arrears) / len(in_arrears) if in_arrears else 0,
        "legal_escalated": sum(1 for loan in loans if loan["legal"]["escalated"]),
    }


def summary(api: Api, query: str = "", as_: str = "admin") -> dict[str, Any]:
    reply = api.get(f"/api/v1/dashboard/summary{query}", as_=as_)
    assert reply.status == 200, reply.body[:300]
    body: dict[str, Any] = reply.json
    return body


def figures(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("as_of", "today", "scope")}


def pay(api: Api, loan_id: str, utr: str, amount: int, day: str = TODAY, as_: str = "admin") -> dict[str, Any]:
    reply = api.post(
        "/api/v1/payments",
        {"loan_id": loan_id, "utr": utr, "amount_paise": amount, "payment_date": day, "mode": "UPI"},
        as_=as_,
    )
    assert reply.status == 201, reply.body[:300]
    body: dict[str, Any] = reply.json
    return body


def payments_of(api: Api, loans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for loan in loans:
        reply = api.get(f"/api/v1/loans/{loan['loan_id']}/payments?limit=200")
        assert reply.status == 200
        out += reply.json["items"]
    return out


def book(api: Api) -> None:
    api.create_loan(imported_body(OVERDUE_ROWS, loan_id="D-OVER-1", collector_id="collector1", branch="PUNE"))
    api.create_loan(imported_body(OVERDUE_ROWS[1:], loan_id="D-OVER-2", collector_id="collector2", branch="PUNE"))
    api.create_loan(imported_body(CURRENT_ROWS, loan_id="D-CUR-1", collector_id="collector1", branch="NASHIK"))
    api.create_loan(imported_body(CURRENT_ROWS, loan_id="D-CUR-2"))


def test_an_empty_book_has_every_key_and_zeroes(api: Api) -> None:
    body = summary(api)
    assert body["as_of"] == YESTERDAY
    assert body["scope"] == "book"
    assert figures(body) == recount([], [])
    assert set(body["buckets"]) == {b.value for b in Bucket}
    assert set(body["classification"]) == {c.value for c in Classification}


def test_the_summary_equals_a_recount_after_creation_payments_reversal_and_assignment(api: Api) -> None:
    book(api)
    pay(api, "D-OVER-1", "UTRDASH0001", 320_000)
    pay(api, "D-OVER-2", "UTRDASH0002", 50_000, day="2026-03-10")
    pay(api, "D-CUR-1", "UTRDASH0003", 530_000, day="2026-03-08")  # the oldest date still accepted
    closing = pay(api, "D-CUR-2", "UTRDASH0004", 1_055_000)  # everything: the loan closes
    assert closing["loan"]["status"] == "CLOSED"
    bounced = pay(api, "D-OVER-1", "UTRDASH0005", 1_000)
    assert api.post(f"/api/v1/payments/{bounced['payment_id']}/reverse", {"reason": "bounced"}).status == 200
    assert api.post("/api/v1/loans/D-OVER-2/assign", {"collector_id": "collector1"}).status == 200

    loans = all_loans(api)
    payments = payments_of(api, loans)
    assert figures(summary(api)) == recount(loans, payments)
    body = summary(api)
    assert body["collections"]["today_count"] == 2  # the reversed payment is gone from today's
    assert body["loans"] == {"total": 4, "active": 3}


def test_collector_and_branch_portfolios_equal_their_own_recounts(api: Api) -> None:
    book(api)
    pay(api, "D-OVER-1", "UTRDASH0101", 100_000)
    pay(api, "D-CUR-1", "UTRDASH0102", 20_000)
    mine = all_loans(api, query="&collector_id=collector1")
    # Collections are credited to the collector who held the loan when it was paid.
    expected = recount(mine, payments_of(api, mine))
    assert figures(summary(api, "?collector_id=collector1")) == expected
    assert figures(summary(api, as_="collector")) == expected
    assert summary(api, as_="collector")["scope"] == "collector:collector1"

    pune = [loan for loan in all_loans(api) if loan["loan_id"] in ("D-OVER-1", "D-OVER-2")]
    assert figures(summary(api, "?branch=PUNE")) == recount(pune, payments_of(api, pune))


def test_a_payment_stays_with_the_collector_who_collected_it_after_reassignment(api: Api) -> None:
    book(api)
    pay(api, "D-OVER-2", "UTRDASH0201", 70_000)  # collector2 holds the loan
    assert api.post("/api/v1/loans/D-OVER-2/assign", {"collector_id": "collector1"}).status == 200
    assert summary(api, "?collector_id=collector2")["collections"]["today_paise"] == 70_000
    assert summary(api, "?collector_id=collector2")["loans"]["total"] == 0
    moved = summary(api, "?collector_id=collector1")
    assert moved["loans"]["total"] == 3
    assert moved["collections"]["today_paise"] == 0


def test_today_rolls_over_at_ist_midnight_without_a_job(api: Api) -> None:
    book(api)
    with api.at(dt.datetime(2026, 3, 15, 23, 59, tzinfo=IST)):
        pay(api, "D-OVER-1", "UTRDASH0301", 10_000)
        assert summary(api)["collections"] == {"today_paise": 10_000, "today_count": 1, "mtd_paise": 10_000}
    with api.at(dt.datetime(2026, 3, 16, 0, 1, tzinfo=IST)):
        body = summary(api)
        assert body["collections"] == {"today_paise": 0, "today_count": 0, "mtd_paise": 10_000}
        assert body["as_of"] == "2026-03-15"
        pay(api, "D-OVER-1", "UTRDASH0302", 20_000, day="2026-03-16")
        assert summary(api)["collections"] == {"today_paise": 20_000, "today_count": 1, "mtd_paise": 30_000}
    with api.at(dt.datetime(2026, 4, 1, 0, 1, tzinfo=IST)):
        assert summary(api)["collections"] == {"today_paise": 0, "today_count": 0, "mtd_paise": 0}
        # Dated in March, posted in April: March's figures, not April's.
        pay(api, "D-OVER-1", "UTRDASH0303", 5_000, day="2026-03-31")
        assert summary(api)["collections"] == {"today_paise": 0, "today_count": 0, "mtd_paise": 0}


def test_roles_and_filters(api: Api) -> None:
    for role in ("admin", "manager", "auditor", "collector"):
        assert api.get("/api/v1/dashboard/summary", as_=role).status == 200
    assert_error(api.get("/api/v1/dashboard/summary", as_=None), 401, "UNAUTHENTICATED")
    assert_error(api.get("/api/v1/dashboard/summary?collector_id=collector2", as_="collector"), 403, "FORBIDDEN")
    assert_error(api.get("/api/v1/dashboard/summary?branch=PUNE", as_="collector"), 403, "FORBIDDEN")
    assert api.get("/api/v1/dashboard/summary?collector_id=collector1", as_="collector").status == 200
    assert_error(api.get("/api/v1/dashboard/summary?collector_id=collector1&branch=X"), 400, "VALIDATION_ERROR")
    assert_error(api.get("/api/v1/dashboard/summary?collector_id=%20bad"), 400, "VALIDATION_ERROR")
    assert_error(api.get("/api/v1/dashboard/summary?bucket=CURRENT"), 400, "VALIDATION_ERROR")
    assert_error(api.post("/api/v1/dashboard/summary", {}), 405, "METHOD_NOT_ALLOWED")
