"""Days past due, bucket and asset classification (RBI IRACP norms, 12 Nov 2021 clarifications).

Pure and allocation-light: the day-end job runs :func:`assess` once per loan for millions of loans,
and payments run it after every posting, so both always agree.

Day-end convention: an amount still unpaid at the end of its due date is overdue on that date,
which is day 1. ``dpd = business_date - oldest unpaid due date + 1``; 0 when nothing due on or
before the business date is unpaid. A partly paid instalment is unpaid. The paid amounts on the
instalments are taken as they stand: every payment posted so far counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from chalicelib.domain.schedule import Instalment

NPA_AFTER_DPD = 90
"""A loan is NPA once dpd is above this; it reached dpd 91 ninety days after its oldest due date."""


class Bucket(StrEnum):
    """Collections bucket by dpd, the unit collectors are assigned and measured by."""

    CURRENT = "CURRENT"
    B1_30 = "1-30"
    B31_60 = "31-60"
    B61_90 = "61-90"
    B90_PLUS = "90+"


class Classification(StrEnum):
    """RBI special-mention / non-performing classification."""

    STANDARD = "STANDARD"
    SMA_0 = "SMA-0"
    SMA_1 = "SMA-1"
    SMA_2 = "SMA-2"
    NPA = "NPA"


def bucket_for(dpd: int) -> Bucket:
    """The collections bucket for a dpd; ``90+`` starts at 91, where the loan turns NPA."""
    if dpd < 0:
        raise ValueError("dpd must not be negative")
    if dpd == 0:
        return Bucket.CURRENT
    if dpd <= 30:
        return Bucket.B1_30
    if dpd <= 60:
        return Bucket.B31_60
    if dpd <= NPA_AFTER_DPD:
        return Bucket.B61_90
    return Bucket.B90_PLUS


def classification_for(dpd: int) -> Classification:
    """The classification dpd alone implies, ignoring NPA stickiness (see :func:`assess`)."""
    if dpd < 0:
        raise ValueError("dpd must not be negative")
    if dpd == 0:
        return Classification.STANDARD
    if dpd <= 30:
        return Classification.SMA_0
    if dpd <= 60:
        return Classification.SMA_1
    if dpd <= NPA_AFTER_DPD:
        return Classification.SMA_2
    return Classification.NPA


def _scan(schedule: Sequence[Instalment], business_date: dt.date) -> tuple[dt.date | None, int]:
    """Oldest unpaid due date and total overdue in one pass; the hot loop of the day-end job.

    The schedule is not assumed sorted, so an out-of-order list cannot hide its oldest arrear.
    """
    oldest: dt.date | None = None
    overdue = 0
    for instalment in schedule:
        due_date = instalment.due_date
        if due_date > business_date:
            continue
        unpaid = instalment.unpaid_paise
        if unpaid > 0:
            overdue += unpaid
            if oldest is None or due_date < oldest:
                oldest = due_date
    return oldest, overdue


def oldest_unpaid_due_date(schedule: Sequence[Instalment], business_date: dt.date) -> dt.date | None:
    """The date dpd counts from: the oldest instalment due by ``business_date`` not fully paid."""
    return _scan(schedule, business_date)[0]


def dpd_on(schedule: Sequence[Instalment], business_date: dt.date) -> int:
    """Days past due at the end of ``business_date`` (the due date itself is day 1)."""
    oldest = _scan(schedule, business_date)[0]
    return 0 if oldest is None else (business_date - oldest).days + 1


def overdue_paise(schedule: Sequence[Instalment], business_date: dt.date) -> int:
    """All that is due on or before ``business_date`` and still unpaid, interest and principal."""
    return _scan(schedule, business_date)[1]


@dataclass(frozen=True, slots=True)
class Delinquency:
    """A loan's delinquency as of the end of one business date."""

    as_of: dt.date
    dpd: int
    bucket: Bucket
    classification: Classification
    npa_since: dt.date | None
    overdue_paise: int


def assess(
    schedule: Sequence[Instalment],
    business_date: dt.date,
    previous_classification: Classification | None = None,
    previous_npa_since: dt.date | None = None,
) -> Delinquency:
    """The loan's dpd, bucket and classification at the end of ``business_date``.

    - dpd and bucket follow the schedule alone (:func:`dpd_on`, :func:`bucket_for`).
    - NPA is sticky: a loan previously NPA stays NPA, keeping ``previous_npa_since``, while any
      overdue amount remains, even if part-payments have brought dpd below 91. Only paying all
      overdue upgrades it; dpd is then 0, so it becomes STANDARD with ``npa_since`` None.
      A previous NPA without ``previous_npa_since`` is inconsistent data and raises ValueError
      rather than inventing a date.
    - Otherwise the classification is :func:`classification_for` dpd. A loan newly NPA gets
      ``npa_since`` = oldest unpaid due date + 90 days, the date dpd reached 91, not the run date:
      an imported loan that is already long overdue, or a day-end run that was missed, still
      records the true NPA date. ``npa_since`` is None whenever the loan is not NPA.
    """
    oldest, overdue = _scan(schedule, business_date)
    dpd = 0 if oldest is None else (business_date - oldest).days + 1
    bucket = bucket_for(dpd)

    if previous_classification == Classification.NPA and overdue > 0:
        if previous_npa_since is None:
            raise ValueError("previous classification is NPA but previous_npa_since is missing")
        return Delinquency(business_date, dpd, bucket, Classification.NPA, previous_npa_since, overdue)

    classification = classification_for(dpd)
    npa_since = None
    if classification is Classification.NPA and oldest is not None:
        npa_since = oldest + dt.timedelta(days=NPA_AFTER_DPD)
    return Delinquency(business_date, dpd, bucket, classification, npa_since, overdue)
