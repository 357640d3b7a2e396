"""A refused DynamoDB transaction names the entries whose condition failed
(``adapters.dynamodb.transact``), on moto and on DynamoDB Local; nothing of it is written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynamodb.exceptions import DoesNotExist

from chalicelib.adapters.dynamodb.models import AggregateModel, UtrClaimModel, bind
from chalicelib.adapters.dynamodb.transact import Entry, TransactionRefused, audit_entries, save_all
from chalicelib.config import settings


@pytest.fixture(params=["moto", pytest.param("dynamodb_local", marks=pytest.mark.dynamodb_local)])
def tables(request: pytest.FixtureRequest) -> Iterator[None]:
    request.getfixturevalue("moto_stack" if request.param == "moto" else "local_stack")
    bind(settings())
    yield


def claim(utr: str) -> UtrClaimModel:
    return UtrClaimModel(utr, payment_id=f"P-{utr}", loan_id="L1", claimed_at="2025-06-15T11:30:00+05:30")


def claim_entry(name: str, utr: str) -> Entry:
    return Entry(name, claim(utr), UtrClaimModel.utr.does_not_exist())


def stored(utr: str) -> bool:
    try:
        UtrClaimModel.get(utr, consistent_read=True)
    except DoesNotExist:
        return False
    return True


def test_a_failed_condition_is_reported_by_the_entry_name(tables: None) -> None:
    claim("UTRTAKEN1").save()
    entries = [
        claim_entry("first_claim", "UTRFREE01"),
        claim_entry("utr_claim", "UTRTAKEN1"),
        Entry("free", claim("UTRFREE02")),
    ]

    with pytest.raises(TransactionRefused) as refused:
        save_all(entries)

    assert refused.value.failed == frozenset({"utr_claim"})
    assert not refused.value.contended
    assert "utr_claim" in str(refused.value)
    assert not stored("UTRFREE01") and not stored("UTRFREE02"), "nothing of a refused transaction is written"


def test_every_entry_whose_condition_failed_is_named(tables: None) -> None:
    claim("UTRTAKEN1").save()
    claim("UTRTAKEN2").save()
    entries = [claim_entry("a", "UTRTAKEN1"), claim_entry("b", "UTRFREE01"), claim_entry("c", "UTRTAKEN2")]

    with pytest.raises(TransactionRefused) as refused:
        save_all(entries)

    # DynamoDB reports every item's reason; a backend that stops at the first failure still names one.
    print("FAILED", sorted(refused.value.failed))
    assert refused.value.failed in (frozenset({"a", "c"}), frozenset({"a"}))
    assert not stored("UTRFREE01")


def test_a_transaction_whose_conditions_hold_writes_every_entry(tables: None) -> None:
    save_all([claim_entry("utr_claim", "UTRFREE01"), *audit_entries([claim("UTRFREE02")])])
    assert stored("UTRFREE01") and stored("UTRFREE02")


def test_entry_names_must_be_distinct(tables: None) -> None:
    with pytest.raises(ValueError, match="repeat"):
        save_all([claim_entry("loan", "UTRFREE01"), claim_entry("loan", "UTRFREE02")])
    assert not stored("UTRFREE01")


def test_audit_entries_are_named_by_their_place() -> None:
    entries = audit_entries([claim("UTRA00001"), claim("UTRA00002")])
    assert [(e.name, e.condition) for e in entries] == [("audit:0", None), ("audit:1", None)]


def counter_entry(name: str, pk: str, adds: int) -> Entry:
    return Entry(name, AggregateModel(pk), actions=[AggregateModel.loans_total.add(adds)])


def counter(pk: str) -> int | None:
    try:
        return int(AggregateModel.get(pk, consistent_read=True).loans_total)
    except DoesNotExist:
        return None


def test_updates_given_before_puts_still_pair_with_their_own_reasons(tables: None) -> None:
    """PynamoDB sends puts before updates whatever order they were added in; a refusal must still name
    the put whose condition failed, and the counters' additions must be undone with it."""
    claim("UTRTAKEN1").save()
    entries = [
        counter_entry("aggregate:a", "counters#book#00", 5),
        claim_entry("utr_claim", "UTRTAKEN1"),
        counter_entry("aggregate:b", "counters#book#01", 7),
        claim_entry("other", "UTRFREE01"),
    ]

    with pytest.raises(TransactionRefused) as refused:
        save_all(entries)

    assert refused.value.failed == frozenset({"utr_claim"})
    assert counter("counters#book#00") is None and counter("counters#book#01") is None
    assert not stored("UTRFREE01")

    save_all([counter_entry("aggregate:a", "counters#book#00", 5), claim_entry("utr_claim", "UTRFREE02")])
    save_all([counter_entry("aggregate:a", "counters#book#00", -2)])
    assert counter("counters#book#00") == 3, "additions add up, and create the item on first use"


def _capture(sent: list[dict[str, object]]) -> object:
    def keep(params: dict[str, object], **_: object) -> None:
        sent.append(params)

    return keep


def test_each_transaction_carries_a_request_token_of_its_own(tables: None) -> None:
    """So that the SDK's own resend of a transaction whose answer was lost is answered with the first
    outcome (see the next test) rather than run twice."""
    from chalicelib.adapters.dynamodb.models import LoanModel
    from tests.dynamodb_local.faults import hooked

    sent: list[dict[str, object]] = []
    with hooked(LoanModel, "provide-client-params.dynamodb.TransactWriteItems", _capture(sent)):
        save_all([claim_entry("a", "UTRTOKEN1")])
        save_all([claim_entry("b", "UTRTOKEN2")])
    tokens = [params.get("ClientRequestToken") for params in sent]
    assert len(tokens) == 2 and all(isinstance(t, str) and 0 < len(t) <= 36 for t in tokens)
    assert tokens[0] != tokens[1]


@pytest.mark.dynamodb_local
def test_a_transaction_sent_again_with_its_token_is_answered_not_run_twice(local_stack: str) -> None:
    """What the token buys, on the real engine: the same request sent again after it committed succeeds
    without applying again, where without the token its own condition would now refuse it."""
    import boto3

    from chalicelib.adapters.dynamodb.models import LoanModel
    from tests.dynamodb_local.faults import hooked

    bind(settings())
    sent: list[dict[str, object]] = []
    with hooked(LoanModel, "provide-client-params.dynamodb.TransactWriteItems", _capture(sent)):
        save_all(
            [
                claim_entry("claim", "UTRAGAIN1"),
                Entry("counter", AggregateModel("pk-again"), actions=[AggregateModel.writes.add(1)]),
            ]
        )
    [params] = sent
    client = boto3.client("dynamodb")

    client.transact_write_items(**params)  # type: ignore[arg-type]

    assert AggregateModel.get("pk-again", consistent_read=True).writes == 1
    without_token = {k: v for k, v in params.items() if k != "ClientRequestToken"}
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(**without_token)  # type: ignore[arg-type]


def test_a_cancellation_for_throttling_is_the_database_not_answering(tables: None) -> None:
    """DynamoDB cancels a transaction with reason ``ThrottlingError`` when a partition it touches is
    throttled; the SDK does not retry a cancelled transaction, and nothing was written."""
    from botocore.exceptions import ClientError

    from chalicelib.adapters.dynamodb.models import LoanModel
    from chalicelib.domain.errors import Unavailable
    from tests.dynamodb_local.faults import hooked

    def throttled(**_: object) -> None:
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                "CancellationReasons": [{"Code": "ThrottlingError", "Message": "Throughput exceeds the limit"}],
            },
            "TransactWriteItems",
        )

    with hooked(LoanModel, "before-call.dynamodb.TransactWriteItems", throttled), pytest.raises(Unavailable):
        save_all([claim_entry("claim", "UTRTHROTTLED")])
    assert not stored("UTRTHROTTLED")
