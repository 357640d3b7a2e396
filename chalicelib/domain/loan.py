"""The loan aggregate: identity, borrower, schedule and the delinquency derived from it.

Derived figures (outstanding, overdue, dpd, bucket, classification) are stored with the loan so that
lists and indexes can filter on them, but they are only ever produced by :func:`reassess` from the
schedule and the pure delinquency rules — never taken from a client.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace
from enum import StrEnum

from chalicelib.domain.delinquency import Delinquency, assess
from chalicelib.domain.schedule import Instalment

LOAN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class LoanStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"
    WRITTEN_OFF = "WRITTEN_OFF"


@dataclass(frozen=True, slots=True)
class Borrower:
    name: str
    phone: str
    email: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Loan:
    loan_id: str
    borrower: Borrower
    status: LoanStatus
    principal_paise: int
    disbursement_date: dt.date
    schedule: tuple[Instalment, ...]
    delinquency: Delinquency
    annual_rate_bps: int | None = None
    """None for imported schedules: the lender's own maths, which this system does not re-derive."""
    collector_id: str | None = None
    branch: str | None = None
    notes: str | None = None
    legal_escalated: bool = False
    legal_escalated_on: dt.date | None = None
    created_at: str = ""
    updated_at: str = ""
    version: int = 0
    """Optimistic-lock counter; 0 until first stored."""

    @property
    def outstanding_principal_paise(self) -> int:
        return self.principal_paise - sum(i.paid_principal_paise for i in self.schedule)

    @property
    def tenure_months(self) -> int:
        return len(self.schedule)


def reassess(loan: Loan, business_date: dt.date) -> Loan:
    """Recompute delinquency for ``business_date`` with NPA stickiness carried from the loan's past."""
    previous = loan.delinquency
    delinquency = assess(
        loan.schedule,
        business_date,
        previous_classification=previous.classification,
        previous_npa_since=previous.npa_since,
    )
    return replace(loan, delinquency=delinquency)


def initial_delinquency(schedule: tuple[Instalment, ...], business_date: dt.date) -> Delinquency:
    """Delinquency of a loan that has no history yet (an imported loan may be overdue from day one)."""
    return assess(schedule, business_date, previous_classification=None, previous_npa_since=None)
