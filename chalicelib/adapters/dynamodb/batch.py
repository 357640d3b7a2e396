"""Batched reads by key (BatchGetItem) and batched writes (BatchWriteItem): the one way the product
makes them, and the ops tools make its reads.

DynamoDB answers a batch read with what it could read and hands the rest back as unprocessed keys,
when a partition is throttled or the answer would pass 16 MB; a batch write likewise hands back the
requests it did not carry out. botocore does not retry such an answer (it succeeded), and PynamoDB's
``Model.batch_get`` and ``batch_write`` send the rest straight back, again and again, with no pause:
against a throttled table, a tight loop of requests that are refused in turn, which is what AWS asks
clients not to do. Here what is handed back is sent again after the pause of
``retry.UNPROCESSED_KEYS``; its attempts are one budget for the whole read or write, however many
requests it takes, and once they are spent it fails as unavailable (503).

:func:`batch_get` reads one model's items; :func:`read_by_keys` is the same loop for a caller that
builds its own requests, such as :func:`client_sender`'s over a raw client and several tables.
:func:`write_requests` writes over a raw client (the restore tool's), :func:`batch_put` one model's
items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from pynamodb.models import Model

from chalicelib.adapters.dynamodb.errors import unavailable
from chalicelib.retry import UNPROCESSED_KEYS, retry

K = TypeVar("K")
T = TypeVar("T")
M = TypeVar("M", bound=Model)

BATCH_GET_LIMIT = 100
"""Keys per request: DynamoDB's limit for one BatchGetItem."""
BATCH_WRITE_LIMIT = 25
"""Requests per request: DynamoDB's limit for one BatchWriteItem."""


class _KeysHandedBack(Exception):
    """Some keys of a request came back unread; the next attempt starts with them."""


def read_by_keys(
    send: Callable[[list[K]], tuple[list[T], list[K]]], keys: Sequence[K], limit: int = BATCH_GET_LIMIT
) -> list[T]:
    """Everything ``send`` reads for ``keys``, sent ``limit`` at a time. ``send`` makes one request and
    answers what it read and the keys handed back; those are sent again, first, after a pause. (A batch
    write is the same loop with nothing read: :func:`write_requests`.)"""
    pending = list(keys)
    found: list[T] = []

    def read_pending() -> None:
        nonlocal pending
        while pending:
            items, handed_back = send(pending[:limit])
            found.extend(items)
            pending = [*handed_back, *pending[limit:]]
            if handed_back:
                raise _KeysHandedBack

    retry(UNPROCESSED_KEYS, read_pending, _KeysHandedBack, unavailable)
    return found


WriteRequest = dict[str, Any]
"""One request of a BatchWriteItem as DynamoDB spells it: ``{"PutRequest": {"Item": ...}}`` or
``{"DeleteRequest": {"Key": ...}}``."""


def write_requests(client: Any, table: str, requests: Sequence[WriteRequest]) -> None:
    """Carry out every request on ``table`` over a botocore DynamoDB client, ``BATCH_WRITE_LIMIT`` to a
    BatchWriteItem; the requests DynamoDB hands back unprocessed are sent again, first, after a pause,
    as :func:`read_by_keys` does with keys. Unlike a transaction, the requests are not all-or-nothing: a
    failure leaves some carried out (each is a whole put or delete, so sending them all again is safe)."""

    def send(chunk: list[WriteRequest]) -> tuple[list[None], list[WriteRequest]]:
        answer = client.batch_write_item(RequestItems={table: chunk})
        return [], (answer.get("UnprocessedItems") or {}).get(table, [])

    read_by_keys(send, requests, BATCH_WRITE_LIMIT)


def batch_put(items: Sequence[Model]) -> None:
    """Put these items, all of one model, through :func:`write_requests` on the model's table."""
    if not items:
        return
    model = type(items[0])
    client = model._get_connection().connection.client
    write_requests(client, model.Meta.table_name, [{"PutRequest": {"Item": item.serialize()}} for item in items])


TableKey = tuple[str, dict[str, Any]]
"""A table's name and a key of it as DynamoDB spells it (``{"loan_id": {"S": "L-1"}}``)."""


def client_sender(client: Any) -> Callable[[list[TableKey]], tuple[list[TableKey], list[TableKey]]]:
    """A ``send`` for :func:`read_by_keys` over a botocore DynamoDB client: consistent reads of
    (table, key) pairs, which may name several tables; it answers (table, item) pairs."""

    def send(chunk: list[TableKey]) -> tuple[list[TableKey], list[TableKey]]:
        request: dict[str, dict[str, Any]] = {}
        for table, key in chunk:
            request.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
        answer = client.batch_get_item(RequestItems=request)
        items = [(table, item) for table, found in answer.get("Responses", {}).items() for item in found]
        left = answer.get("UnprocessedKeys") or {}
        return items, [(table, key) for table, unread in left.items() for key in unread["Keys"]]

    return send


def batch_get(
    model: type[M],
    keys: Iterable[Any],
    consistent_read: bool = False,
    attributes_to_get: Sequence[str] | None = None,
) -> list[M]:
    """The items stored at ``keys`` (hash key values, or ``(hash, range)`` pairs), in no particular
    order; a key with no item is left out. Repeated keys are read once. Each request is made as
    PynamoDB's own ``batch_get`` makes it, with the same class methods."""
    hash_name = model._hash_key_attribute().attr_name
    range_attribute = model._range_key_attribute()
    wanted: list[dict[str, Any]] = []
    for key in dict.fromkeys(keys):
        if range_attribute is None:
            hash_value, _ = model._serialize_keys(key)
            wanted.append({hash_name: hash_value})
            continue
        if isinstance(key, str) or len(key) != 2:
            raise ValueError(f"{model.__name__} keys are (hash, range) pairs, not {key!r}")
        hash_value, range_value = model._serialize_keys(*key)
        wanted.append({hash_name: hash_value, range_attribute.attr_name: range_value})

    def send(chunk: list[dict[str, Any]]) -> tuple[list[M], list[dict[str, Any]]]:
        items, handed_back = model._batch_get_page(
            chunk, consistent_read=consistent_read or None, attributes_to_get=attributes_to_get
        )
        return [model.from_raw_data(item) for item in items or ()], handed_back or []

    return read_by_keys(send, wanted)
