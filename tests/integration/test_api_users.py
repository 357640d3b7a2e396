"""The users API through chalice.test.Client on moto: create, list, read, change, offboarding, the
audit trail without secrets, and tokens refused after a deactivation or a password change."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.errors import Unavailable
from chalicelib.domain.users import PUBLIC_FIELDS
from chalicelib.services.reassignment import ReassignmentProgress
from chalicelib.services.users import TimeLeft
from chalicelib.wiring import services
from tests.integration.api_helpers import (
    PASSWORD,
    Api,
    Reply,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    detail_fields,
    stored_items,
)

USERS = "/api/v1/users"
NEW_PASSWORD = "plum-river-ladder-42"


def create(api: Api, as_: str = "admin", **body: Any) -> Reply:
    payload = {"username": "ravi", "password": NEW_PASSWORD, "role": "collector"} | body
    return api.post(USERS, payload, as_=as_)


def login(api: Api, username: str, password: str) -> Reply:
    return api.post("/api/v1/auth/token", {"username": username, "password": password}, as_=None)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_for(api: Api, username: str, password: str) -> str:
    reply = login(api, username, password)
    assert reply.status == 200, reply.body
    token: str = reply.json["access_token"]
    return token


def assert_secret_free(text: str, *secrets: str) -> None:
    assert "password_hash" not in text and "pbkdf2" not in text and "tokens_valid_after" not in text
    for secret in secrets:
        assert secret not in text


def test_admin_creates_a_user_who_can_log_in(api: Api) -> None:
    reply = create(api, display_name="Ravi Kumar", branch="Pune")
    assert reply.status == 201, reply.body
    user = reply.json
    assert set(user) == set(PUBLIC_FIELDS)
    assert user | {"created_at": None, "updated_at": None} == {
        "username": "ravi",
        "role": "collector",
        "display_name": "Ravi Kumar",
        "branch": "Pune",
        "active": True,
        "created_at": None,
        "updated_at": None,
    }
    assert_secret_free(reply.body.decode(), NEW_PASSWORD)
    assert with_token(api, token_for(api, "ravi", NEW_PASSWORD)).status == 200
    assert api.get(f"{USERS}/ravi").json == user


def with_token(api: Api, token: str, path: str = "/api/v1/loans") -> Reply:
    return api.get(path, as_=None, headers=bearer(token))


def test_duplicate_weak_and_malformed_creates_are_refused_and_change_nothing(api: Api) -> None:
    assert create(api).status == 201
    before = stored_items(api)
    assert_error(create(api), 409, "CONFLICT")
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"username": "Ravi2"}, ["username"]),
        ({"username": "ab"}, ["username"]),
        ({"username": "asha", "password": "short"}, ["password"]),
        ({"username": "asha", "password": "Password1234"}, ["password"]),
        ({"username": "asha", "password": "i-am-asha-the-great"}, ["password"]),
        ({"username": "asha", "role": "root"}, ["role"]),
        ({"username": "asha", "is_admin": True}, ["is_admin"]),
        ({"username": "asha", "password": 123456789012}, ["password"]),
        ({"username": "asha", "display_name": ""}, ["display_name"]),
    ]
    for body, fields in cases:
        reply = create(api, **body)
        details = assert_error(reply, 400, "VALIDATION_ERROR")
        assert detail_fields(details) == fields, (body, details)
        assert_secret_free(reply.body.decode(), str(body.get("password", NEW_PASSWORD)))
    assert stored_items(api) == before


def test_only_admins_write_users_and_the_refusal_is_audited(api: Api) -> None:
    reply = create(api, as_="manager", username="boss", role="admin")
    assert_error(reply, 403, "FORBIDDEN")
    assert_error(api.patch(f"{USERS}/collector1", {"role": "admin"}, as_="manager"), 403, "FORBIDDEN")
    assert_error(api.patch(f"{USERS}/collector1", {"active": False}, as_="collector"), 403, "FORBIDDEN")
    denied = api.audit(action="ACCESS_DENIED")
    targets = sorted((e["entity_type"], e["entity_id"], e["actor"]["sub"]) for e in denied)
    assert targets == [
        ("route", "POST /api/v1/users", "manager1"),
        ("user", "collector1", "collector1"),
        ("user", "collector1", "manager1"),
    ]
    assert_secret_free(json.dumps(denied), NEW_PASSWORD)
    assert api.get(f"{USERS}/boss").status == 404
    assert api.get(f"{USERS}/collector1").json["role"] == "collector"


def test_admins_and_managers_read_collectors_and_auditors_do_not(api: Api) -> None:
    for alias in ("admin", "manager"):
        assert api.get(USERS, as_=alias).status == 200
        assert api.get(f"{USERS}/collector1", as_=alias).status == 200
    for alias in ("collector", "auditor"):
        assert_error(api.get(USERS, as_=alias), 403, "FORBIDDEN")
        assert_error(api.get(f"{USERS}/collector1", as_=alias), 403, "FORBIDDEN")


def test_list_filters_pages_and_hides_secrets(api: Api) -> None:
    assert api.patch(f"{USERS}/collector2", {"active": False}).status == 200
    everyone = collect(api, USERS + "?limit=2")
    assert sorted(u["username"] for u in everyone) == ["admin1", "auditor1", "collector1", "collector2", "manager1"]
    assert all(set(u) == set(PUBLIC_FIELDS) for u in everyone)
    assert [u["username"] for u in collect(api, USERS + "?role=collector&active=true")] == ["collector1"]
    assert [u["username"] for u in collect(api, USERS + "?active=false")] == ["collector2"]
    reply = api.get(USERS)
    assert_secret_free(reply.body.decode(), PASSWORD)
    for query, field in [
        ("role=boss", "role"),
        ("active=yes", "active"),
        ("active=True", "active"),
        ("limit=201", "limit"),
        ("limit=0", "limit"),
        ("cursor=nope", "cursor"),
        ("password=x", "password"),
    ]:
        assert detail_fields(assert_error(api.get(f"{USERS}?{query}"), 400, "VALIDATION_ERROR")) == [field], query


def collect(api: Api, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        sep = "&" if "?" in path else "?"
        reply = api.get(path + (f"{sep}cursor={cursor}" if cursor else ""))
        assert reply.status == 200, reply.body
        items += reply.json["items"]
        cursor = reply.json["next_cursor"]
        if cursor is None:
            return items


def test_unknown_and_impossible_usernames_are_404(api: Api) -> None:
    assert_error(api.get(f"{USERS}/nobody"), 404, "NOT_FOUND")
    assert_error(api.get(f"{USERS}/Collector1"), 404, "NOT_FOUND")
    assert_error(api.patch(f"{USERS}/nobody", {"active": False}), 404, "NOT_FOUND")
    assert_error(api.patch(f"{USERS}/{'x' * 65}", {"active": False}), 404, "NOT_FOUND")


def test_patch_body_is_strict(api: Api) -> None:
    before = stored_items(api)
    for body, field in [
        ({}, "body"),
        ({"role": None}, "body"),
        ({"active": "false"}, "active"),
        ({"password_hash": "x"}, "password_hash"),
        ({"reassign_to": "Not A Name", "active": False}, "reassign_to"),
        ({"password": "collector1-password"}, "password"),
    ]:
        details = assert_error(api.patch(f"{USERS}/collector1", body), 400, "VALIDATION_ERROR")
        assert detail_fields(details) == [field], body
    assert stored_items(api) == before


def test_deactivation_ends_logins_and_tokens_at_once(api: Api) -> None:
    token = api.tokens["collector"]
    assert with_token(api, token).status == 200
    reply = api.patch(f"{USERS}/collector1", {"active": False})
    assert reply.status == 200 and reply.json["active"] is False and set(reply.json) == set(PUBLIC_FIELDS)
    assert_error(with_token(api, token), 401, "UNAUTHENTICATED")
    assert_error(login(api, "collector1", PASSWORD), 401, "UNAUTHENTICATED")
    unknown = login(api, "nobody-at-all", PASSWORD)
    assert unknown.json["error"]["message"] == login(api, "collector1", PASSWORD).json["error"]["message"]
    # Reactivated: a new login works, the old token stays dead.
    assert api.patch(f"{USERS}/collector1", {"active": True}).status == 200
    assert_error(with_token(api, token), 401, "UNAUTHENTICATED")
    assert with_token(api, token_for(api, "collector1", PASSWORD)).status == 200


def test_a_password_change_ends_older_tokens(api: Api) -> None:
    old = api.tokens["manager"]
    api.clock.advance(seconds=1)  # a token issued in the same second as the change would survive it
    reply = api.patch(f"{USERS}/manager1", {"password": NEW_PASSWORD})
    assert reply.status == 200
    assert_secret_free(reply.body.decode(), NEW_PASSWORD)
    assert_error(with_token(api, old), 401, "UNAUTHENTICATED")
    assert_error(login(api, "manager1", PASSWORD), 401, "UNAUTHENTICATED")
    assert with_token(api, token_for(api, "manager1", NEW_PASSWORD)).status == 200


def test_a_role_change_applies_to_the_next_token(api: Api) -> None:
    old = api.tokens["collector"]
    assert api.patch(f"{USERS}/collector1", {"role": "auditor"}).status == 200
    # The old token is still a collector's: it may list (its own) loans, not read the audit trail.
    assert with_token(api, old).status == 200
    assert_error(with_token(api, old, "/api/v1/audit"), 403, "FORBIDDEN")
    fresh = token_for(api, "collector1", PASSWORD)
    assert with_token(api, fresh, "/api/v1/audit").status == 200


def test_offboarding_a_collector_with_loans(api: Api) -> None:
    loans = [api.create_loan(collector_id="collector1")["loan_id"] for _ in range(3)]
    before = stored_items(api)
    details = assert_error(api.patch(f"{USERS}/collector1", {"active": False}), 409, "CONFLICT")
    assert details == {"active_loans": 3, "reassign_to": "required"}
    for target in ("collector1", "manager1", "nobody"):
        reply = api.patch(f"{USERS}/collector1", {"active": False, "reassign_to": target})
        assert detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")) == ["reassign_to"], target
    assert stored_items(api) == before
    reply = api.patch(f"{USERS}/collector1", {"active": False, "reassign_to": "collector2"})
    assert reply.status == 200, reply.body
    assert reply.json["active"] is False and set(reply.json) == {*PUBLIC_FIELDS, "reassignment"}
    assert reply.json["reassignment"] == {"moved": 3, "already": 0, "remaining": 0, "done": True}
    assert {api.loan(loan_id)["collector_id"] for loan_id in loans} == {"collector2"}
    # The same request again: nothing left to do, nothing written.
    again = api.patch(f"{USERS}/collector1", {"active": False, "reassign_to": "collector2"})
    assert again.status == 200 and again.json["reassignment"]["moved"] == 0
    assert len([e for e in api.audit(entity_id="collector1") if e["action"] == "USER_UPDATED"]) == 1


class StopsForTime:
    """Moves nothing and says loans remain, as a call that ran out of time."""

    def __init__(self) -> None:
        self.budgets: list[int | None] = []

    def has_active_loans(self, collector_id: str) -> bool:
        return True

    def move_collector_loans(
        self, ctx: Any, from_collector: str, to_collector: str, time_left_ms: TimeLeft | None
    ) -> ReassignmentProgress:
        self.budgets.append(time_left_ms() if time_left_ms else None)
        return ReassignmentProgress(moved=10, already=0, remaining=5)


def test_an_offboarding_that_stops_for_time_answers_202_with_the_user_still_active(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = StopsForTime()
    monkeypatch.setattr(services().users, "reassignment", fake)
    reply = api.patch(f"{USERS}/collector1", {"active": False, "reassign_to": "collector2"})
    assert reply.status == 202, reply.body
    assert set(reply.json) == {"user", "reassignment", "message"}
    assert reply.json["user"]["active"] is True
    assert reply.json["reassignment"] == {"moved": 10, "already": 0, "remaining": 5, "done": False}
    assert "again" in reply.json["message"]
    assert api.get(f"{USERS}/collector1").json["active"] is True
    assert with_token(api, api.tokens["collector"]).status == 200
    # The test client passes a Lambda context: the budget is bounded (API Gateway's 29 s and less).
    [budget] = fake.budgets
    assert budget is not None and 0 < budget <= 25_000


def test_user_changes_are_audited_without_secrets(api: Api) -> None:
    assert create(api).status == 201
    assert api.patch(f"{USERS}/ravi", {"password": "another-long-passphrase", "branch": "Pune"}).status == 200
    entries = api.audit(entity_id="ravi")
    assert [(e["action"], e["entity_type"]) for e in entries] == [("USER_UPDATED", "user"), ("USER_CREATED", "user")]
    updated, created = entries
    assert created["before"] is None and created["after"]["username"] == "ravi"
    assert updated["after"]["password_changed"] is True and updated["after"]["branch"] == "Pune"
    assert "password_changed" not in updated["before"]
    assert_secret_free(json.dumps(entries), NEW_PASSWORD, "another-long-passphrase")
    raw = json.dumps(stored_items(api, skip=())["audit"])
    assert_secret_free(raw, NEW_PASSWORD, "another-long-passphrase")


def test_a_storage_failure_in_the_token_check_is_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(username: str) -> None:
        raise Unavailable("the database is not answering; nothing was changed, try again")

    monkeypatch.setattr(services().auth.users, "get", down)
    monkeypatch.setattr(services().auth, "user_cache_seconds", 0)
    assert_error(api.get("/api/v1/loans"), 503, "UNAVAILABLE")


def test_a_token_for_a_user_that_does_not_exist_is_401(api: Api) -> None:
    from chalicelib.services.auth import issue_token

    token = issue_token("ghost", "admin", services().jwt_secret(), 600).access_token
    assert_error(with_token(api, token), 401, "UNAUTHENTICATED")


def test_a_denied_write_keeps_no_password_even_in_a_body_kept_as_text(api: Api) -> None:
    body = '{"username": "boss", "password": "hunter2-hunter2", "password": "hunter3-hunter3", "role": "admin"}'
    assert_error(api.post(USERS, raw=body, as_="auditor"), 403, "FORBIDDEN")
    assert_error(api.patch(f"{USERS}/collector1", {"Password": "hunter4-hunter4"}, as_="manager"), 403, "FORBIDDEN")
    denied = api.audit(action="ACCESS_DENIED")
    assert len(denied) == 2
    assert_secret_free(json.dumps(denied), "hunter2", "hunter3", "hunter4")
