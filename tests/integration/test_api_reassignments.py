"""POST /api/v1/reassignments through chalice.test.Client on moto (docs/api.md, "Bulk reassignment";
docs/rules.md, "Bulk reassignment")."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest

from chalicelib.api import http
from chalicelib.domain.roles import Role
from chalicelib.wiring import services
from tests.integration.api_helpers import (
    AUDIT_KEYS,
    PASSWORD,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    detail_fields,
    stored_items,
)

PATH = "/api/v1/reassignments"


def _loans(api: Api, count: int, collector_id: str) -> list[str]:
    return sorted(api.create_loan(collector_id=collector_id)["loan_id"] for _ in range(count))


def _collector_of(api: Api, loan_id: str) -> str | None:
    item = api.raw_loan(loan_id)
    assert item is not None
    return item["collector_id"]["S"] if "collector_id" in item else None


def _assigned(api: Api) -> Counter[str]:
    return Counter(e["entity_id"] for e in api.audit(action="LOAN_ASSIGNED"))


@pytest.fixture
def out_of_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request is out of time after its first page, and pages are two loans."""
    monkeypatch.setattr(http, "REQUEST_BUDGET_MS", 0)
    services().reassignment.page_size = 2


@pytest.mark.parametrize("alias", ["admin", "manager"])
def test_a_collectors_active_loans_move_and_the_answer_says_done(api: Api, alias: str) -> None:
    ids = _loans(api, 4, "collector1")
    kept = _loans(api, 1, "collector2")

    reply = api.post(PATH, {"from_collector_id": "collector1", "to_collector_id": "collector2"}, as_=alias)

    assert reply.status == 200, reply.body
    assert reply.json == {"moved": 4, "already": 0, "remaining": 0, "done": True}
    assert reply.header("X-Request-Id")
    assert all(_collector_of(api, i) == "collector2" for i in ids + kept)
    assert _assigned(api) == Counter(ids)
    entry = api.audit(action="LOAN_ASSIGNED", entity_id=ids[0])[0]
    assert set(entry) == AUDIT_KEYS
    assert (entry["before"], entry["after"]) == ({"collector_id": "collector1"}, {"collector_id": "collector2"})
    assert entry["actor"]["sub"] == {"admin": "admin1", "manager": "manager1"}[alias]
    # The collector sees them now.
    listing = api.get("/api/v1/loans", as_="collector2").json["items"]
    assert sorted(loan["loan_id"] for loan in listing) == sorted(ids + kept)

    again = api.post(PATH, {"from_collector_id": "collector1", "to_collector_id": "collector2"}, as_=alias)
    assert again.json == {"moved": 0, "already": 0, "remaining": 0, "done": True}
    assert _assigned(api) == Counter(ids)


def test_a_list_moves_each_loan_named_once(api: Api) -> None:
    ids = _loans(api, 3, "collector1")
    there = _loans(api, 1, "collector2")
    body = {"loan_ids": [*ids, ids[0], *there], "to_collector_id": "collector2"}

    reply = api.post(PATH, body)
    assert (reply.status, reply.json) == (200, {"moved": 3, "already": 1, "remaining": 0, "done": True})
    again = api.post(PATH, body)
    assert (again.status, again.json) == (200, {"moved": 0, "already": 4, "remaining": 0, "done": True})
    assert _assigned(api) == Counter(ids)


def test_stopped_for_time_the_answer_is_202_and_the_same_request_carries_on(api: Api, out_of_time: None) -> None:
    ids = _loans(api, 5, "collector1")
    body = {"from_collector_id": "collector1", "to_collector_id": "collector2"}

    replies = [api.post(PATH, body) for _ in range(3)]

    assert [(r.status, r.json) for r in replies] == [
        (202, {"moved": 2, "already": 0, "remaining": 3, "done": False}),
        (202, {"moved": 2, "already": 0, "remaining": 1, "done": False}),
        (200, {"moved": 1, "already": 0, "remaining": 0, "done": True}),
    ]
    assert all(_collector_of(api, i) == "collector2" for i in ids)
    assert _assigned(api) == Counter(ids)


def test_a_list_stopped_for_time_counts_every_loan_named(api: Api, out_of_time: None) -> None:
    ids = _loans(api, 3, "collector1")
    body = {"loan_ids": ids, "to_collector_id": "collector2"}
    first, second = api.post(PATH, body), api.post(PATH, body)
    assert (first.status, first.json) == (202, {"moved": 2, "already": 0, "remaining": 1, "done": False})
    assert (second.status, second.json) == (200, {"moved": 1, "already": 2, "remaining": 0, "done": True})


def test_a_202_is_not_replayed_so_the_same_idempotency_key_carries_on(api: Api, out_of_time: None) -> None:
    # docs/api.md: a 202 asks for the same request again, so it is never stored under its key; the
    # final 200 is, and a repeat after it is a replay that moves nothing.
    _loans(api, 3, "collector1")
    body = {"from_collector_id": "collector1", "to_collector_id": "collector2"}
    key = {"Idempotency-Key": "offboard-1"}
    first = api.post(PATH, body, headers=key)
    again = api.post(PATH, body, headers=key)
    assert (first.status, first.json) == (202, {"moved": 2, "already": 0, "remaining": 1, "done": False})
    assert again.header("Idempotent-Replayed") is None
    assert (again.status, again.json) == (200, {"moved": 1, "already": 0, "remaining": 0, "done": True})
    replay = api.post(PATH, body, headers=key)
    assert (replay.status, replay.json) == (again.status, again.json)
    assert replay.header("Idempotent-Replayed") == "true"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"to_collector_id": "collector2"}, ["from_collector_id", "loan_ids"]),
        (
            {"to_collector_id": "collector2", "from_collector_id": "collector1", "loan_ids": ["LN1"]},
            ["from_collector_id", "loan_ids"],
        ),
        ({"from_collector_id": "collector1"}, ["to_collector_id"]),
        ({"to_collector_id": "collector2", "from_collector_id": "collector1", "extra": 1}, ["extra"]),
        ({"to_collector_id": "collector2", "loan_ids": []}, ["loan_ids"]),
        ({"to_collector_id": "collector2", "loan_ids": [f"LN{n}" for n in range(1001)]}, ["loan_ids"]),
        ({"to_collector_id": "collector2", "loan_ids": "LN1"}, ["loan_ids"]),
        ({"to_collector_id": "collector2", "loan_ids": ["LN 1"]}, ["loan_ids.0"]),
        ({"to_collector_id": "collector2", "loan_ids": [7]}, ["loan_ids.0"]),
        ({"to_collector_id": "x" * 65, "from_collector_id": "collector1"}, ["to_collector_id"]),
        ({"to_collector_id": "../etc", "from_collector_id": "collector1"}, ["to_collector_id"]),
        ({"to_collector_id": None, "from_collector_id": "collector1"}, ["to_collector_id"]),
        ({"to_collector_id": "collector2", "from_collector_id": 12}, ["from_collector_id"]),
        ({"to_collector_id": "collector2", "from_collector_id": "collector2"}, ["to_collector_id"]),
        ({"to_collector_id": "manager1", "from_collector_id": "collector1"}, ["collector_id"]),
        ({"to_collector_id": "nobody", "loan_ids": ["LN1"]}, ["collector_id"]),
    ],
)
def test_bad_requests_are_400_with_details_and_change_nothing(api: Api, body: Any, fields: list[str]) -> None:
    _loans(api, 1, "collector1")
    before = stored_items(api)
    details = assert_error(api.post(PATH, body), 400, "VALIDATION_ERROR")
    assert detail_fields(details) == fields
    assert stored_items(api) == before


@pytest.mark.parametrize("raw", ["", "[]", '{"to_collector_id": "collector2", "to_collector_id": "x"}', "{"])
def test_bodies_that_are_not_one_json_object_are_400(api: Api, raw: str) -> None:
    assert_error(api.post(PATH, raw=raw), 400, "VALIDATION_ERROR")


def test_an_inactive_collector_cannot_receive_loans(api: Api) -> None:
    services().auth.add_user("gone1", PASSWORD, Role.COLLECTOR)
    store = services().loans.users
    gone = store.get("gone1")
    assert gone is not None
    store.put(dataclasses.replace(gone, active=False))
    _loans(api, 1, "collector1")
    details = assert_error(
        api.post(PATH, {"from_collector_id": "collector1", "to_collector_id": "gone1"}), 400, "VALIDATION_ERROR"
    )
    assert detail_fields(details) == ["collector_id"]


def test_unknown_loan_ids_are_404_naming_them_and_nothing_moves(api: Api) -> None:
    ids = _loans(api, 2, "collector1")
    before = stored_items(api)
    details = assert_error(
        api.post(PATH, {"loan_ids": [ids[0], "LN-NOPE-1", ids[1], "LN-NOPE-2"], "to_collector_id": "collector2"}),
        404,
        "NOT_FOUND",
    )
    assert details == {"loan_ids": ["LN-NOPE-1", "LN-NOPE-2"]}
    assert stored_items(api) == before


@pytest.mark.parametrize(("alias", "sub"), [("collector", "collector1"), ("auditor", "auditor1")])
def test_collectors_and_auditors_are_403_and_audited(api: Api, alias: str, sub: str) -> None:
    ids = _loans(api, 2, "collector1")
    before = stored_items(api)
    body = {"from_collector_id": "collector1", "to_collector_id": "collector2"}

    reply = api.post(PATH, body, as_=alias)

    assert_error(reply, 403, "FORBIDDEN")
    assert stored_items(api) == before
    assert all(_collector_of(api, i) == "collector1" for i in ids)
    (entry,) = [e for e in api.audit(actor=sub) if e["request_id"] == reply.header("X-Request-Id")]
    assert (entry["action"], entry["outcome"]) == ("ACCESS_DENIED", "DENIED")
    assert (entry["entity_type"], entry["entity_id"]) == ("route", "POST /api/v1/reassignments")
    assert entry["after"] == body


def test_other_methods_are_405(api: Api) -> None:
    reply = api.get(PATH)
    assert reply.status == 405
    assert reply.header("Allow") == "POST"
