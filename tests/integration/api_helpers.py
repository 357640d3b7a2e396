"""Shared setup for the in-process API tests: one user per role, their tokens, a frozen clock and
small helpers to call the API and read what DynamoDB really holds.

Import the fixture into a test module with ``from tests.integration.api_helpers import api_fixture``
(it registers as ``api``); tests/conftest.py stays untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.config import Config
from chalice.test import Client

import app as app_module
from chalicelib.clock import FixedClock, use_clock
from chalicelib.domain.roles import Role
from chalicelib.services.auth import issue_token
from chalicelib.wiring import services
from local.api_server import local_api_server

FROZEN_AT = dt.datetime(2026, 3, 15, 6, 30, tzinfo=dt.UTC)
"""12:00 IST on Sunday 15 March 2026: business 'today' is 2026-03-15, 'yesterday' 2026-03-14."""
YESTERDAY = "2026-03-14"

PASSWORD = "correct-horse-battery"
USERS: dict[str, tuple[str, Role]] = {
    "admin": ("admin1", Role.ADMIN),
    "manager": ("manager1", Role.MANAGER),
    "auditor": ("auditor1", Role.AUDITOR),
    "collector": ("collector1", Role.COLLECTOR),
    "collector2": ("collector2", Role.COLLECTOR),
}
"""Test alias -> (username, role). The alias is what tests pass as ``as_``."""

ERROR_KEYS = {"code", "message", "details"}
AUDIT_KEYS = {
    "audit_id",
    "at",
    "actor",
    "source_ip",
    "request_id",
    "action",
    "entity_type",
    "entity_id",
    "before",
    "after",
    "outcome",
    "reason",
}


def loan_body(**overrides: Any) -> dict[str, Any]:
    """A valid generated-schedule create body; the first instalment is due after 'today'."""
    body: dict[str, Any] = {
        "borrower": {"name": "Asha Rao", "phone": "9876543210", "email": "asha@example.in", "address": "Pune"},
        "principal_paise": 10_000_000,
        "annual_rate_bps": 1200,
        "tenure_months": 12,
        "disbursement_date": "2026-03-01",
        "first_due_date": "2026-04-05",
    }
    body.update(overrides)
    return body


def imported_body(rows: list[tuple[str, int, int]], **overrides: Any) -> dict[str, Any]:
    """A create body with an imported schedule; ``principal_paise`` defaults to the rows' sum."""
    body: dict[str, Any] = {
        "borrower": {"name": "Ravi Kumar", "phone": "+919812345678"},
        "principal_paise": sum(p for _, p, _ in rows),
        "disbursement_date": "2025-10-01",
        "schedule": [{"due_date": d, "principal_paise": p, "interest_paise": i} for d, p, i in rows],
    }
    body.update(overrides)
    return body


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def assert_error(reply: Reply, status: int, code: str) -> Any:
    """The docs/api.md error shape, exactly; returns ``details``."""
    assert reply.status == status, (reply.status, reply.body[:500])
    body = reply.json
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["details"]


def detail_fields(details: Any) -> list[str]:
    assert isinstance(details, list), details
    return [d["field"] for d in details]


class Api:
    def __init__(self, client: Client, stage: str, clock: FixedClock) -> None:
        self.client = client
        self.stage = stage
        self.clock = clock
        self.tokens: dict[str, str] = {}
        self._ddb = boto3.client("dynamodb")

    def mint_all(self) -> None:
        """Fresh tokens for every user, issued at the current (frozen) time."""
        self.tokens = {alias: mint(alias) for alias in USERS}

    @contextmanager
    def at(self, when: dt.datetime) -> Iterator[FixedClock]:
        """Run a block at another instant, with tokens issued then (a token from later is refused)."""
        saved_tokens, saved_clock = dict(self.tokens), self.clock
        self.clock = FixedClock(when)
        with use_clock(self.clock):
            self.mint_all()
            try:
                yield self.clock
            finally:
                self.tokens, self.clock = saved_tokens, saved_clock

    def auth(self, alias: str | None) -> dict[str, str]:
        if alias is None:
            return {}
        return {"Authorization": f"Bearer {self.tokens[alias]}"}

    def request(
        self,
        method: str,
        path: str,
        as_: str | None = "admin",
        body: Any = None,
        raw: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = {"Content-Type": "application/json", **self.auth(as_), **(headers or {})}
        payload: bytes | str = raw if raw is not None else (json.dumps(body) if body is not None else b"")
        r = self.client.http.request(method, path, headers=all_headers, body=payload)
        # Time moves on between requests, as it does for real: audit ids (ms-ordered) then have a
        # defined newest-first order. Tests start at 12:00 IST, far from a day boundary.
        self.clock.advance(seconds=1)
        return Reply(r.status_code, dict(r.headers), r.body)

    def get(self, path: str, as_: str | None = "admin", **kw: Any) -> Reply:
        return self.request("GET", path, as_, **kw)

    def post(self, path: str, body: Any = None, as_: str | None = "admin", **kw: Any) -> Reply:
        return self.request("POST", path, as_, body=body, **kw)

    def patch(self, path: str, body: Any = None, as_: str | None = "admin", **kw: Any) -> Reply:
        return self.request("PATCH", path, as_, body=body, **kw)

    def create_loan(self, body: dict[str, Any] | None = None, as_: str = "admin", **overrides: Any) -> dict[str, Any]:
        """Create a loan (a generated one unless ``body`` is given) and return the 201 body."""
        reply = self.post("/api/v1/loans", body if body is not None else loan_body(**overrides), as_=as_)
        assert reply.status == 201, (reply.status, reply.body[:500])
        loan: dict[str, Any] = reply.json
        return loan

    def loan(self, loan_id: str, as_: str = "admin") -> dict[str, Any]:
        reply = self.get(f"/api/v1/loans/{loan_id}", as_=as_)
        assert reply.status == 200, (reply.status, reply.body[:500])
        loan: dict[str, Any] = reply.json
        return loan

    def raw_loan(self, loan_id: str) -> dict[str, Any] | None:
        """The stored item exactly as DynamoDB returns it (attribute-value form)."""
        item: dict[str, Any] | None = self._ddb.get_item(
            TableName=f"loan-crm-{self.stage}-loans", Key={"loan_id": {"S": loan_id}}, ConsistentRead=True
        ).get("Item")
        return item

    def audit(self, as_: str = "admin", **params: str) -> list[dict[str, Any]]:
        """Every audit entry matching ``params``, following cursors to the end."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = dict(params, **({"cursor": cursor} if cursor else {}))
            reply = self.get("/api/v1/audit?" + "&".join(f"{k}={v}" for k, v in query.items()), as_=as_)
            assert reply.status == 200, (reply.status, reply.body[:500])
            items += reply.json["items"]
            cursor = reply.json["next_cursor"]
            if cursor is None:
                return items


def emf_documents(stdout: str) -> Iterator[dict[str, Any]]:
    """Every EMF document printed (powertools writes one JSON document per line; other lines skipped)."""
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "_aws" in doc:
            yield doc


def emitted_metrics(stdout: str) -> list[str]:
    """Names of every EMF metric printed."""
    return [
        m["Name"]
        for doc in emf_documents(stdout)
        for directive in doc["_aws"].get("CloudWatchMetrics", [])
        for m in directive["Metrics"]
    ]


def mint(alias: str, ttl_seconds: int = 8 * 3600) -> str:
    username, role = USERS[alias]
    return issue_token(username, role.value, services().jwt_secret(), ttl_seconds).access_token


@pytest.fixture(name="api")
def api_fixture(moto_stack: str, tmp_path: Path) -> Iterator[Api]:
    """Fresh tables (moto), every role's user and token, the clock frozen at :data:`FROZEN_AT`.

    ``project_dir`` is an empty directory so .chalice/config.json cannot override the test environment.
    """
    with use_clock(FixedClock(FROZEN_AT)) as clock, Client(app_module.app, project_dir=str(tmp_path)) as client:
        assert isinstance(clock, FixedClock)
        auth = services().auth
        session = Api(client, moto_stack, clock)
        for username, role in USERS.values():
            auth.add_user(username, PASSWORD, role)
        session.mint_all()
        yield session


def stored_items(api: Api, skip: tuple[str, ...] = ("audit",)) -> dict[str, list[dict[str, Any]]]:
    """Every item of every table of the test's stage, by short table name, in a stable order; the
    tables named in ``skip`` are left out. Two dumps are equal exactly when nothing was stored."""
    prefix = f"loan-crm-{api.stage}-"
    dump: dict[str, list[dict[str, Any]]] = {}
    for name in api._ddb.list_tables()["TableNames"]:
        short = name.removeprefix(prefix)
        if not name.startswith(prefix) or short in skip:
            continue
        items: list[dict[str, Any]] = []
        for page in api._ddb.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
            items += page["Items"]
        dump[short] = sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return dump


def assert_error_shape(reply: Reply) -> dict[str, Any]:
    """Any 4xx or 5xx answer is one JSON object ``{"error": {"code", "message", "details"}}``."""
    body = json.loads(reply.body)
    assert isinstance(body, dict) and set(body) == {"error"}, reply.body[:300]
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, reply.body[:300]
    assert isinstance(error["code"], str) and error["code"], reply.body[:300]
    assert isinstance(error["message"], str) and error["message"], reply.body[:300]
    return error


def local_gateway_request(
    gateway: Any, method: str, path: str, headers: dict[str, str], body: bytes | str = b""
) -> Reply:
    """A request through a chalice.local gateway (e.g. local.api_server.UnmatchedRouteGateway), as the local
    server makes it; chalice.test.Client uses Chalice's plain gateway. Answers are JSON, never base64."""
    payload = body.encode() if isinstance(body, str) else body
    answer = gateway.handle_request(method=method, path=path, headers=headers, body=payload)
    raw = answer.get("body") or b""
    return Reply(answer["statusCode"], dict(answer.get("headers") or {}), raw.encode() if isinstance(raw, str) else raw)


@contextmanager
def local_server() -> Iterator[str]:
    """The local API server (what ``make run`` serves) on 127.0.0.1:<free port>, in this process, on the
    current stage; yields its base URL."""
    original_class = app_module.app.__class__
    server = local_api_server(app_module.app, Config.create(), "127.0.0.1", 0)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server.server_close()
        # local_api_server makes the app's current request per thread, as `chalice local` does; the
        # other tests of this process get the app back as they know it.
        app_module.app.__class__ = original_class
