"""The login throttle under real concurrency: processes guessing at once against DynamoDB Local.

The throttle counts each attempt for its (username, source address) before checking the password, so
the count is exact however many guesses overlap, and no more than the allowance of them is ever
checked. The adapter itself is held to the in-memory fake's behaviour by one contract suite.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib import clock
from chalicelib.adapters.dynamodb.models import bind
from chalicelib.adapters.dynamodb.users import DynamoLoginThrottle
from chalicelib.config import settings
from chalicelib.domain.errors import RateLimited
from chalicelib.domain.roles import Role
from chalicelib.services.ports import LoginThrottle, ThrottleKey
from chalicelib.wiring import services
from tests.dynamodb_local import processes
from tests.fakes import InMemoryLoginThrottle

pytestmark = pytest.mark.dynamodb_local

PASSWORD = "right-password-for-racing"
ATTACKER = "203.0.113.7"
OFFICE = "198.51.100.9"
WORKERS = 8
TOKEN_PATH = "/api/v1/auth/token"


def _login_worker(env: dict[str, str], source_ip: str, passwords: list[str], barrier: Any, out: Any) -> None:
    """One process: a login per password, each released together with every other worker's."""
    os.environ.update(env)
    from chalice.local import LambdaEventConverter
    from chalice.test import Client

    import app as app_module

    # What API Gateway would put in the request context for a caller at this address.
    LambdaEventConverter.LOCAL_SOURCE_IP = source_ip
    results: list[tuple[int, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as empty, Client(app_module.app, project_dir=empty) as client:
        for password in passwords:
            # Generous: on a loaded machine starting eight interpreters alone can take minutes.
            barrier.wait(timeout=300)
            response = client.http.post(
                TOKEN_PATH,
                headers={"Content-Type": "application/json"},
                body=json.dumps({"username": "racer", "password": password}),
            )
            results.append((response.status_code, json.loads(response.body)))
    out.put((source_ip, results))


def _race_logins(stage: str, workers: list[tuple[str, list[str]]]) -> list[tuple[str, list[tuple[int, Any]]]]:
    """One process per (source address, passwords); the n-th login of every worker starts together."""
    ctx = processes.context()
    barrier = ctx.Barrier(len(workers))
    out = ctx.Queue()
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
    env["STAGE"] = stage
    procs = [ctx.Process(target=_login_worker, args=(env, ip, pw, barrier, out)) for ip, pw in workers]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    return results


def _stored(stage: str, source_ip: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        boto3.client("dynamodb")
        .get_item(
            TableName=f"loan-crm-{stage}-login-attempts",
            Key={"username": {"S": f"racer#{source_ip}"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return item


def _statuses(results: list[tuple[str, list[tuple[int, Any]]]], source_ip: str, round_no: int) -> Counter[int]:
    return Counter(per_worker[round_no][0] for ip, per_worker in results if ip == source_ip)


@pytest.fixture
def racer(local_stack: str) -> str:
    services().auth.add_user("racer", PASSWORD, Role.COLLECTOR)
    return local_stack


def test_concurrent_wrong_guesses_count_exactly_and_never_exceed_the_allowance(racer: str) -> None:
    allowance, rounds = settings().login_max_failures, 3
    results = _race_logins(racer, [(ATTACKER, ["wrong-guess"] * rounds) for _ in range(WORKERS)])
    statuses = [status for _, per_worker in results for status, _ in per_worker]
    # A 401 is a guess that was checked against the password; a 429 one that was refused unchecked.
    assert Counter(statuses) == {401: allowance, 429: WORKERS * rounds - allowance}
    assert _statuses(results, ATTACKER, 0) == {401: allowance, 429: WORKERS - allowance}
    stored = _stored(racer, ATTACKER)
    assert stored is not None
    assert int(stored["attempts"]["N"]) == WORKERS * rounds
    for _, per_worker in results:
        for status, body in per_worker:
            if status == 429:
                assert body["error"]["code"] == "RATE_LIMITED"
                assert 0 < body["error"]["details"]["retry_after_seconds"] <= settings().login_window_seconds + 1
    with pytest.raises(RateLimited):
        services().auth.login("racer", PASSWORD, ATTACKER)


def test_concurrent_guesses_after_a_window_passed_open_one_new_window(racer: str) -> None:
    # An old window full of attempts: the racing guesses must replace it once and all count in the new
    # one. Its TTL has not been acted on yet (DynamoDB deletes expired rows lazily).
    window = settings().login_window_seconds
    now = clock.now_epoch()
    boto3.client("dynamodb").put_item(
        TableName=f"loan-crm-{racer}-login-attempts",
        Item={
            "username": {"S": f"racer#{ATTACKER}"},
            "attempts": {"N": "99"},
            "window_started_at": {"N": str(now - window - 5)},
            "expires_at": {"N": str(now + 3600)},
        },
    )
    results = _race_logins(racer, [(ATTACKER, ["wrong-guess"]) for _ in range(WORKERS)])
    allowance = settings().login_max_failures
    assert _statuses(results, ATTACKER, 0) == {401: allowance, 429: WORKERS - allowance}
    stored = _stored(racer, ATTACKER)
    assert stored is not None
    assert int(stored["attempts"]["N"]) == WORKERS
    assert int(stored["window_started_at"]["N"]) >= now


def test_guesses_from_one_address_do_not_stop_the_right_password_from_another(racer: str) -> None:
    rounds, guessers = 4, WORKERS - 2
    workers = [(ATTACKER, ["wrong-guess"] * rounds) for _ in range(guessers)]
    workers += [(OFFICE, [PASSWORD] * rounds) for _ in range(2)]
    results = _race_logins(racer, workers)
    allowance = settings().login_max_failures
    attacker = Counter(status for ip, per_worker in results if ip == ATTACKER for status, _ in per_worker)
    assert attacker == {401: allowance, 429: guessers * rounds - allowance}
    for round_no in range(rounds):
        # Both office logins of a round may overlap: each counts one attempt, well within the allowance.
        assert _statuses(results, OFFICE, round_no) == {200: 2}, round_no
    for ip, per_worker in results:
        if ip == OFFICE:
            assert all(body["sub"] == "racer" and body["access_token"] for _, body in per_worker)
    attacker_row = _stored(racer, ATTACKER)
    assert attacker_row is not None and int(attacker_row["attempts"]["N"]) == guessers * rounds
    with pytest.raises(RateLimited):
        services().auth.login("racer", PASSWORD, ATTACKER)
    assert services().auth.login("racer", PASSWORD, OFFICE).sub == "racer"
    assert _stored(racer, OFFICE) is None


# --- one contract for the DynamoDB throttle and the in-memory fake ---------------------------------

WINDOW = 900
KEY = ThrottleKey("asha", "203.0.113.7")


@pytest.fixture
def t0() -> int:
    # Now, not a fixed date: DynamoDB Local runs a TTL sweeper that would delete rows expired long ago.
    return clock.now_epoch()


@pytest.fixture(params=["memory", "dynamodb"])
def throttle(request: pytest.FixtureRequest) -> Iterator[LoginThrottle]:
    if request.param == "dynamodb":
        request.getfixturevalue("local_stack")
        bind(settings())  # point the models at this test's tables
        yield DynamoLoginThrottle()
    else:
        yield InMemoryLoginThrottle()


def _count(throttle: LoginThrottle, at: int, key: ThrottleKey = KEY) -> tuple[int, int]:
    window = throttle.count_attempt(key, at, WINDOW)
    return window.attempts, window.started_at


def test_a_window_opens_at_the_first_attempt_and_lasts_window_seconds(throttle: LoginThrottle, t0: int) -> None:
    assert _count(throttle, t0) == (1, t0)
    assert _count(throttle, t0 + 10) == (2, t0)
    assert _count(throttle, t0 + WINDOW) == (3, t0)
    assert _count(throttle, t0 + WINDOW + 1) == (1, t0 + WINDOW + 1)
    assert _count(throttle, t0 + WINDOW + 2) == (2, t0 + WINDOW + 1)


def test_clear_forgets_the_key_and_the_next_attempt_opens_a_window(throttle: LoginThrottle, t0: int) -> None:
    for at in range(t0, t0 + 5):
        throttle.count_attempt(KEY, at, WINDOW)
    throttle.clear(KEY)
    throttle.clear(KEY)  # clearing nothing is fine
    assert _count(throttle, t0 + 7) == (1, t0 + 7)


def test_keys_count_apart(throttle: LoginThrottle, t0: int) -> None:
    keys: list[ThrottleKey] = [
        KEY,
        ThrottleKey("asha", "198.51.100.9"),
        ThrottleKey("ravi", "203.0.113.7"),
        ThrottleKey("asha", "unknown"),
        # Usernames are not validated at login: one that looks like a key must not share a count.
        ThrottleKey("asha#203.0.113.7", "unknown"),
        ThrottleKey("asha#203.0.113", "7"),
    ]
    for n, key in enumerate(keys, start=1):
        for _ in range(n):
            throttle.count_attempt(key, t0, WINDOW)
    for n, key in enumerate(keys, start=1):
        assert _count(throttle, t0 + 1, key) == (n + 1, t0), key
    throttle.clear(keys[1])
    assert _count(throttle, t0 + 2, KEY) == (3, t0)


def test_stored_row_expires_after_its_window(local_stack: str, t0: int) -> None:
    stage = local_stack
    bind(settings())
    DynamoLoginThrottle().count_attempt(KEY, t0, WINDOW)
    item = boto3.client("dynamodb").get_item(
        TableName=f"loan-crm-{stage}-login-attempts", Key={"username": {"S": "asha#203.0.113.7"}}
    )["Item"]
    assert int(item["expires_at"]["N"]) == t0 + WINDOW + 1
    assert int(item["window_started_at"]["N"]) == t0
