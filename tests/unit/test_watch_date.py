"""``watch_date`` (the next day a loan's state can change without a payment, or "pending escalation"),
the ``watch_key`` it becomes, and the business date a job event names (docs/day-end.md). Expected
dates are written out by hand from the rules, not computed with the code under test."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from chalicelib.adapters.dynamodb.mapping import watch_key, watch_shard
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.loan import (
    PENDING_ESCALATION,
    Borrower,
    Loan,
    LoanStatus,
    PendingEscalation,
    initial_delinquency,
    watch_date,
)
from chalicelib.domain.schedule import Instalment
from chalicelib.jobs.lambda_handlers import business_date_from_event

D = dt.date
DUES = [D(2025, 1, 10), D(2025, 2, 10), D(2025, 3, 10), D(2025, 4, 10), D(2025, 5, 10), D(2025, 6, 10)]
"""Instalment 1 is due on 10 Jan 2025, so dpd n falls on 10 Jan + (n - 1) days:
dpd 31 → 9 Feb, dpd 61 → 11 Mar, dpd 90 → 9 Apr, dpd 91 → 10 Apr."""


def schedule(paid: dict[int, int] | None = None) -> tuple[Instalment, ...]:
    """Six instalments of 10 000 + 1 000 paise; ``paid`` maps seq -> paise paid (interest first)."""
    rows = []
    for seq, due in enumerate(DUES, start=1):
        amount = (paid or {}).get(seq, 0)
        interest = min(amount, 1_000)
        rows.append(Instalment(seq, due, 10_000, 1_000, amount - interest, interest))
    return tuple(rows)


def loan(
    as_of: dt.date,
    paid: dict[int, int] | None = None,
    status: LoanStatus = LoanStatus.ACTIVE,
    escalated: bool = False,
) -> Loan:
    sched = schedule(paid)
    return Loan(
        loan_id="L-watch",
        borrower=Borrower("Asha", "9876543210"),
        status=status,
        principal_paise=60_000,
        disbursement_date=D(2024, 12, 1),
        schedule=sched,
        delinquency=initial_delinquency(sched, as_of),
        legal_escalated=escalated,
        legal_escalated_on=D(2025, 4, 9) if escalated else None,
    )


FULL = 11_000
CASES: list[tuple[str, Loan, dt.date | PendingEscalation | None]] = [
    ("closed", loan(D(2025, 3, 1), status=LoanStatus.CLOSED), None),
    ("written off", loan(D(2025, 5, 1), status=LoanStatus.WRITTEN_OFF), None),
    ("nothing due yet: first due date", loan(D(2025, 1, 5)), D(2025, 1, 10)),
    ("the day before the first due date", loan(D(2025, 1, 9)), D(2025, 1, 10)),
    ("first paid: the next unpaid due date", loan(D(2025, 1, 20), paid={1: FULL}), D(2025, 2, 10)),
    ("first two paid early", loan(D(2025, 1, 20), paid={1: FULL, 2: FULL}), D(2025, 3, 10)),
    ("dpd 1 (due date itself)", loan(D(2025, 1, 10)), D(2025, 2, 9)),
    ("dpd 11", loan(D(2025, 1, 20)), D(2025, 2, 9)),
    ("dpd 30", loan(D(2025, 2, 8)), D(2025, 2, 9)),
    ("dpd 31: the second instalment falls due first (overdue grows)", loan(D(2025, 2, 9)), D(2025, 2, 10)),
    ("dpd 45, a second instalment also unpaid: the third falls due", loan(D(2025, 2, 23)), D(2025, 3, 10)),
    ("dpd 60", loan(D(2025, 3, 10)), D(2025, 3, 11)),
    ("dpd 61", loan(D(2025, 3, 11)), D(2025, 4, 9)),
    ("dpd 89", loan(D(2025, 4, 8)), D(2025, 4, 9)),
    ("dpd 61, already escalated: NPA day", loan(D(2025, 3, 11), escalated=True), D(2025, 4, 10)),
    ("dpd 89, already escalated", loan(D(2025, 4, 8), escalated=True), D(2025, 4, 10)),
    ("dpd 90, not escalated: pending, every run", loan(D(2025, 4, 9)), PENDING_ESCALATION),
    ("dpd 90, escalated: NPA day", loan(D(2025, 4, 9), escalated=True), D(2025, 4, 10)),
    ("dpd 91, not escalated: pending", loan(D(2025, 4, 10)), PENDING_ESCALATION),
    ("dpd 150, not escalated: pending", loan(D(2025, 6, 8)), PENDING_ESCALATION),
    (
        "dpd 90 after a part-payment of the oldest, not escalated: pending",
        loan(D(2025, 4, 9), paid={1: 5_000}),
        PENDING_ESCALATION,
    ),
    (
        "oldest paid: dpd 59 from the second (10 Feb), the fourth falls due on 10 Apr before dpd 61",
        loan(D(2025, 4, 9), paid={1: FULL}),
        D(2025, 4, 10),
    ),
    ("dpd 91, escalated: only the next due date changes it", loan(D(2025, 4, 10), escalated=True), D(2025, 5, 10)),
    ("dpd 400, escalated, everything due: nothing left to change", loan(D(2026, 2, 13), escalated=True), None),
    ("partly paid oldest instalment still counts (dpd 11)", loan(D(2025, 1, 20), paid={1: 10_999}), D(2025, 2, 9)),
    (
        "oldest paid, second partly paid: counts from 10 Feb, the third falls due on 10 Mar",
        loan(D(2025, 2, 15), paid={1: FULL, 2: 500}),
        D(2025, 3, 10),
    ),
    ("dpd 70 from the second instalment", loan(D(2025, 4, 20), paid={1: FULL}), D(2025, 5, 10)),
]


@pytest.mark.parametrize(("case", "subject", "expected"), CASES, ids=[c[0] for c in CASES])
def test_watch_date(case: str, subject: Loan, expected: dt.date | PendingEscalation | None) -> None:
    assert watch_date(subject) == expected


def test_a_watch_date_is_always_after_the_evaluated_date() -> None:
    """So a run still to come for the evaluated date (a payment evaluates a loan for yesterday before
    yesterday's run) loses nothing by a date watch; only escalation is due on the evaluated date itself,
    and that is what the pending watch is for."""
    for _case, subject, expected in CASES:
        if isinstance(expected, dt.date):
            assert expected > subject.delinquency.as_of


@pytest.mark.parametrize(
    ("subject", "key"),
    [
        (loan(D(2025, 1, 20)), "2025-02-09"),
        (loan(D(2025, 4, 9)), "PENDING"),
        (loan(D(2025, 6, 8)), "PENDING"),
        (loan(D(2026, 2, 13), escalated=True), None),
        (loan(D(2025, 3, 1), status=LoanStatus.CLOSED), None),
    ],
)
def test_the_watch_key_is_the_watch_and_the_shard(subject: Loan, key: str | None) -> None:
    expected = None if key is None else f"{key}#{watch_shard(subject.loan_id):02d}"
    assert watch_key(subject) == expected


EVENTS: list[tuple[str, dict[str, Any], dt.date]] = [
    ("business_date", {"business_date": "2026-03-14"}, D(2026, 3, 14)),
    ("scheduler UTC: 00:30 IST on 2 Dec closes 1 Dec", {"scheduled_time": "2026-12-01T19:00:00Z"}, D(2026, 12, 1)),
    ("scheduler with IST offset", {"scheduled_time": "2026-12-02T00:30:00+05:30"}, D(2026, 12, 1)),
    ("23:59 IST is still the same IST day", {"scheduled_time": "2026-12-01T18:29:59Z"}, D(2026, 11, 30)),
    ("new year in IST, not in UTC", {"scheduled_time": "2025-12-31T19:00:00+00:00"}, D(2025, 12, 31)),
    ("watchdog event", {"check": "completed", "scheduled_time": "2026-03-15T00:30:00Z"}, D(2026, 3, 14)),
]


@pytest.mark.parametrize(("case", "event", "expected"), EVENTS, ids=[e[0] for e in EVENTS])
def test_business_date_from_event(case: str, event: dict[str, Any], expected: dt.date) -> None:
    assert business_date_from_event(event) == expected


BAD_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("scheduled_time without offset", {"scheduled_time": "2026-12-01T19:00:00"}),
    ("scheduled_time not a timestamp", {"scheduled_time": "tomorrow"}),
    ("business_date not ISO", {"business_date": "14/03/2026"}),
    ("neither key", {}),
    ("other keys only", {"time": "2026-12-01T19:00:00Z"}),
]


@pytest.mark.parametrize(("case", "event"), BAD_EVENTS, ids=[e[0] for e in BAD_EVENTS])
def test_business_date_from_bad_event(case: str, event: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        business_date_from_event(event)
