"""The dpd formula and its inverse, and the one table of bands (``domain.delinquency``): every figure
the domain derives from dpd agrees with them (docs/rules.md, "Delinquency")."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.delinquency import (
    BAND_STARTS,
    BANDS,
    NPA_FROM_DPD,
    Band,
    Bucket,
    Classification,
    assess,
    band_for,
    bucket_for,
    classification_for,
    date_dpd_reaches,
    dpd_from,
    dpd_on,
)
from chalicelib.domain.loan import (
    ESCALATION_DPD,
    PENDING_ESCALATION,
    WATCH_DPDS,
    Borrower,
    Loan,
    LoanStatus,
    initial_delinquency,
    watch_date,
)
from chalicelib.domain.schedule import Instalment

DATES = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2090, 12, 31))
DPDS = st.integers(min_value=1, max_value=5_000)


# --- dpd and its inverse -----------------------------------------------------------------------


@given(oldest=DATES, dpd=DPDS)
def test_the_date_dpd_reaches_n_has_dpd_n(oldest: dt.date, dpd: int) -> None:
    assert dpd_from(oldest, date_dpd_reaches(oldest, dpd)) == dpd


@given(oldest=DATES, days_later=st.integers(min_value=0, max_value=5_000))
def test_the_dpd_of_a_date_is_reached_on_that_date(oldest: dt.date, days_later: int) -> None:
    business_date = oldest + dt.timedelta(days=days_later)
    assert date_dpd_reaches(oldest, dpd_from(oldest, business_date)) == business_date


@given(oldest=DATES, dpd=DPDS)
def test_dpd_grows_by_one_a_day(oldest: dt.date, dpd: int) -> None:
    reached = date_dpd_reaches(oldest, dpd)
    assert date_dpd_reaches(oldest, dpd + 1) == reached + dt.timedelta(days=1)


@given(oldest=DATES, days_later=st.integers(min_value=0, max_value=5_000))
def test_a_schedule_s_dpd_is_the_formula_on_its_oldest_unpaid_due_date(oldest: dt.date, days_later: int) -> None:
    business_date = oldest + dt.timedelta(days=days_later)
    schedule = [Instalment(1, oldest, 9_000, 1_000), Instalment(2, oldest + dt.timedelta(days=30), 9_000, 1_000)]
    assert dpd_on(schedule, business_date) == dpd_from(oldest, business_date)


def test_the_due_date_itself_is_day_one_and_nothing_unpaid_is_day_zero() -> None:
    due = dt.date(2025, 1, 10)
    assert dpd_from(due, due) == 1
    assert date_dpd_reaches(due, 1) == due
    assert dpd_from(None, due) == 0
    with pytest.raises(ValueError):
        date_dpd_reaches(due, 0)


# --- the table of bands ------------------------------------------------------------------------


def test_the_bands_are_rbi_s_written_out_by_hand() -> None:
    """SMA-0 up to 30 days, SMA-1 31-60, SMA-2 61-90, NPA above 90; buckets coincide."""
    assert [(b.first_dpd, b.bucket, b.classification) for b in BANDS] == [
        (0, Bucket.CURRENT, Classification.STANDARD),
        (1, Bucket.B1_30, Classification.SMA_0),
        (31, Bucket.B31_60, Classification.SMA_1),
        (61, Bucket.B61_90, Classification.SMA_2),
        (91, Bucket.B90_PLUS, Classification.NPA),
    ]
    assert BAND_STARTS == (1, 31, 61, 91)
    assert NPA_FROM_DPD == 91


def test_bucket_and_classification_change_exactly_at_the_band_starts() -> None:
    last_start = BANDS[-1].first_dpd
    for dpd in range(1, last_start + 400):
        bucket_changes = bucket_for(dpd) != bucket_for(dpd - 1)
        classification_changes = classification_for(dpd) != classification_for(dpd - 1)
        assert bucket_changes == classification_changes == (dpd in BAND_STARTS), dpd


@pytest.mark.parametrize("band", BANDS, ids=[b.classification.value for b in BANDS])
def test_each_band_starts_at_its_first_dpd(band: Band) -> None:
    assert band_for(band.first_dpd) == band


def test_a_newly_npa_loan_dates_its_npa_from_the_npa_band_start() -> None:
    due = dt.date(2025, 1, 10)
    result = assess([Instalment(1, due, 9_000, 1_000)], due + dt.timedelta(days=400))
    assert result.npa_since == date_dpd_reaches(due, NPA_FROM_DPD) == dt.date(2025, 4, 10)


# --- the day-end job's watch dates -------------------------------------------------------------


def test_the_watch_dpds_are_the_band_starts_and_escalation() -> None:
    assert WATCH_DPDS == (1, 31, 61, ESCALATION_DPD, 91)
    assert ESCALATION_DPD == 90


DUE = dt.date(2025, 1, 10)


def overdue_loan(dpd: int, escalated: bool) -> Loan:
    """One unpaid instalment due on ``DUE`` (and a later one), evaluated on the day it reaches ``dpd``."""
    schedule = (Instalment(1, DUE, 10_000, 1_000), Instalment(2, DUE + dt.timedelta(days=365), 10_000, 1_000))
    return Loan(
        loan_id="L-rule",
        borrower=Borrower("Asha", "9876543210"),
        status=LoanStatus.ACTIVE,
        principal_paise=20_000,
        disbursement_date=DUE - dt.timedelta(days=30),
        schedule=schedule,
        delinquency=initial_delinquency(schedule, date_dpd_reaches(DUE, dpd)),
        legal_escalated=escalated,
    )


@given(dpd=st.integers(min_value=1, max_value=200), escalated=st.booleans())
def test_a_loan_is_watched_on_the_next_day_its_band_escalation_or_overdue_amount_changes(
    dpd: int, escalated: bool
) -> None:
    subject = overdue_loan(dpd, escalated)
    watch = watch_date(subject)
    if dpd >= ESCALATION_DPD and not escalated:
        assert watch is PENDING_ESCALATION
        return
    changes = [
        n
        for n in range(dpd + 1, 400)
        if (bucket_for(n), classification_for(n)) != (bucket_for(n - 1), classification_for(n - 1))
        or (n == ESCALATION_DPD and not escalated)
    ]
    # The second instalment falling due grows the overdue amount: watched too, when it comes first.
    dates = [date_dpd_reaches(DUE, changes[0])] if changes else []
    second_due = subject.schedule[1].due_date
    if second_due > subject.delinquency.as_of:
        dates.append(second_due)
    assert watch == (min(dates) if dates else None)
