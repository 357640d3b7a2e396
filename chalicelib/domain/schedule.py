"""Monthly reducing-balance EMI schedules: generation and validation of imported ones.

Amounts are integer paise, rates integer basis points per annum. The monthly rate is
``annual_rate_bps / 10000 / 12`` and interest for a month is that rate on the balance outstanding
after the previous instalment, rounded half-up to the paisa by :func:`money.to_paise`.

Documented assumptions:

- **No broken-period interest.** Interest between ``disbursement_date`` and ``first_due_date`` is
  not charged, however long or short that gap is: the first instalment carries exactly one month's
  interest on the full principal. A lender that charges broken-period interest imports its
  schedule instead (:func:`import_schedule`).
- **Exact rounding.** Each rounded quantity (the EMI, each month's interest) is a ratio of integers
  (``r = bps / 120000``). It is evaluated as one Decimal division at 50 significant digits,
  truncated towards zero, and then rounded once by ``to_paise``. Truncating (not rounding) the
  50th digit guarantees the half-up decision is the same as for the exact rational value, so a
  value that is exactly ``x.5`` paise (for example 60000 paise at 1 bps for one month) rounds up
  instead of being lost as ``x.4999...``.
- **Degenerate schedules are refused.** Every instalment must repay at least one paisa of
  principal. When the EMI does not exceed a month's interest, or rounding would repay the whole
  principal before the last instalment (a few rupees over hundreds of months), the schedule is
  refused with ``InvalidSchedule`` on ``tenure_months``: such a loan needs a shorter tenure.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import (
    ROUND_DOWN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)

from chalicelib.domain.errors import InvalidSchedule
from chalicelib.domain.money import to_paise

MAX_INSTALMENTS = 600
MAX_ANNUAL_RATE_BPS = 10_000
_BPS_MONTHS = 10_000 * 12
_PRECISION = Context(prec=50, rounding=ROUND_DOWN, traps=[InvalidOperation, DivisionByZero, Overflow])


@dataclass(frozen=True, slots=True)
class Instalment:
    """One scheduled instalment and what has been paid against it so far."""

    seq: int
    due_date: dt.date
    principal_paise: int
    interest_paise: int
    paid_principal_paise: int = 0
    paid_interest_paise: int = 0

    def __post_init__(self) -> None:
        if self.principal_paise < 0 or self.interest_paise < 0:
            raise ValueError(f"instalment {self.seq}: negative scheduled amount")
        if not 0 <= self.paid_principal_paise <= self.principal_paise:
            raise ValueError(f"instalment {self.seq}: paid principal outside 0..{self.principal_paise}")
        if not 0 <= self.paid_interest_paise <= self.interest_paise:
            raise ValueError(f"instalment {self.seq}: paid interest outside 0..{self.interest_paise}")

    def with_paid(self, principal_paise: int, interest_paise: int) -> Instalment:
        """This instalment with these paid amounts. A payment's replay makes one for every instalment of
        every standing payment, and ``dataclasses.replace`` (which inspects the fields each call) made that
        a tenth of a payment's time in Python. A field added above must be carried here too."""
        return Instalment(
            self.seq, self.due_date, self.principal_paise, self.interest_paise, principal_paise, interest_paise
        )

    @property
    def due_paise(self) -> int:
        """Total scheduled for this instalment, principal plus interest."""
        return self.principal_paise + self.interest_paise

    @property
    def paid_paise(self) -> int:
        """Total paid against this instalment so far."""
        return self.paid_principal_paise + self.paid_interest_paise

    @property
    def unpaid_paise(self) -> int:
        """What is still owed on this instalment; never negative (enforced at construction)."""
        return self.due_paise - self.paid_paise

    @property
    def is_settled(self) -> bool:
        """True when nothing is owed on this instalment any more."""
        return self.unpaid_paise == 0


def _quotient(numerator: int, denominator: int) -> Decimal:
    """``numerator / denominator`` to 50 digits, truncated so ``to_paise`` rounds it exactly."""
    return _PRECISION.divide(Decimal(numerator), Decimal(denominator))


def monthly_rate(annual_rate_bps: int) -> Decimal:
    """The monthly rate as a fraction (1200 bps -> 0.01), to 50 significant digits.

    Kept for display and for callers that need ``r`` itself; the schedule does not multiply by
    this truncated value but divides integers, so that exact half-paisa ties round correctly.
    """
    return _quotient(annual_rate_bps, _BPS_MONTHS)


def monthly_interest_paise(balance_paise: int, annual_rate_bps: int) -> int:
    """One month's interest on a balance, ``balance * r`` rounded half-up to the paisa."""
    return to_paise(_quotient(balance_paise * annual_rate_bps, _BPS_MONTHS))


def emi_paise(principal_paise: int, annual_rate_bps: int, tenure_months: int) -> int:
    """The equated monthly instalment ``P*r*(1+r)^n / ((1+r)^n - 1)``, rounded half-up once.

    With ``r = bps / B`` (``B = 120000``) and ``A = B + bps`` the formula is exactly
    ``P*bps*A^n / (B*(A^n - B^n))``: a ratio of integers, so the only approximation before
    ``to_paise`` is the final 50-digit truncated division (see the module docstring). At a zero
    rate the EMI is ``P / n``.
    """
    if tenure_months < 1:
        raise ValueError("tenure_months must be at least 1")
    if annual_rate_bps == 0:
        return to_paise(_quotient(principal_paise, tenure_months))
    growth = (_BPS_MONTHS + annual_rate_bps) ** tenure_months
    base = _BPS_MONTHS**tenure_months
    return to_paise(_quotient(principal_paise * annual_rate_bps * growth, _BPS_MONTHS * (growth - base)))


def due_dates(first_due_date: dt.date, count: int) -> list[dt.date]:
    """Monthly due dates on the first due date's day of month, clamped to shorter months' ends.

    Each date is computed from the first one, not from the previous one, so a loan due on the
    31st is due on 28/29 Feb and back on 31 Mar rather than drifting to the 28th for good.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    dates = []
    for offset in range(count):
        year, month0 = divmod(first_due_date.month - 1 + offset, 12)
        year += first_due_date.year
        last_day = calendar.monthrange(year, month0 + 1)[1]
        dates.append(dt.date(year, month0 + 1, min(first_due_date.day, last_day)))
    return dates


def _problem(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def _validate_terms(
    principal_paise: int,
    annual_rate_bps: int,
    tenure_months: int,
    disbursement_date: dt.date,
    first_due_date: dt.date,
) -> list[dict[str, str]]:
    problems = []
    if principal_paise < 1:
        problems.append(_problem("principal_paise", "must be at least 1 paisa"))
    if not 0 <= annual_rate_bps <= MAX_ANNUAL_RATE_BPS:
        problems.append(_problem("annual_rate_bps", f"must be between 0 and {MAX_ANNUAL_RATE_BPS}"))
    if not 1 <= tenure_months <= MAX_INSTALMENTS:
        problems.append(_problem("tenure_months", f"must be between 1 and {MAX_INSTALMENTS}"))
    if first_due_date <= disbursement_date:
        problems.append(_problem("first_due_date", "must be after disbursement_date"))
    elif 1 <= tenure_months <= MAX_INSTALMENTS:
        last_month_index = first_due_date.year * 12 + first_due_date.month - 1 + tenure_months - 1
        if last_month_index > dt.MAXYEAR * 12 + 11:
            problems.append(_problem("first_due_date", "schedule would run past the calendar"))
    return problems


def generate_schedule(
    principal_paise: int,
    annual_rate_bps: int,
    tenure_months: int,
    disbursement_date: dt.date,
    first_due_date: dt.date,
) -> list[Instalment]:
    """Build the monthly reducing-balance schedule for a new loan.

    Every instalment but the last is exactly the EMI (interest first, the rest principal); the
    last repays the whole remaining balance plus its month's interest, absorbing every rounding
    difference, so the principal parts add up to ``principal_paise`` exactly. Raises
    ``InvalidSchedule`` with ``{"field", "message"}`` details for out-of-range terms and for
    degenerate schedules (see the module docstring).
    """
    problems = _validate_terms(
        principal_paise,
        annual_rate_bps,
        tenure_months,
        disbursement_date,
        first_due_date,
    )
    if problems:
        raise InvalidSchedule("loan terms do not give a valid schedule", problems)

    emi = emi_paise(principal_paise, annual_rate_bps, tenure_months)
    dates = due_dates(first_due_date, tenure_months)
    balance = principal_paise
    schedule = []
    for seq, due_date in enumerate(dates, start=1):
        interest = monthly_interest_paise(balance, annual_rate_bps)
        principal = balance if seq == tenure_months else emi - interest
        if principal <= 0 or (seq < tenure_months and principal >= balance):
            raise InvalidSchedule(
                "tenure too long for this principal: an instalment would repay no principal",
                [
                    _problem(
                        "tenure_months",
                        f"instalment {seq} would repay {max(principal, 0)} paise of principal "
                        f"out of a remaining {balance}; use a shorter tenure",
                    )
                ],
            )
        schedule.append(Instalment(seq, due_date, principal, interest))
        balance -= principal
    return schedule


def import_schedule(
    principal_paise: int,
    disbursement_date: dt.date,
    rows: Sequence[tuple[dt.date, int, int]],
) -> list[Instalment]:
    """Accept a schedule computed elsewhere (an LMS, a migrated book) after checking it is coherent.

    ``rows`` are ``(due_date, principal_paise, interest_paise)`` in order. Every problem found is
    reported at once, each naming its row by zero-based index (``schedule[3].due_date``), so an
    ops user can fix a whole upload in one go. Instalments are numbered 1..n in row order.
    """
    problems = []
    if principal_paise < 1:
        problems.append(_problem("principal_paise", "must be at least 1 paisa"))
    if not 1 <= len(rows) <= MAX_INSTALMENTS:
        problems.append(_problem("schedule", f"must have between 1 and {MAX_INSTALMENTS} instalments"))
        raise InvalidSchedule("imported schedule is invalid", problems)

    previous_date = disbursement_date
    for index, (due_date, principal, interest) in enumerate(rows):
        row = f"schedule[{index}]"
        if principal < 0:
            problems.append(_problem(f"{row}.principal_paise", "must not be negative"))
        if interest < 0:
            problems.append(_problem(f"{row}.interest_paise", "must not be negative"))
        if principal >= 0 and interest >= 0 and principal + interest == 0:
            problems.append(_problem(row, "instalment must be for a positive amount"))
        if due_date <= previous_date:
            after = "disbursement_date" if index == 0 else "the previous due date"
            problems.append(_problem(f"{row}.due_date", f"must be after {after}"))
        previous_date = due_date

    total = sum(principal for _, principal, _ in rows)
    if total != principal_paise:
        problems.append(
            _problem(
                "schedule",
                f"principal parts sum to {total} paise, not {principal_paise}",
            )
        )
    if problems:
        raise InvalidSchedule("imported schedule is invalid", problems)
    return [
        Instalment(seq, due_date, principal, interest)
        for seq, (due_date, principal, interest) in enumerate(rows, start=1)
    ]
