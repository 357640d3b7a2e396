"""Hostile input (docs/api.md): every rule of how the API reads a request, each shown to end in a 4xx
in the error shape, with nothing stored or changed — and the answers that make a caller's mistakes
visible: 404 for unknown paths, 405 for wrong methods, 415 for bodies that are not JSON, 403s on
writes that land on the audit trail, stored audit values that can always be read back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.app import Blueprint
from chalice.config import Config
from chalice.deploy.validate import validate_routes
from chalice.local import RouteMatcher
from chalice.test import Client

import app as app_module
from chalicelib.adapters.dynamodb.attributes import JsonAttribute
from chalicelib.api.errors import unknown_path_response
from chalicelib.api.http import (
    CATCH_ALL_METHODS,
    CATCH_ALL_PATHS,
    HTTP_METHODS,
    NOT_FOUND_DEPTH,
    endpoint,
    is_catch_all,
    served_methods,
    served_paths,
)
from chalicelib.config import settings
from chalicelib.domain.audit import Action, Actor, Outcome
from chalicelib.services.context import RequestContext
from chalicelib.wiring import services
from local.api_server import UnmatchedRouteGateway
from tests.integration.api_helpers import (
    AUDIT_KEYS,
    Api,
    Reply,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    assert_error_shape,
    detail_fields,
    imported_body,
    loan_body,
    local_gateway_request,
    stored_items,
)

ROOT = Path(__file__).resolve().parents[2]
ROUTES = served_paths()
"""The real routes (app.routes also holds the catch-alls)."""
TODAY = "2026-03-15"
"""Business 'today' of the frozen clock (api_helpers.FROZEN_AT)."""


def payment_body(loan_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "loan_id": loan_id,
        "utr": "UTR000111222",
        "amount_paise": 100_000,
        "payment_date": TODAY,
        "mode": "UPI",
    }
    body.update(overrides)
    return body


@pytest.fixture
def book(api: Api) -> Iterator[dict[str, str]]:
    """A loan assigned to collector1 with one posted payment; yields their ids."""
    loan_id = api.create_loan(loan_id="LN-HOSTILE", collector_id="collector1")["loan_id"]
    posted = api.post("/api/v1/payments", payment_body(loan_id))
    assert posted.status == 201, posted.body
    yield {"loan_id": loan_id, "payment_id": posted.json["payment_id"]}


def body_routes(ids: dict[str, str]) -> list[tuple[str, str]]:
    return [
        ("POST", "/api/v1/auth/token"),
        ("POST", "/api/v1/loans"),
        ("PATCH", f"/api/v1/loans/{ids['loan_id']}"),
        ("POST", f"/api/v1/loans/{ids['loan_id']}/assign"),
        ("POST", "/api/v1/payments"),
        ("POST", f"/api/v1/payments/{ids['payment_id']}/reverse"),
        ("POST", "/api/v1/jobs/dpd/runs"),
    ]


# --- bodies -----------------------------------------------------------------------------------------


def test_the_body_limit_is_64_kib_on_every_route(api: Api, book: dict[str, str]) -> None:
    assert settings().max_body_bytes == 64 * 1024
    before = stored_items(api, skip=())
    big = json.dumps({"notes": "x" * (64 * 1024)})
    for method, path in body_routes(book):
        for headers in ({}, {"Idempotency-Key": "big-1"}):
            details = assert_error(api.request(method, path, raw=big, headers=headers), 413, "PAYLOAD_TOO_LARGE")
            assert details == {"max_bytes": 64 * 1024}, (method, path)
    assert stored_items(api, skip=()) == before


def test_nesting_beyond_32_levels_is_400_even_far_beyond(api: Api, book: dict[str, str]) -> None:
    before = stored_items(api, skip=())
    deep = {
        "33 arrays": "[" * 33 + "]" * 33,
        "33 objects": '{"a":' * 32 + "{}" + "}" * 32,
        "past json's recursion limit": "[" * 30_000,
        "objects past the limit": '{"notes":' * 5_000 + "1" + "}" * 5_000,
    }
    for method, path in body_routes(book):
        for name, raw in deep.items():
            # With an Idempotency-Key too: the key's fingerprint must not be where it breaks.
            for headers in ({}, {"Idempotency-Key": "deep-1"}):
                details = assert_error(api.request(method, path, raw=raw, headers=headers), 400, "VALIDATION_ERROR")
                assert details == [{"field": "body", "message": "at most 32 levels of arrays and objects"}], name
    assert stored_items(api, skip=()) == before  # not even an idempotency record: the key was not taken

    # 32 levels are readable: what is wrong then is the shape, at the field where it is.
    nested: Any = "x"
    for _ in range(31):
        nested = [nested]
    reply = api.post("/api/v1/loans", loan_body(notes=nested))
    assert detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")) == ["notes"]


def test_a_repeated_key_is_400_naming_it_and_nothing_is_applied(api: Api, book: dict[str, str]) -> None:
    loan_id = book["loan_id"]
    before = stored_items(api)
    cases = [
        ("POST", "/api/v1/loans", '{"loan_id": "LN-DUP", "loan_id": "LN-DUP2"}', "loan_id"),
        (
            "POST",
            "/api/v1/loans",
            json.dumps(loan_body(loan_id="LN-DUP"))[:-1] + ', "principal_paise": 1}',
            "principal_paise",
        ),
        ("PATCH", f"/api/v1/loans/{loan_id}", '{"notes": "first", "notes": "second"}', "notes"),
        (
            "PATCH",
            f"/api/v1/loans/{loan_id}",
            '{"borrower": {"phone": "9111111111", "phone": "9222222222"}, "notes": "n"}',
            "borrower.phone",
        ),
        (
            "POST",
            "/api/v1/payments",
            json.dumps(payment_body(loan_id, utr="UTR999888777"))[:-1] + ', "amount_paise": 1}',
            "amount_paise",
        ),
        ("POST", "/api/v1/auth/token", '{"username": "x", "password": "y", "username": "admin1"}', "username"),
        (
            "POST",
            f"/api/v1/loans/{loan_id}/assign",
            '{"collector_id": "collector2", "collector_id": "x"}',
            "collector_id",
        ),
    ]
    for method, path, raw, field in cases:
        reply = api.request(method, path, raw=raw)
        details = assert_error(reply, 400, "VALIDATION_ERROR")
        assert details == [{"field": field, "message": "key appears more than once"}], (path, raw)
    assert stored_items(api) == before


@pytest.mark.parametrize("order", ["protected first", "protected last"])
def test_a_repeated_key_cannot_smuggle_a_protected_field_past_the_guard(
    api: Api, book: dict[str, str], order: str
) -> None:
    """Decision: the guard reads every key as written, repeats included, so a protected field hidden in
    either copy of a repeated key is a 403 FINANCIAL_FIELD_PROTECTED, audited with the text that was
    sent (a dict of it would drop one copy); the duplicate-key 400 applies only to bodies the guard
    has nothing to say about."""
    loan_id = book["loan_id"]
    harmless, protected = '{"phone": "9111111111"}', '{"dpd": 0}'
    first, last = (protected, harmless) if order == "protected first" else (harmless, protected)
    raw = f'{{"notes": "n", "borrower": {first}, "borrower": {last}}}'
    before = stored_items(api)
    for alias in ("admin", "collector"):
        reply = api.patch(f"/api/v1/loans/{loan_id}", raw=raw, as_=alias)
        assert assert_error(reply, 403, "FINANCIAL_FIELD_PROTECTED") == {"fields": ["borrower.dpd"]}
        (entry,) = [e for e in api.audit(entity_id=loan_id) if e["request_id"] == reply.header("X-Request-Id")]
        assert (entry["action"], entry["outcome"], entry["after"]) == ("FINANCIAL_GUARD_BLOCKED", "DENIED", raw)
    assert stored_items(api) == before

    # The same key repeated at the top level, both copies protected or only one.
    for raw in (
        '{"dpd": 1, "dpd": 2}',
        '{"dpd": 1, "notes": "n", "DPD": 2}',
        '{"notes": "a", "notes": "b", "Bucket": 1}',
    ):
        assert_error(api.patch(f"/api/v1/loans/{loan_id}", raw=raw), 403, "FINANCIAL_FIELD_PROTECTED")
    assert stored_items(api) == before


def test_numbers_that_are_not_json_or_do_not_fit_are_400_naming_the_field(api: Api, book: dict[str, str]) -> None:
    loan_id = book["loan_id"]
    before = stored_items(api)
    over, under = 2**63, -(2**63) - 1
    cases: list[tuple[str, str, str, str]] = [
        ("POST", "/api/v1/payments", _with(payment_body(loan_id), "amount_paise", "NaN"), "amount_paise"),
        ("POST", "/api/v1/payments", _with(payment_body(loan_id), "amount_paise", "-Infinity"), "amount_paise"),
        ("POST", "/api/v1/payments", _with(payment_body(loan_id), "amount_paise", "1e999"), "amount_paise"),
        ("POST", "/api/v1/payments", _with(payment_body(loan_id), "amount_paise", str(over)), "amount_paise"),
        ("POST", "/api/v1/payments", _with(payment_body(loan_id), "amount_paise", str(under)), "amount_paise"),
        # Past Python's 4300-digit conversion limit: refused where it stands, at no conversion cost.
        ("POST", "/api/v1/payments", _with(payment_body(loan_id), "amount_paise", "9" * 5000), "amount_paise"),
        ("POST", "/api/v1/loans", _with(loan_body(), "principal_paise", "9" * 5000), "principal_paise"),
        ("POST", "/api/v1/loans", _with(loan_body(), "tenure_months", str(over)), "tenure_months"),
        (
            "POST",
            "/api/v1/loans",
            json.dumps(imported_body([("2026-04-01", 1000, 0)])).replace(
                '"interest_paise": 0', '"interest_paise": NaN'
            ),
            "schedule.0.interest_paise",
        ),
    ]
    for method, path, raw, field in cases:
        started = time.monotonic()
        reply = api.request(method, path, raw=raw)
        assert field in detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")), (path, raw[:80])
        assert time.monotonic() - started < 2, raw[:80]
    # The largest 64-bit integer is a number like any other: the amount rule (422) judges it.
    fits = api.post("/api/v1/payments", payment_body(loan_id, utr="UTR123123123", amount_paise=2**63 - 1))
    assert_error(fits, 422, "AMOUNT_OUT_OF_RANGE")
    # Many huge integers in one body still answer at once.
    many = json.dumps({"notes": "x"})[:-1] + "".join(f', "n{i}": {"7" * 4300}' for i in range(14)) + "}"
    started = time.monotonic()
    assert_error(api.post("/api/v1/loans", raw=many), 400, "VALIDATION_ERROR")
    assert time.monotonic() - started < 2
    assert stored_items(api) == before


def _with(body: dict[str, Any], name: str, literal: str) -> str:
    """``body`` as JSON text with ``name``'s value replaced by a literal that json.dumps cannot write."""
    return json.dumps({**body, name: "__HERE__"}).replace('"__HERE__"', literal)


def test_strings_that_are_not_unicode_are_400(api: Api, book: dict[str, str]) -> None:
    before = stored_items(api)
    reply = api.patch(f"/api/v1/loans/{book['loan_id']}", raw='{"notes": "half a pair: \\ud800"}')
    details = assert_error(reply, 400, "VALIDATION_ERROR")
    assert details == [{"field": "notes", "message": "not valid Unicode (lone surrogate)"}]
    assert stored_items(api) == before


def test_business_dates_outside_2000_to_2099_are_400_naming_the_field(api: Api, book: dict[str, str]) -> None:
    loan_id = book["loan_id"]
    before = stored_items(api)
    for bad in ("1999-12-31", "2100-01-01", "0001-01-01", "9999-12-31"):
        for field in ("disbursement_date", "first_due_date"):
            reply = api.post("/api/v1/loans", loan_body(**{field: bad}))
            assert field in detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")), (field, bad)
        body = imported_body([(bad, 1000, 0)])
        reply = api.post("/api/v1/loans", body)
        assert "schedule.0.due_date" in detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")), bad
        reply = api.post("/api/v1/payments", payment_body(loan_id, payment_date=bad))
        assert detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")) == ["payment_date"], bad
        reply = api.post("/api/v1/jobs/dpd/runs", {"business_date": bad})
        assert detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")) == ["business_date"], bad
        for name in ("from", "to"):
            reply = api.get(f"/api/v1/audit?{name}={bad}")
            assert detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")) == [name], (name, bad)
        reply = api.get(f"/api/v1/jobs/dpd/runs?before={bad}")
        assert detail_fields(assert_error(reply, 400, "VALIDATION_ERROR")) == ["before"], bad
    assert stored_items(api) == before

    # The edges are in range: what judges them then is the business rule.
    assert_error(
        api.post("/api/v1/payments", payment_body(loan_id, payment_date="2099-12-31")), 422, "PAYMENT_DATE_IN_FUTURE"
    )
    assert_error(
        api.post("/api/v1/payments", payment_body(loan_id, payment_date="2000-01-01")), 422, "PAYMENT_DATE_TOO_OLD"
    )
    assert api.get("/api/v1/audit?actor=admin1&from=2000-01-01&to=2000-12-31").status == 200


# --- paths and queries ------------------------------------------------------------------------------


def test_ids_that_cannot_exist_are_404_without_a_lookup(api: Api, book: dict[str, str]) -> None:
    before = stored_items(api)
    bad_ids = ["x" * 10_000, "LN-" + "9" * 2_000, "%00abc", "ab%0Acd", "\u00e9t\u00e9", "LN\u202eX", "a b", "LN-€"]
    for bad in bad_ids:
        for method, path, body, alias in [
            ("GET", f"/api/v1/loans/{bad}", None, "admin"),
            ("PATCH", f"/api/v1/loans/{bad}", {"notes": "x"}, "admin"),
            ("POST", f"/api/v1/loans/{bad}/assign", {"collector_id": "collector2"}, "admin"),
            ("POST", f"/api/v1/loans/{bad}/assign", {"collector_id": "collector2"}, "collector"),
            ("GET", f"/api/v1/loans/{bad}/payments", None, "collector"),
            ("GET", f"/api/v1/payments/{bad}", None, "auditor"),
            ("POST", f"/api/v1/payments/{bad}/reverse", {"reason": "bounced"}, "manager"),
        ]:
            reply = api.request(method, path, alias, body=body)
            assert_error(reply, 404, "NOT_FOUND")
            assert len(reply.body) < 200 and bad not in reply.body.decode(), (method, path[:60])
    assert stored_items(api) == before


def test_oversized_or_unprintable_query_values_are_400(api: Api) -> None:
    for path, field in [
        ("/api/v1/audit?entity_id=" + "x" * 3000, "entity_id"),
        ("/api/v1/audit?entity_id=" + "x" * 300, "entity_id"),
        ("/api/v1/audit?actor=" + "é" * 400, "actor"),
        ("/api/v1/audit?action=loan_created", "action"),
        ("/api/v1/audit?entity_id=LN%00X", "entity_id"),
        ("/api/v1/loans?collector_id=" + "c" * 2000, "collector_id"),
        ("/api/v1/loans?collector_id=has%20space", "collector_id"),
        ("/api/v1/loans?cursor=" + "A" * 5000, "cursor"),
        ("/api/v1/audit?cursor=" + "A" * 2000, "cursor"),
    ]:
        assert detail_fields(assert_error(api.get(path), 400, "VALIDATION_ERROR")) == [field], path[:60]


def test_audit_ranges_are_at_most_366_days(api: Api) -> None:
    for query in ("from=2025-03-13&to=2026-03-15", "from=2020-01-01&to=2026-03-15", "from=2025-01-01"):
        assert detail_fields(assert_error(api.get(f"/api/v1/audit?{query}"), 400, "VALIDATION_ERROR")) == ["from"]
    # With a filter the range is bounded the same way (a missing `to` counts to today).
    for query in ("entity_id=LN1&from=2024-01-01", "actor=admin1&from=2024-01-01&to=2026-01-01"):
        assert detail_fields(assert_error(api.get(f"/api/v1/audit?{query}"), 400, "VALIDATION_ERROR")) == ["from"]
    # A whole year, leap day included, is fine; so is `from` alone within a year of today.
    assert api.get("/api/v1/audit?from=2025-03-14&to=2026-03-15").status == 200
    for query in ("from=2024-01-01&to=2025-01-01", "from=2025-03-14", "to=2001-01-01"):
        assert api.get(f"/api/v1/audit?entity_id=LN1&{query}").status == 200, query


def test_listings_page_by_50_by_default_and_at_most_200(api: Api) -> None:
    for n in range(51):
        api.create_loan(loan_id=f"LN-PAGE-{n:02d}")
    first = api.get("/api/v1/loans").json
    assert len(first["items"]) == 50 and first["next_cursor"]
    assert len(api.get("/api/v1/loans?limit=200").json["items"]) == 51
    for limit in ("0", "201", "-5", "1e3"):
        assert detail_fields(assert_error(api.get(f"/api/v1/loans?limit={limit}"), 400, "VALIDATION_ERROR")) == [
            "limit"
        ]


# --- 404, 405, 415 ----------------------------------------------------------------------------------


def test_every_path_answers_every_other_method_with_405(api: Api) -> None:
    for path in ROUTES:
        concrete = path.replace("{loan_id}", "LN-ANY").replace("{payment_id}", "PAY1")
        served = served_methods(path)
        for method in HTTP_METHODS:
            if method in served:
                continue
            reply = api.request(method, concrete, headers={"Authorization": "Bearer SECRET-TOKEN-abc"})
            assert reply.status == 405, (method, path, reply.body[:200])
            if method != "HEAD":
                details = assert_error(reply, 405, "METHOD_NOT_ALLOWED")
                assert details == {"allowed": served}
                assert "SECRET-TOKEN" not in reply.body.decode()
            assert reply.header("Allow") == ", ".join(served)


def test_bodies_that_are_not_json_are_415(api: Api, book: dict[str, str]) -> None:
    before = stored_items(api)
    body = json.dumps(loan_body(loan_id="LN-MEDIA"))
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "application/json-patch+json",
        "application/json; charset=latin-1",
        "",
        "garbage;;;",
    ):
        for method, path in body_routes(book):
            reply = api.request(method, path, raw=body, headers={"Content-Type": content_type})
            assert assert_error(reply, 415, "UNSUPPORTED_MEDIA_TYPE") == {"expected": "application/json"}, content_type
    assert stored_items(api) == before
    # Letter case and a UTF-8 charset are still JSON.
    for content_type in ("Application/JSON", "application/json; charset=UTF-8", 'application/json;charset="utf-8"'):
        reply = api.request(
            "POST",
            "/api/v1/loans",
            raw=body.replace("LN-MEDIA", f"LN-{len(content_type)}"),
            headers={"Content-Type": content_type},
        )
        assert reply.status == 201, (content_type, reply.body[:200])


def local_gateway() -> UnmatchedRouteGateway:
    return UnmatchedRouteGateway(app_module.app, Config.create())


def deep_path(segments: int) -> str:
    return "".join(f"/s{i}" for i in range(1, segments + 1))


def unknown_paths(ids: dict[str, str]) -> list[str]:
    """Paths no route serves, of every depth up to the catch-alls' bound; some only one segment away
    from a real route, some with a real id in them."""
    loan_id, payment_id = ids["loan_id"], ids["payment_id"]
    paths = [
        "/",
        "/nope",
        "/HEALTH",
        "/health/x",
        "/api",
        "/api/v1",
        "/api/v2/loans",
        "/api/v1/nope",
        "/api/v1/loan",
        "/api//v1/loans",
        "/api/v1/loans/X/unknown/deeper",
        f"/api/v1/loans/{loan_id}/nope",
        f"/api/v1/loans/{loan_id}/payments/{payment_id}",
        f"/api/v1/payments/{payment_id}/reverse/again",
        "/api/v1/jobs/dpd/runs/1/2/3",
        "/a/b/c/d/e/f/g/h/i/j/k",
    ]
    return paths + [deep_path(n) for n in range(1, NOT_FOUND_DEPTH + 1)]


def test_unknown_paths_are_404_for_every_method_and_never_echo_the_token(api: Api, book: dict[str, str]) -> None:
    """Through the bare chalice.test.Client the tests use (api_helpers): the catch-alls answer, not
    Chalice's gateway (its 403 would quote the Authorization header back)."""
    token = api.tokens["admin"]
    before = stored_items(api, skip=())
    for path in unknown_paths(book):
        for method in CATCH_ALL_METHODS:
            for headers in ({}, {"Authorization": f"Bearer {token}"}, {"Content-Type": "text/plain"}):
                reply = api.request(method, path, as_=None, raw="{}", headers=headers)
                assert_error(reply, 404, "NOT_FOUND")
                assert reply.json["error"]["message"] == "nothing is served at this path"
                assert reply.header("X-Request-Id")
                assert token not in reply.body.decode() and token not in json.dumps(reply.headers), (method, path)
    assert stored_items(api, skip=()) == before  # not even an audit entry


def test_a_bare_test_client_answers_unknown_paths_without_any_setup(tmp_path: Path) -> None:
    """What an outside test does: ``Client(app)`` and a request, no tables, no users (a catch-all looks
    nothing up)."""
    token = "eyJhbGciOiJIUzI1NiJ9.secret-looking-token.sig"
    with Client(app_module.app, project_dir=str(tmp_path)) as client:
        for method, path in [
            ("GET", "/api/v1/nope"),
            ("GET", "/nope"),
            ("POST", "/api/v1/loans/X/unknown/deeper"),
            ("DELETE", deep_path(NOT_FOUND_DEPTH)),
        ]:
            answer = client.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, body=b"{}")
            reply = Reply(answer.status_code, dict(answer.headers), answer.body)
            assert_error(reply, 404, "NOT_FOUND")
            assert token not in reply.body.decode() and token not in json.dumps(reply.headers)


def test_known_paths_still_reach_their_views(api: Api, book: dict[str, str]) -> None:
    loan_id, payment_id = book["loan_id"], book["payment_id"]
    assert api.get(f"/api/v1/loans/{loan_id}").json["loan_id"] == loan_id
    assert api.get(f"/api/v1/loans/{loan_id}/").json["loan_id"] == loan_id  # a trailing slash, as API Gateway
    assert api.get(f"/api/v1/loans/{loan_id}/payments").status == 200
    assert api.get(f"/api/v1/payments/{payment_id}").json["payment_id"] == payment_id
    assert api.get("/health", as_=None).status == 200
    assert api.get("/api/v1/loans?limit=1").status == 200
    # The loan view's own 404s (a loan that does not exist, or one the collector is not assigned to),
    # not the catch-alls'; and a real path with a method it does not serve is 405, not 404.
    for reply in (api.get("/api/v1/loans/LN-NOPE"), api.get(f"/api/v1/loans/{loan_id}", as_="collector2")):
        assert_error(reply, 404, "NOT_FOUND")
        assert reply.json["error"]["message"] != "nothing is served at this path"
    assert_error(api.request("DELETE", f"/api/v1/loans/{loan_id}"), 405, "METHOD_NOT_ALLOWED")
    assert_error(api.get(f"/api/v1/loans/{loan_id}/payments", as_=None), 401, "UNAUTHENTICATED")


def test_the_catch_alls_shadow_no_route_and_api_gateway_can_take_them() -> None:
    routes = app_module.app.routes
    assert set(routes) == set(ROUTES) | set(CATCH_ALL_PATHS)
    assert not set(ROUTES) & set(CATCH_ALL_PATHS)
    assert len(CATCH_ALL_PATHS) == NOT_FOUND_DEPTH
    validate_routes(routes)  # what `chalice package` and the local server check
    for path in CATCH_ALL_PATHS:
        assert is_catch_all(path) and served_methods(path) == []
        assert set(routes[path]) == set(CATCH_ALL_METHODS)
        assert all(not entry.cors for entry in routes[path].values())
    # Chalice's matcher (chalice.local.RouteMatcher, what chalice.test.Client routes with) still picks
    # every real route for its own paths, with and without a trailing slash.
    matcher = RouteMatcher(list(routes))
    for path in ROUTES:
        assert not is_catch_all(path)
        concrete = path.replace("{loan_id}", "LN-1").replace("{payment_id}", "PAY-1")
        for variant in (concrete, concrete + "/", concrete + "?limit=1"):
            assert matcher.match_route(variant).route == path, variant
    assert matcher.match_route(deep_path(NOT_FOUND_DEPTH)).route == CATCH_ALL_PATHS[-1]
    # API Gateway builds a tree of resources: a parameter may sit beside literal siblings, but no
    # resource may have two children with different parameter names.
    children: dict[str, set[str]] = {}
    for path in routes:
        segments = path.strip("/").split("/")
        for depth, segment in enumerate(segments):
            children.setdefault("/" + "/".join(segments[:depth]), set()).add(segment)
    for parent, names in children.items():
        assert len([n for n in names if n.startswith("{")]) <= 1, (parent, sorted(names))


def test_a_route_must_start_with_a_literal_segment() -> None:
    bp = Blueprint("test_only")
    for path in ("/{tenant}/loans", "/~x"):
        with pytest.raises(ValueError, match="first segment"):
            endpoint(bp, path, summary="never registered", answers={200: "HealthOut"}, tag="test")(lambda call: {})


def test_paths_deeper_than_the_catch_alls_are_404_on_the_local_server(api: Api) -> None:
    token = api.tokens["admin"]
    gateway = local_gateway()
    for path in (deep_path(NOT_FOUND_DEPTH + 1), deep_path(40), "/api/v1/loans" + "/x" * NOT_FOUND_DEPTH):
        for method in CATCH_ALL_METHODS:
            reply = local_gateway_request(gateway, method, path, {"Authorization": f"Bearer {token}"}, "{}")
            assert_error(reply, 404, "NOT_FOUND")
            assert token not in reply.body.decode() and token not in json.dumps(reply.headers)
    # Within the bound the local server's gateway hands everything to the app, catch-alls included.
    assert_error(local_gateway_request(gateway, "GET", "/nope", {}), 404, "NOT_FOUND")
    assert local_gateway_request(gateway, "GET", "/health", {}).status == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return Reply(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def test_the_local_server_answers_404_405_415_in_the_error_shape(tmp_path: Path) -> None:
    """The server `make run` starts, end to end over HTTP (no database needed for these answers)."""
    port = _free_port()
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9",
        "PYTHONUNBUFFERED": "1",
    }
    log = (tmp_path / "api.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "local", "serve-api", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                _http(base + "/api/v1/loans")
                break
            except OSError:
                started = server.poll() is None and time.monotonic() < deadline
                assert started, (tmp_path / "api.log").read_text()
                time.sleep(0.2)
        token = "eyJhbGciOiJIUzI1NiJ9.secret-looking-token.sig"
        auth = {"Authorization": f"Bearer {token}"}
        for method, path in [
            ("GET", "/nope"),
            ("POST", "/api/v1/loans/LN1/nope/deeper"),
            ("OPTIONS", "/nope"),
            ("GET", deep_path(NOT_FOUND_DEPTH)),
            ("DELETE", deep_path(NOT_FOUND_DEPTH + 1)),
        ]:
            reply = _http(base + path, method, auth)
            assert_error(reply, 404, "NOT_FOUND")
            assert token not in reply.body.decode()
        assert_error(_http(base + "/api/v1/loans", "DELETE", auth), 405, "METHOD_NOT_ALLOWED")
        reply = _http(base + "/api/v1/loans", "POST", {**auth, "Content-Type": "text/plain"}, b"{}")
        assert_error(reply, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert_error(_http(base + "/api/v1/loans", headers={"Authorization": "Bearer x"}), 401, "UNAUTHENTICATED")
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def test_api_gateway_answers_its_own_refusals_in_the_error_shape() -> None:
    template = json.loads((ROOT / "infra" / "template.json").read_text())
    definition = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    responses = definition["x-amazon-apigateway-gateway-responses"]
    expected = {
        "MISSING_AUTHENTICATION_TOKEN": ("404", "NOT_FOUND"),
        "RESOURCE_NOT_FOUND": ("404", "NOT_FOUND"),
        "UNSUPPORTED_MEDIA_TYPE": ("415", "UNSUPPORTED_MEDIA_TYPE"),
        "REQUEST_TOO_LARGE": ("413", "PAYLOAD_TOO_LARGE"),
        "THROTTLED": ("429", "RATE_LIMITED"),
        "QUOTA_EXCEEDED": ("429", "RATE_LIMITED"),
        "BAD_REQUEST_BODY": ("400", "VALIDATION_ERROR"),
        "DEFAULT_4XX": (None, "VALIDATION_ERROR"),
        "DEFAULT_5XX": (None, "INTERNAL_ERROR"),
    }
    for kind, (status, code) in expected.items():
        response = responses[kind]
        assert response.get("statusCode") == status, kind
        (template_text,) = response["responseTemplates"].values()
        # $context.error.message can quote the request's Authorization header: never used.
        assert "$context.error" not in template_text and "$input" not in template_text, kind
        body = json.loads(template_text.replace("$context.requestId", "req-1"))
        assert_error_shape(Reply(int(status or 400), {}, json.dumps(body).encode()))
        assert body["error"]["code"] == code, kind
        assert response["responseParameters"]["gatewayresponse.header.X-Request-Id"] == "context.requestId"
    assert responses["THROTTLED"]["responseParameters"]["gatewayresponse.header.Retry-After"]
    # An unknown path gets the same body whether API Gateway or a catch-all answers it.
    (missing,) = responses["MISSING_AUTHENTICATION_TOKEN"]["responseTemplates"].values()
    assert json.loads(missing) == json.loads(unknown_path_response("req-1").body)


# --- denied writes are audited ----------------------------------------------------------------------


def test_every_403_on_a_write_route_is_audited(api: Api, book: dict[str, str]) -> None:
    loan_id, payment_id = book["loan_id"], book["payment_id"]
    before = stored_items(api)
    attempts: list[tuple[str, str, str, Any, str, str]] = [
        ("POST", "/api/v1/loans", "collector", loan_body(), "route", "POST /api/v1/loans"),
        ("POST", "/api/v1/loans", "auditor", loan_body(), "route", "POST /api/v1/loans"),
        ("POST", f"/api/v1/loans/{loan_id}/assign", "collector", {"collector_id": "collector1"}, "loan", loan_id),
        ("PATCH", f"/api/v1/loans/{loan_id}", "collector", {"notes": "mine now"}, "loan", loan_id),
        ("PATCH", f"/api/v1/loans/{loan_id}", "auditor", {"borrower": {"phone": "9111111111"}}, "loan", loan_id),
        ("POST", f"/api/v1/payments/{payment_id}/reverse", "collector", {"reason": "oops"}, "payment", payment_id),
        (
            "POST",
            "/api/v1/payments",
            "auditor",
            payment_body(loan_id, utr="UTR555666777"),
            "route",
            "POST /api/v1/payments",
        ),
        ("POST", "/api/v1/jobs/dpd/runs", "manager", {}, "route", "POST /api/v1/jobs/dpd/runs"),
    ]
    for method, path, alias, body, entity_type, entity_id in attempts:
        reply = api.request(method, path, alias, body=body)
        assert_error(reply, 403, "FORBIDDEN")
        entries = [e for e in api.audit(entity_id=entity_id) if e["request_id"] == reply.header("X-Request-Id")]
        assert len(entries) == 1, (method, path, alias)
        entry = entries[0]
        assert set(entry) == AUDIT_KEYS
        assert entry["action"] == "ACCESS_DENIED" and entry["outcome"] == "DENIED"
        assert (entry["entity_type"], entry["entity_id"]) == (entity_type, entity_id)
        assert entry["actor"]["sub"] == {"collector": "collector1", "auditor": "auditor1", "manager": "manager1"}[alias]
        assert entry["source_ip"] == "127.0.0.1"
        assert entry["after"] == body and entry["before"] is None
        assert "may not" in entry["reason"]
    assert stored_items(api) == before

    # A body that does not parse is no attempt to record, but the refusal still is.
    reply = api.request("POST", "/api/v1/loans", "collector", raw='{"broken"')
    assert_error(reply, 403, "FORBIDDEN")
    (entry,) = [e for e in api.audit(actor="collector1") if e["request_id"] == reply.header("X-Request-Id")]
    assert entry["after"] is None

    # A 403 on a read is not a write attempt.
    audited = len(api.audit())
    assert_error(api.get("/api/v1/audit", as_="manager"), 403, "FORBIDDEN")
    assert_error(api.get("/api/v1/flags", as_="collector"), 403, "FORBIDDEN")
    assert len(api.audit()) == audited


def test_a_refusal_stands_when_it_cannot_be_audited(
    api: Api, book: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("arn:aws:dynamodb:ap-south-1:123456789012:table/loan-crm-prod-audit is gone")

    monkeypatch.setattr(type(services().audit), "append", unreachable)
    reply = api.post("/api/v1/loans", loan_body(), as_="collector")
    assert_error(reply, 403, "FORBIDDEN")
    assert "arn:" not in reply.body.decode()
    reply = api.patch(f"/api/v1/loans/{book['loan_id']}", {"dpd": 0}, as_="collector")
    assert_error(reply, 403, "FINANCIAL_FIELD_PROTECTED")


# --- nothing leaks ----------------------------------------------------------------------------------


def test_answers_never_repeat_what_was_sent(api: Api, book: dict[str, str]) -> None:
    secret = "hunter2-SECRET-VALUE"
    replies = [
        api.post("/api/v1/auth/token", raw=f'{{"username": "admin1", "password": "{secret}"', as_=None),
        api.post("/api/v1/auth/token", {"username": ["admin1"], "password": secret}, as_=None),
        api.post("/api/v1/payments", payment_body(book["loan_id"], utr=f"<{secret}>", mode=secret)),
        api.post("/api/v1/loans", loan_body(borrower={"name": secret, "phone": secret})),
        api.post("/api/v1/loans", loan_body(disbursement_date=secret)),
        api.get(f"/api/v1/loans?bucket={secret}"),
        api.request("GET", "/api/v1/loans", None, headers={"Authorization": f"Bearer {secret}.{secret}.{secret}"}),
        api.request("GET", "/api/v1/loans", None, headers={"Authorization": f"Basic {secret}"}),
        api.request("PUT", "/api/v1/loans", headers={"Authorization": f"Bearer {secret}"}),
        api.post("/api/v1/payments", raw=secret, headers={"Content-Type": f"text/{secret}"}),
        api.post("/api/v1/payments", payment_body(book["loan_id"]), headers={"Idempotency-Key": f"{secret}!"}),
    ]
    for reply in replies:
        assert 400 <= reply.status < 500, reply.body[:200]
        assert_error_shape(reply)
        assert secret not in reply.body.decode(), reply.body[:300]
        assert "Traceback" not in reply.body.decode()


# --- stored values stay readable --------------------------------------------------------------------


def test_json_attribute_never_writes_nan_and_always_reads_back() -> None:
    attribute = JsonAttribute()
    stored = attribute.serialize({"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": 7})
    assert "NaN" not in stored and "Infinity" not in stored
    assert json.loads(stored, parse_constant=_refuse) == {"a": "nan", "b": ["inf", "-inf", 1.5], "c": 7}
    assert attribute.serialize({"n": 10**30}) == '{"n":1000000000000000000000000000000}'
    for text, value in [
        ("NaN", "NaN"),
        ('{"x": [Infinity, -Infinity]}', {"x": ["Infinity", "-Infinity"]}),
        ("not json {", "not json {"),
        ("[" * 5000, "[" * 5000),
        ("9" * 5000, "9" * 5000),
    ]:
        assert attribute.deserialize(text) == value


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} in an answer")


def test_the_audit_listing_is_valid_json_whatever_was_stored(api: Api, book: dict[str, str]) -> None:
    ctx = RequestContext(actor=Actor("admin1", "admin"), source_ip="10.0.0.1", request_id="r-1")
    entry = ctx.audit_entry(
        Action.LOAN_UPDATED, "loan", book["loan_id"], {"x": float("nan")}, {"y": float("-inf")}, Outcome.SUCCESS
    )
    services().audit.append(entry)
    table = boto3.client("dynamodb")
    name = f"loan-crm-{api.stage}-audit"
    for raw in ["NaN", '{"a": Infinity}', "{not json", "[" * 3000, "1" * 5000]:
        copy = ctx.audit_entry(Action.LOAN_UPDATED, "loan", book["loan_id"], None, None, Outcome.SUCCESS)
        services().audit.append(copy)
        table.update_item(
            TableName=name,
            Key={"audit_id": {"S": copy.audit_id}},
            UpdateExpression="SET #after = :raw",
            ExpressionAttributeNames={"#after": "after"},
            ExpressionAttributeValues={":raw": {"S": raw}},
        )
    for query in (f"entity_id={book['loan_id']}", "", "action=LOAN_UPDATED"):
        reply = api.get(f"/api/v1/audit?{query}")
        assert reply.status == 200
        page = json.loads(reply.body, parse_constant=_refuse)
        assert len([e for e in page["items"] if e["action"] == "LOAN_UPDATED"]) == 6, query
    afters = [e["after"] for e in api.audit(action="LOAN_UPDATED")]
    assert {"y": "-inf"} in afters and "{not json" in afters and {"a": "Infinity"} in afters


def test_stored_items_sees_every_table(api: Api) -> None:
    """The helper the tests above compare with really lists the stage's tables (and stays correct)."""
    dump = stored_items(api, skip=())
    assert {"loans", "payments", "audit", "users", "idempotency"} <= set(dump)
    assert len(dump["users"]) == 5
