"""Turn storage failures into domain errors at the adapter boundary, so the API can answer a clear
503 when DynamoDB is unreachable or throttling, and never a stack trace."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib.domain.errors import Unavailable

P = ParamSpec("P")
R = TypeVar("R")

_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "ResourceNotFoundException",
        # The same transaction (its client request token) is still being applied: the SDK sent it again
        # after losing the answer, before the first attempt finished. Its outcome is not known yet.
        "TransactionInProgressException",
    }
)


def is_unavailable(exc: BaseException) -> bool:
    """True when the failure says nothing about the request itself: network, throttling, missing table."""
    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    if isinstance(exc, PynamoDBException):
        # Look at the cause itself: PynamoDB's cause_response_code assumes the cause carries a response
        # dict, and a read timeout carries None.
        return exc.cause is not None and is_unavailable(exc.cause)
    return False


def conditional_check_failed(exc: BaseException) -> bool:
    """True when a conditional write was refused because its condition did not hold (the item is then
    unchanged), as opposed to a write whose answer was lost. Read from the cause itself:
    ``PynamoDBException.cause_response_code`` raises AttributeError for a cause without a response (a
    read timeout), which turned a lost answer into an internal error instead of ``Unavailable``."""
    cause = exc.cause if isinstance(exc, PynamoDBException) else exc
    response = getattr(cause, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def unavailable() -> Unavailable:
    """What a caller is told when the database did not answer (or kept refusing) and nothing changed."""
    return Unavailable("the database is not answering; nothing was changed, try again")


def storage_call(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable() from exc
            raise

    return wrapper
