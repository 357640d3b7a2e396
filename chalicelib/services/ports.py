"""What the services need from storage, as protocols. DynamoDB implementations live in
``chalicelib.adapters.dynamodb``; in-memory fakes for fast tests live in ``tests/fakes.py``; one
contract suite holds both to the same behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.flags import FlagName, FlagValue
from chalicelib.domain.loan import Loan
from chalicelib.domain.payment import Payment

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


@dataclass(frozen=True)
class LoanFilter:
    bucket: str | None = None
    classification: str | None = None
    status: str | None = None
    collector_id: str | None = None


@dataclass(frozen=True)
class AuditFilter:
    entity_id: str | None = None
    actor: str | None = None
    action: str | None = None
    from_day: str | None = None
    """Inclusive IST date ``YYYY-MM-DD``."""
    to_day: str | None = None
    """Inclusive IST date ``YYYY-MM-DD``."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    password_hash: str
    active: bool = True


class Metrics(Protocol):
    def count(self, name: str, **dimensions: str) -> None:
        """Count one occurrence of a business event (alarms watch some of these)."""
        ...


class Flags(Protocol):
    def read(self, name: FlagName, fresh: bool = False) -> FlagValue:
        """The flag's effective value; ``fresh`` bypasses the cache (jobs, at the start of a run)."""
        ...

    def all(self) -> list[FlagValue]: ...


class LoanRepository(Protocol):
    def get(self, loan_id: str) -> Loan | None: ...

    def create(self, loan: Loan, audit: AuditEntry) -> Loan:
        """Store a new loan and its audit entry atomically; LoanExists if the id is taken."""
        ...

    def update(self, loan: Loan, audit: AuditEntry) -> Loan:
        """Replace the loan if its stored version is still ``loan.version``; Conflict otherwise.
        The audit entry is written in the same transaction. Returns the loan with its new version."""
        ...

    def list(self, filters: LoanFilter, limit: int, cursor: str | None) -> Page[Loan]: ...


class AuditLog(Protocol):
    def append(self, entry: AuditEntry) -> None: ...

    def list(self, filters: AuditFilter, limit: int, cursor: str | None) -> Page[AuditEntry]:
        """Newest first."""
        ...


class UserStore(Protocol):
    def get(self, username: str) -> User | None: ...

    def put(self, user: User) -> None: ...


@dataclass(frozen=True)
class ThrottleKey:
    """Whose login attempts count together: one username tried from one source."""

    username: str
    source: str
    """A normalised source address, or ``unknown`` (see ``services.auth.throttle_source``)."""


@dataclass(frozen=True)
class LoginWindow:
    """The throttle window one attempt was counted in."""

    attempts: int
    """Attempts counted in this window so far, the one just counted included."""
    started_at: int
    """Epoch seconds of the window's first attempt; the window lasts ``window_seconds`` from there."""


class LoginThrottle(Protocol):
    def count_attempt(self, key: ThrottleKey, now: int, window_seconds: int) -> LoginWindow:
        """Count one attempt atomically, before its password is checked: into the window that started
        at most ``window_seconds`` before ``now``, or into a new window opened at ``now``. Concurrent
        attempts in one window each get a different count, so a limit on the count is exact."""
        ...

    def clear(self, key: ThrottleKey) -> None:
        """Forget ``key``'s attempts (after a successful login)."""
        ...


class UtrTaken(Exception):
    """The UTR claim already exists: some earlier payment owns this UTR."""

    def __init__(self, utr: str) -> None:
        super().__init__(f"UTR {utr} already claimed")
        self.utr = utr


class PaymentRepository(Protocol):
    def get(self, payment_id: str) -> Payment | None: ...

    def payment_id_for_utr(self, utr: str) -> str | None: ...

    def post(self, payment: Payment, loan: Loan, audits: Sequence[AuditEntry]) -> Loan:
        """Store payment, UTR claim, loan (version unchanged, still ACTIVE) and audit entries atomically.
        UtrTaken if the UTR was used before; Conflict if the loan changed meanwhile."""
        ...

    def reverse(self, payment: Payment, loan: Loan, audits: Sequence[AuditEntry]) -> Loan:
        """Store the reversed payment (only if still POSTED), the loan and the audit entries atomically.
        AlreadyReversed or Conflict otherwise."""
        ...

    def list_for_loan(self, loan_id: str, limit: int, cursor: str | None) -> Page[Payment]:
        """Newest first."""
        ...
