"""``GET /api/v1/collectors/scores`` (docs/scoring.md, docs/api.md) on moto: the answer's shape, who sees
which rows, the validation of ``month``, the metrics of a scoring pass and a failed one. The month's
figures themselves are proved in tests/integration/test_scoring_month.py."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.wiring import services
from tests.integration.api_helpers import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    emitted_metrics,
    imported_body,
)
from tests.integration.test_api_dashboard import pay

SCORES = "/api/v1/collectors/scores"
ROW_KEYS = {
    "collector_id",
    "loans",
    "amount_due_paise",
    "collected_paise",
    "collection_efficiency",
    "cured",
    "rolled_forward",
    "score",
}


def book(api: Api) -> None:
    """Two collectors' loans, a payment for each, and a reconciliation pass (which scores March)."""
    api.create_loan(imported_body([("2026-03-05", 90_000, 10_000)], loan_id="S1", collector_id="collector1"))
    api.create_loan(imported_body([("2026-03-10", 180_000, 20_000)], loan_id="S2", collector_id="collector2"))
    pay(api, "S1", "UTRAPISCORE1", 50_000, day="2026-03-14")
    pay(api, "S2", "UTRAPISCORE2", 200_000, day="2026-03-14")
    assert api.post("/api/v1/reconciliation/runs", {}).status == 200


def rows(api: Api, query: str = "", as_: str = "admin") -> dict[str, Any]:
    reply = api.get(SCORES + query, as_=as_)
    assert reply.status == 200, reply.body[:300]
    body: dict[str, Any] = reply.json
    return body


def test_shape_and_who_sees_which_rows(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    book(api)
    assert emitted_metrics(capsys.readouterr().out).count("ScoresComputed") == 2  # February and March
    body = rows(api)
    assert set(body) == {"month", "enabled", "as_of", "frozen", "items"}
    assert (body["month"], body["enabled"], body["as_of"], body["frozen"]) == ("2026-03", True, "2026-03-14", False)
    assert [r["collector_id"] for r in body["items"]] == ["collector1", "collector2"]
    assert all(set(r) == ROW_KEYS for r in body["items"])
    one, two = body["items"]
    assert (one["amount_due_paise"], one["collected_paise"], one["collection_efficiency"]) == (100_000, 50_000, 0.5)
    assert (two["collection_efficiency"], two["cured"], two["score"]) == (1.0, 0, 85)  # 70 + 30 × 0.5
    assert rows(api, "?month=2026-03", as_="manager") == body
    assert rows(api, as_="collector2")["items"] == [two]
    assert rows(api, "?month=2026-03", as_="collector")["items"] == [one]
    assert_error(api.get(SCORES, as_="auditor"), 403, "FORBIDDEN")
    assert_error(api.get(SCORES, as_=None), 401, "UNAUTHENTICATED")


def test_a_payment_counts_at_once_in_the_current_month(api: Api) -> None:
    book(api)
    pay(api, "S1", "UTRAPISCORE3", 25_000)
    assert rows(api, as_="collector")["items"][0]["collected_paise"] == 75_000
    assert rows(api, as_="collector")["items"][0]["collection_efficiency"] == 0.75


def test_a_collector_with_collections_and_no_row_gets_one(api: Api) -> None:
    api.create_loan(imported_body([("2026-03-05", 90_000, 10_000)], loan_id="S3", collector_id="collector1"))
    pay(api, "S3", "UTRAPISCORE4", 30_000)
    assert rows(api)["items"] == [
        {
            "collector_id": "collector1",
            "loans": 0,
            "amount_due_paise": 0,
            "collected_paise": 30_000,
            "collection_efficiency": 1.0,
            "cured": 0,
            "rolled_forward": 0,
            "score": 85,
        }
    ]
    assert rows(api, "?month=2026-02")["items"] == []


@pytest.mark.parametrize("month", ["2026-3", "2026-13", "202603", "march", "2026-03-01", "", "2026-00"])
def test_a_malformed_month_is_400(api: Api, month: str) -> None:
    details = assert_error(api.get(f"{SCORES}?month={month}"), 400, "VALIDATION_ERROR")
    assert [d["field"] for d in details] == ["month"]


def test_an_early_month_is_answered_with_its_own_key(api: Api) -> None:
    # Year 1 is a real, past month: an empty answer, with the month written as the pattern publishes it.
    body = rows(api, "?month=0001-01")
    assert (body["month"], body["items"]) == ("0001-01", [])


def test_a_future_month_and_unknown_parameters_are_400(api: Api) -> None:
    assert_error(api.get(f"{SCORES}?month=2026-04"), 400, "VALIDATION_ERROR")
    details = assert_error(api.get(f"{SCORES}?collector_id=collector1"), 400, "VALIDATION_ERROR")
    assert [d["field"] for d in details] == ["collector_id"]


def test_a_scoring_failure_never_fails_the_reconciliation(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reassignments cannot be read: the run still completes clean, writes no scores and counts
    ScoringFailed."""
    reconciliation = services().reconciliation
    assert reconciliation.assignments is not None

    def broken(first_day: Any) -> Any:
        raise RuntimeError("audit index unavailable")

    monkeypatch.setattr(reconciliation.assignments, "reassignments_since", broken)
    api.create_loan(imported_body([("2026-03-05", 90_000, 10_000)], loan_id="S4", collector_id="collector1"))
    report = api.post("/api/v1/reconciliation/runs", {}).json
    assert (report["status"], report["mismatch_count"]) == ("COMPLETED", 0)
    metrics = emitted_metrics(capsys.readouterr().out)
    assert "ScoringFailed" in metrics and "ScoresComputed" not in metrics
    assert rows(api)["as_of"] is None
