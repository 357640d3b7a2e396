"""Audit entries (SPEC §8): append-only facts about every change and every denied attempt."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    SUCCESS = "SUCCESS"
    DENIED = "DENIED"
    FAILED = "FAILED"


class Action(StrEnum):
    LOAN_CREATED = "LOAN_CREATED"
    LOAN_UPDATED = "LOAN_UPDATED"
    LOAN_ASSIGNED = "LOAN_ASSIGNED"
    PAYMENT_POSTED = "PAYMENT_POSTED"
    PAYMENT_REVERSED = "PAYMENT_REVERSED"
    FINANCIAL_GUARD_BLOCKED = "FINANCIAL_GUARD_BLOCKED"
    DELINQUENCY_CHANGED = "DELINQUENCY_CHANGED"
    LEGAL_ESCALATED = "LEGAL_ESCALATED"


@dataclass(frozen=True, slots=True)
class Actor:
    sub: str
    role: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    audit_id: str
    at: str
    actor: Actor
    source_ip: str | None
    request_id: str | None
    action: Action
    entity_type: str
    entity_id: str
    before: Any
    after: Any
    outcome: Outcome
    reason: str | None = None

    @property
    def day(self) -> str:
        """IST date of ``at`` (``at`` carries the +05:30 offset), the partition of the by-day index."""
        return self.at[:10]
