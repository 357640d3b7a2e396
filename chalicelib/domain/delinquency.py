"""Days past due, bucket and asset classification (RBI IRACP norms, 12 Nov 2021 clarifications).

Pure and allocation-light: the day-end job runs :func:`assess` once per loan for millions of loans,
and payments run it after every posting, so both always agree.

Day-end convention: an amount still unpaid at the end of its due date is overdue on that date,
which is day 1. ``dpd = business_date - oldest unpaid due date + 1`` (:func:`dpd_from`, the only
place it is written); 0 when nothing due on or before the business date is unpaid. A partly paid
instalment is unpaid. The paid amounts on the instalments are taken as they stand: every payment
posted so far counts. Buckets and classifications come from one table, :data:`BANDS`.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from chalicelib.domain.schedule import Instalment


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


@dataclass(frozen=True, slots=True)
class Band:
    """A range of dpd that shares one collections bucket and one classification. A band runs from
    ``first_dpd`` up to the day before the next band's ``first_dpd``; the last band has no end."""

    first_dpd: int
    bucket: Bucket
    classification: Classification


BANDS: tuple[Band, ...] = (
    Band(0, Bucket.CURRENT, Classification.STANDARD),
    Band(1, Bucket.B1_30, Classification.SMA_0),
    Band(31, Bucket.B31_60, Classification.SMA_1),
    Band(61, Bucket.B61_90, Classification.SMA_2),
    Band(91, Bucket.B90_PLUS, Classification.NPA),
)
"""The one table of delinquency thresholds (docs/rules.md, "Delinquency"). In RBI's words (IRACP, the
special-mention categories by how long principal or interest is "overdue"): SMA-0 up to 30 days,
SMA-1 more than 30 and up to 60 days, SMA-2 more than 60 and up to 90 days; NPA once overdue for more
than 90 days. The collections buckets coincide with them. :func:`bucket_for`,
:func:`classification_for`, the NPA date (:func:`assess`) and the day-end job's watch dates
(``domain.loan.watch_date``) are all read from this table."""

_FIRST_DPDS = tuple(band.first_dpd for band in BANDS)

BAND_STARTS = tuple(first for first in _FIRST_DPDS if first > 0)
"""The dpd at which each overdue band starts (1, 31, 61, 91): the days on which a loan's bucket and
classification change while nothing is paid."""

NPA_FROM_DPD = next(band.first_dpd for band in BANDS if band.classification is Classification.NPA)
"""The first dpd that is non-performing (91: "overdue for more than 90 days")."""


def band_for(dpd: int) -> Band:
    """The band a dpd falls in; ValueError for a negative dpd."""
    if dpd < 0:
        raise ValueError("dpd must not be negative")
    return BANDS[bisect_right(_FIRST_DPDS, dpd) - 1]


def bucket_for(dpd: int) -> Bucket:
    """The collections bucket for a dpd (:data:`BANDS`); ``90+`` starts at 91, where the loan turns NPA."""
    return band_for(dpd).bucket


def classification_for(dpd: int) -> Classification:
    """The classification dpd alone implies (:data:`BANDS`), ignoring NPA stickiness (see :func:`assess`)."""
    return band_for(dpd).classification


def dpd_from(oldest_unpaid: dt.date | None, business_date: dt.date) -> int:
    """Days past due at the end of ``business_date`` of arrears dating from ``oldest_unpaid`` (the
    oldest unpaid due date, :func:`oldest_unpaid_due_date`): the due date itself is day 1, and 0 when
    nothing is unpaid. The one statement of the dpd formula; :func:`date_dpd_reaches` is its inverse."""
    return 0 if oldest_unpaid is None else (business_date - oldest_unpaid).days + 1


def date_dpd_reaches(oldest_unpaid: dt.date, dpd: int) -> dt.date:
    """The business date at whose end arrears dating from ``oldest_unpaid`` reach ``dpd`` (1 or more)
    if nothing is paid meanwhile: the inverse of :func:`dpd_from`."""
    if dpd < 1:
        raise ValueError("an unpaid amount is at least 1 day past due")
    return oldest_unpaid + dt.timedelta(days=dpd - 1)


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
    return dpd_from(_scan(schedule, business_date)[0], business_date)


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
      ``npa_since`` = the date its dpd reached :data:`NPA_FROM_DPD` (oldest unpaid due date + 90
      days), not the run date: an imported loan that is already long overdue, or a day-end run that
      was missed, still records the true NPA date. ``npa_since`` is None whenever the loan is not NPA.
    """
    oldest, overdue = _scan(schedule, business_date)
    dpd = dpd_from(oldest, business_date)
    band = band_for(dpd)
    bucket = band.bucket

    if previous_classification == Classification.NPA and overdue > 0:
        if previous_npa_since is None:
            raise ValueError("previous classification is NPA but previous_npa_since is missing")
        return Delinquency(business_date, dpd, bucket, Classification.NPA, previous_npa_since, overdue)

    classification = band.classification
    npa_since = None
    if classification is Classification.NPA and oldest is not None:
        npa_since = date_dpd_reaches(oldest, NPA_FROM_DPD)
    return Delinquency(business_date, dpd, bucket, classification, npa_since, overdue)


def assess_after(previous: Delinquency | None, schedule: Sequence[Instalment], business_date: dt.date) -> Delinquency:
    """The next assessment in a loan's history: :func:`assess` with NPA stickiness carried from
    ``previous``, the loan's last assessment (None for a loan with no history yet). Every
    reassessment goes through here: a payment's or reversal's replay (``domain.ledger``), a day-end
    run and a read as of the latest run (``domain.loan.reassess``), a new loan."""
    if previous is None:
        return assess(schedule, business_date)
    return assess(schedule, business_date, previous.classification, previous.npa_since)
