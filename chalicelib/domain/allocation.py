"""Applying a payment to a schedule (docs/rules.md, "Allocation").

Order: instalments by due date; within one, interest before principal; whatever remains goes to the
next instalment, including ones not yet due (a prepayment of later EMIs). The allocation records
exactly which instalment got how much. A reversal does not subtract an allocation: the loan's
standing payments are replayed without it (``domain.ledger``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    """Everything still owed on the schedule, due or not: the ceiling for one payment."""
    return sum(i.unpaid_paise for i in schedule)


def apply_payment(schedule: Sequence[Instalment], amount_paise: int) -> tuple[tuple[Instalment, ...], Allocation]:
    """Spread ``amount_paise`` over the schedule. Raises ValueError when it exceeds what is owed;
    the service checks that first and answers OVERPAYMENT, so reaching it here is a bug."""
    if amount_paise <= 0:
        raise ValueError("a payment must be positive")
    if amount_paise > total_unpaid_paise(schedule):
        raise ValueError("payment exceeds everything owed")
    remaining = amount_paise
    lines: list[AllocationLine] = []
    updated: list[Instalment] = []
    for inst in sorted(schedule, key=lambda i: (i.due_date, i.seq)):
        if remaining == 0 or inst.is_settled:
            updated.append(inst)
            continue
        interest = min(remaining, inst.interest_paise - inst.paid_interest_paise)
        remaining -= interest
        principal = min(remaining, inst.principal_paise - inst.paid_principal_paise)
        remaining -= principal
        lines.append(AllocationLine(inst.seq, interest, principal))
        updated.append(inst.with_paid(inst.paid_principal_paise + principal, inst.paid_interest_paise + interest))
    updated.sort(key=lambda i: i.seq)
    return tuple(updated), Allocation(tuple(lines))


def is_fully_paid(schedule: Sequence[Instalment]) -> bool:
    return all(i.is_settled for i in schedule)
