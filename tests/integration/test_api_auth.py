"""Login, its throttle per username and source address, token checks and the role matrix."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from chalice.local import LambdaEventConverter

from chalicelib import clock
from chalicelib.wiring import services
from tests.integration.api_helpers import (
    PASSWORD,
    Api,
    Reply,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    loan_body,
)

TOKEN_PATH = "/api/v1/auth/token"


def login(api: Api, username: str, password: str) -> Reply:
    return api.post(TOKEN_PATH, {"username": username, "password": password}, as_=None)


def with_token(api: Api, token: str, path: str = "/api/v1/loans") -> Reply:
    return api.get(path, as_=None, headers={"Authorization": f"Bearer {token}"})


def metric_counts(stdout: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                counts[metric["Name"]] = counts.get(metric["Name"], 0) + 1
    return counts


def claims(**overrides: Any) -> dict[str, Any]:
    now = clock.now_epoch()
    base: dict[str, Any] = {
        "sub": "admin1",
        "role": "admin",
        "iat": now,
        "exp": now + 3600,
        "iss": "loan-crm",
        "aud": "loan-crm-api",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], secret: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret or services().jwt_secret(), algorithm=algorithm)


def hand_signed(payload: dict[str, Any]) -> str:
    """HS256 under the real secret, for payloads PyJWT refuses to encode (a non-string ``iss``)."""
    segments = [jwt.utils.base64url_encode(json.dumps(part).encode()) for part in ({"alg": "HS256"}, payload)]
    signing_input = b".".join(segments)
    signature = hmac.new(services().jwt_secret().encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


# --- login ------------------------------------------------------------------------------------------


def test_login_issues_a_token_that_works(api: Api) -> None:
    reply = login(api, "manager1", PASSWORD)
    assert reply.status == 200, reply.body
    body = reply.json
    assert set(body) == {"access_token", "token_type", "expires_in", "sub", "role"}
    assert (body["token_type"], body["sub"], body["role"]) == ("Bearer", "manager1", "manager")

    decoded = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"
    assert decoded["iss"] == "loan-crm" and decoded["aud"] == "loan-crm-api"
    assert (decoded["sub"], decoded["role"]) == ("manager1", "manager")
    assert decoded["iat"] == int(api.clock.now().timestamp()) - 1  # the request moved the clock by 1 s
    assert decoded["exp"] - decoded["iat"] == body["expires_in"] > 0

    listed = with_token(api, body["access_token"])
    assert listed.status == 200 and listed.json == {"items": [], "next_cursor": None}
    # Usernames are matched without regard to case or surrounding spaces.
    assert login(api, "  MANAGER1 ", PASSWORD).status == 200


def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    wrong = login(api, "admin1", "not-the-password")
    unknown = login(api, "nobody", "not-the-password")
    assert_error(wrong, 401, "UNAUTHENTICATED")
    assert_error(unknown, 401, "UNAUTHENTICATED")
    assert wrong.json == unknown.json
    assert wrong.header("WWW-Authenticate") == unknown.header("WWW-Authenticate")
    assert "access_token" not in wrong.body.decode()


def test_login_body_is_validated(api: Api) -> None:
    for body in ({"username": "admin1"}, {"password": PASSWORD}, {"username": "", "password": PASSWORD}):
        assert_error(api.post(TOKEN_PATH, body, as_=None), 400, "VALIDATION_ERROR")
    extra = {"username": "admin1", "password": PASSWORD, "role": "admin"}
    assert_error(api.post(TOKEN_PATH, extra, as_=None), 400, "VALIDATION_ERROR")


def test_login_is_throttled_after_five_failures(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    for _ in range(5):
        assert_error(login(api, "admin1", "guess"), 401, "UNAUTHENTICATED")
    assert metric_counts(capsys.readouterr().out).get("AuthFailed") == 5

    throttled = login(api, "admin1", PASSWORD)  # even the right password
    details = assert_error(throttled, 429, "RATE_LIMITED")
    assert "access_token" not in throttled.body.decode()
    retry_after = throttled.header("Retry-After")
    assert retry_after is not None and int(retry_after) > 0
    assert details == {"retry_after_seconds": int(retry_after)}
    assert metric_counts(capsys.readouterr().out).get("AuthThrottled") == 1

    # Other usernames are not affected; the throttled one is still refused a little later.
    assert login(api, "manager1", PASSWORD).status == 200
    api.clock.advance(seconds=60)
    assert_error(login(api, "admin1", PASSWORD), 429, "RATE_LIMITED")

    # Once the window has passed, the right password works again.
    api.clock.advance(seconds=int(retry_after))
    assert login(api, "admin1", PASSWORD).status == 200


def test_throttle_counts_unknown_usernames_and_resets_on_success(api: Api) -> None:
    for _ in range(5):
        assert_error(login(api, "ghost", "guess"), 401, "UNAUTHENTICATED")
    assert_error(login(api, "ghost", "guess"), 429, "RATE_LIMITED")

    for _ in range(2):
        for _ in range(4):
            assert_error(login(api, "auditor1", "guess"), 401, "UNAUTHENTICATED")
        assert login(api, "auditor1", PASSWORD).status == 200


def login_from(api: Api, monkeypatch: pytest.MonkeyPatch, source_ip: str, username: str, password: str) -> Reply:
    """A login as API Gateway would pass it on from ``source_ip`` (Chalice's local gateway otherwise
    says every request comes from 127.0.0.1)."""
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", source_ip)
    return login(api, username, password)


def test_guesses_from_one_address_do_not_lock_the_user_out_from_another(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    attacker, office = "203.0.113.7", "198.51.100.9"
    for _ in range(5):
        assert_error(login_from(api, monkeypatch, attacker, "admin1", "guess"), 401, "UNAUTHENTICATED")
    assert_error(login_from(api, monkeypatch, attacker, "admin1", PASSWORD), 429, "RATE_LIMITED")
    # A spoofed X-Forwarded-For does not move the attacker to another count.
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", attacker)
    spoofed = api.post(
        TOKEN_PATH, {"username": "admin1", "password": PASSWORD}, as_=None, headers={"X-Forwarded-For": office}
    )
    assert_error(spoofed, 429, "RATE_LIMITED")

    assert login_from(api, monkeypatch, office, "admin1", PASSWORD).status == 200
    assert_error(login_from(api, monkeypatch, attacker, "admin1", PASSWORD), 429, "RATE_LIMITED")
    counts = metric_counts(capsys.readouterr().out)
    assert (counts.get("AuthFailed"), counts.get("AuthThrottled")) == (5, 3)


def test_a_success_clears_the_count_of_its_own_address_only(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    for source_ip in ("203.0.113.7", "198.51.100.9"):
        for _ in range(4):
            assert_error(login_from(api, monkeypatch, source_ip, "auditor1", "guess"), 401, "UNAUTHENTICATED")
    assert login_from(api, monkeypatch, "203.0.113.7", "auditor1", PASSWORD).status == 200
    assert_error(login_from(api, monkeypatch, "198.51.100.9", "auditor1", "guess"), 401, "UNAUTHENTICATED")
    assert_error(login_from(api, monkeypatch, "198.51.100.9", "auditor1", PASSWORD), 429, "RATE_LIMITED")
    assert login_from(api, monkeypatch, "203.0.113.7", "auditor1", PASSWORD).status == 200


# --- tokens -----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_bad_tokens_are_401(api: Api) -> None:
    good = signed(claims())
    assert with_token(api, good).status == 200

    header, _, signature = good.split(".")
    bad_tokens = {
        "garbled": "not-a-jwt",
        "three garbled parts": "abc.def.ghi",
        "truncated": good[:-5],
        "tampered payload": f"{header}.{signed(claims(sub='root')).split('.')[1]}.{signature}",
        "wrong secret": signed(claims(), secret="another-secret-that-is-long-enough-0123456789"),
        "expired": signed(claims(iat=clock.now_epoch() - 7200, exp=clock.now_epoch() - 60)),
        "wrong audience": signed(claims(aud="someone-else")),
        "wrong issuer": signed(claims(iss="evil")),
        "alg none": jwt.encode(claims(), None, algorithm="none"),
        "HS512": signed(claims(), algorithm="HS512"),
        "no exp": signed(claims(exp=None)),
        "no iat": signed(claims(iat=None)),
        "no role": signed(claims(role=None)),
        "no sub": signed(claims(sub=None)),
        "no aud": signed(claims(aud=None)),
        "no iss": signed(claims(iss=None)),
        "unknown role": signed(claims(role="superuser")),
        "issued in the future": signed(claims(iat=clock.now_epoch() + 600, exp=clock.now_epoch() + 4200)),
        "string exp": signed({**claims(), "exp": str(clock.now_epoch() + 3600)}),
    }
    for name, token in bad_tokens.items():
        reply = with_token(api, token)
        assert_error(reply, 401, "UNAUTHENTICATED")
        assert reply.header("WWW-Authenticate"), name

    for header_value in (None, "", "Bearer", "Bearer ", f"Basic {good}", f"Token {good}", good):
        headers = {} if header_value is None else {"Authorization": header_value}
        reply = api.get("/api/v1/loans", as_=None, headers=headers)
        assert_error(reply, 401, "UNAUTHENTICATED")


WRONG_TYPED: dict[str, dict[str, Any]] = {
    "list role": {"role": ["admin"]},
    "object role": {"role": {"admin": True}},
    "number sub": {"sub": 42},
    "list sub": {"sub": ["admin1"]},
    "object sub": {"sub": {"id": "admin1"}},
    "empty sub": {"sub": ""},
    "string iat": {"iat": "now"},
    "float exp": {"exp": 1.0e12},
    "bool exp": {"exp": True},
    "huge exp": {"exp": 10**40},
    "list iss": {"iss": ["loan-crm"]},
    "number iss": {"iss": 7},
    "list aud with ours in it": {"aud": ["loan-crm-api"]},
    "object aud": {"aud": {"loan-crm-api": 1}},
}


@pytest.mark.parametrize("override", WRONG_TYPED.values(), ids=WRONG_TYPED.keys())
def test_wrong_typed_claims_are_401_not_500(api: Api, override: dict[str, Any]) -> None:
    assert with_token(api, hand_signed(claims())).status == 200  # the refusal comes from the override
    token = hand_signed({**claims(), **override})
    body = loan_body(loan_id="LN-WRONG-CLAIMS")
    for method, path in [("GET", "/api/v1/loans"), ("POST", "/api/v1/loans"), ("GET", "/api/v1/audit")]:
        reply = api.request(method, path, None, body=body, headers={"Authorization": f"Bearer {token}"})
        assert_error(reply, 401, "UNAUTHENTICATED")
        assert token not in reply.body.decode()
    assert api.raw_loan("LN-WRONG-CLAIMS") is None


@pytest.mark.parametrize("size", [5 * 1024, 100 * 1024])
def test_an_oversized_bearer_token_is_401_and_never_echoed(api: Api, size: int) -> None:
    good = signed(claims())
    head, payload, signature = good.split(".")
    token = f"{head}.{payload + 'A' * (size - len(good))}.{signature}"
    reply = with_token(api, token)
    assert_error(reply, 401, "UNAUTHENTICATED")
    assert reply.json["error"]["message"] == "invalid token: too long"
    assert "AAAAAAAA" not in reply.body.decode() and all("AAAAAAAA" not in v for v in reply.headers.values())


def test_401_messages_never_echo_the_token(api: Api) -> None:
    marker = "LEAKMARKER"
    head = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "kid": marker}).encode()).decode()
    for token in (
        f"{marker}.{marker}.{marker}",
        f"{head}.{marker}.{marker}",
        signed(claims(role=marker)),
        hand_signed(claims(iss=[marker])),
        signed(claims(aud=[marker])),
        signed(claims(), secret=f"{marker}-another-secret-long-enough-0123456789"),
    ):
        reply = with_token(api, token)
        assert_error(reply, 401, "UNAUTHENTICATED")
        assert marker not in reply.body.decode()


def test_token_expiry_uses_the_project_clock_with_30_seconds_leeway(api: Api) -> None:
    now = clock.now_epoch()
    token = signed(claims(iat=now, exp=now + 100))
    api.clock.advance(seconds=129)
    assert with_token(api, token).status == 200  # exp + 29 (each request moves the clock on by 1 s)
    assert_error(with_token(api, token), 401, "UNAUTHENTICATED")  # exp + 30


# --- roles ------------------------------------------------------------------------------------------

MATRIX: dict[str, dict[str, int]] = {
    "admin": {"create": 201, "list": 200, "get": 200, "patch": 200, "assign": 200, "audit": 200},
    "manager": {"create": 201, "list": 200, "get": 200, "patch": 200, "assign": 200, "audit": 403},
    "collector": {"create": 403, "list": 200, "get": 200, "patch": 403, "assign": 403, "audit": 403},
    "auditor": {"create": 403, "list": 200, "get": 200, "patch": 403, "assign": 403, "audit": 200},
}
"""Admin everything; manager loans and assignment but not the audit trail; a collector reads
its own loans and nothing else here; an auditor reads everything, the audit trail included."""


def test_role_matrix(api: Api) -> None:
    for role, expectations in MATRIX.items():
        loan_id = api.create_loan(collector_id="collector1")["loan_id"]
        stored = api.raw_loan(loan_id)
        new_id = f"LN-BY-{role.upper()}"
        calls: dict[str, tuple[str, str, Any]] = {
            "create": ("POST", "/api/v1/loans", loan_body(loan_id=new_id)),
            "list": ("GET", "/api/v1/loans", None),
            "get": ("GET", f"/api/v1/loans/{loan_id}", None),
            "patch": ("PATCH", f"/api/v1/loans/{loan_id}", {"notes": f"called by {role}"}),
            "assign": ("POST", f"/api/v1/loans/{loan_id}/assign", {"collector_id": "collector2"}),
            "audit": ("GET", "/api/v1/audit", None),
        }
        for action, (method, path, body) in calls.items():
            reply = api.request(method, path, role, body=body)
            if expectations[action] == 403:
                assert_error(reply, 403, "FORBIDDEN")
            else:
                assert reply.status == expectations[action], (role, action, reply.status, reply.body[:300])

        assert (api.raw_loan(new_id) is not None) == (expectations["create"] == 201), role
        if expectations["patch"] == 200:
            after = api.loan(loan_id)
            assert (after["notes"], after["collector_id"]) == (f"called by {role}", "collector2"), role
        else:
            assert api.raw_loan(loan_id) == stored, role


def test_no_token_is_401_everywhere(api: Api) -> None:
    loan_id = api.create_loan()["loan_id"]
    for method, path, body in [
        ("POST", "/api/v1/loans", loan_body()),
        ("GET", "/api/v1/loans", None),
        ("GET", f"/api/v1/loans/{loan_id}", None),
        ("PATCH", f"/api/v1/loans/{loan_id}", {"notes": "x"}),
        ("POST", f"/api/v1/loans/{loan_id}/assign", {"collector_id": "collector1"}),
        ("GET", "/api/v1/audit", None),
    ]:
        reply = api.request(method, path, None, body=body)
        assert_error(reply, 401, "UNAUTHENTICATED")
        assert reply.header("WWW-Authenticate") == 'Bearer realm="loan-crm"'
    assert api.get("/health", as_=None).status == 200
