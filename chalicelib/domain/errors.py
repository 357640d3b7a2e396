"""Domain errors with stable codes.

The codes are the API's contract (docs/api.md). The domain knows nothing of HTTP: the single
code -> status table lives in ``chalicelib.api.errors``.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a client may see. ``code`` is stable; ``message`` is for humans."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(DomainError):
    """Malformed or ill-typed input. ``details`` lists ``{"field", "message"}`` items."""

    code = "VALIDATION_ERROR"


class PayloadTooLarge(DomainError):
    code = "PAYLOAD_TOO_LARGE"


class MethodNotAllowed(DomainError):
    """The path exists but is not served for this HTTP method; ``details.allowed`` lists those that are."""

    code = "METHOD_NOT_ALLOWED"


class UnsupportedMediaType(DomainError):
    """A request body declared as something other than ``application/json``."""

    code = "UNSUPPORTED_MEDIA_TYPE"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class FinancialFieldProtected(DomainError):
    code = "FINANCIAL_FIELD_PROTECTED"


class NotFound(DomainError):
    code = "NOT_FOUND"


class LoanExists(DomainError):
    code = "LOAN_EXISTS"

    @classmethod
    def of(cls, loan_id: str) -> LoanExists:
        return cls(f"loan {loan_id} already exists", {"loan_id": loan_id})


class Conflict(DomainError):
    """An optimistic-lock or state conflict the client may retry after re-reading."""

    code = "CONFLICT"


class InvalidSchedule(DomainError):
    code = "INVALID_SCHEDULE"


class RateLimited(DomainError):
    code = "RATE_LIMITED"


class Unavailable(DomainError):
    """A dependency (DynamoDB, SSM) did not answer; nothing was changed."""

    code = "UNAVAILABLE"


class AmountOutOfRange(DomainError):
    code = "AMOUNT_OUT_OF_RANGE"


class PaymentDateTooOld(DomainError):
    code = "PAYMENT_DATE_TOO_OLD"


class PaymentDateInFuture(DomainError):
    code = "PAYMENT_DATE_IN_FUTURE"


class LoanNotPayable(DomainError):
    code = "LOAN_NOT_PAYABLE"


class Overpayment(DomainError):
    code = "OVERPAYMENT"


class DuplicateUtr(DomainError):
    """The UTR was used before (reversed payments keep theirs); ``details.payment_id`` is the original."""

    code = "DUPLICATE_UTR"


class AlreadyReversed(DomainError):
    code = "ALREADY_REVERSED"


class IdempotencyKeyReused(DomainError):
    code = "IDEMPOTENCY_KEY_REUSED"


class RequestInProgress(DomainError):
    code = "REQUEST_IN_PROGRESS"
