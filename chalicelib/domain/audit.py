"""Audit entries: append-only facts about every change and every denied attempt (docs/rules.md, "Audit")."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_ATTEMPT_BYTES = 4096
"""An attempted value (a refused body) larger than this, as compact JSON, is stored as a digest: an
attacker must not be able to make the refusal fail, or the audit table expensive, by sending a lot."""


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
    ACCESS_DENIED = "ACCESS_DENIED"
    """A write route refused for the caller's role (403 FORBIDDEN)."""
    USER_CREATED = "USER_CREATED"
    USER_UPDATED = "USER_UPDATED"
    """Any change to a user: details, role, password (shown only as ``password_changed``), active."""
    AGGREGATES_REBUILT = "AGGREGATES_REBUILT"
    """The portfolio counters of one scope corrected to a recount (``ops rebuild-aggregates``), after
    a repair: entity type ``portfolio``, the scope (and month, for collections) as the entity id."""
    FLAG_CHANGED = "FLAG_CHANGED"
    """A kill switch turned on or off (``ops flags set``): entity type ``flag``, the flag's name as id."""
    REMINDER_RESENT = "REMINDER_RESENT"
    """A FAILED reminder queued again by ops (``ops reminders resend``): entity type ``reminder``."""


@dataclass(frozen=True, slots=True)
class Actor:
    sub: str
    role: str


DELINQUENCY_ACTOR = Actor(sub="system:dpd_job", role="system")
REMINDER_ACTOR = Actor(sub="system:reminders", role="system")
"""Whose name delinquency changes carry, whatever caused them (a day-end run, or the recompute after a
payment or reversal, whose entry keeps that request's id and source IP): the rules changed the loan,
not the person who posted the money."""


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


def bounded_attempt(value: Any) -> Any:
    """What an audit entry keeps of an attempted value: the value itself when it is small, else a
    SHA-256 digest of its compact JSON with its size and a short preview, enough to match it against
    logs or a client's copy without storing the whole thing."""
    try:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str, allow_nan=False)
        storable = True
    except ValueError:  # NaN or Infinity: not JSON, so never stored as it is
        text, storable = repr(value), False
    raw = text.encode()
    if storable and len(raw) <= MAX_ATTEMPT_BYTES:
        return value
    return {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw), "preview": text[:256]}
