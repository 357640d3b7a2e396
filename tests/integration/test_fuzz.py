"""A fuzz pass over every route and every method (docs/api.md): deep, repeated-key, non-finite,
oversized and wrong-typed bodies; garbage Content-Type, Authorization (tokens with wrong-typed claims
included) and Idempotency-Key headers; hostile ids in paths and values in queries.

Requests go through Chalice's LocalGateway, the one ``chalice.test.Client`` uses, so a path no route
matches is answered by the app's catch-all routes. A path Chalice's matcher cannot place even on a
catch-all (more than ``NOT_FOUND_DEPTH`` segments, which a hostile id with slashes in it can make, or
``//x``, which it reads as a host name) goes through local.api_server.UnmatchedRouteGateway, the gateway
of the local server, which answers it as API Gateway does. Whatever is sent:

- no answer is a server error (status < 500);
- every answer with a body is JSON, and every 4xx is the error shape (a 400 listing fields);
- no answer repeats the bearer token it was sent;
- a path no route serves is 404 ``NOT_FOUND``, whatever the method;
- nothing stored changes: every table is dumped before and after and compared, except the audit
  table, which may only gain DENIED entries, and the idempotency table, which may only gain the
  replayable 4xx answers of requests that carried a key.

Every body sent is hostile by construction, so no request can legitimately change anything.
Figures (examples run, statuses seen) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from chalice.config import Config
from chalice.local import LocalGateway, RouteMatcher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app as app_module
from chalicelib import clock
from chalicelib.api.http import (
    CATCH_ALL_METHODS,
    NOT_FOUND_DEPTH,
    WRITE_METHODS,
    is_catch_all,
    served_methods,
    served_paths,
)
from chalicelib.services.auth import AUDIENCE, ISSUER
from chalicelib.wiring import services
from local.api_server import UnmatchedRouteGateway
from tests.integration.api_helpers import (
    ERROR_KEYS,
    Api,
    Reply,
    api_fixture,  # noqa: F401 - the `api` fixture
    loan_body,
    local_gateway_request,
    stored_items,
)

ROUTES = served_paths()
"""The real routes (app.routes also holds the catch-alls)."""
METHODS = CATCH_ALL_METHODS
"""Every method a route is registered for, OPTIONS (CORS preflight on real routes) included."""
EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)
FIELD_NAMES = (
    "loan_id",
    "borrower",
    "name",
    "phone",
    "notes",
    "principal_paise",
    "annual_rate_bps",
    "tenure_months",
    "disbursement_date",
    "first_due_date",
    "schedule",
    "collector_id",
    "utr",
    "amount_paise",
    "payment_date",
    "mode",
    "reason",
    "business_date",
    "full_scan",
    "username",
    "password",
    "dpd",
    "Bucket",
    "legal",
    "version",
)
"""Real field names (and protected ones) so the hostile bodies reach past "unknown field"."""


# --- hostile bodies ---------------------------------------------------------------------------------
# Each strategy yields request-body text no route accepts: either unreadable or unacceptable JSON, or
# readable JSON whose every value has a type no field takes (lists, objects with an unknown key,
# fractions, integers beyond 64 bits). None is a bool, a string or null, which some field would take.

names = st.one_of(st.sampled_from(FIELD_NAMES), st.text(min_size=1, max_size=12))
bad_scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.integers(min_value=2**63, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-(2**63) - 1),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), bad_scalars)
any_json = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)),
    max_leaves=8,
)
bad_values = st.one_of(
    bad_scalars,
    st.lists(any_json, max_size=3),
    st.dictionaries(names, any_json, max_size=2).map(lambda d: {**d, "zz_unknown_field": 1}),
)


@st.composite
def wrong_typed(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return json.dumps(draw(st.dictionaries(names, bad_values, min_size=1, max_size=4)))
    top = draw(st.one_of(st.lists(any_json, max_size=4), json_scalars))
    return json.dumps(top)


@st.composite
def deep(draw: st.DrawFn) -> str:
    depth = draw(st.sampled_from([33, 34, 100, 999, 1_001, 20_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"dpd":[', "]}")]))
    inner = "[]" if opener == "[" else "1"
    close = closer * depth if draw(st.booleans()) else ""  # unterminated too
    return opener * depth + inner + close


@st.composite
def repeated_key(draw: st.DrawFn) -> str:
    key = draw(names)
    first, second = draw(any_json), draw(any_json)
    extra = draw(st.dictionaries(names, any_json, max_size=2))
    pairs = [json.dumps(key) + ":" + json.dumps(first), json.dumps(key) + ":" + json.dumps(second)]
    pairs += [json.dumps(k) + ":" + json.dumps(v) for k, v in extra.items() if k != key]
    text = "{" + ",".join(draw(st.permutations(pairs))) + "}"
    return '{"borrower":' + text + "}" if draw(st.booleans()) else text


@st.composite
def non_finite(draw: st.DrawFn) -> str:
    literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 5000]))
    body = draw(st.dictionaries(names, any_json, max_size=3))
    key = draw(names)
    text = json.dumps({**body, key: "__HERE__"}).replace('"__HERE__"', literal)
    return "[" + text + "]" if draw(st.booleans()) else text


@st.composite
def oversized(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from([64 * 1024 + 1, 65 * 1024, 200 * 1024]))
    filler = draw(st.sampled_from(["x", "é", "\\u0000"]))
    text = json.dumps(loan_body())[:-1] + ', "notes": "'
    return text + filler * (size // len(filler.encode())) + '"}'


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


unreadable: st.SearchStrategy[str | bytes] = st.one_of(
    st.binary(max_size=64).filter(_not_utf8),
    st.sampled_from(["", " ", "{", '{"notes": "x"', "{} {}", "\ufeff{}", "'single'", "{notes: 1}", "[,]"]),
)


hostile_bodies = st.one_of(wrong_typed(), deep(), repeated_key(), non_finite(), oversized(), unreadable)

# --- hostile headers, paths and queries -------------------------------------------------------------

garbage = st.text(max_size=300)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json; charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/octet-stream",
            "",
            ";",
        ]
    ),
    garbage,
)
idempotency_keys = st.one_of(st.text(alphabet="abcXYZ019_.:-", min_size=1, max_size=128), garbage, st.just("k" * 5000))
ids = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=40),
    st.sampled_from(["x" * 10_000, "LN-" + "9" * 3000, "%00", "%2F..%2F", "..", ".", "LN1?limit=0", "a#b", "é"]),
)


def forged_tokens() -> list[str]:
    """Tokens signed with the real secret whose claims have the wrong type or value: each is a 401."""
    now = clock.now_epoch()
    good: dict[str, Any] = {"sub": "admin1", "role": "admin", "iat": now, "exp": now + 600}
    good |= {"iss": ISSUER, "aud": AUDIENCE}
    wrong: list[dict[str, Any]] = [
        {"role": ["admin"]},
        {"role": {"name": "admin"}},
        {"role": 1},
        {"role": None},
        {"role": "root"},
        {"sub": ["admin1"]},
        {"sub": {"u": 1}},
        {"sub": ""},
        {"exp": "9999999999"},
        {"exp": float(now + 600)},
        {"exp": True},
        {"iat": [now]},
        {"aud": ["loan-crm-api", "other"]},
        {"iss": "someone-else"},
        {"exp": now - 3600},
    ]
    secret = services().jwt_secret()
    return [jwt.encode({**good, **claims}, secret, algorithm="HS256") for claims in wrong]


def header_sets(tokens: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    real = st.sampled_from(sorted(tokens.values()))
    authorization = st.one_of(
        st.sampled_from(forged_tokens()).map(lambda t: f"Bearer {t}"),
        real.map(lambda t: f"Bearer {t}"),
        real.map(lambda t: f"bearer   {t}  "),
        real.map(lambda t: f"Bearer {t[:-3]}abc"),
        real.map(lambda t: f"Bearer {t}.{t}"),
        real.map(lambda t: f"Basic {t}"),
        garbage.map(lambda g: f"Bearer {g}"),
        garbage,
        st.just("Bearer " + "A" * 20_000),
        st.just("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbjEiLCJyb2xlIjpbImFkbWluIl19."),
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "Content-Type": content_types,
            "Authorization": authorization,
            "Idempotency-Key": idempotency_keys,
            "Accept": st.sampled_from(["*/*", "image/png", "application/octet-stream", "text/html"]),
        },
    )


served = st.sampled_from([(route, method) for route in ROUTES for method in served_methods(route)])
anything = st.tuples(st.sampled_from(ROUTES), st.sampled_from(METHODS))
routes_and_methods = st.one_of(served, served, anything)
"""Two thirds of the draws a method the route serves (past the 405), the rest any pair."""

# --- running and judging ----------------------------------------------------------------------------


class Fuzzer:
    """Sends requests through the local server's gateway and judges each answer."""

    def __init__(self, api: Api, ids: dict[str, str]) -> None:
        self.api = api
        self.ids = ids
        config = Config.create()
        self.gateway = LocalGateway(app_module.app, config)
        self.deep_gateway = UnmatchedRouteGateway(app_module.app, config)
        self.matcher = RouteMatcher(list(app_module.app.routes))
        self.statuses: Counter[int] = Counter()
        self.requests = 0
        self.denied_writes: set[str] = set()
        """Request ids of the 403s on writes, each of which must have left a DENIED audit entry."""

    def path(self, template: str, params: dict[str, str] | None = None) -> str:
        values = {"loan_id": self.ids["loan_id"], "payment_id": self.ids["payment_id"], **(params or {})}
        for name, value in values.items():
            template = template.replace("{" + name + "}", value)
        return template

    def route(self, path: str) -> str | None:
        """The route template Chalice's matcher picks for a path (a catch-all for an unknown path
        within the bound), or None beyond the bound."""
        try:
            return self.matcher.match_route(path).route
        except ValueError:
            return None

    def send(self, method: str, path: str, headers: dict[str, str], body: str | bytes = "") -> Reply:
        gateway = self.gateway if self.route(path) is not None else self.deep_gateway
        reply = local_gateway_request(gateway, method, path, headers, body)
        self.requests += 1
        self.statuses[reply.status] += 1
        self.judge(method, path, headers, reply)
        return reply

    def judge(self, method: str, path: str, headers: dict[str, str], reply: Reply) -> None:
        where = f"{method} {path[:120]!r} {reply.status} {reply.body[:300]!r}"
        assert reply.status < 500, where
        text = reply.body.decode()
        if reply.status < 400 and (reply.header("Content-Type") or "").startswith("text/html"):
            pass  # the contract's page (GET /api/v1/docs); every other answer, and every refusal, is JSON
        elif text or not (method in ("HEAD", "OPTIONS") or reply.status == 204):
            body = json.loads(text, parse_constant=_not_json)
            if reply.status == 403 and method in WRITE_METHODS:
                self.denied_writes.add(str(reply.header("X-Request-Id")))
            if reply.status >= 400:
                assert isinstance(body, dict) and set(body) == {"error"}, where
                assert set(body["error"]) == ERROR_KEYS, where
                assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), where
                if reply.status == 400:
                    details = body["error"]["details"]
                    assert isinstance(details, list) and details, where
                    assert all(isinstance(d.get("field"), str) and isinstance(d.get("message"), str) for d in details)
        # Only credentials that could not turn up in an answer by chance (a real token is ~200 characters).
        credential = headers.get("Authorization", "").strip().partition(" ")[2].strip()
        if len(credential) >= 16 and sum(ch.isalnum() for ch in credential) >= 12:
            assert credential not in text, where
            assert credential not in json.dumps(reply.headers), where


def _not_json(name: str) -> Any:
    raise AssertionError(f"{name} in an answer")


@pytest.fixture
def fuzzer(api: Api) -> Iterator[Fuzzer]:
    """A loan assigned to collector1 with one posted payment, a snapshot of everything stored, and the
    check afterwards that nothing changed."""
    loan_id = api.create_loan(loan_id="LN-FUZZ", collector_id="collector1")["loan_id"]
    payment = {
        "loan_id": loan_id,
        "utr": "UTR000FUZZ01",
        "amount_paise": 100_000,
        "payment_date": "2026-03-15",
        "mode": "UPI",
    }
    posted = api.post("/api/v1/payments", payment)
    assert posted.status == 201, posted.body
    before = stored_items(api, skip=("audit", "idempotency"))
    audit_before = {item["audit_id"]["S"] for item in stored_items(api, skip=())["audit"]}
    idempotency_before = stored_items(api, skip=())["idempotency"]
    fuzzer = Fuzzer(api, {"loan_id": loan_id, "payment_id": posted.json["payment_id"]})
    yield fuzzer

    assert stored_items(api, skip=("audit", "idempotency")) == before
    everything = stored_items(api, skip=())
    added = [item for item in everything["audit"] if item["audit_id"]["S"] not in audit_before]
    assert all(item["outcome"]["S"] == "DENIED" for item in added), [item["action"] for item in added]
    assert fuzzer.denied_writes <= {item["request_id"]["S"] for item in added}
    for item in everything["idempotency"]:
        if item not in idempotency_before:
            stored = json.loads(item["data"]["S"])
            assert 400 <= stored["status"] < 500, stored
    print(
        f"\n  {fuzzer.requests} requests, statuses {dict(sorted(fuzzer.statuses.items()))}, "
        f"{len(added)} DENIED audit entries added ({len(fuzzer.denied_writes)} for 403s on writes)"
    )


def run(test: Callable[..., None], *strategies: st.SearchStrategy[Any]) -> int:
    """Run ``test`` under the fuzz settings; returns how many examples ran."""
    count = 0

    @FUZZ
    @given(st.tuples(*strategies))
    def examples(args: tuple[Any, ...]) -> None:
        nonlocal count
        count += 1
        test(*args)

    examples()
    return count


# --- the passes -------------------------------------------------------------------------------------


def test_every_route_and_method_with_every_kind_of_hostile_body(fuzzer: Fuzzer) -> None:
    """A sweep, then random bodies: each route x method gets one body of each kind as admin (the role
    that passes every role check, so the body is what is judged), then random combinations by role."""
    kinds = {
        "deep": "[" * 5000,
        "repeated key": '{"notes": "a", "notes": "b"}',
        "smuggled guard field": '{"borrower": {"phone": "9111111111"}, "borrower": {"dpd": 0}}',
        "NaN": '{"notes": NaN}',
        "huge integer": '{"amount_paise": ' + "9" * 5000 + "}",
        "oversized": '{"notes": "' + "x" * (70 * 1024) + '"}',
        "wrong types": '{"loan_id": [], "utr": {"x": 1}, "amount_paise": 1.5, "reason": [1]}',
        "not json": "{'a': 1}",
    }
    admin = {"Authorization": f"Bearer {fuzzer.api.tokens['admin']}", "Content-Type": "application/json"}
    for template in ROUTES:
        for method in METHODS:
            for body in kinds.values():
                fuzzer.send(method, fuzzer.path(template), admin, body)
    # Each route and method once more as a collector: the role check and its audit on writes.
    collector = {**admin, "Authorization": f"Bearer {fuzzer.api.tokens['collector']}"}
    for template in ROUTES:
        for method in METHODS:
            fuzzer.send(method, fuzzer.path(template), collector, kinds["wrong types"])
    swept = fuzzer.requests

    def one(route_and_method: tuple[str, str], role: str, body: str | bytes) -> None:
        template, method = route_and_method
        headers = {"Authorization": f"Bearer {fuzzer.api.tokens[role]}", "Content-Type": "application/json"}
        fuzzer.send(method, fuzzer.path(template), headers, body)

    ran = run(one, routes_and_methods, st.sampled_from(sorted(fuzzer.api.tokens)), hostile_bodies)
    print(f"\n  bodies: {swept} swept + {ran} random examples")


def test_garbage_headers_on_every_route(fuzzer: Fuzzer) -> None:
    def one(route_and_method: tuple[str, str], headers: dict[str, str], body: str | bytes) -> None:
        template, method = route_and_method
        fuzzer.send(method, fuzzer.path(template), headers, body)

    ran = run(one, routes_and_methods, header_sets(fuzzer.api.tokens), hostile_bodies)
    print(f"\n  headers: {ran} examples")


def test_hostile_ids_and_unknown_paths(fuzzer: Fuzzer) -> None:
    admin = {"Authorization": f"Bearer {fuzzer.api.tokens['admin']}", "Content-Type": "application/json"}
    with_ids = [r for r in ROUTES if "{" in r]

    def one(template: str, method: str, value: str, body: str | bytes, role: str) -> None:
        headers = {**admin, "Authorization": f"Bearer {fuzzer.api.tokens[role]}"}
        name = template[template.index("{") + 1 : template.index("}")]
        fuzzer.send(method, fuzzer.path(template, {name: value}), headers, body)

    ran = run(
        one,
        st.sampled_from(with_ids),
        st.sampled_from(METHODS),
        ids,
        hostile_bodies,
        st.sampled_from(sorted(fuzzer.api.tokens)),
    )

    def unknown(segments: list[str], method: str) -> None:
        path = "/" + "/".join(segments)
        route = fuzzer.route(path)
        reply = fuzzer.send(method, path, admin, "{}")
        if route is None or is_catch_all(route):
            assert reply.status == 404 and json.loads(reply.body)["error"]["code"] == "NOT_FOUND", (method, path)

    segment = st.one_of(st.sampled_from(["api", "v1", "loans", "payments", "audit", "health"]), st.text(max_size=12))
    # Both sides of the catch-alls' bound: up to NOT_FOUND_DEPTH segments the app answers, deeper the gateway.
    ran += run(unknown, st.lists(segment, min_size=1, max_size=NOT_FOUND_DEPTH + 4), st.sampled_from(METHODS))
    print(f"\n  paths: {ran} examples")


def test_hostile_query_strings_on_every_listing(fuzzer: Fuzzer) -> None:
    listings = [r for r in ROUTES if "GET" in served_methods(r)]
    params = st.dictionaries(
        st.one_of(
            st.sampled_from(
                ["limit", "cursor", "from", "to", "before", "entity_id", "actor", "action", "bucket", "collector_id"]
            ),
            st.text(max_size=10),
        ),
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(["0", "201", "-1", "1e3", "99999999999999999999", "9999-12-31", "1999-01-01"]),
            st.just("x" * 5000),
        ),
        max_size=4,
    )

    def one(template: str, query: dict[str, str], role: str) -> None:
        headers = {"Authorization": f"Bearer {fuzzer.api.tokens[role]}"}
        fuzzer.send("GET", fuzzer.path(template) + "?" + urlencode(query), headers)

    ran = run(one, st.sampled_from(listings), params, st.sampled_from(sorted(fuzzer.api.tokens)))
    print(f"\n  queries: {ran} examples")
