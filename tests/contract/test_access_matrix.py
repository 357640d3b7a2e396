"""Who may do what, route by route: every operation in the published OpenAPI document × every role ×
the caller's own resource, another collector's, and one that does not exist.

The cases come from the document, so a new route cannot escape: an operation without a scenario
below fails. What each case must answer comes from the document too, not from a table written here:
a role the operation does not list (``x-roles``) gets 403 whatever the resource; a collector asking
for a resource on another collector's loan gets 404, as for one that does not exist; everyone else
gets one of the operation's documented success statuses. Every answer's body is checked against the
document's schema for its status, and listings read as a collector never show another collector's
loans, payments, reminders or scores.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from chalicelib.api.openapi import document
from tests.integration.api_helpers import FROZEN_AT, PASSWORD, USERS, YESTERDAY, Api, Reply, loan_body
from tests.integration.module_stack import module_api

DOC = document("test")
ROLES = ("admin", "manager", "collector", "auditor")
"""Test aliases (tests/integration/api_helpers.py USERS): ``collector`` is collector1, the one whose
loans are "own"; collector2 holds the "other" loans."""
OWN, OTHER, MISSING = "own", "other", "missing"
OWN_LOAN, OTHER_LOAN, MISSING_LOAN = "AM-OWN", "AM-OTHER", "AM-NOPE"
MISSING_PAYMENT = "PAYNOPE0000"
OWN_COLLECTOR, OTHER_COLLECTOR = USERS["collector"][0], USERS["collector2"][0]
_unique = itertools.count()


@dataclass
class World:
    api: Api
    payments: dict[str, str]
    """Resource kind -> a standing payment id on that loan."""

    def loan(self, which: str) -> str:
        return {OWN: OWN_LOAN, OTHER: OTHER_LOAN, MISSING: MISSING_LOAN}[which]

    def collector_of(self, which: str) -> str:
        return OTHER_COLLECTOR if which == OTHER else OWN_COLLECTOR

    def fresh_payment(self, which: str) -> str:
        """A new standing payment on the loan (as admin): a reversal case consumes one."""
        if which == MISSING:
            return MISSING_PAYMENT
        reply = self.api.post("/api/v1/payments", payment_body(self.loan(which)))
        assert reply.status == 201, reply.body
        payment_id: str = reply.json["payment_id"]
        return payment_id

    def user(self, which: str) -> str:
        return {OWN: OWN_COLLECTOR, OTHER: OTHER_COLLECTOR, MISSING: "nobody-here"}[which]


def payment_body(loan_id: str) -> dict[str, Any]:
    return {
        "loan_id": loan_id,
        "utr": f"AMUTR{next(_unique):08d}",
        "amount_paise": 10_000,
        "payment_date": FROZEN_AT.date().isoformat(),
        "mode": "UPI",
    }


@dataclass(frozen=True)
class Scenario:
    """How to call one operation on a resource: the path's parameters and the body. ``resource`` None:
    the operation names no resource, it is called once per role."""

    params: Callable[[World, str], dict[str, str]] = lambda w, r: {}
    body: Callable[[World, str], Any] = lambda w, r: None
    resource: str | None = "path"
    """``path``: the ids in the path; ``body``: the loan the body names; None: no resource."""


def _loan_path(w: World, r: str) -> dict[str, str]:
    return {"loan_id": w.loan(r)}


def _stays_with_its_collector(w: World, r: str) -> dict[str, Any]:
    # Reassigning a loan to the collector who holds it already changes nothing: the module's loans
    # stay where every other case expects them.
    return {"collector_id": w.collector_of(r)}


SCENARIOS: dict[str, Scenario] = {
    "health": Scenario(resource=None),
    "openapi_document": Scenario(resource=None),
    "docs": Scenario(resource=None),
    "issue_token": Scenario(body=lambda w, r: {"username": OWN_COLLECTOR, "password": PASSWORD}, resource=None),
    "create_loan": Scenario(body=lambda w, r: loan_body(loan_id=f"AM-NEW-{next(_unique)}"), resource=None),
    "list_loans": Scenario(resource=None),
    "get_loan": Scenario(params=_loan_path),
    "patch_loan": Scenario(params=_loan_path, body=lambda w, r: {"notes": f"called {next(_unique)}"}),
    "assign_loan": Scenario(params=_loan_path, body=_stays_with_its_collector),
    "list_loan_reminders": Scenario(params=_loan_path),
    "list_loan_payments": Scenario(params=_loan_path),
    "post_payment": Scenario(body=lambda w, r: payment_body(w.loan(r)), resource="body"),
    "get_payment": Scenario(params=lambda w, r: {"payment_id": w.payments.get(r, MISSING_PAYMENT)}),
    "reverse_payment": Scenario(
        params=lambda w, r: {"payment_id": w.fresh_payment(r)}, body=lambda w, r: {"reason": "cheque bounced"}
    ),
    "reassign_loans": Scenario(
        body=lambda w, r: {"loan_ids": [w.loan(r)], "to_collector_id": w.collector_of(r)}, resource="body"
    ),
    "list_audit": Scenario(resource=None),
    "list_runs": Scenario(resource=None),
    "start_run": Scenario(body=lambda w, r: {"business_date": YESTERDAY}, resource=None),
    "list_escalations": Scenario(resource=None),
    "list_flags": Scenario(resource=None),
    "create_user": Scenario(
        body=lambda w, r: {"username": f"am-user-{next(_unique)}", "password": PASSWORD + "-long", "role": "auditor"},
        resource=None,
    ),
    "list_users": Scenario(resource=None),
    "get_user": Scenario(params=lambda w, r: {"username": w.user(r)}),
    "patch_user": Scenario(
        params=lambda w, r: {"username": w.user(r)}, body=lambda w, r: {"display_name": f"Name {next(_unique)}"}
    ),
    "dashboard_summary": Scenario(resource=None),
    "start_reconciliation": Scenario(body=lambda w, r: {}, resource=None),
    "latest_reconciliation": Scenario(resource=None),
    "collector_scores": Scenario(resource=None),
}

OPERATIONS = [(path, method.upper(), op) for path, methods in DOC["paths"].items() for method, op in methods.items()]


def _cases() -> Iterator[Any]:
    for path, method, op in OPERATIONS:
        scenario = SCENARIOS.get(op["operationId"])
        resources = (None,) if scenario is None or scenario.resource is None else (OWN, OTHER, MISSING)
        for role in ROLES:
            for resource in resources:
                yield pytest.param(path, method, role, resource, id=f"{method} {path} {role} {resource or '-'}")


def test_every_documented_operation_has_a_scenario() -> None:
    """A new route is in the document (tests/contract/test_openapi.py); here it needs its scenario."""
    assert {op["operationId"] for _, _, op in OPERATIONS} == set(SCENARIOS)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One moto stack for the module: every role's user, a loan of collector1 ("own") and one of
    collector2 ("other") with a payment each, a completed reconciliation."""
    with module_api("am", Path(tmp_path_factory.mktemp("chalice"))) as api:
        api.create_loan(loan_body(loan_id=OWN_LOAN, collector_id=OWN_COLLECTOR))
        api.create_loan(loan_body(loan_id=OTHER_LOAN, collector_id=OTHER_COLLECTOR))
        w = World(api, {})
        w.payments = {OWN: w.fresh_payment(OWN), OTHER: w.fresh_payment(OTHER)}
        assert api.post("/api/v1/reconciliation/runs", {}).status == 200
        yield w


def _validator(op: dict[str, Any], status: int) -> Any:
    answer = op["responses"].get(str(status))
    assert answer is not None, f"{status} is not documented for {op['operationId']}"
    (media,) = answer["content"].values()
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": DOC["components"]}
    return jsonschema_rs.validator_for({**root, **media["schema"]})


def _expected(op: dict[str, Any], role: str, resource: str | None, scenario: Scenario) -> set[int]:
    success = {int(s) for s in op["responses"] if s.startswith("2")}
    if not op["security"]:
        return success  # open: the token is not even looked at
    if role not in op["x-roles"]:
        return {403}
    if resource == MISSING or (resource == OTHER and role == "collector" and scenario.resource is not None):
        return {404}
    return success


@pytest.mark.parametrize(("path", "method", "role", "resource"), list(_cases()))
def test_access(world: World, path: str, method: str, role: str, resource: str | None) -> None:
    op = DOC["paths"][path][method.lower()]
    scenario = SCENARIOS[op["operationId"]]
    which = resource or OWN
    params = scenario.params(world, which)
    url = path.format(**params)
    body = scenario.body(world, which)
    reply: Reply = world.api.request(method, url, as_=role, body=body)
    expected = _expected(op, role, resource, scenario)
    assert reply.status in expected, (reply.status, expected, reply.body[:400])
    media_type = reply.header("Content-Type") or ""
    if media_type.startswith("application/json"):
        _validator(op, reply.status).validate(reply.json)
    if reply.status == 403:
        assert reply.json["error"]["code"] == "FORBIDDEN"
    if reply.status == 404:
        assert reply.json["error"]["code"] == "NOT_FOUND"
    if reply.status == 404 and resource == OTHER:
        # Another collector's loan is answered exactly as one that does not exist: nothing in the
        # answer tells the caller it is there.
        missing_params = scenario.params(world, MISSING)
        missing = world.api.request(method, path.format(**missing_params), as_=role, body=scenario.body(world, MISSING))
        named = (world.loan(OTHER), *params.values())
        assert _anonymised(reply, *named) == _anonymised(missing, world.loan(MISSING), *missing_params.values())


def _anonymised(reply: Reply, *ids: str) -> tuple[int, Any]:
    text = reply.body.decode()
    for named in ids:
        text = text.replace(named, "{id}")
    error = json.loads(text)["error"]
    return reply.status, {key: error[key] for key in ("code", "message")}


LISTINGS = {
    "/api/v1/loans": lambda body: [item["collector_id"] for item in body["items"]],
    f"/api/v1/loans?collector_id={OTHER_COLLECTOR}": lambda body: [item["collector_id"] for item in body["items"]],
    "/api/v1/collectors/scores": lambda body: [item["collector_id"] for item in body["items"]],
}


@pytest.mark.parametrize("url", list(LISTINGS))
def test_listings_never_show_a_collector_anything_of_another(world: World, url: str) -> None:
    seen_by_admin = LISTINGS[url](world.api.get(url, as_="admin").json)
    # The listing does hold another collector's rows (both loans have a payment this month), so an
    # empty answer to the collector below is a filter at work, not an empty book.
    assert OTHER_COLLECTOR in seen_by_admin
    reply = world.api.get(url, as_="collector")
    assert reply.status == 200, reply.body
    assert set(LISTINGS[url](reply.json)) <= {OWN_COLLECTOR}


def test_a_collector_sees_only_their_own_portfolio_on_the_dashboard(world: World) -> None:
    mine = world.api.get("/api/v1/dashboard/summary", as_="collector")
    assert mine.status == 200 and mine.json["scope"] == f"collector:{OWN_COLLECTOR}"
    theirs = world.api.get(f"/api/v1/dashboard/summary?collector_id={OTHER_COLLECTOR}", as_="collector")
    assert theirs.status == 403, theirs.body


@pytest.mark.parametrize("which", [OTHER, MISSING])
def test_a_collector_cannot_reach_another_collectors_payments_or_reminders(world: World, which: str) -> None:
    loan = world.loan(which)
    for url in (f"/api/v1/loans/{loan}/payments", f"/api/v1/loans/{loan}/reminders"):
        reply = world.api.get(url, as_="collector")
        assert reply.status == 404, (url, reply.body)
    if which == OTHER:
        reply = world.api.get(f"/api/v1/payments/{world.payments[OTHER]}", as_="collector")
        assert reply.status == 404 and OTHER_LOAN not in json.dumps(reply.json)
