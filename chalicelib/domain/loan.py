"""The loan aggregate: identity, borrower, schedule and the delinquency derived from it.

Derived figures (outstanding, overdue, dpd, bucket, classification) are stored with the loan so that
lists and indexes can filter on them, but they are only ever produced from the schedule by the pure
delinquency rules (``delinquency.assess_after``: :func:`reassess`, :func:`initial_delinquency`, and
the ledger's replay after a payment or reversal) — never taken from a client.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace
from enum import Enum, StrEnum

from chalicelib.domain.delinquency import (
    BAND_STARTS,
    Delinquency,
    assess_after,
    date_dpd_reaches,
    dpd_from,
    oldest_unpaid_due_date,
)
from chalicelib.domain.ledger import LedgerEntry
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
    last_job_date: dt.date | None = None
    """Business date of the last day-end run that wrote this loan."""
    payments: tuple[LedgerEntry, ...] = ()
    """The standing (not reversed) payments, as the replay of the schedule needs them
    (``domain.ledger``): the paid amounts on ``schedule`` are always their replay."""
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
    """Recompute delinquency for ``business_date`` with NPA stickiness carried from the loan's past
    (``delinquency.assess_after``, the step a payment's replay also takes)."""
    return replace(loan, delinquency=assess_after(loan.delinquency, loan.schedule, business_date))


def delinquency_snapshot(loan: Loan) -> dict[str, str | int | None]:
    """The delinquency fields as the audit trail records them before and after a change.

    Every write that changes a stored loan's dpd, bucket, classification or ``npa_since`` writes a
    DELINQUENCY_CHANGED entry from the stored snapshot to the new one, in the same transaction, so a
    loan's entries chain (each ``before`` equals the previous ``after``) and end at the stored loan.
    """
    d = loan.delinquency
    return {
        "dpd": d.dpd,
        "bucket": d.bucket.value,
        "classification": d.classification.value,
        "npa_since": d.npa_since.isoformat() if d.npa_since else None,
        "dpd_as_of": d.as_of.isoformat(),
    }


def delinquency_changed(before: Loan, after: Loan) -> bool:
    """True when a write from ``before`` to ``after`` needs a DELINQUENCY_CHANGED entry (see
    :func:`delinquency_snapshot`); the as-of date alone moving is not a change."""
    b, a = before.delinquency, after.delinquency
    return (b.dpd, b.bucket, b.classification, b.npa_since) != (a.dpd, a.bucket, a.classification, a.npa_since)


def initial_delinquency(schedule: tuple[Instalment, ...], business_date: dt.date) -> Delinquency:
    """Delinquency of a loan that has no history yet (an imported loan may be overdue from day one)."""
    return assess_after(None, schedule, business_date)


ESCALATION_DPD = 90
"""Legal escalation once dpd reaches 90, one day before the loan turns NPA. A product rule, not one of
RBI's thresholds (those are ``delinquency.BANDS``); its timing is in docs/day-end.md."""

WATCH_DPDS = tuple(sorted({*BAND_STARTS, ESCALATION_DPD}))
"""The dpd at which a loan's state can change while nothing is paid: each band start of
``delinquency.BANDS`` (bucket and classification) and ``ESCALATION_DPD``. An escalated loan watches
the band starts only (escalation is once and for good)."""


class PendingEscalation(Enum):
    """The watch of a loan eligible for legal escalation and not escalated yet: it is not due on a date
    but is looked at by every day-end run until one escalates it (docs/day-end.md, "Pending escalation")."""

    PENDING = "PENDING"


PENDING_ESCALATION = PendingEscalation.PENDING


def watch_date(loan: Loan) -> dt.date | PendingEscalation | None:
    """When the day-end job must look at this loan, as far as its bucket, classification or escalation
    can change without a payment (the job reads only the loans whose watch has come):

    - not ACTIVE: never (only a payment or reversal changes it, and those re-evaluate it themselves);
    - dpd >= ``ESCALATION_DPD`` as of its evaluated date and not escalated: ``PENDING_ESCALATION``. Every
      run reads these, so the run for the very date the loan was evaluated at (a payment, a reversal or
      an import evaluates it for the last completed business date, whose run may still be to come)
      escalates it, and a loan the run may not escalate (the switch is off) waits there unwritten;
    - nothing overdue: the next unpaid instalment's due date (unpaid at that day's end = dpd 1);
    - overdue: the day its dpd reaches the next of :data:`WATCH_DPDS` still ahead (31, 61, 90 for
      escalation unless escalated, 91 for NPA), or the next unpaid instalment's due date if that comes
      first: the overdue amount grows that day, and the stored overdue amount is what the dashboard's
      counters add up (docs/dashboard.md), so it must not go stale. Those are always after the
      evaluated date, so a run still to come for that date loses nothing.
    """
    if loan.status is not LoanStatus.ACTIVE:
        return None
    as_of = loan.delinquency.as_of
    oldest = oldest_unpaid_due_date(loan.schedule, as_of)
    upcoming = [i.due_date for i in loan.schedule if i.unpaid_paise > 0 and i.due_date > as_of]
    next_due = min(upcoming) if upcoming else None
    if oldest is None:
        return next_due
    dpd = dpd_from(oldest, as_of)
    if dpd >= ESCALATION_DPD and not loan.legal_escalated:
        return PENDING_ESCALATION
    watched = BAND_STARTS if loan.legal_escalated else WATCH_DPDS
    dates = [date_dpd_reaches(oldest, boundary) for boundary in watched if boundary > dpd]
    if next_due is not None:
        dates.append(next_due)
    return min(dates) if dates else None
