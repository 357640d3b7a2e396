"""Passwords, tokens and login throttling, against the project clock and in-memory fakes."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import RateLimited, Unauthenticated, ValidationFailed
from chalicelib.domain.roles import Role
from chalicelib.services.auth import (
    MAX_TOKEN_CHARS,
    AuthService,
    decode_token,
    hash_password,
    issue_token,
    throttle_source,
    verify_password,
)
from chalicelib.services.ports import LoginWindow, ThrottleKey, User
from tests.fakes import InMemoryLoginThrottle, InMemoryUserStore, RecordingMetrics

SECRET = "unit-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789-abcdef"
ITERATIONS = 1_000
NOW = dt.datetime(2025, 3, 10, 10, 0, tzinfo=IST)
NOW_EPOCH = int(NOW.timestamp())
_MISSING: Any = object()
"""Pass as a claim's value to leave the claim out."""


@pytest.fixture
def fixed_clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(NOW)) as c:
        assert isinstance(c, FixedClock)
        yield c


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hs256_token(claims: dict[str, Any], header: dict[str, Any] | None = None, key: str = SECRET) -> str:
    """A token signed with HMAC-SHA256 under ``key`` whatever its header says (for confusion attacks)."""
    head = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "asha",
        "role": "collector",
        "iat": NOW_EPOCH,
        "exp": NOW_EPOCH + 3600,
        "iss": "loan-crm",
        "aud": "loan-crm-api",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _MISSING}


# --- passwords -------------------------------------------------------------------------------


def test_hash_then_verify() -> None:
    stored = hash_password("correct horse", ITERATIONS)
    assert verify_password("correct horse", stored)
    assert "correct horse" not in stored


@pytest.mark.parametrize("attempt", ["correct hors", "Correct horse", "correct horse ", "", "x" * 100])
def test_wrong_password_does_not_verify(attempt: str) -> None:
    assert not verify_password(attempt, hash_password("correct horse", ITERATIONS))


def test_same_password_gets_different_salts_and_both_verify() -> None:
    first, second = hash_password("same-password", ITERATIONS), hash_password("same-password", ITERATIONS)
    assert first != second
    assert first.split("$")[2] != second.split("$")[2]
    assert verify_password("same-password", first)
    assert verify_password("same-password", second)


def test_hash_records_the_iteration_count() -> None:
    scheme, iterations, _, _ = hash_password("pw", 1234).split("$")
    assert (scheme, iterations) == ("pbkdf2_sha256", "1234")


def _flip_last_char(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _tamper(stored: str, part: int) -> str:
    parts = stored.split("$")
    parts[part] = _flip_last_char(parts[part])
    return "$".join(parts)


@pytest.mark.parametrize(
    ("label", "tamper"),
    [
        ("digest", lambda s: _tamper(s, 3)),
        ("salt", lambda s: _tamper(s, 2)),
        ("fewer iterations", lambda s: s.replace(f"${ITERATIONS}$", f"${ITERATIONS - 1}$")),
        ("other scheme", lambda s: s.replace("pbkdf2_sha256", "pbkdf2_sha1")),
        ("truncated", lambda s: s.rsplit("$", 1)[0]),
        ("extra part", lambda s: s + "$x"),
        ("empty", lambda s: ""),
        ("non-numeric iterations", lambda s: s.replace(f"${ITERATIONS}$", "$many$")),
        ("zero iterations", lambda s: s.replace(f"${ITERATIONS}$", "$0$")),
        ("garbage base64", lambda s: "$".join([*s.split("$")[:2], "%%%", "%%%"])),
    ],
)
def test_tampered_hash_does_not_verify(label: str, tamper: Any) -> None:
    stored = hash_password("correct horse", ITERATIONS)
    assert verify_password("correct horse", stored)
    assert verify_password("correct horse", tamper(stored)) is False


# --- tokens ----------------------------------------------------------------------------------


def test_token_round_trip(fixed_clock: FixedClock) -> None:
    issued = issue_token("asha", "collector", SECRET, ttl_seconds=600)
    assert (issued.sub, issued.role, issued.expires_in) == ("asha", "collector", 600)
    assert decode_token(issued.access_token, SECRET) == Actor(sub="asha", role="collector")
    raw = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert raw == {
        "sub": "asha",
        "role": "collector",
        "iat": NOW_EPOCH,
        "exp": NOW_EPOCH + 600,
        "iss": "loan-crm",
        "aud": "loan-crm-api",
    }
    assert jwt.get_unverified_header(issued.access_token)["alg"] == "HS256"


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_every_role_round_trips(fixed_clock: FixedClock, role: str) -> None:
    token = issue_token("u1", role, SECRET, ttl_seconds=60).access_token
    assert decode_token(token, SECRET).role == role


def test_hand_made_hs256_token_is_accepted(fixed_clock: FixedClock) -> None:
    # Guards the helpers below: refusals in the other tests come from the change they make.
    assert decode_token(hs256_token(claims()), SECRET) == Actor("asha", "collector")


def test_wrong_signature_is_refused(fixed_clock: FixedClock) -> None:
    token = hs256_token(claims(), key=SECRET + "-other")
    with pytest.raises(Unauthenticated):
        decode_token(token, SECRET)


def test_modified_payload_is_refused(fixed_clock: FixedClock) -> None:
    head, _, sig = hs256_token(claims()).split(".")
    forged_payload = b64url(json.dumps(claims(role="admin")).encode())
    with pytest.raises(Unauthenticated):
        decode_token(f"{head}.{forged_payload}.{sig}", SECRET)


def test_alg_none_is_refused(fixed_clock: FixedClock) -> None:
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims()).encode())
    with pytest.raises(Unauthenticated):
        decode_token(f"{head}.{body}.", SECRET)


def test_hs512_is_refused(fixed_clock: FixedClock) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")
    with pytest.raises(Unauthenticated):
        decode_token(token, SECRET)


def test_rs256_is_refused(fixed_clock: FixedClock) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated):
        decode_token(jwt.encode(claims(), private_key, algorithm="RS256"), SECRET)


def test_rs256_header_over_an_hmac_signature_is_refused(fixed_clock: FixedClock) -> None:
    # The algorithm-confusion attack: the signature is valid HMAC under the secret, the header lies.
    token = hs256_token(claims(), header={"alg": "RS256", "typ": "JWT"})
    with pytest.raises(Unauthenticated):
        decode_token(token, SECRET)


@pytest.mark.parametrize("claim", ["sub", "role", "iat", "exp", "iss", "aud"])
def test_each_required_claim_missing_is_refused(fixed_clock: FixedClock, claim: str) -> None:
    token = hs256_token(claims(**{claim: _MISSING}))
    assert claim not in jwt.decode(token, options={"verify_signature": False})
    with pytest.raises(Unauthenticated):
        decode_token(token, SECRET)


@pytest.mark.parametrize(
    "override",
    [
        {"iss": "someone-else"},
        {"iss": "LOAN-CRM"},
        {"aud": "other-api"},
        {"aud": ["other-api"]},
        {"role": "superuser"},
        {"role": "Admin"},
        {"role": ""},
        {"sub": ""},
        {"exp": str(NOW_EPOCH + 3600)},
        {"iat": True},
    ],
)
def test_wrong_claim_values_are_refused(fixed_clock: FixedClock, override: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated):
        decode_token(hs256_token(claims(**override)), SECRET)


@pytest.mark.parametrize(
    ("seconds_after_exp", "accepted"), [(-1, True), (0, True), (29, True), (30, False), (31, False)]
)
def test_expiry_with_30_second_leeway(fixed_clock: FixedClock, seconds_after_exp: int, accepted: bool) -> None:
    token = issue_token("asha", "manager", SECRET, ttl_seconds=300).access_token
    fixed_clock.advance(seconds=300 + seconds_after_exp)
    if accepted:
        assert decode_token(token, SECRET).sub == "asha"
    else:
        with pytest.raises(Unauthenticated, match="expired"):
            decode_token(token, SECRET)


@pytest.mark.parametrize(("iat_ahead", "accepted"), [(0, True), (29, True), (30, True), (31, False), (3600, False)])
def test_iat_in_the_future(fixed_clock: FixedClock, iat_ahead: int, accepted: bool) -> None:
    token = hs256_token(claims(iat=NOW_EPOCH + iat_ahead, exp=NOW_EPOCH + 7200))
    if accepted:
        assert decode_token(token, SECRET).sub == "asha"
    else:
        with pytest.raises(Unauthenticated, match="future"):
            decode_token(token, SECRET)


@pytest.mark.parametrize("secret", ["", "short", "x" * 31])
def test_secrets_shorter_than_32_bytes_are_refused(fixed_clock: FixedClock, secret: str) -> None:
    with pytest.raises(RuntimeError, match="32 bytes"):
        issue_token("asha", "admin", secret, ttl_seconds=60)
    with pytest.raises(RuntimeError, match="32 bytes"):
        decode_token(hs256_token(claims(), key=secret), secret)


def test_secret_length_is_counted_in_bytes(fixed_clock: FixedClock) -> None:
    exactly_32_ascii = "x" * 32
    token = issue_token("asha", "admin", exactly_32_ascii, ttl_seconds=60).access_token
    assert decode_token(token, exactly_32_ascii).role == "admin"
    sixteen_two_byte_chars = "é" * 16
    token = issue_token("asha", "admin", sixteen_two_byte_chars, ttl_seconds=60).access_token
    assert decode_token(token, sixteen_two_byte_chars).role == "admin"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x.y.z"])
def test_garbage_tokens_are_refused(fixed_clock: FixedClock, garbage: str) -> None:
    with pytest.raises(Unauthenticated):
        decode_token(garbage, SECRET)


# --- wrong-typed and hostile claims: always Unauthenticated, never another exception -------------

WRONG_TYPED_CLAIMS: list[tuple[str, Any]] = [
    ("role", ["admin"]),
    ("role", {"name": "admin"}),
    ("role", [["admin"]]),
    ("role", 1),
    ("role", True),
    ("sub", 42),
    ("sub", 0),
    ("sub", ["asha"]),
    ("sub", {"id": "asha"}),
    ("sub", ""),
    ("sub", True),
    ("iat", str(NOW_EPOCH)),
    ("iat", float(NOW_EPOCH)),
    ("iat", NOW_EPOCH + 0.5),
    ("iat", True),
    ("iat", False),
    ("iat", [NOW_EPOCH]),
    ("iat", {"at": NOW_EPOCH}),
    ("iat", -1),
    ("exp", str(NOW_EPOCH + 3600)),
    ("exp", float(NOW_EPOCH + 3600)),
    ("exp", True),
    ("exp", 10**30),
    ("exp", 253_402_300_800),
    ("exp", 2**63),
    ("exp", [NOW_EPOCH + 3600]),
    ("exp", {"at": NOW_EPOCH + 3600}),
    ("exp", NOW_EPOCH),
    ("exp", NOW_EPOCH - 1),
    ("iss", ["loan-crm"]),
    ("iss", {"name": "loan-crm"}),
    ("iss", 1),
    ("iss", True),
    ("aud", ["loan-crm-api"]),
    ("aud", ["loan-crm-api", "other-api"]),
    ("aud", [["loan-crm-api"]]),
    ("aud", {"loan-crm-api": True}),
    ("aud", 1),
    ("aud", True),
    ("aud", ""),
    ("nbf", ["x"]),
    ("nbf", {"x": 1}),
    ("jti", ["x"]),
]


@pytest.mark.parametrize(("claim", "value"), WRONG_TYPED_CLAIMS, ids=[f"{c}={v!r}"[:40] for c, v in WRONG_TYPED_CLAIMS])
def test_wrong_typed_claims_are_unauthenticated(fixed_clock: FixedClock, claim: str, value: Any) -> None:
    token = hs256_token(claims(**{claim: value}))
    with pytest.raises(Unauthenticated) as caught:
        decode_token(token, SECRET)
    assert token not in caught.value.message
    assert json.dumps(value) not in caught.value.message


def test_a_list_audience_is_refused_even_when_it_names_this_api(fixed_clock: FixedClock) -> None:
    # We only ever issue aud as the one string; PyJWT alone would accept a list containing it.
    with pytest.raises(Unauthenticated, match="audience"):
        decode_token(hs256_token(claims(aud=["loan-crm-api"])), SECRET)
    assert decode_token(hs256_token(claims(aud="loan-crm-api")), SECRET).sub == "asha"


def test_latest_representable_expiry_is_still_a_time(fixed_clock: FixedClock) -> None:
    assert decode_token(hs256_token(claims(exp=253_402_300_799)), SECRET).sub == "asha"


def test_unknown_extra_claims_of_any_type_are_ignored(fixed_clock: FixedClock) -> None:
    token = hs256_token({**claims(), "scope": ["a", {"b": None}], "branch": 7})
    assert decode_token(token, SECRET) == Actor("asha", "collector")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": ["HS256"]},
        {"alg": {"name": "HS256"}},
        {"alg": None},
        {"alg": "HS256", "kid": ["k"]},
        {"alg": "HS256", "crit": "exp"},
        {"alg": "HS256", "crit": [["x"]]},
        {"alg": "HS256", "b64": False},
    ],
)
def test_wrong_typed_headers_are_unauthenticated(fixed_clock: FixedClock, header: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated):
        decode_token(hs256_token(claims(), header=header), SECRET)


def _signed_raw(header: bytes, payload: bytes) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 1500 + b"]" * 1500,
        b'{"a":' * 500 + b"1" + b"}" * 500,
        b"[1, 2]",
        b'"claims"',
        b"null",
        b'{"exp": NaN}',
        b'{"exp": 1e999}',
        b'{"exp": ' + b"9" * 2000 + b"}",
        b"\xff\xfe not utf-8",
    ],
    ids=["deep-list", "deep-object", "array", "string", "null", "nan", "infinity", "2000-digit", "bytes"],
)
def test_hostile_payloads_are_unauthenticated(fixed_clock: FixedClock, payload: bytes) -> None:
    token = _signed_raw(b'{"alg":"HS256","typ":"JWT"}', payload)
    assert len(token) <= MAX_TOKEN_CHARS
    with pytest.raises(Unauthenticated):
        decode_token(token, SECRET)


def test_deeply_nested_header_is_unauthenticated(fixed_clock: FixedClock) -> None:
    token = _signed_raw(b"[" * 1200 + b"]" * 1200, json.dumps(claims()).encode())
    assert len(token) <= MAX_TOKEN_CHARS
    with pytest.raises(Unauthenticated, match="malformed"):
        decode_token(token, SECRET)


def _padded_token(at_least: int) -> str:
    """A correctly signed, otherwise valid token of at least ``at_least`` characters (an extra claim
    carries the padding)."""
    base = len(hs256_token({**claims(), "pad": ""}))
    pad = max(0, (at_least - base) * 3 // 4)
    while len(token := hs256_token({**claims(), "pad": "x" * pad})) < at_least:
        pad += 1
    return token


def test_a_token_at_the_length_limit_is_accepted(fixed_clock: FixedClock) -> None:
    token = _padded_token(MAX_TOKEN_CHARS - 3)
    assert len(token) <= MAX_TOKEN_CHARS
    assert decode_token(token, SECRET).sub == "asha"


@pytest.mark.parametrize("size", [MAX_TOKEN_CHARS + 1, 100 * 1024])
def test_overlong_tokens_are_refused_before_parsing(fixed_clock: FixedClock, size: int) -> None:
    token = _padded_token(size)
    assert len(token) > MAX_TOKEN_CHARS
    with pytest.raises(Unauthenticated) as caught:
        decode_token(token, SECRET)
    assert caught.value.message == "invalid token: too long"


def test_refusals_never_quote_the_token(fixed_clock: FixedClock) -> None:
    secret_looking = "eyJhbGciOiJIUzI1NiJ9-LEAK-ME"
    tokens = [
        secret_looking,
        f"{secret_looking}.{secret_looking}.{secret_looking}",
        hs256_token(claims(role=secret_looking)),
        hs256_token(claims(iss=secret_looking)),
        hs256_token(claims(aud=secret_looking)),
        hs256_token(claims(sub=[secret_looking])),
        hs256_token(claims(), header={"alg": secret_looking}),
        hs256_token(claims(), key=SECRET + secret_looking),
    ]
    for token in tokens:
        with pytest.raises(Unauthenticated) as caught:
            decode_token(token, SECRET)
        assert "LEAK-ME" not in caught.value.message, caught.value.message
        assert caught.value.details is None


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["admin", "loan-crm", "loan-crm-api", NOW_EPOCH]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.dictionaries(st.sampled_from([*claims(), "nbf", "jti"]), JSON_VALUES, min_size=1))
def test_any_claim_values_give_an_actor_or_unauthenticated(fixed_clock: FixedClock, overrides: dict[str, Any]) -> None:
    token = hs256_token(claims(**overrides))
    try:
        actor = decode_token(token, SECRET)
    except Unauthenticated as refused:
        assert token not in refused.message
        return
    assert isinstance(actor.sub, str) and actor.sub
    assert actor.role in {r.value for r in Role}


# --- login -----------------------------------------------------------------------------------

MAX_FAILURES = 3
WINDOW = 900


class CheckRecordingUsers(InMemoryUserStore):
    """Remembers, for each user lookup (the service makes one just before checking a password), how
    many attempts the throttle had counted by then."""

    def __init__(self, throttle: InMemoryLoginThrottle) -> None:
        super().__init__()
        self.throttle = throttle
        self.counted_at_check: list[int] = []

    def get(self, username: str) -> User | None:
        self.counted_at_check.append(sum(w.attempts for w in self.throttle.windows.values()))
        return super().get(username)


class Login:
    def __init__(self) -> None:
        self.throttle = InMemoryLoginThrottle()
        self.users = CheckRecordingUsers(self.throttle)
        self.metrics = RecordingMetrics()
        self.service = AuthService(
            users=self.users,
            throttle=self.throttle,
            metrics=self.metrics,
            secret=lambda: SECRET,
            ttl_seconds=3600,
            max_failures=MAX_FAILURES,
            window_seconds=WINDOW,
            iterations=ITERATIONS,
        )
        self.users.put(User("asha", "collector", hash_password("right-password", ITERATIONS)))
        self.users.put(User("gone", "manager", hash_password("right-password", ITERATIONS), active=False))

    def fail(self, username: str = "asha", times: int = 1, source_ip: str | None = None) -> None:
        for _ in range(times):
            with pytest.raises(Unauthenticated):
                self.service.login(username, "wrong-password", source_ip)

    def attempts(self, username: str = "asha", source: str = "unknown") -> int:
        window = self.throttle.windows.get(ThrottleKey(username, source))
        return window.attempts if window else 0


@pytest.fixture
def login(fixed_clock: FixedClock) -> Login:
    return Login()


def test_login_success_issues_a_token_for_the_stored_role(login: Login) -> None:
    issued = login.service.login("asha", "right-password")
    assert (issued.sub, issued.role, issued.expires_in) == ("asha", "collector", 3600)
    assert decode_token(issued.access_token, SECRET) == Actor("asha", "collector")
    assert login.metrics.calls == []


def test_login_username_is_trimmed_and_case_insensitive(login: Login) -> None:
    assert login.service.login("  ASHA ", "right-password").sub == "asha"


def test_wrong_password_unknown_user_and_inactive_user_get_the_same_error(login: Login) -> None:
    errors = []
    for username, password in [("asha", "wrong-password"), ("nobody", "right-password"), ("gone", "right-password")]:
        with pytest.raises(Unauthenticated) as caught:
            login.service.login(username, password)
        errors.append((caught.value.code, caught.value.message, caught.value.details))
    assert errors[0] == errors[1] == errors[2]
    assert login.metrics.counted("AuthFailed") == 3


@pytest.mark.parametrize(("username", "password"), [("", "x"), ("   ", "x"), ("asha", "")])
def test_blank_credentials_are_a_validation_error(login: Login, username: str, password: str) -> None:
    with pytest.raises(ValidationFailed):
        login.service.login(username, password)
    assert login.throttle.windows == {}


def test_throttled_after_max_failures_even_with_the_right_password(login: Login) -> None:
    login.fail(times=MAX_FAILURES)
    assert login.metrics.counted("AuthFailed") == MAX_FAILURES
    assert login.metrics.counted("AuthThrottled") == 0
    with pytest.raises(RateLimited) as caught:
        login.service.login("asha", "right-password")
    assert caught.value.code == "RATE_LIMITED"
    assert login.metrics.counted("AuthThrottled") == 1
    # A throttled attempt is not another failure: the window does not keep extending.
    assert login.metrics.counted("AuthFailed") == MAX_FAILURES


def test_one_failure_short_of_the_limit_can_still_log_in(login: Login) -> None:
    login.fail(times=MAX_FAILURES - 1)
    assert login.service.login("asha", "right-password").sub == "asha"


def test_unknown_usernames_are_throttled_too(login: Login) -> None:
    login.fail("nobody", times=MAX_FAILURES)
    with pytest.raises(RateLimited):
        login.service.login("nobody", "anything")


def test_throttled_attempts_are_counted_but_never_checked(login: Login) -> None:
    login.fail(times=MAX_FAILURES)
    started = login.throttle.windows[ThrottleKey("asha", "unknown")].started_at
    checks_before = len(login.users.counted_at_check)
    for _ in range(4):
        with pytest.raises(RateLimited):
            login.service.login("asha", "right-password")
    assert len(login.users.counted_at_check) == checks_before
    assert login.attempts() == MAX_FAILURES + 4
    assert login.throttle.windows[ThrottleKey("asha", "unknown")].started_at == started


def test_the_attempt_is_counted_before_the_password_is_checked(login: Login) -> None:
    login.fail()
    login.fail()
    assert login.users.counted_at_check == [1, 2]


def test_interleaved_guesses_never_get_more_checks_than_the_allowance(
    login: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst interleaving of concurrent requests: every guess is counted before any is checked.
    guesses = 8
    outcomes: list[int] = []
    real_count = login.throttle.count_attempt

    def count_then_start_the_next(key: ThrottleKey, now: int, window_seconds: int) -> LoginWindow:
        window = real_count(key, now, window_seconds)
        if window.attempts < guesses:
            guess()
        return window

    def guess() -> None:
        try:
            login.service.login("asha", "wrong-password", "203.0.113.7")
        except Unauthenticated:
            outcomes.append(401)
        except RateLimited:
            outcomes.append(429)

    monkeypatch.setattr(login.throttle, "count_attempt", count_then_start_the_next)
    guess()
    assert sorted(outcomes) == [401] * MAX_FAILURES + [429] * (guesses - MAX_FAILURES)
    # Every check happened after all eight were counted; only the first three counted were checked.
    assert login.users.counted_at_check == [guesses] * MAX_FAILURES
    assert login.attempts(source="203.0.113.7") == guesses


def test_throttling_is_per_username(login: Login) -> None:
    login.users.put(User("ravi", "manager", hash_password("ravi-password", ITERATIONS)))
    login.fail("asha", times=MAX_FAILURES)
    assert login.service.login("ravi", "ravi-password").sub == "ravi"


def test_throttling_counts_spellings_of_a_username_together(login: Login) -> None:
    login.fail("ASHA")
    login.fail(" asha")
    login.fail("Asha ")
    with pytest.raises(RateLimited):
        login.service.login("asha", "right-password")


def test_window_expiry_lets_the_user_log_in_again(login: Login, fixed_clock: FixedClock) -> None:
    login.fail(times=MAX_FAILURES)
    fixed_clock.advance(seconds=WINDOW)
    with pytest.raises(RateLimited):
        login.service.login("asha", "right-password")
    fixed_clock.advance(seconds=1)
    assert login.service.login("asha", "right-password").sub == "asha"


def test_window_is_fixed_from_the_first_failure(login: Login, fixed_clock: FixedClock) -> None:
    login.fail(times=MAX_FAILURES - 1)
    fixed_clock.advance(seconds=WINDOW + 1)
    # The old window has passed: these failures start a new one and do not add to the old.
    login.fail(times=MAX_FAILURES - 1)
    assert login.service.login("asha", "right-password").sub == "asha"


def test_success_clears_the_failure_count(login: Login) -> None:
    login.fail(times=MAX_FAILURES - 1)
    login.service.login("asha", "right-password")
    login.fail(times=MAX_FAILURES - 1)
    assert login.service.login("asha", "right-password").sub == "asha"
    login.fail(times=MAX_FAILURES)
    with pytest.raises(RateLimited):
        login.service.login("asha", "right-password")


def test_retry_after_is_the_time_left_in_the_window(login: Login, fixed_clock: FixedClock) -> None:
    login.fail(times=MAX_FAILURES)
    fixed_clock.advance(seconds=100)
    with pytest.raises(RateLimited) as caught:
        login.service.login("asha", "right-password")
    retry_after = caught.value.details["retry_after_seconds"]
    assert retry_after == WINDOW + 1 - 100
    fixed_clock.advance(seconds=retry_after - 1)
    with pytest.raises(RateLimited) as caught:
        login.service.login("asha", "right-password")
    assert caught.value.details == {"retry_after_seconds": 1}
    fixed_clock.advance(seconds=1)
    assert login.service.login("asha", "right-password").sub == "asha"


# --- the throttle is keyed by username and source address ------------------------------------------

IP_A = "203.0.113.7"
IP_B = "198.51.100.9"


def test_guesses_from_one_address_do_not_lock_the_user_out_from_another(login: Login) -> None:
    login.fail(times=MAX_FAILURES, source_ip=IP_A)
    with pytest.raises(RateLimited):
        login.service.login("asha", "right-password", IP_A)
    assert login.service.login("asha", "right-password", IP_B).sub == "asha"
    # ... and the success from B does not lift the throttle on A.
    with pytest.raises(RateLimited):
        login.service.login("asha", "right-password", IP_A)


def test_success_clears_only_its_own_username_and_address(login: Login) -> None:
    login.users.put(User("ravi", "manager", hash_password("ravi-password", ITERATIONS)))
    login.fail(times=MAX_FAILURES - 1, source_ip=IP_A)
    login.fail(times=MAX_FAILURES - 1, source_ip=IP_B)
    login.fail("ravi", times=MAX_FAILURES - 1, source_ip=IP_A)
    login.service.login("asha", "right-password", IP_A)
    assert (login.attempts(source=IP_A), login.attempts(source=IP_B)) == (0, MAX_FAILURES - 1)
    assert login.attempts("ravi", IP_A) == MAX_FAILURES - 1
    login.fail(source_ip=IP_B)
    with pytest.raises(RateLimited):
        login.service.login("asha", "right-password", IP_B)


@pytest.mark.parametrize("missing", [None, "", "not-an-address", "203.0.113.7#x", " 203.0.113.7"])
def test_attempts_without_a_usable_address_share_one_count(login: Login, missing: str | None) -> None:
    login.fail(times=MAX_FAILURES - 1, source_ip=None)
    login.fail(source_ip=missing)
    with pytest.raises(RateLimited):
        login.service.login("asha", "right-password", None)
    assert login.service.login("asha", "right-password", IP_A).sub == "asha"


def test_an_ipv6_64_network_counts_as_one_source(login: Login) -> None:
    login.fail(times=MAX_FAILURES - 1, source_ip="2001:db8:1:2::1")
    login.fail(source_ip="2001:db8:1:2:ffff:ffff:ffff:ffff")
    with pytest.raises(RateLimited):
        login.service.login("asha", "right-password", "2001:db8:1:2::99")
    assert login.service.login("asha", "right-password", "2001:db8:1:3::1").sub == "asha"


@pytest.mark.parametrize(
    ("source_ip", "source"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("", "unknown"),
        ("localhost", "unknown"),
        ("203.0.113.7, 10.0.0.1", "unknown"),
        ("x" * 10_000, "unknown"),
    ],
)
def test_throttle_source(source_ip: str | None, source: str) -> None:
    assert throttle_source(source_ip) == source
    assert "#" not in source


def test_add_user_stores_a_verifiable_hash(login: Login) -> None:
    user = login.service.add_user(" Ravi ", "long-enough", Role.MANAGER)
    assert user.username == "ravi"
    assert login.users.get("ravi") == user
    assert verify_password("long-enough", user.password_hash)
    assert login.service.login("ravi", "long-enough").role == "manager"


def test_add_user_refuses_short_passwords(login: Login) -> None:
    with pytest.raises(ValidationFailed):
        login.service.add_user("ravi", "short", Role.MANAGER)
    assert login.users.get("ravi") is None


# --- revocation: what the endpoint's authentication step adds to a token that decodes ---------------


def test_decode_verified_refuses_exactly_what_decode_token_refuses(fixed_clock: FixedClock) -> None:
    from chalicelib.services.auth import decode_verified

    good = hs256_token(claims())
    assert decode_verified(good, SECRET).actor == decode_token(good, SECRET)
    assert decode_verified(good, SECRET).iat == NOW_EPOCH
    for bad in (hs256_token(claims(iat="x")), hs256_token(claims(), key=SECRET + "x"), "a.b.c", "x" * 5000):
        with pytest.raises(Unauthenticated) as from_token:
            decode_token(bad, SECRET)
        with pytest.raises(Unauthenticated) as from_verified:
            decode_verified(bad, SECRET)
        assert from_token.value.message == from_verified.value.message


@pytest.mark.parametrize(("raw", "expected"), [(None, 60), ("", 60), ("0", 0), ("3600", 3600), ("15", 15)])
def test_user_cache_seconds_setting(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: int) -> None:
    from chalicelib.config import reset_settings
    from chalicelib.config import settings as read_settings

    if raw is None:
        monkeypatch.delenv("USER_CACHE_SECONDS", raising=False)
    else:
        monkeypatch.setenv("USER_CACHE_SECONDS", raw)
    reset_settings()
    try:
        assert read_settings().user_cache_seconds == expected
    finally:
        monkeypatch.undo()
        reset_settings()


@pytest.mark.parametrize("raw", ["-1", "3601", "1.5", "sixty", "1e3"])
def test_an_invalid_user_cache_seconds_stops_the_service(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    from chalicelib.config import reset_settings
    from chalicelib.config import settings as read_settings

    monkeypatch.setenv("USER_CACHE_SECONDS", raw)
    reset_settings()
    try:
        with pytest.raises(ValueError, match="USER_CACHE_SECONDS"):
            read_settings()
    finally:
        monkeypatch.undo()
        reset_settings()


def test_a_login_token_is_refused_once_the_user_is_deactivated(login: Login) -> None:
    token = login.service.login("asha", "right-password").access_token
    assert login.service.authenticate(token).actor == Actor("asha", "collector")
    login.users.put(User("asha", "collector", hash_password("right-password", ITERATIONS), active=False))
    with pytest.raises(Unauthenticated):
        login.service.authenticate(token)
    with pytest.raises(Unauthenticated):
        login.service.login("asha", "right-password")
