"""Applying a payment to a schedule (docs/rules.md, "Allocation").

Order: instalments by due date; within one, interest before principal; whatever remains goes to the
next instalment, including ones not yet due (a prepayment of later EMIs). The allocation records
exactly which instalment got how much. A reversal does not subtract an allocation: the loan's
standing payments are replayed without it (``domain.ledger``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from chalicelib.domain.schedule import Instalment


@dataclass(frozen=True, slots=True)
class AllocationLine:
    seq: int
    interest_paise: int
    principal_paise: int


@dataclass(frozen=True, slots=True)
class Allocation:
    lines: tuple[AllocationLine, ...]

    @property
    def interest_paise(self) -> int:
        return sum(line.interest_paise for line in self.lines)

    @property
    def principal_paise(self) -> int:
        return sum(line.principal_paise for line in self.lines)

    @property
    def total_paise(self) -> int:
        return self.interest_paise + self.principal_paise


def total_unpaid_paise(schedule: Sequence[Instalment]) -> int:
    """Everything still owed on the schedule, due or not: the ceiling for one payment. The sum of each
    instalment's ``unpaid_paise``, read from its fields at once: every replayed payment asks it."""
    return sum(i.principal_paise + i.interest_paise - i.paid_principal_paise - i.paid_interest_paise for i in schedule)


_DUE_ORDER = attrgetter("due_date", "seq")
_SEQ = attrgetter("seq")


def apply_payment(schedule: Sequence[Instalment], amount_paise: int) -> tuple[tuple[Instalment, ...], Allocation]:
    """Spread ``amount_paise`` over the schedule. Raises ValueError when it exceeds what is owed;
    the service checks that first and answers OVERPAYMENT, so reaching it here is a bug.

    A payment's replay runs this once for every standing payment, two or three times over (the ledger
    check, the allocation, the delinquency history), so it reads the instalments' fields directly
    rather than through their derived properties, and stops looking once the money is spent."""
    if amount_paise <= 0:
        raise ValueError("a payment must be positive")
    if amount_paise > total_unpaid_paise(schedule):
        raise ValueError("payment exceeds everything owed")
    ordered = sorted(schedule, key=_DUE_ORDER)
    remaining = amount_paise
    lines: list[AllocationLine] = []
    updated: list[Instalment] = []
    for n, inst in enumerate(ordered):
        if remaining == 0:
            updated.extend(ordered[n:])
            break
        interest_owed = inst.interest_paise - inst.paid_interest_paise
        principal_owed = inst.principal_paise - inst.paid_principal_paise
        if interest_owed == 0 and principal_owed == 0:  # settled
            updated.append(inst)
            continue
        interest = min(remaining, interest_owed)
        remaining -= interest
        principal = min(remaining, principal_owed)
        remaining -= principal
        lines.append(AllocationLine(inst.seq, interest, principal))
        updated.append(inst.with_paid(inst.paid_principal_paise + principal, inst.paid_interest_paise + interest))
    updated.sort(key=_SEQ)
    return tuple(updated), Allocation(tuple(lines))


def is_fully_paid(schedule: Sequence[Instalment]) -> bool:
    return all(i.is_settled for i in schedule)
