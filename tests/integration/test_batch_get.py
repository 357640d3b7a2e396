"""Batched reads when DynamoDB hands keys back unread, and batched writes when it hands puts back
undone (chalicelib/adapters/dynamodb/batch.py): what is handed back is sent again after a growing
pause, every item is read or written once, and a read or write that keeps being handed back fails as
unavailable instead of looping.

moto never hands anything back, so botocore hooks on the table's client do what a throttled partition
does: they move some of a read's items into ``UnprocessedKeys``, or take some puts out of a write
before it is sent and answer them in ``UnprocessedItems``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from chalicelib import retry
from chalicelib.adapters.dynamodb.batch import (
    BATCH_GET_LIMIT,
    BATCH_WRITE_LIMIT,
    batch_get,
    batch_put,
    client_sender,
    read_by_keys,
)
from chalicelib.adapters.dynamodb.models import ReminderModel, UtrClaimModel
from chalicelib.domain.errors import Unavailable
from chalicelib.wiring import services
from tests.dynamodb_local.faults import hooked

CLAIMS = 250


class HandBack:
    """For the first ``times`` answers, hold back ``count`` of the items read and hand their keys back."""

    def __init__(self, times: int, count: int) -> None:
        self.times, self.count = times, count
        self.requests: list[int] = []

    def __call__(self, params: dict[str, Any], **_kwargs: Any) -> None:
        self.requests.append(sum(len(table["Keys"]) for table in params["RequestItems"].values()))

    def after(self, parsed: dict[str, Any], **_kwargs: Any) -> None:
        if len(self.requests) > self.times:
            return
        for table, items in parsed["Responses"].items():
            held, parsed["Responses"][table] = items[: self.count], items[self.count :]
            if held:
                parsed.setdefault("UnprocessedKeys", {})[table] = {"Keys": [{"utr": i["utr"]} for i in held]}


@pytest.fixture
def claims(moto_stack: str) -> list[str]:
    services()  # binds the models to the stage's tables
    utrs = [f"UTR{n:05d}" for n in range(CLAIMS)]
    with UtrClaimModel.batch_write() as batch:
        for utr in utrs:
            batch.save(UtrClaimModel(utr, payment_id=f"P-{utr}", loan_id="L-1", claimed_at="2026-12-04"))
    return utrs


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    slept: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    yield slept


@contextmanager
def handing_back(hand_back: HandBack) -> Iterator[None]:
    with (
        hooked(UtrClaimModel, "before-parameter-build.dynamodb.BatchGetItem", hand_back),
        hooked(UtrClaimModel, "after-call.dynamodb.BatchGetItem", hand_back.after),
    ):
        yield


def test_keys_handed_back_are_asked_for_again_after_a_pause(claims: list[str], pauses: list[float]) -> None:
    hand_back = HandBack(times=3, count=30)
    with handing_back(hand_back):
        found = batch_get(UtrClaimModel, [*claims, claims[0]], consistent_read=True)

    assert sorted(c.utr for c in found) == claims  # each once, the repeated key read once
    assert {c.payment_id for c in found} == {f"P-{utr}" for utr in claims}
    # Each request is the keys handed back first, then new ones up to 100: 70 read in each of the first
    # three, and the 40 left in the fourth.
    assert hand_back.requests == [BATCH_GET_LIMIT] * 3 + [CLAIMS - 3 * 70]
    policy = retry.UNPROCESSED_KEYS
    assert len(pauses) == 3
    for n, pause in enumerate(pauses):
        assert 0 <= pause <= min(policy.cap_seconds, policy.base_seconds * 2**n)


def test_a_read_handed_back_every_time_fails_as_unavailable(claims: list[str], pauses: list[float]) -> None:
    hand_back = HandBack(times=1_000, count=1)
    with handing_back(hand_back), pytest.raises(Unavailable, match="the database is not answering"):
        batch_get(UtrClaimModel, claims, consistent_read=True)

    # One budget for the whole read, not one per hundred keys: it gives up within its time.
    attempts = retry.UNPROCESSED_KEYS.attempts
    # 100 (one back), 1 + 99 (one back), 1 + 51 (one back), then that one key alone until it gives up.
    assert hand_back.requests == [BATCH_GET_LIMIT, BATCH_GET_LIMIT, CLAIMS - 2 * 99] + [1] * (attempts - 3)
    assert len(pauses) == attempts - 1


def test_a_raw_client_read_over_tables_gets_the_same_pauses(claims: list[str], pauses: list[float]) -> None:
    hand_back = HandBack(times=2, count=10)
    table = UtrClaimModel.Meta.table_name
    client = UtrClaimModel._get_connection().connection.client
    with handing_back(hand_back):
        found = read_by_keys(client_sender(client), [(table, {"utr": {"S": utr}}) for utr in claims[:150]])

    assert sorted(item["utr"]["S"] for _, item in found) == claims[:150]
    assert {name for name, _ in found} == {table}
    # 100 (10 back), 10 + 50 (10 back), 10.
    assert hand_back.requests == [BATCH_GET_LIMIT, 60, 10]
    assert len(pauses) == 2


def test_a_key_of_a_hash_and_range_table_must_be_a_pair(moto_stack: str) -> None:
    services()
    for bad in ("ab", ("only-one",), ("a", "b", "c")):
        with pytest.raises(ValueError, match="pairs"):
            batch_get(ReminderModel, [bad])


def test_no_keys_no_request(moto_stack: str) -> None:
    services()
    hand_back = HandBack(times=0, count=0)
    with handing_back(hand_back):
        assert batch_get(UtrClaimModel, []) == []
    assert hand_back.requests == []


class PutsHandedBack:
    """For the first ``times`` writes, take the last ``count`` puts out of the request before it is sent
    and answer them as unprocessed, as DynamoDB does with the puts a throttled partition refused."""

    def __init__(self, times: int, count: int) -> None:
        self.times, self.count = times, count
        self.requests: list[int] = []
        self._held: dict[str, list[Any]] = {}

    def before(self, params: dict[str, Any], **_kwargs: Any) -> None:
        self.requests.append(sum(len(requests) for requests in params["RequestItems"].values()))
        self._held = {}
        if len(self.requests) > self.times:
            return
        for table, requests in params["RequestItems"].items():
            self._held[table], params["RequestItems"][table] = requests[-self.count :], requests[: -self.count]

    def after(self, parsed: dict[str, Any], **_kwargs: Any) -> None:
        if self._held:
            parsed["UnprocessedItems"] = self._held


@contextmanager
def handing_puts_back(hand_back: PutsHandedBack) -> Iterator[None]:
    with (
        hooked(UtrClaimModel, "before-parameter-build.dynamodb.BatchWriteItem", hand_back.before),
        hooked(UtrClaimModel, "after-call.dynamodb.BatchWriteItem", hand_back.after),
    ):
        yield


def _claim(n: int) -> UtrClaimModel:
    return UtrClaimModel(f"NEW{n:05d}", payment_id=f"P-NEW{n:05d}", loan_id="L-2", claimed_at="2026-12-05")


def test_puts_handed_back_are_sent_again_after_a_pause_and_land_once(moto_stack: str, pauses: list[float]) -> None:
    services()
    hand_back = PutsHandedBack(times=2, count=5)
    with handing_puts_back(hand_back):
        batch_put([_claim(n) for n in range(60)])

    stored = {c.utr: c.payment_id for c in UtrClaimModel.scan()}
    assert stored == {f"NEW{n:05d}": f"P-NEW{n:05d}" for n in range(60)}
    # 25 (5 back), 5 + 20 (5 back), 5 + 15: the puts handed back go first.
    assert hand_back.requests == [BATCH_WRITE_LIMIT, BATCH_WRITE_LIMIT, 5 + 15]
    policy = retry.UNPROCESSED_KEYS
    assert len(pauses) == 2
    for n, pause in enumerate(pauses):
        assert 0 <= pause <= min(policy.cap_seconds, policy.base_seconds * 2**n)


def test_a_write_handed_back_every_time_fails_as_unavailable(moto_stack: str, pauses: list[float]) -> None:
    services()
    hand_back = PutsHandedBack(times=1_000, count=1)
    with handing_puts_back(hand_back), pytest.raises(Unavailable, match="the database is not answering"):
        batch_put([_claim(n) for n in range(30)])

    attempts = retry.UNPROCESSED_KEYS.attempts
    # 25 (one back), 1 + 5 (one back), then that one put alone until it gives up.
    assert hand_back.requests == [BATCH_WRITE_LIMIT, 6] + [1] * (attempts - 2)
    assert len(pauses) == attempts - 1
    # A batch write is not all-or-nothing: the 24 and the 5 that went through stay.
    assert UtrClaimModel.count() == 29


def test_no_items_no_write(moto_stack: str) -> None:
    services()
    hand_back = PutsHandedBack(times=0, count=0)
    with handing_puts_back(hand_back):
        batch_put([])
    assert hand_back.requests == []
