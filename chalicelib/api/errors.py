"""The one table from domain error codes to HTTP, and the error body every client sees (docs/api.md)."""

from __future__ import annotations

import json
from typing import Any

from chalice.app import Response

from chalicelib.domain.errors import (
    AlreadyReversed,
    AmountOutOfRange,
    Conflict,
    DomainError,
    DuplicateUtr,
    FinancialFieldProtected,
    Forbidden,
    IdempotencyKeyReused,
    InvalidSchedule,
    LoanExists,
    LoanNotPayable,
    MethodNotAllowed,
    NotFound,
    Overpayment,
    PayloadTooLarge,
    PaymentDateInFuture,
    PaymentDateTooOld,
    RateLimited,
    RequestInProgress,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)

STATUS_BY_ERROR: dict[type[DomainError], int] = {
    ValidationFailed: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    FinancialFieldProtected: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    LoanExists: 409,
    Conflict: 409,
    DuplicateUtr: 409,
    AlreadyReversed: 409,
    RequestInProgress: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidSchedule: 422,
    AmountOutOfRange: 422,
    PaymentDateTooOld: 422,
    PaymentDateInFuture: 422,
    LoanNotPayable: 422,
    Overpayment: 422,
    IdempotencyKeyReused: 422,
    RateLimited: 429,
    Unavailable: 503,
}


def status_for(error: DomainError) -> int:
    return status_for_kind(type(error))


def status_for_kind(kind: type[DomainError]) -> int:
    for cls in kind.__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    # allow_nan=False: NaN and Infinity are not JSON; sending them would break every client's parser,
    # so a value like that is a server bug (a 500 with a request id), never an invalid answer.
    return Response(
        body=json.dumps(body, separators=(",", ":"), allow_nan=False),
        status_code=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def error_response(
    error: DomainError, request_id: str, status: int | None = None, headers: dict[str, str] | None = None
) -> Response:
    status = status or status_for(error)
    headers = {**(headers or {}), "X-Request-Id": request_id}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="loan-crm"'
    if isinstance(error, RateLimited) and isinstance(error.details, dict):
        headers["Retry-After"] = str(error.details.get("retry_after_seconds", 60))
    body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    return json_response(status, body, headers)


def unknown_path_response(request_id: str) -> Response:
    """The answer to a path nothing is served at: the app's catch-all routes' (chalicelib/api/http.py)
    and the local server's, the same as API Gateway's gateway response for one (infra/template.json)."""
    return error_response(NotFound("nothing is served at this path"), request_id)


def internal_error_response(request_id: str) -> Response:
    body = {
        "error": {
            "code": "INTERNAL_ERROR",
            "message": "an unexpected error occurred; nothing is shown here, quote the request id to support",
            "details": {"request_id": request_id},
        }
    }
    return json_response(500, body, {"X-Request-Id": request_id})
