"""Loan endpoints end to end (docs/rules.md) through chalice.test.Client against moto."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

from chalicelib.adapters.dynamodb.loans import _whole_loans
from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.services.ports import LoanFilter
from tests.integration.api_helpers import (
    YESTERDAY,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    detail_fields,
    imported_body,
    loan_body,
)

CONTRACT_FIELDS: dict[str, Any] = {
    "loan_id": str,
    "borrower": dict,
    "status": str,
    "principal_paise": int,
    "outstanding_principal_paise": int,
    "overdue_paise": int,
    "dpd": int,
    "bucket": str,
    "classification": str,
    "npa_since": (str, type(None)),
    "legal": dict,
    "collector_id": (str, type(None)),
    "dpd_as_of": str,
    "schedule": list,
    "version": int,
}
ROW_FIELDS = {"seq", "due_date", "principal_paise", "interest_paise", "paid_principal_paise", "paid_interest_paise"}


def assert_spec_shape(loan: dict[str, Any]) -> None:
    for name, kind in CONTRACT_FIELDS.items():
        assert name in loan, name
        assert isinstance(loan[name], kind), (name, loan[name])
        assert not isinstance(loan[name], bool), name
    assert loan["status"] in {"ACTIVE", "CLOSED", "WRITTEN_OFF"}
    assert loan["bucket"] in {"CURRENT", "1-30", "31-60", "61-90", "90+"}
    assert loan["classification"] in {"STANDARD", "SMA-0", "SMA-1", "SMA-2", "NPA"}
    assert {"name", "phone"} <= set(loan["borrower"])
    assert set(loan["legal"]) == {"escalated", "escalated_on"}
    assert isinstance(loan["legal"]["escalated"], bool)
    dt.date.fromisoformat(loan["dpd_as_of"])
    for seq, row in enumerate(loan["schedule"], start=1):
        assert set(row) >= ROW_FIELDS
        assert row["seq"] == seq
        dt.date.fromisoformat(row["due_date"])
        for name in ROW_FIELDS - {"due_date"}:
            assert type(row[name]) is int, (name, row[name])


def round_half_up(x: Fraction) -> int:
    return int((x + Fraction(1, 2)) // 1)


def expected_emi(principal: int, bps: int, months: int) -> int:
    if bps == 0:
        return round_half_up(Fraction(principal, months))
    r = Fraction(bps, 120_000)
    growth = (1 + r) ** months
    return round_half_up(principal * r * growth / (growth - 1))


# --- create -----------------------------------------------------------------------------------------


TERMS = [(10_000_000, 1200, 12), (12_345_678, 1799, 37), (50_000_001, 2450, 60), (99_999, 0, 7)]


def test_create_generated_schedule(api: Api) -> None:
    for principal, bps, months in TERMS:
        loan = api.create_loan(principal_paise=principal, annual_rate_bps=bps, tenure_months=months)
        case = (principal, bps, months)

        assert_spec_shape(loan)
        assert loan["status"] == "ACTIVE"
        assert loan["principal_paise"] == loan["outstanding_principal_paise"] == principal
        assert (loan["dpd"], loan["bucket"], loan["classification"]) == (0, "CURRENT", "STANDARD")
        assert loan["overdue_paise"] == 0 and loan["npa_since"] is None
        assert loan["legal"] == {"escalated": False, "escalated_on": None}
        assert loan["dpd_as_of"] == YESTERDAY
        assert loan["version"] == 1
        assert loan["loan_id"]

        schedule = loan["schedule"]
        assert len(schedule) == months
        assert sum(row["principal_paise"] for row in schedule) == principal, case
        emi = expected_emi(principal, bps, months)
        r = Fraction(bps, 120_000)
        balance = principal
        for row in schedule:
            assert row["interest_paise"] == round_half_up(balance * r), (case, row)
            assert row["paid_principal_paise"] == row["paid_interest_paise"] == 0
            if row["seq"] < months:
                assert row["principal_paise"] + row["interest_paise"] == emi, (case, row)
            else:
                assert row["principal_paise"] == balance  # the last instalment absorbs rounding
            balance -= row["principal_paise"]
        assert balance == 0
        assert [row["due_date"][8:] for row in schedule] == ["05"] * months
        assert schedule[0]["due_date"] == "2026-04-05"

        assert api.loan(loan["loan_id"]) == loan
        assert api.loan(loan["loan_id"], as_="auditor") == loan


def test_reference_emi_formula() -> None:
    """The expectation itself, on a textbook case: ₹1,00,000 at 12% for 12 months is ₹8,884.88."""
    assert expected_emi(10_000_000, 1200, 12) == 888_488


def test_create_imported_schedule_already_overdue_as_of_yesterday_ist(api: Api) -> None:
    # 00:10 IST on 15 March is still 14 March in UTC: yesterday must be the IST yesterday, the 14th.
    rows = [
        ("2026-01-10", 300_000, 20_000),
        ("2026-02-10", 300_000, 15_000),
        ("2026-03-14", 300_000, 10_000),
        ("2026-04-10", 100_000, 5_000),
    ]
    with api.at(dt.datetime(2026, 3, 14, 18, 40, tzinfo=dt.UTC)):
        loan = api.create_loan(imported_body(rows, collector_id="collector1", branch="Nashik"))

    assert_spec_shape(loan)
    assert loan["dpd_as_of"] == "2026-03-14"
    # 10 Jan is day 1, so 14 March is day 21 + 28 + 14 + 1 = 64.
    assert loan["dpd"] == (dt.date(2026, 3, 14) - dt.date(2026, 1, 10)).days + 1 == 64
    assert (loan["bucket"], loan["classification"]) == ("61-90", "SMA-2")
    assert loan["overdue_paise"] == 320_000 + 315_000 + 310_000
    assert loan["principal_paise"] == loan["outstanding_principal_paise"] == 1_000_000
    assert loan["npa_since"] is None
    assert loan["collector_id"] == "collector1"
    assert [(r["due_date"], r["principal_paise"], r["interest_paise"]) for r in loan["schedule"]] == rows
    assert api.loan(loan["loan_id"]) == loan


def test_imported_schedule_delinquency_edges(api: Api) -> None:
    # Long overdue: 1 Nov 2025 .. 14 Mar 2026 is dpd 134, NPA since dpd reached 91 (due date + 90 days).
    rows = [("2025-11-01", 500_000, 9_000), ("2025-12-01", 500_000, 4_500)]
    loan = api.create_loan(imported_body(rows))
    assert loan["dpd"] == (dt.date(2026, 3, 14) - dt.date(2025, 11, 1)).days + 1 == 134
    assert (loan["bucket"], loan["classification"]) == ("90+", "NPA")
    assert loan["npa_since"] == "2026-01-30"
    assert loan["overdue_paise"] == 1_013_500

    # Due today is not overdue yet (today's day-end has not passed); a given loan_id is kept.
    rows = [("2026-03-15", 100_000, 1_000), ("2026-04-15", 100_000, 500)]
    loan = api.create_loan(imported_body(rows, loan_id="LN-IMPORT-0001"))
    assert loan["loan_id"] == "LN-IMPORT-0001"
    assert (loan["dpd"], loan["overdue_paise"], loan["bucket"]) == (0, 0, "CURRENT")


INVALID_SCHEDULES: list[tuple[str, list[tuple[str, int, int]], dict[str, Any], str]] = [
    ("sum-mismatch", [("2026-04-01", 100_000, 0), ("2026-05-01", 99_999, 0)], {"principal_paise": 200_000}, "schedule"),
    ("equal-dates", [("2026-04-01", 100_000, 0), ("2026-04-01", 100_000, 0)], {}, "schedule[1].due_date"),
    ("decreasing-dates", [("2026-05-01", 100_000, 0), ("2026-04-01", 100_000, 0)], {}, "schedule[1].due_date"),
    (
        "due-on-disbursement",
        [("2026-03-01", 100_000, 0), ("2026-04-01", 100_000, 0)],
        {"disbursement_date": "2026-03-01"},
        "schedule[0].due_date",
    ),
    (
        "due-before-disbursement",
        [("2026-02-01", 100_000, 0), ("2026-04-01", 100_000, 0)],
        {"disbursement_date": "2026-03-01"},
        "schedule[0].due_date",
    ),
]


def test_invalid_schedules_are_422_and_store_nothing(api: Api) -> None:
    for name, rows, overrides, field in INVALID_SCHEDULES:
        body = imported_body(rows, loan_id="LN-BAD", **overrides)
        details = assert_error(api.post("/api/v1/loans", body), 422, "INVALID_SCHEDULE")
        assert field in detail_fields(details), name
    # Generated schedules: the first due date must be after disbursement.
    for first_due in ("2026-03-01", "2026-02-28"):
        body = loan_body(loan_id="LN-BAD", disbursement_date="2026-03-01", first_due_date=first_due)
        details = assert_error(api.post("/api/v1/loans", body), 422, "INVALID_SCHEDULE")
        assert detail_fields(details) == ["first_due_date"], first_due
    assert api.raw_loan("LN-BAD") is None
    assert api.audit(entity_id="LN-BAD") == []


def test_existing_loan_id_is_409_and_the_stored_loan_is_unchanged(api: Api) -> None:
    first = api.create_loan(loan_id="LN-DUP-1")
    stored = api.raw_loan("LN-DUP-1")

    other = loan_body(
        loan_id="LN-DUP-1", borrower={"name": "Someone Else", "phone": "9000000000"}, principal_paise=5_000_000
    )
    details = assert_error(api.post("/api/v1/loans", other), 409, "LOAN_EXISTS")
    assert details == {"loan_id": "LN-DUP-1"}

    assert api.raw_loan("LN-DUP-1") == stored
    assert api.loan("LN-DUP-1") == first
    assert [e["action"] for e in api.audit(entity_id="LN-DUP-1")] == ["LOAN_CREATED"]


def test_create_rejects_non_collectors_and_mixed_schedule_kinds(api: Api) -> None:
    for collector in ("nobody", "manager1"):
        details = assert_error(api.post("/api/v1/loans", loan_body(collector_id=collector)), 400, "VALIDATION_ERROR")
        assert detail_fields(details) == ["collector_id"]
    body = loan_body(schedule=[{"due_date": "2026-04-01", "principal_paise": 10_000_000, "interest_paise": 0}])
    assert_error(api.post("/api/v1/loans", body), 400, "VALIDATION_ERROR")
    assert api.get("/api/v1/loans").json["items"] == []


# --- read and list ----------------------------------------------------------------------------------


def test_unknown_loan_is_404_everywhere(api: Api) -> None:
    assert_error(api.get("/api/v1/loans/LN-NOPE"), 404, "NOT_FOUND")
    assert_error(api.patch("/api/v1/loans/LN-NOPE", {"notes": "x"}), 404, "NOT_FOUND")
    assert_error(api.post("/api/v1/loans/LN-NOPE/assign", {"collector_id": "collector1"}), 404, "NOT_FOUND")
    assert api.raw_loan("LN-NOPE") is None
    assert api.audit() == []


def test_collector_sees_only_assigned_loans(api: Api) -> None:
    mine = api.create_loan(collector_id="collector1")
    theirs = api.create_loan(collector_id="collector2")
    unassigned = api.create_loan()

    assert api.loan(mine["loan_id"], as_="collector") == mine
    for loan in (theirs, unassigned):
        missing = assert_error(api.get(f"/api/v1/loans/{loan['loan_id']}", as_="collector"), 404, "NOT_FOUND")
        unknown = assert_error(api.get("/api/v1/loans/LN-NOPE", as_="collector"), 404, "NOT_FOUND")
        assert missing == unknown  # same answer as for a loan that does not exist

    listed = api.get("/api/v1/loans", as_="collector").json
    assert [loan["loan_id"] for loan in listed["items"]] == [mine["loan_id"]]
    assert listed["next_cursor"] is None
    # Asking for another collector's book gives nothing, not their loans.
    assert api.get("/api/v1/loans?collector_id=collector2", as_="collector").json["items"] == []
    assert [x["loan_id"] for x in api.get("/api/v1/loans?collector_id=collector1", as_="collector").json["items"]] == [
        mine["loan_id"]
    ]
    # A manager sees all three.
    assert len(api.get("/api/v1/loans", as_="manager").json["items"]) == 3


def test_auditor_reads_but_cannot_create(api: Api) -> None:
    loan = api.create_loan()
    assert api.loan(loan["loan_id"], as_="auditor") == loan
    assert len(api.get("/api/v1/loans", as_="auditor").json["items"]) == 1
    assert_error(api.post("/api/v1/loans", loan_body(loan_id="LN-AUD"), as_="auditor"), 403, "FORBIDDEN")
    assert api.raw_loan("LN-AUD") is None
    assert_error(api.post("/api/v1/loans", loan_body(loan_id="LN-COL"), as_="collector"), 403, "FORBIDDEN")
    assert api.raw_loan("LN-COL") is None


def _ids(reply_items: list[dict[str, Any]]) -> set[str]:
    return {loan["loan_id"] for loan in reply_items}


def _list_ids(api: Api, query: str) -> set[str]:
    reply = api.get(f"/api/v1/loans?{query}")
    assert reply.status == 200, reply.body
    return _ids(reply.json["items"])


def test_list_filters(api: Api) -> None:
    current = api.create_loan(collector_id="collector1")["loan_id"]
    sma0 = api.create_loan(imported_body([("2026-03-14", 100_000, 0)], collector_id="collector1"))["loan_id"]
    sma1 = api.create_loan(imported_body([("2026-02-01", 100_000, 0)], collector_id="collector2"))["loan_id"]
    npa = api.create_loan(imported_body([("2025-12-01", 100_000, 0)]))["loan_id"]
    closed = api.create_loan(collector_id="collector2")["loan_id"]
    item = LoanModel.get(closed)
    item.update(actions=[LoanModel.status.set("CLOSED")])

    assert _list_ids(api, "bucket=CURRENT") == {current, closed}
    assert _list_ids(api, "bucket=1-30") == {sma0}
    assert _list_ids(api, "bucket=31-60") == {sma1}
    assert _list_ids(api, "bucket=90%2B") == {npa}
    assert _list_ids(api, "bucket=61-90") == set()
    assert _list_ids(api, "classification=SMA-0") == {sma0}
    assert _list_ids(api, "classification=NPA") == {npa}
    assert _list_ids(api, "classification=STANDARD") == {current, closed}
    assert _list_ids(api, "status=CLOSED") == {closed}
    assert _list_ids(api, "status=ACTIVE") == {current, sma0, sma1, npa}
    assert _list_ids(api, "status=WRITTEN_OFF") == set()
    assert _list_ids(api, "collector_id=collector1") == {current, sma0}
    assert _list_ids(api, "collector_id=collector2") == {sma1, closed}
    assert _list_ids(api, "collector_id=collector2&status=ACTIVE") == {sma1}
    assert _list_ids(api, "collector_id=collector1&bucket=1-30") == {sma0}
    assert _list_ids(api, "bucket=CURRENT&status=ACTIVE") == {current}
    assert _list_ids(api, "") == {current, sma0, sma1, npa, closed}


def test_list_invalid_filter_value_or_cursor_is_400(api: Api) -> None:
    cases = [
        ("bucket=91%2B", "bucket"),
        ("bucket=current", "bucket"),
        ("classification=SMA-3", "classification"),
        ("status=OPEN", "status"),
    ]
    for query, field in cases:
        details = assert_error(api.get(f"/api/v1/loans?{query}"), 400, "VALIDATION_ERROR")
        assert detail_fields(details) == [field], query
    api.create_loan()
    for cursor in ("not-a-cursor", "eyJmb28iOiAxfQ", "e30"):
        details = assert_error(api.get(f"/api/v1/loans?cursor={cursor}"), 400, "VALIDATION_ERROR")
        assert detail_fields(details) == ["cursor"]


def _page_through(api: Api, query: str, limit: int) -> tuple[list[str], int]:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        reply = api.get(f"/api/v1/loans?limit={limit}&{query}{suffix}")
        assert reply.status == 200, reply.body
        page = reply.json
        assert set(page) == {"items", "next_cursor"}
        assert 1 <= len(page["items"]) <= limit
        seen += [loan["loan_id"] for loan in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, pages
        assert pages < 20, "paging does not end"


def test_cursor_paging_sees_each_loan_once(api: Api) -> None:
    created = {api.create_loan(collector_id="collector1")["loan_id"] for _ in range(15)}
    # The plain scan, a filtered scan and both indexes page the same way.
    for query in ("", "status=ACTIVE", "bucket=CURRENT", "collector_id=collector1", "classification=STANDARD"):
        seen, pages = _page_through(api, query, 4)
        assert sorted(seen) == sorted(created), query
        assert pages == 4, query
    seen, pages = _page_through(api, "", 5)  # the last page is exactly full: still no dangling cursor
    assert (sorted(seen), pages) == (sorted(created), 3)
    seen, _ = _page_through(api, "collector_id=collector1", 1)
    assert sorted(seen) == sorted(created)


def test_a_listing_index_entry_that_lags_its_loan_does_not_show_it(api: Api) -> None:
    """The listing indexes copy keys and filters only and the loans are read from the table. An index
    lags its table for a moment after a write: an entry still naming a loan's old collector or bucket,
    or a loan that is gone, must not put that loan in the listing (a collector would see another's)."""
    mine = api.create_loan(collector_id="collector1")["loan_id"]
    moved = api.create_loan(collector_id="collector2")["loan_id"]
    entries = [
        LoanModel(mine, collector_id="collector1", bucket="CURRENT"),
        LoanModel(moved, collector_id="collector1", bucket="CURRENT"),  # reassigned since
        LoanModel("GONE-1", collector_id="collector1", bucket="CURRENT"),
    ]
    shown = _whole_loans(iter(entries), LoanFilter(collector_id="collector1"), batch=2)
    assert [loan.loan_id for loan in shown] == [mine]
    in_bucket = _whole_loans(iter(entries), LoanFilter(collector_id="collector1", bucket="1-30"), batch=2)
    assert list(in_bucket) == []  # the entry says CURRENT, the loan too: but not the filter's bucket
    by_bucket = _whole_loans(iter(entries), LoanFilter(bucket="CURRENT", status="ACTIVE"), batch=5)
    assert [loan.loan_id for loan in by_bucket] == [mine, moved]


def test_collector_cannot_widen_scope_with_a_cursor(api: Api) -> None:
    for _ in range(3):
        api.create_loan(collector_id="collector2")
    mine = {api.create_loan(collector_id="collector1")["loan_id"] for _ in range(3)}
    cursor = api.get("/api/v1/loans?limit=1", as_="manager").json["next_cursor"]
    reply = api.get(f"/api/v1/loans?cursor={cursor}", as_="collector")
    # A cursor from another listing is refused, or resumes only inside the collector's own book.
    if reply.status == 200:
        assert _ids(reply.json["items"]) <= mine
    else:
        assert_error(reply, 400, "VALIDATION_ERROR")


# --- PATCH ------------------------------------------------------------------------------------------


def test_patch_is_a_merge(api: Api) -> None:
    loan = api.create_loan(notes="first call done")
    loan_id = loan["loan_id"]

    reply = api.patch(f"/api/v1/loans/{loan_id}", {"borrower": {"phone": "9123456780"}}, as_="manager")
    assert reply.status == 200, reply.body
    after = reply.json
    assert after["borrower"] == {**loan["borrower"], "phone": "9123456780"}
    assert after["notes"] == "first call done"
    assert after["version"] == loan["version"] + 1
    untouched = {k: v for k, v in loan.items() if k not in {"borrower", "updated_at", "version"}}
    assert {k: after[k] for k in untouched} == untouched
    assert api.loan(loan_id) == after

    after_notes = api.patch(f"/api/v1/loans/{loan_id}", {"notes": "promised to pay on 20th"}).json
    assert after_notes["borrower"] == after["borrower"]
    assert after_notes["notes"] == "promised to pay on 20th"

    cleared = api.patch(f"/api/v1/loans/{loan_id}", {"borrower": {"email": None}}).json
    assert cleared["borrower"] == {**after["borrower"], "email": None}
    assert cleared["notes"] == "promised to pay on 20th"
    assert api.loan(loan_id)["borrower"]["email"] is None

    actions = [e["action"] for e in api.audit(entity_id=loan_id)]
    assert actions == ["LOAN_UPDATED", "LOAN_UPDATED", "LOAN_UPDATED", "LOAN_CREATED"]


def test_patch_cannot_remove_name_or_phone(api: Api) -> None:
    loan = api.create_loan()
    stored = api.raw_loan(loan["loan_id"])
    for borrower in ({"name": None}, {"phone": None}):
        assert_error(api.patch(f"/api/v1/loans/{loan['loan_id']}", {"borrower": borrower}), 400, "VALIDATION_ERROR")
    assert api.raw_loan(loan["loan_id"]) == stored


def test_patch_by_read_only_roles_is_403(api: Api) -> None:
    loan = api.create_loan(collector_id="collector1")
    stored = api.raw_loan(loan["loan_id"])
    for role in ("collector", "auditor"):
        reply = api.patch(f"/api/v1/loans/{loan['loan_id']}", {"borrower": {"phone": "9000000001"}}, as_=role)
        assert_error(reply, 403, "FORBIDDEN")
    assert api.raw_loan(loan["loan_id"]) == stored
    assert api.audit(entity_id=loan["loan_id"], action="LOAN_UPDATED") == []


# --- assign -----------------------------------------------------------------------------------------


def test_assign(api: Api) -> None:
    loan = api.create_loan(collector_id="collector1")
    reply = api.post(f"/api/v1/loans/{loan['loan_id']}/assign", {"collector_id": "collector2"}, as_="manager")
    assert reply.status == 200, reply.body
    assert reply.json["collector_id"] == "collector2"
    assert reply.json["version"] == loan["version"] + 1
    assert api.loan(loan["loan_id"])["collector_id"] == "collector2"
    assert api.get(f"/api/v1/loans/{loan['loan_id']}", as_="collector").status == 404
    assert api.get(f"/api/v1/loans/{loan['loan_id']}", as_="collector2").status == 200

    entries = api.audit(entity_id=loan["loan_id"], action="LOAN_ASSIGNED")
    assert len(entries) == 1
    entry = entries[0]
    assert entry["before"] == {"collector_id": "collector1"}
    assert entry["after"] == {"collector_id": "collector2"}
    assert entry["actor"] == {"sub": "manager1", "role": "manager"}
    assert entry["outcome"] == "SUCCESS"

    # Assigning a loan nobody had records a null "before".
    unassigned = api.create_loan()
    assert api.post(f"/api/v1/loans/{unassigned['loan_id']}/assign", {"collector_id": "collector1"}).status == 200
    (entry,) = api.audit(entity_id=unassigned["loan_id"], action="LOAN_ASSIGNED")
    assert (entry["before"], entry["after"]) == ({"collector_id": None}, {"collector_id": "collector1"})


def test_assign_to_a_non_collector_is_400(api: Api) -> None:
    loan = api.create_loan(collector_id="collector1")
    stored = api.raw_loan(loan["loan_id"])
    for target in ("manager1", "auditor1", "admin1", "ghost"):
        reply = api.post(f"/api/v1/loans/{loan['loan_id']}/assign", {"collector_id": target})
        details = assert_error(reply, 400, "VALIDATION_ERROR")
        assert detail_fields(details) == ["collector_id"], target
    assert api.raw_loan(loan["loan_id"]) == stored
    assert api.audit(entity_id=loan["loan_id"], action="LOAN_ASSIGNED") == []
