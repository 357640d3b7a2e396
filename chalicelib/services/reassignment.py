"""Moving loans from one collector to another in bulk: a collector's offboarding, or a manager's
reassignment of a list of loans (docs/rules.md, "Users and offboarding").

Interface fixed for the users API; the implementation lands with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chalicelib.services.context import RequestContext
from chalicelib.services.loans import LoanService


@dataclass(frozen=True)
class ReassignmentProgress:
    moved: int
    """Loans this call moved (each audited as LOAN_ASSIGNED)."""
    already: int
    """Loans that were with the target collector already (a retried or resumed request)."""
    remaining: int
    """Loans still to move when the call stopped for time; 0 when it is done."""

    @property
    def done(self) -> bool:
        return self.remaining == 0


@dataclass
class ReassignmentService:
    loans: LoanService

    def has_active_loans(self, collector_id: str) -> bool:
        raise NotImplementedError

    def move_collector_loans(
        self, ctx: RequestContext, from_collector: str, to_collector: str, time_left_ms: Callable[[], int] | None
    ) -> ReassignmentProgress:
        raise NotImplementedError

    def move_loans(
        self, ctx: RequestContext, loan_ids: Sequence[str], to_collector: str, time_left_ms: Callable[[], int] | None
    ) -> ReassignmentProgress:
        raise NotImplementedError
