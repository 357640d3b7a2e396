"""Batched reads by key (BatchGetItem): the one way the adapters make them.

DynamoDB answers a batch read with what it could read and hands the rest back as unprocessed keys,
when a partition is throttled or the answer would pass 16 MB. PynamoDB's ``Model.batch_get`` sends
those straight back, again and again, with no pause and no limit: against a throttled table, a tight
loop of requests that are refused in turn, which is what AWS asks clients not to do. Here the keys
handed back are sent again after the pause of ``retry.UNPROCESSED_KEYS``, and once its attempts are
spent the read fails as unavailable (503), as a throttled single read does once botocore gives up.

It builds each request as PynamoDB's ``batch_get`` does, from the same two class methods
(``_serialize_keys`` for the key values, ``_batch_get_page`` for one request and what it handed back).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pynamodb.models import Model

from chalicelib.adapters.dynamodb.errors import unavailable
from chalicelib.retry import UNPROCESSED_KEYS, retry

M = TypeVar("M", bound=Model)

BATCH_GET_LIMIT = 100
"""Keys per request: DynamoDB's limit for one BatchGetItem."""


class _KeysHandedBack(Exception):
    """Some keys of the request came back unread; the attempt is made again for those only."""


def batch_get(
    model: type[M],
    keys: Iterable[Any],
    consistent_read: bool = False,
    attributes_to_get: Sequence[str] | None = None,
) -> list[M]:
    """The items stored at ``keys`` (hash key values, or ``(hash, range)`` pairs), in no particular
    order; a key with no item is left out. Repeated keys are read once."""
    hash_name = model._hash_key_attribute().attr_name
    range_attribute = model._range_key_attribute()
    wanted: list[dict[str, Any]] = []
    for key in dict.fromkeys(keys):
        if range_attribute is None:
            hash_value, _ = model._serialize_keys(key)
            wanted.append({hash_name: hash_value})
        else:
            hash_value, range_value = model._serialize_keys(*key)
            wanted.append({hash_name: hash_value, range_attribute.attr_name: range_value})
    found: list[M] = []
    for start in range(0, len(wanted), BATCH_GET_LIMIT):
        pending = wanted[start : start + BATCH_GET_LIMIT]

        def read_pending() -> None:
            nonlocal pending
            items, handed_back = model._batch_get_page(
                pending, consistent_read=consistent_read or None, attributes_to_get=attributes_to_get
            )
            found.extend(model.from_raw_data(item) for item in items or ())
            pending = handed_back or []
            if pending:
                raise _KeysHandedBack

        retry(UNPROCESSED_KEYS, read_pending, _KeysHandedBack, unavailable)
    return found
