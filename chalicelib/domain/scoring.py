"""Collector scoring: per collector and IST calendar month, what was due on the loans they held, what
they collected, how many of those loans they cured or let roll forward, and a score out of 100
(docs/scoring.md).

Pure: the reconciliation pass feeds it every loan and payment of the book and stores what it gives;
the API only reads stored rows. Money is integer paise; ratios are exact fractions, rounded once.

- Holding: a loan is held on each day of the month by one collector (or nobody). The day of a
  reassignment (its IST date) belongs to the new holder; the holder when the pass runs holds the loan
  to the month's end (:func:`holding_periods`).
- Due: per holding period ``[s, e]``, the arrears carried in (overdue at the end of ``s - 1``) plus the
  instalments due in ``[s, e]`` (:func:`loan_figures`).
- Cured / rolled forward: the bucket at the end of ``min(e, as_of)`` against the bucket at the end of
  ``s - 1``, lower or higher (:data:`delinquency.BANDS` order), at most once per loan and collector.
- Collected: standing payments dated in the month, credited to the collector stored on the payment,
  as the dashboard's collections are (:func:`payment_credits`).
- Score: :func:`score`, with the weights :data:`EFFICIENCY_WEIGHT` and :data:`MOVEMENT_WEIGHT`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from chalicelib.clock import IST, month_days, month_of, parse_month
from chalicelib.domain.delinquency import BANDS, Bucket, bucket_for, dpd_on, overdue_paise
from chalicelib.domain.ledger import LedgerEntry, allocate
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.payment import Payment, PaymentStatus
from chalicelib.domain.roles import Role
from chalicelib.domain.schedule import Instalment

READ_SCORES = frozenset({Role.ADMIN, Role.MANAGER, Role.COLLECTOR})
"""Who may read scores: admins and managers every row, a collector their own row only. Auditors are
not among them (docs/scoring.md, "Who sees what")."""

EFFICIENCY_WEIGHT = Fraction(7, 10)
"""The share of the score that is collection efficiency (capped at 1)."""
MOVEMENT_WEIGHT = Fraction(3, 10)
"""The share of the score that is bucket movement: cures minus roll-forwards per loan held."""
EFFICIENCY_PLACES = 4
"""Efficiency is published rounded half up to this many decimals, and the score uses that value."""
NO_LOANS_MOVEMENT = Fraction(1, 2)
"""The movement term of a collector who held no loans: neither good nor bad."""

LOANS = "loans"
DUE = "amount_due_paise"
COLLECTED = "collected_paise"
CURED = "cured"
ROLLED = "rolled_forward"
FIGURES = (LOANS, DUE, COLLECTED, CURED, ROLLED)
"""The figures a collector's month adds up, as stored and as partial-sum counter names."""

_RANK = {band.bucket: n for n, band in enumerate(BANDS)}


# --- months ---------------------------------------------------------------------------------------------


def previous_month(month: str) -> str:
    return month_of(parse_month(month) - dt.timedelta(days=1))


def months_to_score(as_of: dt.date) -> tuple[str, str]:
    """The months a pass for ``as_of`` computes (those not frozen yet): the month before, so the pass
    that first runs after a month's end still freezes it, and ``as_of``'s own month."""
    this = month_of(as_of)
    return previous_month(this), this


def is_frozen_by(month: str, as_of: dt.date) -> bool:
    """Rows written by a pass for ``as_of`` freeze ``month`` once ``as_of`` is its last day or later."""
    return as_of >= month_days(month)[1]


# --- who held a loan when -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reassignment:
    """One ``LOAN_ASSIGNED`` audit entry, as the holding rule needs it."""

    loan_id: str
    audit_id: str
    """Time-ordered: orders the reassignments of one loan, several on one day included."""
    day: dt.date
    """The IST date of the reassignment: the first day the new holder holds the loan."""
    before: str | None
    after: str | None


def ist_day(at: str) -> dt.date:
    """The IST calendar date of an ISO-8601 timestamp with an offset (an audit entry's ``at``)."""
    return dt.datetime.fromisoformat(at).astimezone(IST).date()


@dataclass(frozen=True, slots=True)
class HoldingPeriod:
    collector_id: str
    start: dt.date
    end: dt.date


def holding_periods(
    current: str | None, reassignments: Sequence[Reassignment], first: dt.date, last: dt.date
) -> list[HoldingPeriod]:
    """Who held a loan on each day of ``[first, last]``, as periods in date order (nobody's days are
    left out). ``reassignments`` are the loan's, in any order; those before ``first`` do not matter and
    those after ``last`` only say who held it at the end. The holder on ``first`` is the ``before`` of
    the first reassignment on or after ``first``, or ``current`` when there is none; a reassignment
    hands the loan over from its own day; the last one of a day wins that day."""
    ordered = sorted((r for r in reassignments if r.day >= first), key=lambda r: r.audit_id)
    holder = ordered[0].before if ordered else current
    periods: list[HoldingPeriod] = []
    start = first
    for r in ordered:
        if r.day > last:
            break
        if r.day > start and holder is not None:
            periods.append(HoldingPeriod(holder, start, r.day - dt.timedelta(days=1)))
        start, holder = max(start, r.day), r.after
    if holder is not None:
        periods.append(HoldingPeriod(holder, start, last))
    return periods


# --- what one loan adds to its holders' month -----------------------------------------------------------


def _paid_by(schedule: Sequence[Instalment], payments: Sequence[LedgerEntry], day: dt.date) -> tuple[Instalment, ...]:
    """The schedule as the payments dated on or before ``day`` fill it: the loan at the end of ``day``."""
    return allocate(schedule, [p for p in payments if p.payment_date <= day])[0]


def bucket_at(loan: Loan, day: dt.date) -> Bucket:
    """The loan's bucket at the end of ``day`` (from its standing payments dated by then)."""
    return bucket_for(dpd_on(_paid_by(loan.schedule, loan.payments, day), day))


def loan_figures(
    loan: Loan, reassignments: Sequence[Reassignment], month: str, as_of: dt.date
) -> dict[str, dict[str, int]]:
    """What one loan adds to each collector who held it in ``month``, evaluated as of ``as_of`` (capped
    at the month's last day): collector -> {loans, amount_due_paise, cured, rolled_forward}.

    A holding period counts when the loan owed anything in it (arrears carried in or an instalment
    due), was paid in it, or was open then (disbursed by its end, not paid off before its start).
    Written-off loans are no longer collected and count nowhere."""
    if loan.status is LoanStatus.WRITTEN_OFF:
        return {}
    first, last = month_days(month)
    evaluated = min(as_of, last)
    found: dict[str, dict[str, int]] = {}
    for period in holding_periods(loan.collector_id, reassignments, first, last):
        before = period.start - dt.timedelta(days=1)
        carried_schedule = _paid_by(loan.schedule, loan.payments, before)
        carried = overdue_paise(carried_schedule, before)
        scheduled = sum(i.due_paise for i in loan.schedule if period.start <= i.due_date <= period.end)
        paid = any(period.start <= p.payment_date <= period.end for p in loan.payments)
        open_then = loan.disbursement_date <= period.end and any(i.unpaid_paise for i in carried_schedule)
        if not (carried or scheduled or paid or open_then):
            continue
        figures = found.setdefault(period.collector_id, {LOANS: 1, DUE: 0, CURED: 0, ROLLED: 0})
        figures[DUE] += carried + scheduled
        end = min(period.end, evaluated)
        if period.start <= end:
            moved = _RANK[bucket_at(loan, end)] - _RANK[bucket_for(dpd_on(carried_schedule, before))]
            figures[CURED] = max(figures[CURED], int(moved < 0))
            figures[ROLLED] = max(figures[ROLLED], int(moved > 0))
    return found


def payment_credits(payments: Iterable[Payment], months: Iterable[str]) -> dict[tuple[str, str], int]:
    """Collected paise per (collector, month): standing payments dated in one of ``months``, credited to
    the collector stored on the payment (who held the loan when it was posted), as the dashboard's
    collections count them. Reversed payments are gone; payments without a collector count nowhere."""
    wanted = set(months)
    credits: dict[tuple[str, str], int] = {}
    for p in payments:
        month = month_of(p.payment_date)
        if p.status is PaymentStatus.POSTED and p.collector_id and month in wanted:
            key = (p.collector_id, month)
            credits[key] = credits.get(key, 0) + p.amount_paise
    return credits


# --- efficiency and score -------------------------------------------------------------------------------


def _round_half_up(value: Fraction, places: int) -> Fraction:
    scale = 10**places
    return Fraction(math.floor(value * scale + Fraction(1, 2)), scale)


def efficiency(collected_paise: int, due_paise: int) -> Fraction:
    """Collected ÷ due, rounded half up to :data:`EFFICIENCY_PLACES` decimals; with nothing due, 0 if
    nothing was collected either and 1 otherwise."""
    if due_paise <= 0:
        return Fraction(1) if collected_paise > 0 else Fraction(0)
    return _round_half_up(Fraction(collected_paise, due_paise), EFFICIENCY_PLACES)


def movement(cured: int, rolled_forward: int, loans: int) -> Fraction:
    """``(1 + (cured - rolled_forward) / loans) / 2`` clamped to [0, 1]; :data:`NO_LOANS_MOVEMENT`
    without loans."""
    if loans <= 0:
        return NO_LOANS_MOVEMENT
    return min(Fraction(1), max(Fraction(0), (1 + Fraction(cured - rolled_forward, loans)) / 2))


def score(efficiency_ratio: Fraction, cured: int, rolled_forward: int, loans: int) -> int:
    """``100 × (EFFICIENCY_WEIGHT × min(efficiency, 1) + MOVEMENT_WEIGHT × movement)``, rounded half up
    to an integer 0..100 (docs/scoring.md)."""
    value = 100 * (
        EFFICIENCY_WEIGHT * min(efficiency_ratio, Fraction(1))
        + MOVEMENT_WEIGHT * movement(cured, rolled_forward, loans)
    )
    return math.floor(max(Fraction(0), value) + Fraction(1, 2))


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One collector's month."""

    collector_id: str
    loans: int = 0
    amount_due_paise: int = 0
    collected_paise: int = 0
    cured: int = 0
    rolled_forward: int = 0

    @property
    def collection_efficiency(self) -> Fraction:
        return efficiency(self.collected_paise, self.amount_due_paise)

    @property
    def score(self) -> int:
        return score(self.collection_efficiency, self.cured, self.rolled_forward, self.loans)

    def with_collected(self, collected_paise: int) -> ScoreRow:
        return replace(self, collected_paise=collected_paise)

    @classmethod
    def from_figures(cls, collector_id: str, figures: Mapping[str, int]) -> ScoreRow:
        return cls(collector_id, *(int(figures.get(name, 0)) for name in FIGURES))

    def figures(self) -> dict[str, int]:
        return {
            LOANS: self.loans,
            DUE: self.amount_due_paise,
            COLLECTED: self.collected_paise,
            CURED: self.cured,
            ROLLED: self.rolled_forward,
        }


@dataclass(frozen=True, slots=True)
class MonthScores:
    """A month's rows as stored: the pass that wrote them (its ``as_of``), and whether they are frozen."""

    month: str
    as_of: dt.date | None = None
    frozen: bool = False
    rows: tuple[ScoreRow, ...] = ()


# --- the pass's partial sums ----------------------------------------------------------------------------

LABEL_PREFIX = "score:"
FAILED_LABEL = "score!failed"
"""A partial-sum label a page adds when it could not compute its share of the scores: the run then
writes no scores (a month with a page missing would be wrong, not late)."""


def score_label(collector_id: str, month: str) -> str:
    """``score:<collector>@<YYYY-MM>``: a collector's month among the reconciliation's partial sums."""
    return f"{LABEL_PREFIX}{collector_id}@{month}"


def is_score_label(name: str) -> bool:
    return name.startswith(LABEL_PREFIX) or name == FAILED_LABEL


def parse_label(name: str) -> tuple[str, str]:
    """(collector, month) of a :func:`score_label` (a username may hold ``@``; a month never does)."""
    collector, _, month = name.removeprefix(LABEL_PREFIX).rpartition("@")
    return collector, month


def month_rows(partials: Mapping[str, Mapping[str, int]], month: str) -> list[ScoreRow]:
    """The rows of ``month`` from summed partials, by collector id."""
    rows = []
    for name, figures in partials.items():
        if not name.startswith(LABEL_PREFIX):
            continue
        collector, of = parse_label(name)
        if of == month:
            rows.append(ScoreRow.from_figures(collector, figures))
    return sorted(rows, key=lambda r: r.collector_id)
