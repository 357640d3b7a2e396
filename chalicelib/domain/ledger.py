"""A loan's standing payments and the replay of its schedule from them (docs/rules.md, "Payments").

The paid amounts on a loan's schedule are never edited on their own: they are always the replay of
the loan's standing payments over the scheduled amounts. Posting adds an entry and replays; a
reversal removes one and replays, so the loan is exactly what it would be had the bounced payment
never been posted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from chalicelib.domain.allocation import Allocation, apply_payment
from chalicelib.domain.delinquency import Delinquency, assess_after
from chalicelib.domain.schedule import Instalment


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One standing payment, as the replay needs it."""

    payment_id: str
    """Time-ordered (a ULID made when it was posted): orders payments posted on the same date."""
    payment_date: dt.date
    landed_on: dt.date
    """The business date the payment was recomputed for when it was posted (the last completed
    business date then): the point in the loan's history where its money arrived."""
    amount_paise: int


@dataclass(frozen=True, slots=True)
class Replay:
    """A schedule replayed from its standing payments."""

    schedule: tuple[Instalment, ...]
    """The scheduled amounts with the paid amounts the payments add up to."""
    allocations: tuple[Allocation, ...]
    """Where each payment's money sits now, in the order of the payments given."""
    delinquency: Delinquency
    """As of the business date asked for, with NPA carried through the loan's history."""


def allocation_order(entry: LedgerEntry) -> tuple[dt.date, str]:
    """Money is allocated in the order it was paid: payment date, then posting time."""
    return entry.payment_date, entry.payment_id


def _landing_order(entry: LedgerEntry) -> tuple[dt.date, str]:
    return entry.landed_on, entry.payment_id


def replay(schedule: Sequence[Instalment], payments: Sequence[LedgerEntry], business_date: dt.date) -> Replay:
    """The loan as its standing payments make it, as of the end of ``business_date``.

    - Allocation: the payments, in :func:`allocation_order`, are applied one after the other to the
      schedule with nothing paid (``allocation.apply_payment``: oldest instalment first, interest
      before principal). What the instalments end up holding depends only on the total, but which
      payment covers which instalment depends on the order, so a payment dated earlier moves ahead
      of later ones and a reversal moves later money onto the oldest unpaid instalment.
    - Delinquency: NPA is sticky, so the classification depends on the loan's history, not only on
      where it stands today. The history is replayed in the order the money landed: before each
      payment, every day-end up to the business date it landed on; then the payment's own
      recompute; finally every day-end up to ``business_date``. Each step is
      ``delinquency.assess_after`` from the step before, the same step a day-end run takes. Between
      two payments nothing is paid, so a single assessment at the later date gives what each day-end
      in between would have (overdue amounts only grow while nothing is paid).

    Raises ValueError if the payments add up to more than the schedule (the services refuse such a
    payment first, so reaching it is a bug) or if ``business_date`` is before a payment landed.
    """
    unpaid = _unpaid(schedule)
    current, allocations = allocate(unpaid, payments)
    # What the instalments hold depends only on the total paid so far (the fill order is fixed), so the
    # history can add the payments in landing order while the allocations above used payment order.
    state: Delinquency | None = None
    paid = unpaid
    for entry in sorted(payments, key=_landing_order):
        if entry.landed_on > business_date:
            raise ValueError(f"payment {entry.payment_id} landed on {entry.landed_on}, after {business_date}")
        state = assess_after(state, paid, entry.landed_on)
        paid = apply_payment(paid, entry.amount_paise)[0]
        state = assess_after(state, paid, entry.landed_on)
    delinquency = assess_after(state, current, business_date)
    return Replay(current, allocations, delinquency)


def allocate(
    schedule: Sequence[Instalment], payments: Sequence[LedgerEntry]
) -> tuple[tuple[Instalment, ...], tuple[Allocation, ...]]:
    """The allocation half of :func:`replay`: the schedule the payments fill, and each payment's
    allocation (in the order the payments were given)."""
    order = sorted(range(len(payments)), key=lambda n: allocation_order(payments[n]))
    allocations: list[Allocation] = [Allocation(())] * len(payments)
    current = _unpaid(schedule)
    for n in order:
        current, allocations[n] = apply_payment(current, payments[n].amount_paise)
    return current, tuple(allocations)


def _unpaid(schedule: Sequence[Instalment]) -> tuple[Instalment, ...]:
    """The schedule with nothing paid (an instalment with nothing paid is kept as it is: instalments are
    immutable, and a replay starts from this two or three times)."""
    return tuple(i if i.paid_principal_paise == 0 == i.paid_interest_paise else i.with_paid(0, 0) for i in schedule)
