"""The proof of collector scoring (docs/scoring.md): one IST month (April 2026) for three collectors,
driven through the API with frozen clocks, day-end runs and the reconciliation that follows each, and
the endpoint's figures compared with numbers worked out by hand below. On moto: nothing here races."""

from __future__ import annotations

import datetime as dt
from typing import Any

import boto3
import pytest

from chalicelib import wiring
from chalicelib.clock import IST
from chalicelib.domain.roles import Role
from chalicelib.wiring import services
from tests.integration.api_helpers import (
    USERS,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    imported_body,
)

SCORES = "/api/v1/collectors/scores"


def at(day: str) -> dt.datetime:
    """Noon IST on ``day``."""
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(12, 0), IST)


@pytest.fixture
def month_api(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """The API with a third collector, flags read on every use, and a reconciliation (which scores)
    after every completed day-end run, as deployed."""
    monkeypatch.setenv("RECONCILE_AFTER_DAY_END", "true")
    monkeypatch.setenv("FLAG_CACHE_SECONDS", "0")
    monkeypatch.setitem(USERS, "collector3", ("collector3", Role.COLLECTOR))
    wiring.reset()
    services().auth.add_user("collector3", "correct-horse-battery", Role.COLLECTOR)
    api.mint_all()
    return api


def pay(api: Api, loan_id: str, utr: str, amount: int, day: str) -> dict[str, Any]:
    reply = api.post(
        "/api/v1/payments",
        {"loan_id": loan_id, "utr": utr, "amount_paise": amount, "payment_date": day, "mode": "UPI"},
    )
    assert reply.status == 201, reply.body[:300]
    body: dict[str, Any] = reply.json
    return body


def day_end(api: Api, business_date: str) -> None:
    """A day-end run for the date, then the reconciliation (and scoring) that follows it. A full scan:
    planning by watch dates queries 16 shards per day since the last run, slow on moto for a tiny book."""
    reply = api.post("/api/v1/jobs/dpd/runs", {"business_date": business_date, "full_scan": True})
    assert reply.status == 200 and reply.json["outcome"] == "COMPLETED", reply.body[:300]
    report = api.get("/api/v1/reconciliation/latest").json
    assert report["as_of"] == business_date and report["status"] == "COMPLETED"
    assert report["mismatch_count"] == 0, report["mismatches"]


def scores(api: Api, month: str, as_: str = "admin") -> dict[str, Any]:
    reply = api.get(f"{SCORES}?month={month}", as_=as_)
    assert reply.status == 200, reply.body[:300]
    body: dict[str, Any] = reply.json
    return body


def by_collector(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["collector_id"]: {k: v for k, v in row.items() if k != "collector_id"} for row in body["items"]}


# Worked by hand. Buckets by dpd: CURRENT 0, 1-30, 31-60, 61-90, 90+ (domain.delinquency.BANDS).
#
# L1, collector1 all month: 1,000 due 5 Mar (unpaid), 5 Apr and 5 May. End of 31 Mar: 1,000 overdue,
#   dpd 27 (1-30). Paid 2,000 on 10 Apr: nothing overdue at the end of 30 Apr (CURRENT): cured.
#   Due = 1,000 carried in + 1,000 due 5 Apr = 2,000. Collected 2,000.
# L2, collector1 all month: 500 due 10 Apr and 10 May. CURRENT at the end of March; 10 Apr unpaid, so
#   dpd 21 at the end of 30 Apr (1-30): rolled forward. Due 500. A 100 payment on 20 Apr is reversed
#   on 21 Apr: collected 0.
# L3, collector2 until it is reassigned to collector3 on 15 Apr (the 15th is collector3's): 800 due on
#   the 20th of Feb, Mar, Apr and May. End of 31 Mar: Feb and Mar unpaid, 1,600 overdue, dpd 40 (31-60).
#   collector2 holds 1–14 Apr: due 1,600 carried in + nothing due in 1–14 = 1,600; collector2 is paid
#   800 on 12 Apr (Feb's instalment): end of 14 Apr the oldest unpaid is 20 Mar, dpd 26 (1-30): cured.
#   collector3 holds 15–30 Apr: due 800 carried in (Mar) + 800 due 20 Apr = 1,600; nothing paid; end
#   of 30 Apr dpd 42 (31-60) against 1-30 at the end of 14 Apr: rolled forward.
# L4, collector3 all month: 600 due 25 Apr and 25 May, paid 600 on 25 Apr: due 600, collected 600,
#   CURRENT at both ends.
#
# collector1: loans 2, due 2,000 + 500 = 2,500, collected 2,000, cured 1, rolled 1
#   efficiency 2,000 / 2,500 = 0.8; movement (1 + (1 - 1)/2) / 2 = 0.5
#   score 100 × (0.7 × 0.8 + 0.3 × 0.5) = 56 + 15 = 71
# collector2: loans 1, due 1,600, collected 800, cured 1, rolled 0
#   efficiency 0.5; movement (1 + 1/1) / 2 = 1; score 100 × (0.35 + 0.3) = 65
# collector3: loans 2, due 1,600 + 600 = 2,200, collected 600, cured 0, rolled 1
#   efficiency 600 / 2,200 = 0.272727… → 0.2727; movement (1 + (0 - 1)/2) / 2 = 0.25
#   score 100 × (0.7 × 0.2727 + 0.3 × 0.25) = 19.089 + 7.5 = 26.589 → 27
APRIL = {
    "collector1": {
        "loans": 2,
        "amount_due_paise": 250_000,
        "collected_paise": 200_000,
        "collection_efficiency": 0.8,
        "cured": 1,
        "rolled_forward": 1,
        "score": 71,
    },
    "collector2": {
        "loans": 1,
        "amount_due_paise": 160_000,
        "collected_paise": 80_000,
        "collection_efficiency": 0.5,
        "cured": 1,
        "rolled_forward": 0,
        "score": 65,
    },
    "collector3": {
        "loans": 2,
        "amount_due_paise": 220_000,
        "collected_paise": 60_000,
        "collection_efficiency": 0.2727,
        "cured": 0,
        "rolled_forward": 1,
        "score": 27,
    },
}


def test_a_hand_computed_month_for_three_collectors_equals_the_endpoint(month_api: Api) -> None:
    api = month_api
    with api.at(at("2026-04-01")):
        api.create_loan(
            imported_body(
                [("2026-03-05", 90_000, 10_000), ("2026-04-05", 90_000, 10_000), ("2026-05-05", 90_000, 10_000)],
                loan_id="L1",
                collector_id="collector1",
                disbursement_date="2026-02-01",
            )
        )
        api.create_loan(
            imported_body(
                [("2026-04-10", 45_000, 5_000), ("2026-05-10", 45_000, 5_000)],
                loan_id="L2",
                collector_id="collector1",
                disbursement_date="2026-03-10",
            )
        )
        api.create_loan(
            imported_body(
                [(f"2026-0{m}-20", 70_000, 10_000) for m in (2, 3, 4, 5)],
                loan_id="L3",
                collector_id="collector2",
                disbursement_date="2026-01-20",
            )
        )
        api.create_loan(
            imported_body(
                [("2026-04-25", 55_000, 5_000), ("2026-05-25", 55_000, 5_000)],
                loan_id="L4",
                collector_id="collector3",
                disbursement_date="2026-03-25",
            )
        )
    with api.at(at("2026-04-10")):
        pay(api, "L1", "UTRSCORE0001", 200_000, "2026-04-10")
    with api.at(at("2026-04-12")):
        pay(api, "L3", "UTRSCORE0002", 80_000, "2026-04-12")
    with api.at(at("2026-04-15")):
        assert api.post("/api/v1/loans/L3/assign", {"collector_id": "collector3"}).status == 200
    with api.at(at("2026-04-16")):
        day_end(api, "2026-04-15")
        mid = by_collector(scores(api, "2026-04"))
        assert mid["collector3"]["collected_paise"] == 0
        assert mid["collector2"]["collected_paise"] == 80_000
    with api.at(at("2026-04-20")):
        bounced = pay(api, "L2", "UTRSCORE0003", 10_000, "2026-04-20")
        assert by_collector(scores(api, "2026-04"))["collector1"]["collected_paise"] == 210_000  # live
    with api.at(at("2026-04-21")):
        assert api.post(f"/api/v1/payments/{bounced['payment_id']}/reverse", {"reason": "bounced"}).status == 200
    with api.at(at("2026-04-25")):
        pay(api, "L4", "UTRSCORE0004", 60_000, "2026-04-25")
        assert by_collector(scores(api, "2026-04", as_="collector3"))["collector3"]["collected_paise"] == 60_000
    with api.at(at("2026-05-01")):
        day_end(api, "2026-04-30")
        closed = scores(api, "2026-04")
        assert closed["enabled"] is True and closed["frozen"] is True and closed["as_of"] == "2026-04-30"
        assert by_collector(closed) == APRIL
        assert scores(api, "2026-04", as_="collector2")["items"] == [
            {"collector_id": "collector2", **APRIL["collector2"]}
        ]

    # Frozen: a payment backdated into April and later passes change nothing.
    with api.at(at("2026-05-03")):
        pay(api, "L2", "UTRSCORE0005", 50_000, "2026-04-28")
        day_end(api, "2026-05-02")
        assert api.post("/api/v1/reconciliation/runs", {}).status == 200
        assert scores(api, "2026-04") == closed
        may = by_collector(scores(api, "2026-05"))
        assert may["collector1"]["loans"] == 2 and may["collector3"]["loans"] == 2


def test_flag_off_computes_nothing_and_back_on_rebuilds_the_month(month_api: Api) -> None:
    """With SCORING_ENABLED off a pass writes no scores and the answer says enabled: false; turned back
    on, the next pass rebuilds the month from the ledger."""
    api = month_api
    parameter = f"/loan-crm/{api.stage}/flags/SCORING_ENABLED"
    ssm = boto3.client("ssm")
    with api.at(at("2026-04-10")):
        api.create_loan(
            imported_body([("2026-04-05", 90_000, 10_000)], loan_id="F1", collector_id="collector1"),
        )
        pay(api, "F1", "UTRSCOREF001", 40_000, "2026-04-09")
        ssm.put_parameter(Name=parameter, Value="false", Type="String", Overwrite=True)
        day_end(api, "2026-04-09")
        assert scores(api, "2026-04") == {
            "month": "2026-04",
            "enabled": False,
            "as_of": None,
            "frozen": False,
            "items": [],
        }
        table = boto3.client("dynamodb").scan(TableName=f"loan-crm-{api.stage}-scores")
        assert table["Items"] == []
        ssm.put_parameter(Name=parameter, Value="true", Type="String", Overwrite=True)
        assert api.post("/api/v1/reconciliation/runs", {}).status == 200
        body = scores(api, "2026-04")
        assert body["enabled"] is True and body["frozen"] is False and body["as_of"] == "2026-04-09"
        assert by_collector(body)["collector1"] == {
            "loans": 1,
            "amount_due_paise": 100_000,
            "collected_paise": 40_000,
            "collection_efficiency": 0.4,
            "cured": 0,
            "rolled_forward": 1,  # CURRENT at the end of March, 5 dpd (1-30) at the end of 9 Apr
            "score": 28,  # 100 × (0.7 × 0.4 + 0.3 × (1 + (0 - 1)/1) / 2) = 28 + 0
        }
