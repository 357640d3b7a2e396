"""Every way a bearer token can be wrong, through the API, on a read route and on a write route
(docs/auth.md, "Bearer tokens" and "Ending tokens").

Each case is one ``Authorization`` header value, built at the instant of the request from the frozen
clock's epoch second. A refused case must be a 401 ``UNAUTHENTICATED`` in the error shape with the
``WWW-Authenticate`` challenge, must not quote the token anywhere in the answer, and a refused write must
not write to DynamoDB at all (no payment, audit entry, counter or idempotency record). An accepted case
must really work: 200 on the read, a payment posted by the token's user on the write.

The whole matrix shares one moto stack for the module: a fresh stack per case (the ``api`` fixture)
costs a quarter of a second, several times the case itself, and so would scanning every table around
each refused write. So the writes are counted where moto stores items, and when the module ends the
payments table must hold exactly the payments that were answered 201. Accepted cases post small
payments with distinct UTRs, leaving the loan payable for the cases after them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.dynamodb.models import DynamoDBBackend

from chalicelib import clock
from chalicelib.domain.roles import Role
from chalicelib.services.auth import LEEWAY_SECONDS, MAX_TOKEN_CHARS
from chalicelib.wiring import services
from tests.integration.api_helpers import FROZEN_AT, PASSWORD, Api, Reply, assert_error, loan_body
from tests.integration.module_stack import module_api

# HS384/HS512 under our 52-byte secret are only ever built to be refused.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

FROZEN_EPOCH = int(FROZEN_AT.timestamp())
LOAN_ID = "LN-JWT-MATRIX"
CHALLENGE = 'Bearer realm="loan-crm"'
OTHER_SECRET = "a-different-secret-that-is-long-enough-for-hs256-0123456789"

LEAVER = "leaver1"
"""A collector deactivated while the module sets up."""
CHANGER = "changer1"
"""A manager whose password is replaced at FROZEN_EPOCH, the module's first instant."""

# --- building tokens -----------------------------------------------------------------------------------

DROP = object()
"""A claim value meaning: leave the claim out."""


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(part: Any) -> str:
    """A base64url segment of ``part``: bytes as they are, anything else as JSON (NaN included)."""
    return b64(part if isinstance(part, bytes) else json.dumps(part).encode())


def secret() -> bytes:
    return str(services().jwt_secret()).encode()


def claims(now: int, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "admin1",
        "role": "admin",
        "iat": now,
        "exp": now + 3600,
        "iss": "loan-crm",
        "aud": "loan-crm-api",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not DROP}


def hand(payload: Any, header: Any = None, key: bytes | None = None) -> str:
    """A token built without PyJWT (which refuses to encode most of what is tested here): the two
    segments and an HMAC over them, under the real secret unless ``key`` is given."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'} if header is None else header)}.{segment(payload)}"
    signature = hmac.new(secret() if key is None else key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def unsigned(payload: Any, header: Any, signature: str = "") -> str:
    return f"{segment(header)}.{segment(payload)}.{signature}"


def good(now: int, **changes: Any) -> str:
    """A token as the product issues one (PyJWT, HS256), with ``changes`` to the claims."""
    return jwt.encode(claims(now, **changes), secret(), algorithm="HS256")


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def exactly(length: int, now: int) -> str:
    """A correctly signed, otherwise good token of exactly ``length`` characters (an ignored extra
    claim carries the padding; four characters of token per three of padding)."""
    pad = max(0, (length - len(good(now, pad=""))) * 3 // 4 - 3)
    while len(token := good(now, pad="x" * pad)) < length:
        pad += 1
    assert len(token) == length, (len(token), length)  # no base64url text is 4k+1 characters long
    return token


def spliced(token: str, at: int, text: str) -> str:
    return token[:at] + text + token[at:]


def in_signature(token: str, text: str) -> str:
    """``text`` put in the middle of the signature segment: base64 decoders that skip characters
    outside the alphabet would still find the right signature there."""
    return spliced(token, len(token) - 20, text)


# --- the cases -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    header: Callable[[int], str | None]
    """The Authorization header value at epoch second ``now`` (None: no header at all)."""
    accepted: bool = False
    sub: str = "admin1"
    """Who an accepted case acts as."""
    known_defect: str | None = None
    """Why the product does not yet do what the case expects (the case is a strict xfail until it does)."""


def bearer(make: Callable[[int], str], accepted: bool = False, sub: str = "admin1") -> Case:
    return Case(lambda now: f"Bearer {make(now)}", accepted, sub)


def refused(make: Callable[[int], str]) -> Case:
    return bearer(make)


def accepted(make: Callable[[int], str], sub: str = "admin1") -> Case:
    return bearer(make, accepted=True, sub=sub)


L = LEEWAY_SECONDS
HS256 = {"alg": "HS256", "typ": "JWT"}

ALGORITHMS: dict[str, Case] = {
    "control-token-as-issued": accepted(good),
    **{
        f"alg-{alg}-unsigned": refused(lambda n, alg=alg: unsigned(claims(n), {"alg": alg, "typ": "JWT"}))
        for alg in ("none", "None", "NONE")
    },
    **{
        f"alg-{alg}-fake-signature": refused(
            lambda n, alg=alg: unsigned(claims(n), {"alg": alg, "typ": "JWT"}, b64(b"not-a-signature-at-all"))
        )
        for alg in ("none", "None", "NONE")
    },
    "alg-none-over-a-valid-hmac": refused(lambda n: hand(claims(n), {"alg": "none", "typ": "JWT"})),
    "alg-HS384": refused(lambda n: jwt.encode(claims(n), secret(), algorithm="HS384")),
    "alg-HS512": refused(lambda n: jwt.encode(claims(n), secret(), algorithm="HS512")),
    "alg-RS256-signed-with-an-rsa-key": refused(lambda n: jwt.encode(claims(n), rsa_key(), algorithm="RS256")),
    "alg-RS256-label-over-an-hmac": refused(lambda n: hand(claims(n), {"alg": "RS256", "typ": "JWT"})),
    "alg-hs256-lower-case": refused(lambda n: hand(claims(n), {"alg": "hs256", "typ": "JWT"})),
    "alg-missing": refused(lambda n: hand(claims(n), {"typ": "JWT"})),
    "alg-null": refused(lambda n: hand(claims(n), {"alg": None, "typ": "JWT"})),
    "alg-list": refused(lambda n: hand(claims(n), {"alg": ["HS256"], "typ": "JWT"})),
    "wrong-secret": refused(lambda n: jwt.encode(claims(n), OTHER_SECRET, algorithm="HS256")),
    "empty-key-signature": refused(lambda n: hand(claims(n), key=b"")),
    "payload-swapped-under-a-good-signature": refused(
        lambda n: ".".join(
            [good(n).split(".")[0], good(n, sub="auditor1", role="auditor").split(".")[1], good(n).split(".")[2]]
        )
    ),
}

KEY_LOCATORS = {
    "kid": "../../../../../../dev/null",
    "jku": "http://127.0.0.1:9/.well-known/jwks.json",
    "x5u": "http://127.0.0.1:9/cert.pem",
}
HEADERS: dict[str, Case] = {
    **{
        f"header-{name}-hs256-signed": accepted(
            lambda n, name=name, value=value: hand(claims(n), {**HS256, name: value})
        )
        for name, value in KEY_LOCATORS.items()
    },
    "header-all-locators-and-jwk-hs256-signed": accepted(
        lambda n: hand(claims(n), {**HS256, **KEY_LOCATORS, "jwk": {"kty": "oct", "k": b64(b"attacker-key")}})
    ),
    "header-kid-dev-null-empty-key": refused(lambda n: hand(claims(n), {**HS256, **KEY_LOCATORS}, key=b"")),
    "header-jku-rs256-attacker-key": refused(
        lambda n: jwt.encode(claims(n), rsa_key(), algorithm="RS256", headers={"jku": KEY_LOCATORS["jku"]})
    ),
    "header-jwk-hmac-under-the-jwk": refused(
        lambda n: hand(claims(n), {**HS256, "jwk": {"kty": "oct", "k": b64(b"attacker-key")}}, key=b"attacker-key")
    ),
    "header-kid-not-a-string": refused(lambda n: hand(claims(n), {**HS256, "kid": 7})),
    "header-crit-unknown-extension": refused(lambda n: hand(claims(n), {**HS256, "crit": ["x-ours"], "x-ours": 1})),
}

TIMES: dict[str, Case] = {
    "expired-an-hour-ago": refused(lambda n: good(n - 7200, exp=n - 3600)),
    "exp-leeway-plus-1-ago": refused(lambda n: good(n - 3600, exp=n - L - 1)),
    "exp-exactly-leeway-ago": refused(lambda n: good(n - 3600, exp=n - L)),
    "exp-leeway-minus-1-ago": accepted(lambda n: good(n - 3600, exp=n - L + 1)),
    "exp-1-ago": accepted(lambda n: good(n - 3600, exp=n - 1)),
    "exp-now": accepted(lambda n: good(n - 3600, exp=n)),
    "exp-not-after-iat": refused(lambda n: good(n, exp=n)),
    "iat-leeway-plus-1-ahead": refused(lambda n: good(n + L + 1)),
    "iat-exactly-leeway-ahead": accepted(lambda n: good(n + L)),
    "iat-leeway-minus-1-ahead": accepted(lambda n: good(n + L - 1)),
    "iat-an-hour-ahead": refused(lambda n: good(n + 3600)),
    "iat-long-ago-exp-ahead": accepted(lambda n: good(n - 7 * 3600, exp=n + 3600)),
    "nbf-leeway-plus-1-ahead": refused(lambda n: good(n, nbf=n + L + 1)),
    "nbf-exactly-leeway-ahead": accepted(lambda n: good(n, nbf=n + L)),
    "nbf-ten-minutes-ahead": refused(lambda n: good(n, nbf=n + 600)),
    "nbf-past": accepted(lambda n: good(n, nbf=n - 60)),
    "nbf-string": refused(lambda n: hand(claims(n, nbf=str(n)))),
    "nbf-float": refused(lambda n: hand(claims(n, nbf=float(n)))),
    "nbf-null": refused(lambda n: hand(claims(n, nbf=None))),
}

CLAIMS: dict[str, Case] = {
    **{
        f"missing-{name}": refused(lambda n, name=name: hand(claims(n, **{name: DROP})))
        for name in ("iss", "aud", "exp", "sub", "role", "iat")
    },
    "missing-everything": refused(lambda n: hand({})),
    "iss-wrong": refused(lambda n: good(n, iss="evil")),
    "iss-upper-case": refused(lambda n: good(n, iss="LOAN-CRM")),
    "iss-trailing-space": refused(lambda n: good(n, iss="loan-crm ")),
    "iss-list": refused(lambda n: hand(claims(n, iss=["loan-crm"]))),
    "aud-wrong": refused(lambda n: good(n, aud="someone-else")),
    "aud-upper-case": refused(lambda n: good(n, aud="LOAN-CRM-API")),
    "aud-list-of-ours": refused(lambda n: good(n, aud=["loan-crm-api"])),
    "aud-list-with-ours-and-another": refused(lambda n: good(n, aud=["other-api", "loan-crm-api"])),
    "aud-list-without-ours": refused(lambda n: good(n, aud=["other-api"])),
    "aud-empty-list": refused(lambda n: hand(claims(n, aud=[]))),
    "exp-string": refused(lambda n: hand(claims(n, exp=str(n + 3600)))),
    "exp-float-whole": refused(lambda n: hand(claims(n, exp=float(n + 3600)))),
    "exp-float-fraction": refused(lambda n: hand(claims(n, exp=n + 3600.5))),
    "exp-bool": refused(lambda n: hand(claims(n, exp=True))),
    "exp-null": refused(lambda n: hand(claims(n, exp=None))),
    "exp-beyond-64-bits": refused(lambda n: hand(claims(n, exp=2**64 + 1))),
    "exp-2-to-the-63": refused(lambda n: hand(claims(n, exp=2**63))),
    "exp-negative": refused(lambda n: hand(claims(n, iat=-7200, exp=-3600))),
    "exp-nan": refused(lambda n: hand(claims(n, exp=float("nan")))),
    "exp-infinity": refused(lambda n: hand(claims(n, exp=float("inf")))),
    "iat-string": refused(lambda n: hand(claims(n, iat=str(n)))),
    "iat-float": refused(lambda n: hand(claims(n, iat=float(n)))),
    "iat-bool": refused(lambda n: hand(claims(n, iat=True))),
    "iat-null": refused(lambda n: hand(claims(n, iat=None))),
    "sub-int": refused(lambda n: hand(claims(n, sub=42))),
    "sub-list": refused(lambda n: hand(claims(n, sub=["admin1"]))),
    "sub-object": refused(lambda n: hand(claims(n, sub={"username": "admin1"}))),
    "sub-empty-string": refused(lambda n: hand(claims(n, sub=""))),
    "sub-null": refused(lambda n: hand(claims(n, sub=None))),
    "sub-bool": refused(lambda n: hand(claims(n, sub=True))),
    "role-int": refused(lambda n: hand(claims(n, role=1))),
    "role-list": refused(lambda n: hand(claims(n, role=["admin"]))),
    "role-object": refused(lambda n: hand(claims(n, role={"admin": True}))),
    "role-null": refused(lambda n: hand(claims(n, role=None))),
    "role-empty": refused(lambda n: good(n, role="")),
    "role-superadmin": refused(lambda n: good(n, role="superadmin")),
    "role-upper-case": refused(lambda n: good(n, role="Admin")),
    "extra-claims-ignored": accepted(lambda n: good(n, scope=["everything"], is_admin=True, jti="j-1")),
    "jti-not-a-string": refused(lambda n: hand(claims(n, jti=["j-1"]))),
}

USER_CASES: dict[str, Case] = {
    "sub-unknown-user": refused(lambda n: good(n, sub="ghost")),
    "sub-upper-case-of-a-user": refused(lambda n: good(n, sub="ADMIN1")),
    "sub-padded-with-spaces": refused(lambda n: good(n, sub=" admin1 ")),
    "sub-path-traversal": refused(lambda n: good(n, sub="../admin1")),
    "sub-with-nul": refused(lambda n: good(n, sub="admin1\u0000")),
    "sub-lone-surrogate": refused(lambda n: hand(claims(n, sub="\ud800"))),
    "sub-2100-characters": refused(lambda n: good(n, sub="a" * 2100)),
    "sub-deactivated-token-from-before": refused(
        lambda n: good(FROZEN_EPOCH - 60, sub=LEAVER, role="collector", exp=n + 3600)
    ),
    "sub-deactivated-token-from-after": refused(lambda n: good(n, sub=LEAVER, role="collector")),
    "sub-password-changed-a-second-later": refused(
        lambda n: good(FROZEN_EPOCH - 1, sub=CHANGER, role="manager", exp=n + 3600)
    ),
    "sub-password-changed-the-same-second": accepted(
        lambda n: good(FROZEN_EPOCH, sub=CHANGER, role="manager", exp=n + 3600), sub=CHANGER
    ),
    # Documented: a role change takes effect with the next token, so the token's role is the one used.
    "role-differs-from-the-stored-users": accepted(lambda n: good(n, sub="auditor1", role="manager"), sub="auditor1"),
}


SHAPES: dict[str, Case] = {
    "no-authorization-header": Case(lambda n: None),
    "empty-header": Case(lambda n: ""),
    "bearer-without-token": Case(lambda n: "Bearer"),
    "bearer-and-a-space": Case(lambda n: "Bearer "),
    "bearer-and-spaces": Case(lambda n: "Bearer    "),
    "scheme-lower-case": Case(lambda n: f"bearer {good(n)}", accepted=True),
    "scheme-upper-case": Case(lambda n: f"BEARER {good(n)}", accepted=True),
    "two-spaces-after-scheme": Case(lambda n: f"Bearer  {good(n)}", accepted=True),
    "tab-after-scheme": Case(lambda n: f"Bearer\t{good(n)}"),
    "no-space-after-scheme": Case(lambda n: f"Bearer{good(n)}"),
    "no-scheme": Case(lambda n: good(n)),
    "basic-credentials": Case(lambda n: "Basic " + base64.b64encode(f"admin1:{PASSWORD}".encode()).decode()),
    "basic-scheme-with-a-good-token": Case(lambda n: f"Basic {good(n)}"),
    "token-scheme": Case(lambda n: f"Token {good(n)}"),
    "two-tokens": Case(lambda n: f"Bearer {good(n)} {good(n)}"),
    # Two Authorization headers reach the Lambda comma-joined or as the last one alone; the joined form
    # is the one the product can see.
    "two-credentials-comma-joined": Case(lambda n: f"Bearer {good(n)}, Bearer {good(n)}"),
    "two-tokens-comma-joined": Case(lambda n: f"Bearer {good(n)},{good(n)}"),
    "leading-space": Case(lambda n: f" Bearer {good(n)}"),
    "trailing-space": Case(lambda n: f"Bearer {good(n)} ", accepted=True),
    "trailing-tab": Case(lambda n: f"Bearer {good(n)}\t", accepted=True),
    "one-segment": refused(lambda n: good(n).replace(".", "")),
    "two-segments": refused(lambda n: good(n).rsplit(".", 1)[0]),
    "two-segments-trailing-dot": refused(lambda n: good(n).rsplit(".", 1)[0] + "."),
    "four-segments": refused(lambda n: good(n) + "." + segment({})),
    "five-segments-jwe-like": refused(lambda n: good(n) + ".AAAA.BBBB"),
    "empty-segments": refused(lambda n: ".."),
    "bad-base64-header": refused(lambda n: "eyJ!!!." + good(n).split(".", 1)[1]),
    "bad-base64-payload": refused(lambda n: spliced(good(n), len(good(n).split(".")[0]) + 5, "%%")),
    "bad-base64-signature": refused(lambda n: good(n)[:-4] + "$$$$"),
    "base64-padding-on-the-signature": refused(lambda n: good(n) + "="),
    "base64-standard-alphabet": refused(
        lambda n: hand(claims(n), {**HS256, "kid": "??>>??>>"}).replace("-", "+").replace("_", "/")
    ),
    "header-not-json": refused(lambda n: hand(claims(n), b"alg=HS256")),
    "payload-not-json": refused(lambda n: hand(b"sub=admin1;role=admin")),
    "payload-not-utf8": refused(lambda n: hand(b"\xff\xfe{}")),
    "payload-json-array": refused(lambda n: hand([claims(n)])),
    "payload-json-string": refused(lambda n: hand("admin1")),
    "payload-json-null": refused(lambda n: hand(None)),
    "payload-deeply-nested": refused(lambda n: hand(b"[" * 1200 + b"]" * 1200)),
    "header-json-array": refused(lambda n: hand(claims(n), [HS256])),
    f"exactly-{MAX_TOKEN_CHARS}-characters": accepted(lambda n: exactly(MAX_TOKEN_CHARS, n)),
    f"{MAX_TOKEN_CHARS + 1}-characters": refused(lambda n: exactly(MAX_TOKEN_CHARS + 1, n)),
    "100-kb": refused(lambda n: spliced(good(n), len(good(n).split(".")[0]) + 1, "A" * 100 * 1024)),
    "non-ascii-in-signature": refused(lambda n: in_signature(good(n), "é")),
    "non-ascii-after-token": refused(lambda n: good(n) + "ü"),
    "non-ascii-full-width-dots": refused(lambda n: good(n).replace(".", "\uff0e")),
    "nul-in-signature": refused(lambda n: in_signature(good(n), "\x00")),
    "del-in-signature": refused(lambda n: in_signature(good(n), "\x7f")),
    "newline-in-signature": refused(lambda n: in_signature(good(n), "\n")),
    "unit-separator-after-token": Case(lambda n: f"Bearer {good(n)}\x1f"),
    "newline-after-token": Case(lambda n: f"Bearer {good(n)}\r\n"),
    "ideographic-space-after-token": Case(lambda n: f"Bearer {good(n)}\u3000"),
    "no-break-space-before-token": Case(lambda n: f"Bearer \u00a0{good(n)}"),
    "escape-in-payload": refused(lambda n: spliced(good(n), len(good(n).split(".")[0]) + 3, "\x1b[31m")),
}

CASES: dict[str, Case] = {**ALGORITHMS, **HEADERS, **TIMES, **CLAIMS, **USER_CASES, **SHAPES}
CASE_PARAMS = [
    pytest.param(case, id=name, marks=[pytest.mark.xfail(strict=True, reason=case.known_defect)])
    if case.known_defect
    else pytest.param(case, id=name)
    for name, case in CASES.items()
]


# --- the stack -----------------------------------------------------------------------------------------


@dataclass
class Matrix:
    api: Api
    writes: list[str]
    """Every item write that reached moto's DynamoDB, by operation name."""
    payments_posted: int = 0
    """Payments answered 201: the payments table must hold exactly these when the module ends."""


ITEM_WRITES = ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """What the ``api`` fixture gives (tests/integration/api_helpers.py), once for the module, plus a
    loan to pay, a deactivated collector and a manager whose password changed at FROZEN_EPOCH."""
    writes: list[str] = []

    def count_writes(patch: pytest.MonkeyPatch) -> None:
        for name in ITEM_WRITES:
            patch.setattr(DynamoDBBackend, name, counted(name, getattr(DynamoDBBackend, name), writes))

    with module_api("jwtm", Path(tmp_path_factory.mktemp("chalice")), count_writes) as api:
        auth = services().auth
        auth.add_user(CHANGER, PASSWORD, Role.MANAGER)
        auth.add_user(CHANGER, PASSWORD + "-changed", Role.MANAGER)  # tokens_valid_after = now
        changed = auth.users.get(CHANGER)
        assert changed is not None and changed.tokens_valid_after == FROZEN_EPOCH
        auth.add_user(LEAVER, PASSWORD, Role.COLLECTOR)
        api.create_loan(loan_body(loan_id=LOAN_ID, collector_id="collector1"))
        deactivated = api.patch(f"/api/v1/users/{LEAVER}", {"active": False})
        assert deactivated.status == 200 and deactivated.json["active"] is False, deactivated.body
        state = Matrix(api, writes)
        yield state
        stored = boto3.client("dynamodb").scan(TableName=f"loan-crm-{api.stage}-payments", Select="COUNT")
        assert stored["Count"] == state.payments_posted, "a payment was stored without a 201"


def counted(name: str, method: Callable[..., Any], writes: list[str]) -> Callable[..., Any]:
    def write(*args: Any, **kwargs: Any) -> Any:
        writes.append(name)
        return method(*args, **kwargs)

    return write


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``jku`` and ``x5u`` name URLs to fetch a key from: the product must never go there, or anywhere
    (moto answers AWS calls in-process, so no request of these tests needs a socket)."""
    attempts: list[Any] = []

    def refuse(_sock: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("no network in the JWT matrix")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield
    assert attempts == []


_utrs = itertools.count(1)


def payment_body() -> dict[str, Any]:
    return {
        "loan_id": LOAN_ID,
        "utr": f"JWTMATRIX{next(_utrs):06d}",
        "amount_paise": 100,
        "payment_date": clock.today_ist().isoformat(),
        "mode": "UPI",
    }


def send(api: Api, route: str, header: str | None) -> Reply:
    headers = {} if header is None else {"Authorization": header}
    if route == "get-loans":
        return api.get("/api/v1/loans", as_=None, headers=headers)
    # An Idempotency-Key too, so a refused write is seen to store no idempotency record either.
    headers["Idempotency-Key"] = f"jwt-matrix-{next(_utrs)}"
    return api.post("/api/v1/payments", payment_body(), as_=None, headers=headers)


def leaked_pieces(header: str) -> list[str]:
    """The parts of a header value that an answer must never repeat: every run of 8 or more characters
    between spaces, dots and commas (the token and each of its segments)."""
    return [piece for piece in re.split(r"[\s.,]+", header) if len(piece) >= 8]


def answer_text(reply: Reply) -> str:
    headers = "\n".join(f"{name}: {value}" for name, value in reply.headers.items())
    return reply.body.decode("utf-8", "replace") + "\n" + headers


# --- the tests -----------------------------------------------------------------------------------------


def test_the_matrix_covers_what_docs_auth_promises() -> None:
    assert LEEWAY_SECONDS > 1, "the boundary cases need a leeway of at least two seconds"
    assert {f"missing-{claim}" for claim in ("iss", "aud", "exp", "sub", "role", "iat")} <= set(CASES)
    assert sum(case.accepted for case in CASES.values()) >= 20  # refusing everything would pass otherwise


@pytest.mark.parametrize("route", ["get-loans", "post-payment"])
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_bearer_token(matrix: Matrix, case: Case, route: str) -> None:
    header = case.header(clock.now_epoch())
    writes_before = len(matrix.writes)

    reply = send(matrix.api, route, header)
    if route == "post-payment" and reply.status == 201:
        matrix.payments_posted += 1

    if case.accepted:
        expected = 200 if route == "get-loans" else 201
        assert reply.status == expected, (reply.status, reply.body[:500])
        if route == "post-payment":
            assert reply.json["posted_by"] == case.sub
        return
    assert reply.status < 500, (reply.status, reply.body[:500])
    assert_error(reply, 401, "UNAUTHENTICATED")
    assert reply.header("WWW-Authenticate") == CHALLENGE
    text = answer_text(reply)
    for piece in leaked_pieces(header or ""):
        assert piece not in text, piece[:40]
    assert matrix.writes[writes_before:] == [], "a refused request wrote to DynamoDB"


def test_the_write_counter_sees_a_payment(matrix: Matrix) -> None:
    """Guards the check above: an accepted payment is seen writing."""
    before = len(matrix.writes)
    reply = send(matrix.api, "post-payment", f"Bearer {good(clock.now_epoch())}")
    assert reply.status == 201, reply.body[:500]
    matrix.payments_posted += 1
    assert "transact_write_items" in matrix.writes[before:]


def test_refusal_messages_name_the_problem(matrix: Matrix) -> None:
    """The messages a client sees for the main kinds of refusal (docs/auth.md: they name what is wrong)."""
    now = clock.now_epoch()
    expected = {
        good(now, aud="someone-else"): "wrong audience",
        good(now - 3600, exp=now - LEEWAY_SECONDS): "expired",
        good(now, nbf=now + LEEWAY_SECONDS + 60): "not yet valid",
        good(now + LEEWAY_SECONDS + 60): "future",
        good(now) + "=": "malformed",
        good(now, sub="a" * 2100): "sub must be a username",
        # Signed, but no user or system actor has a "#" (the audit trail's stored keys separate shards with it).
        good(now, sub="meera#03"): "sub must be a username",
        "x" * (MAX_TOKEN_CHARS + 1): "too long",
        good(now, sub=LEAVER, role="collector"): "log in again",
    }
    for token, words in expected.items():
        reply = matrix.api.get("/api/v1/loans", as_=None, headers={"Authorization": f"Bearer {token}"})
        assert_error(reply, 401, "UNAUTHENTICATED")
        assert words in reply.json["error"]["message"], (words, reply.json)
