"""A user's life on DynamoDB Local, through the API: created (and refused when duplicate, weak, or
asked for by a manager), listed without secrets, password changed, offboarded, and refused from then
on, with every change on the audit trail and no secret in it. ``USER_CACHE_SECONDS=0``: every request
reads the user, as a second container would after its cache ran out.

Also the store's own conditions on the real engine: a stale version and a taken username are refused
with nothing written, and a user stored before users had versions reads with defaults and can change."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from chalice.test import Client

import app as app_module
from chalicelib import wiring
from chalicelib.adapters.dynamodb.users import DynamoUserStore
from chalicelib.clock import FixedClock, use_clock
from chalicelib.config import settings
from chalicelib.domain.audit import Action
from chalicelib.domain.errors import Conflict
from chalicelib.domain.roles import Role
from chalicelib.domain.users import PUBLIC_FIELDS
from chalicelib.services.ports import User, UserFilter
from chalicelib.wiring import services
from tests.fakes import ADMIN
from tests.integration.api_helpers import FROZEN_AT, PASSWORD, USERS, Api, Reply, assert_error, mint

pytestmark = pytest.mark.dynamodb_local

ROUTE = "/api/v1/users"
FIRST_PASSWORD = "plum-river-ladder-42"
SECOND_PASSWORD = "quiet-orchard-lantern-7"


@pytest.fixture
def api(local_stack: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("USER_CACHE_SECONDS", "0")
    wiring.reset()
    assert settings().user_cache_seconds == 0
    with (
        use_clock(FixedClock(FROZEN_AT)) as clock,
        tempfile.TemporaryDirectory() as empty,
        Client(app_module.app, project_dir=empty) as client,
    ):
        assert isinstance(clock, FixedClock)
        for username, role in USERS.values():
            services().auth.add_user(username, PASSWORD, role)
        session = Api(client, local_stack, clock)
        session.tokens = {alias: mint(alias) for alias in USERS}
        yield session


def login(api: Api, username: str, password: str) -> Reply:
    return api.post("/api/v1/auth/token", {"username": username, "password": password}, as_=None)


def token_for(api: Api, username: str, password: str) -> str:
    reply = login(api, username, password)
    assert reply.status == 200, reply.body
    token: str = reply.json["access_token"]
    return token


def loans_with(api: Api, token: str) -> Reply:
    return api.get("/api/v1/loans", as_=None, headers={"Authorization": f"Bearer {token}"})


def no_secrets(text: str) -> None:
    for secret in (FIRST_PASSWORD, SECOND_PASSWORD, PASSWORD, "pbkdf2", "password_hash", "tokens_valid_after"):
        assert secret not in text, secret


def test_a_collector_from_onboarding_to_offboarding(api: Api) -> None:
    body: dict[str, Any] = {"username": "ravi", "password": FIRST_PASSWORD, "role": "collector", "branch": "Pune"}
    created = api.post(ROUTE, body)
    assert created.status == 201, created.body
    assert set(created.json) == set(PUBLIC_FIELDS)
    assert_error(api.post(ROUTE, body), 409, "CONFLICT")
    assert_error(api.post(ROUTE, body | {"username": "asha", "password": "asha-password"}), 400, "VALIDATION_ERROR")
    refused = api.post(ROUTE, body | {"username": "boss", "role": "admin"}, as_="manager")
    assert_error(refused, 403, "FORBIDDEN")
    no_secrets(refused.body.decode())

    listing = api.get(ROUTE + "?role=collector", as_="manager")
    assert listing.status == 200
    assert sorted(u["username"] for u in listing.json["items"]) == ["collector1", "collector2", "ravi"]
    no_secrets(listing.body.decode())

    first = token_for(api, "ravi", FIRST_PASSWORD)
    assert loans_with(api, first).status == 200
    changed = api.patch(f"{ROUTE}/ravi", {"password": SECOND_PASSWORD})
    assert changed.status == 200
    assert_error(loans_with(api, first), 401, "UNAUTHENTICATED")
    assert_error(login(api, "ravi", FIRST_PASSWORD), 401, "UNAUTHENTICATED")
    second = token_for(api, "ravi", SECOND_PASSWORD)
    assert loans_with(api, second).status == 200

    loan_id = api.create_loan(collector_id="ravi")["loan_id"]
    assert_error(api.patch(f"{ROUTE}/ravi", {"active": False}), 409, "CONFLICT")
    assert loans_with(api, second).status == 200  # the refusal changed nothing
    offboarded = api.patch(f"{ROUTE}/ravi", {"active": False, "reassign_to": "collector2"})
    assert offboarded.status == 200, offboarded.body
    assert offboarded.json["active"] is False
    assert offboarded.json["reassignment"]["done"] is True and offboarded.json["reassignment"]["remaining"] == 0
    assert api.loan(loan_id)["collector_id"] == "collector2"
    assert_error(loans_with(api, second), 401, "UNAUTHENTICATED")
    wrong = login(api, "ravi", "not-the-password")
    inactive = login(api, "ravi", SECOND_PASSWORD)
    assert_error(inactive, 401, "UNAUTHENTICATED")
    assert inactive.json["error"]["message"] == wrong.json["error"]["message"]
    # An inactive collector cannot be given a loan (LoanService._require_collector reads the new record).
    assert_error(api.post(f"/api/v1/loans/{loan_id}/assign", {"collector_id": "ravi"}), 400, "VALIDATION_ERROR")

    trail = api.audit(entity_id="ravi")
    assert [e["action"] for e in trail] == ["USER_UPDATED", "USER_UPDATED", "USER_CREATED"]
    assert trail[0]["after"]["active"] is False and trail[1]["after"]["password_changed"] is True
    denied = api.audit(action="ACCESS_DENIED")
    assert [e["actor"]["sub"] for e in denied] == ["manager1"]
    no_secrets(json.dumps(trail + denied))


def test_offboarding_a_collector_without_loans(api: Api) -> None:
    token = api.tokens["collector"]
    reply = api.patch(f"{ROUTE}/collector1", {"active": False})
    assert reply.status == 200 and reply.json["active"] is False
    assert_error(loans_with(api, token), 401, "UNAUTHENTICATED")
    assert_error(login(api, "collector1", PASSWORD), 401, "UNAUTHENTICATED")


def test_the_store_refuses_stale_versions_and_taken_names(api: Api) -> None:
    store = DynamoUserStore()
    current = store.get("collector1")
    assert current is not None
    entry = ADMIN.audit_entry(Action.USER_UPDATED, "user", "collector1", None, {"branch": "Pune"})
    updated = store.update(dataclasses.replace(current, branch="Pune"), entry)
    assert updated.version == current.version + 1
    with pytest.raises(Conflict):
        store.update(dataclasses.replace(current, branch="Nashik"), entry)  # the version read is stale
    with pytest.raises(Conflict):
        store.create(dataclasses.replace(current, version=0), entry)
    assert store.get("collector1") == updated
    assert [e["audit_id"] for e in api.audit(entity_id="collector1")] == [entry.audit_id]


def test_a_user_stored_before_users_had_versions_reads_with_defaults_and_changes(api: Api) -> None:
    boto3.client("dynamodb").put_item(
        TableName=settings().table_name("users"),
        Item={"username": {"S": "legacy"}, "role": {"S": "collector"}, "password_hash": {"S": "pbkdf2_sha256$1$x$y"}},
    )
    store = DynamoUserStore()
    legacy = store.get("legacy")
    assert legacy == User("legacy", "collector", "pbkdf2_sha256$1$x$y")
    assert "legacy" in [u.username for u in store.list(UserFilter(role="collector", active=True), 50, None).items]
    reply = api.patch(f"{ROUTE}/legacy", {"display_name": "Old Timer"})
    assert reply.status == 200, reply.body
    assert reply.json["display_name"] == "Old Timer" and reply.json["active"] is True
    stored = store.get("legacy")
    assert stored is not None and stored.version == 1
    assert_error(api.patch(f"{ROUTE}/legacy", {"role": "manager"}, as_="manager"), 403, "FORBIDDEN")
    assert Role(stored.role) is Role.COLLECTOR
