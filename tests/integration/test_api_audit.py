"""The audit trail through the API: what is written, how it is filtered and paged, who may
read it, and that nothing can change it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.integration.api_helpers import (
    AUDIT_KEYS,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    detail_fields,
)

UTC = dt.UTC
LAST_INSTANT_OF_10_MARCH_IST = dt.datetime(2026, 3, 10, 18, 29, 59, 999000, tzinfo=UTC)
FIRST_INSTANT_OF_11_MARCH_IST = dt.datetime(2026, 3, 10, 18, 30, tzinfo=UTC)
"""Both are 10 March in UTC; in IST the first is 23:59:59.999 on the 10th, the second midnight of the 11th."""


def audit_page(api: Api, query: str, as_: str = "admin") -> dict[str, Any]:
    reply = api.get(f"/api/v1/audit?{query}", as_=as_)
    assert reply.status == 200, (query, reply.body[:300])
    page: dict[str, Any] = reply.json
    assert set(page) == {"items", "next_cursor"}
    return page


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["audit_id"] for e in entries]


def assert_newest_first(entries: list[dict[str, Any]]) -> None:
    audit_ids = ids(entries)
    assert audit_ids == sorted(audit_ids, reverse=True) and len(set(audit_ids)) == len(audit_ids)
    instants = [dt.datetime.fromisoformat(e["at"]) for e in entries]
    assert instants == sorted(instants, reverse=True)


def test_entries_for_create_update_assign_and_guard(api: Api) -> None:
    created = api.post("/api/v1/loans", _body(collector_id="collector1"), as_="manager")
    assert created.status == 201
    loan = created.json
    loan_id = loan["loan_id"]
    updated = api.patch(f"/api/v1/loans/{loan_id}", {"borrower": {"email": None}, "notes": "visit Monday"})
    assigned = api.post(f"/api/v1/loans/{loan_id}/assign", {"collector_id": "collector2"}, as_="manager")
    guarded = api.patch(f"/api/v1/loans/{loan_id}", {"Bucket": "CURRENT"}, as_="collector2")
    assert (updated.status, assigned.status, guarded.status) == (200, 200, 403)

    entries = api.audit(entity_id=loan_id)
    assert [e["action"] for e in entries] == [
        "FINANCIAL_GUARD_BLOCKED",
        "LOAN_ASSIGNED",
        "LOAN_UPDATED",
        "LOAN_CREATED",
    ]
    assert_newest_first(entries)
    replies = [guarded, assigned, updated, created]
    actors = [("collector2", "collector"), ("manager1", "manager"), ("admin1", "admin"), ("manager1", "manager")]
    for entry, reply, (sub, role) in zip(entries, replies, actors, strict=True):
        assert set(entry) == AUDIT_KEYS
        assert entry["actor"] == {"sub": sub, "role": role}
        assert entry["source_ip"] == "127.0.0.1"
        assert entry["request_id"] == reply.header("X-Request-Id")
        assert (entry["entity_type"], entry["entity_id"]) == ("loan", loan_id)
        at = dt.datetime.fromisoformat(entry["at"])
        assert at.utcoffset() == dt.timedelta(hours=5, minutes=30)
        assert at.date().isoformat() == "2026-03-15"

    guard, assign, update, create = entries
    assert (create["outcome"], create["before"], create["after"], create["reason"]) == ("SUCCESS", None, loan, None)
    assert update["outcome"] == "SUCCESS"
    assert update["before"] == {"borrower": loan["borrower"], "notes": None}
    assert update["after"] == {"borrower": {**loan["borrower"], "email": None}, "notes": "visit Monday"}
    assert assign["before"] == {"collector_id": "collector1"}
    assert assign["after"] == {"collector_id": "collector2"}
    assert (guard["outcome"], guard["after"]) == ("DENIED", {"Bucket": "CURRENT"})
    assert "Bucket" in guard["reason"]

    # The auditor sees the same trail.
    assert api.audit(as_="auditor", entity_id=loan_id) == entries


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "borrower": {"name": "Meena Iyer", "phone": "9845012345", "email": "meena@example.in"},
        "principal_paise": 25_000_000,
        "annual_rate_bps": 1450,
        "tenure_months": 24,
        "disbursement_date": "2026-03-02",
        "first_due_date": "2026-04-02",
    }
    body.update(overrides)
    return body


def test_filters_entity_actor_and_action(api: Api) -> None:
    a = api.create_loan(_body(), as_="admin")["loan_id"]
    b = api.create_loan(_body(), as_="manager")["loan_id"]
    api.patch(f"/api/v1/loans/{a}", {"notes": "by manager"}, as_="manager")
    api.patch(f"/api/v1/loans/{b}", {"notes": "by admin"}, as_="admin")
    api.post(f"/api/v1/loans/{b}/assign", {"collector_id": "collector1"}, as_="manager")

    def summary(**params: str) -> list[tuple[str, str, str]]:
        entries = api.audit(**params)
        assert_newest_first(entries)
        return [(e["entity_id"], e["actor"]["sub"], e["action"]) for e in entries]

    assert summary(entity_id=a) == [(a, "manager1", "LOAN_UPDATED"), (a, "admin1", "LOAN_CREATED")]
    assert summary(actor="manager1") == [
        (b, "manager1", "LOAN_ASSIGNED"),
        (a, "manager1", "LOAN_UPDATED"),
        (b, "manager1", "LOAN_CREATED"),
    ]
    assert summary(action="LOAN_CREATED") == [(b, "manager1", "LOAN_CREATED"), (a, "admin1", "LOAN_CREATED")]
    assert summary(entity_id=b, actor="admin1") == [(b, "admin1", "LOAN_UPDATED")]
    assert summary(entity_id=b, action="LOAN_ASSIGNED") == [(b, "manager1", "LOAN_ASSIGNED")]
    assert summary(actor="admin1", action="LOAN_CREATED") == [(a, "admin1", "LOAN_CREATED")]
    assert summary(entity_id=a, actor="admin1", action="LOAN_UPDATED") == []
    assert summary(entity_id="LN-NONE") == []
    assert summary(actor="collector1") == []
    assert len(summary()) == 5


def test_from_and_to_are_ist_days(api: Api) -> None:
    with api.at(LAST_INSTANT_OF_10_MARCH_IST):
        late = api.create_loan(_body())["loan_id"]
    with api.at(FIRST_INSTANT_OF_11_MARCH_IST):
        early = api.create_loan(_body())["loan_id"]
    with api.at(dt.datetime(2026, 3, 12, 5, 0, tzinfo=UTC)):
        api.patch(f"/api/v1/loans/{late}", {"notes": "12 March"}, as_="manager")
    today = api.create_loan(_body())["loan_id"]

    (entry,) = api.audit(entity_id=late, action="LOAN_CREATED")
    assert entry["at"] == "2026-03-10T23:59:59.999+05:30"
    (entry,) = api.audit(entity_id=early)
    assert entry["at"] == "2026-03-11T00:00:00.000+05:30"

    def created(**params: str) -> list[str]:
        entries = api.audit(**params)
        assert_newest_first(entries)
        return [e["entity_id"] for e in entries if e["action"] == "LOAN_CREATED"]

    # Every access path (by day, by entity, by actor, by action) cuts at IST midnight.
    for extra in ({}, {"actor": "admin1"}, {"action": "LOAN_CREATED"}):
        assert created(**{"from": "2026-03-10", "to": "2026-03-10"}, **extra) == [late], extra
        assert created(**{"from": "2026-03-11", "to": "2026-03-11"}, **extra) == [early], extra
        assert created(**{"from": "2026-03-10", "to": "2026-03-11"}, **extra) == [early, late], extra
        assert created(**{"from": "2026-03-11"}, **extra) == [today, early], extra
        assert created(**{"to": "2026-03-10"}, **extra) == [late], extra
        assert created(**{"from": "2026-03-09", "to": "2026-03-09"}, **extra) == [], extra
    assert created(entity_id=late, **{"from": "2026-03-10", "to": "2026-03-10"}) == [late]
    assert created(entity_id=early, **{"from": "2026-03-10", "to": "2026-03-10"}) == []
    assert created(entity_id=early, **{"from": "2026-03-11", "to": "2026-03-11"}) == [early]

    updates = api.audit(**{"from": "2026-03-12", "to": "2026-03-14"})
    assert [(e["entity_id"], e["action"]) for e in updates] == [(late, "LOAN_UPDATED")]


def test_paging_newest_first(api: Api) -> None:
    loan_id = api.create_loan(_body())["loan_id"]
    for n in range(6):
        api.patch(f"/api/v1/loans/{loan_id}", {"notes": f"call {n}"})
    everything = api.audit(entity_id=loan_id)
    assert len(everything) == 7
    assert_newest_first(everything)
    assert [e["after"]["notes"] for e in everything[:6]] == [f"call {n}" for n in range(5, -1, -1)]

    for query in (f"entity_id={loan_id}", "actor=admin1", "action=LOAN_UPDATED", ""):
        seen: list[dict[str, Any]] = []
        page = audit_page(api, f"{query}&limit=3")
        pages = 1
        while page["next_cursor"]:
            seen += page["items"]
            page = audit_page(api, f"{query}&limit=3&cursor={page['next_cursor']}")
            pages += 1
        seen += page["items"]
        expected = [e for e in everything if query != "action=LOAN_UPDATED" or e["action"] == "LOAN_UPDATED"]
        assert ids(seen) == ids(expected), query
        assert pages == -(-len(expected) // 3), query


def test_paging_across_days(api: Api) -> None:
    for day in (11, 12, 13):
        for hour in (4, 9):
            with api.at(dt.datetime(2026, 3, day, hour, 0, tzinfo=UTC)):
                api.create_loan(_body())
    everything = api.audit()
    assert len(everything) == 6
    assert_newest_first(everything)
    for limit in (1, 2, 4):
        seen: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = audit_page(api, f"limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert ids(seen) == ids(everything), limit


def test_bad_audit_queries_are_400(api: Api) -> None:
    for query, field in [
        ("from=2026-13-01", "from"),
        ("to=15-03-2026", "to"),
        ("from=yesterday", "from"),
        ("from=2026-03-15&to=2026-03-14", "from"),
        ("cursor=garbage", "cursor"),
        ("limit=0", "limit"),
    ]:
        assert detail_fields(assert_error(api.get(f"/api/v1/audit?{query}"), 400, "VALIDATION_ERROR")) == [field]


def test_only_admin_and_auditor_read_the_audit_trail(api: Api) -> None:
    loan_id = api.create_loan(_body(collector_id="collector1"))["loan_id"]
    for role in ("manager", "collector"):
        for query in ("", f"?entity_id={loan_id}", "?actor=collector1"):
            reply = api.get(f"/api/v1/audit{query}", as_=role)
            assert_error(reply, 403, "FORBIDDEN")
            assert loan_id not in reply.body.decode()
    for role in ("admin", "auditor"):
        assert [e["entity_id"] for e in api.audit(as_=role)] == [loan_id]


def test_no_route_changes_or_deletes_audit(api: Api) -> None:
    loan_id = api.create_loan(_body())["loan_id"]
    before = api.audit()
    audit_id = before[0]["audit_id"]
    replacement = {**before[0], "actor": {"sub": "someone", "role": "admin"}, "outcome": "DENIED"}
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        for path in ("/api/v1/audit", f"/api/v1/audit/{audit_id}", f"/api/v1/audit?entity_id={loan_id}"):
            for role in ("admin", "auditor"):
                reply = api.request(method, path, role, body=replacement)
                assert not 200 <= reply.status < 300, (method, path, role, reply.status)
    assert api.audit() == before
