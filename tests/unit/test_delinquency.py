from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.delinquency import (
    Bucket,
    Classification,
    Delinquency,
    assess,
    bucket_for,
    classification_for,
    dpd_on,
    oldest_unpaid_due_date,
    overdue_paise,
)
from chalicelib.domain.schedule import Instalment

DUE = dt.date(2024, 1, 31)


def day(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


def unpaid(seq: int, due: dt.date, principal: int = 9_000, interest: int = 1_000) -> Instalment:
    return Instalment(seq, due, principal, interest)


def paid(seq: int, due: dt.date, principal: int = 9_000, interest: int = 1_000) -> Instalment:
    return Instalment(seq, due, principal, interest, principal, interest)


BOUNDARIES = [
    (0, Bucket.CURRENT, Classification.STANDARD),
    (1, Bucket.B1_30, Classification.SMA_0),
    (30, Bucket.B1_30, Classification.SMA_0),
    (31, Bucket.B31_60, Classification.SMA_1),
    (60, Bucket.B31_60, Classification.SMA_1),
    (61, Bucket.B61_90, Classification.SMA_2),
    (89, Bucket.B61_90, Classification.SMA_2),
    (90, Bucket.B61_90, Classification.SMA_2),
    (91, Bucket.B90_PLUS, Classification.NPA),
    (1_000, Bucket.B90_PLUS, Classification.NPA),
]


@pytest.mark.parametrize(("dpd", "bucket", "classification"), BOUNDARIES)
def test_bucket_and_classification_boundaries(dpd: int, bucket: Bucket, classification: Classification) -> None:
    assert bucket_for(dpd) is bucket
    assert classification_for(dpd) is classification


@pytest.mark.parametrize(("dpd", "bucket", "classification"), BOUNDARIES)
def test_assess_at_each_boundary(dpd: int, bucket: Bucket, classification: Classification) -> None:
    schedule = [paid(1, DUE - day(31)), unpaid(2, DUE), unpaid(3, DUE + day(29))]
    business_date = DUE + day(dpd - 1) if dpd else DUE - day(1)
    result = assess(schedule, business_date)
    assert (result.dpd, result.bucket, result.classification) == (
        dpd,
        bucket,
        classification,
    )
    assert result.as_of == business_date
    assert result.npa_since == (DUE + day(90) if classification is Classification.NPA else None)


def test_enum_values_are_the_api_strings() -> None:
    assert [b.value for b in Bucket] == ["CURRENT", "1-30", "31-60", "61-90", "90+"]
    assert [c.value for c in Classification] == [
        "STANDARD",
        "SMA-0",
        "SMA-1",
        "SMA-2",
        "NPA",
    ]


def test_negative_dpd_is_refused() -> None:
    with pytest.raises(ValueError):
        bucket_for(-1)
    with pytest.raises(ValueError):
        classification_for(-1)


def test_due_date_itself_is_day_one_when_unpaid_at_day_end() -> None:
    assert dpd_on([unpaid(1, DUE)], DUE - day(1)) == 0
    assert dpd_on([unpaid(1, DUE)], DUE) == 1
    assert dpd_on([paid(1, DUE)], DUE) == 0
    assert overdue_paise([unpaid(1, DUE)], DUE - day(1)) == 0
    assert overdue_paise([unpaid(1, DUE)], DUE) == 10_000


def test_partly_paid_oldest_instalment_still_counts() -> None:
    schedule = [
        Instalment(1, DUE, 9_000, 1_000, paid_principal_paise=8_999, paid_interest_paise=1_000),
        unpaid(2, DUE + day(29)),
        unpaid(3, DUE + day(60)),
    ]
    business_date = DUE + day(40)
    assert oldest_unpaid_due_date(schedule, business_date) == DUE
    assert dpd_on(schedule, business_date) == 41
    assert overdue_paise(schedule, business_date) == 1 + 10_000


def test_interest_only_paid_is_still_unpaid() -> None:
    schedule = [Instalment(1, DUE, 9_000, 1_000, paid_interest_paise=1_000)]
    assert dpd_on(schedule, DUE + day(4)) == 5


def test_dpd_counts_from_oldest_unpaid_not_first_instalment() -> None:
    schedule = [paid(1, DUE), unpaid(2, DUE + day(29)), unpaid(3, DUE + day(60))]
    assert oldest_unpaid_due_date(schedule, DUE + day(70)) == DUE + day(29)
    assert dpd_on(schedule, DUE + day(70)) == 42
    assert overdue_paise(schedule, DUE + day(70)) == 20_000


def test_order_of_instalments_does_not_matter() -> None:
    schedule = [unpaid(3, DUE + day(60)), unpaid(2, DUE + day(29)), unpaid(1, DUE)]
    assert oldest_unpaid_due_date(schedule, DUE + day(70)) == DUE
    assert dpd_on(schedule, DUE + day(70)) == 71


def test_empty_or_future_schedule_is_current() -> None:
    assert oldest_unpaid_due_date([], DUE) is None
    assert assess([], DUE) == Delinquency(DUE, 0, Bucket.CURRENT, Classification.STANDARD, None, 0)
    assert assess([unpaid(1, DUE + day(1))], DUE).dpd == 0


def test_first_npa_dates_from_dpd_91_not_the_run_date() -> None:
    schedule = [unpaid(1, DUE), unpaid(2, DUE + day(29))]
    assert assess(schedule, DUE + day(90)).npa_since == DUE + day(90)
    imported_long_overdue = assess(schedule, DUE + day(400), previous_classification=None)
    assert imported_long_overdue.classification is Classification.NPA
    assert imported_long_overdue.npa_since == DUE + day(90)
    from_sma2 = assess(schedule, DUE + day(95), Classification.SMA_2)
    assert (from_sma2.classification, from_sma2.npa_since) == (
        Classification.NPA,
        DUE + day(90),
    )


def test_npa_sticks_while_anything_is_overdue() -> None:
    npa_since = dt.date(2023, 12, 1)
    # Instalments 1-3 were paid late; only the fourth is overdue now, 40 days.
    schedule = [
        paid(1, DUE),
        paid(2, DUE + day(29)),
        paid(3, DUE + day(60)),
        unpaid(4, DUE + day(90)),
    ]
    result = assess(schedule, DUE + day(129), Classification.NPA, npa_since)
    assert result == Delinquency(DUE + day(129), 40, Bucket.B31_60, Classification.NPA, npa_since, 10_000)


def test_npa_upgrades_only_when_all_overdue_is_paid() -> None:
    schedule = [paid(1, DUE), paid(2, DUE + day(29)), unpaid(3, DUE + day(60))]
    result = assess(schedule, DUE + day(45), Classification.NPA, dt.date(2023, 12, 1))
    assert result == Delinquency(DUE + day(45), 0, Bucket.CURRENT, Classification.STANDARD, None, 0)
    one_paisa_left = [
        Instalment(1, DUE, 9_000, 1_000, 8_999, 1_000),
        unpaid(2, DUE + day(60)),
    ]
    still = assess(one_paisa_left, DUE + day(45), Classification.NPA, dt.date(2023, 12, 1))
    assert (still.classification, still.npa_since, still.dpd) == (
        Classification.NPA,
        dt.date(2023, 12, 1),
        46,
    )


def test_npa_without_its_date_is_refused() -> None:
    with pytest.raises(ValueError):
        assess([unpaid(1, DUE)], DUE + day(10), Classification.NPA, None)


def test_npa_since_is_cleared_when_not_npa() -> None:
    result = assess([unpaid(1, DUE)], DUE + day(10), Classification.SMA_0, dt.date(2023, 1, 1))
    assert (result.classification, result.npa_since) == (Classification.SMA_0, None)


# --- a deliberately slow reference: walk the calendar one day at a time ---

REF_BANDS = [
    (0, "CURRENT", "STANDARD"),
    (30, "1-30", "SMA-0"),
    (60, "31-60", "SMA-1"),
    (90, "61-90", "SMA-2"),
]


def ref_labels(dpd: int) -> tuple[str, str]:
    for upper, bucket, classification in REF_BANDS:
        if dpd <= upper:
            return bucket, classification
    return "90+", "NPA"


def ref_assess(
    schedule: list[Instalment],
    business_date: dt.date,
    previous: Classification | None,
    previous_npa_since: dt.date | None,
) -> tuple[dt.date | None, int, int, str, str, dt.date | None]:
    owed = [
        (
            i.due_date,
            i.principal_paise + i.interest_paise - i.paid_principal_paise - i.paid_interest_paise,
        )
        for i in schedule
    ]
    overdue = sum(amount for due, amount in owed if due <= business_date)
    oldest = None
    dpd = 0
    reached_91 = None
    if owed:
        today = min(due for due, _ in owed)
        while today <= business_date:
            arrears_today = [due for due, amount in owed if due <= today and amount > 0]
            if arrears_today:
                dpd += 1
                oldest = min(arrears_today) if oldest is None else oldest
            else:
                dpd, oldest = 0, None
            if dpd == 91:
                reached_91 = today
            today += dt.timedelta(days=1)
    bucket, classification = ref_labels(dpd)
    if previous is not None and previous.value == "NPA" and overdue > 0:
        return oldest, dpd, overdue, bucket, "NPA", previous_npa_since
    return (
        oldest,
        dpd,
        overdue,
        bucket,
        classification,
        reached_91 if classification == "NPA" else None,
    )


@st.composite
def schedules(draw: st.DrawFn) -> list[Instalment]:
    due = draw(st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2030, 12, 31)))
    instalments = []
    for seq in range(1, draw(st.integers(min_value=0, max_value=12)) + 1):
        due += dt.timedelta(days=draw(st.integers(min_value=1, max_value=45)))
        principal = draw(st.integers(min_value=0, max_value=5_000))
        interest = draw(st.integers(min_value=0 if principal else 1, max_value=1_000))
        paid_principal = draw(st.sampled_from([0, principal]) | st.integers(min_value=0, max_value=principal))
        paid_interest = draw(st.sampled_from([0, interest]) | st.integers(min_value=0, max_value=interest))
        instalments.append(Instalment(seq, due, principal, interest, paid_principal, paid_interest))
    return draw(st.permutations(instalments))


@settings(max_examples=250, deadline=None)
@given(
    schedule=schedules(),
    offset=st.integers(min_value=-40, max_value=600),
    previous=st.none() | st.sampled_from(Classification),
    previous_npa_since=st.dates(min_value=dt.date(2019, 1, 1), max_value=dt.date(2033, 1, 1)),
)
def test_matches_day_by_day_reference(
    schedule: list[Instalment],
    offset: int,
    previous: Classification | None,
    previous_npa_since: dt.date,
) -> None:
    start = min((i.due_date for i in schedule), default=dt.date(2024, 1, 1))
    business_date = start + dt.timedelta(days=offset)
    oldest, dpd, overdue, bucket, classification, npa_since = ref_assess(
        schedule, business_date, previous, previous_npa_since
    )
    assert oldest_unpaid_due_date(schedule, business_date) == oldest
    assert dpd_on(schedule, business_date) == dpd
    assert overdue_paise(schedule, business_date) == overdue
    result = assess(schedule, business_date, previous, previous_npa_since)
    assert result == Delinquency(
        business_date,
        dpd,
        Bucket(bucket),
        Classification(classification),
        npa_since,
        overdue,
    )
