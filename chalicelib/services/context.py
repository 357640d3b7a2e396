"""Who is asking, from where: passed explicitly into every service call that changes or reveals data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib import clock
from chalicelib.domain.audit import Action, Actor, AuditEntry, Outcome
from chalicelib.domain.errors import Forbidden
from chalicelib.domain.roles import Role
from chalicelib.services.ids import new_id


@dataclass(frozen=True, slots=True)
class RequestContext:
    actor: Actor
    source_ip: str | None = None
    request_id: str | None = None

    @property
    def role(self) -> Role:
        return Role(self.actor.role)

    @property
    def is_collector(self) -> bool:
        return self.role is Role.COLLECTOR

    def require(self, allowed: frozenset[Role]) -> None:
        if self.role not in allowed:
            raise Forbidden(f"role {self.role.value} may not do this")

    def audit_entry(
        self,
        action: Action,
        entity_type: str,
        entity_id: str,
        before: Any,
        after: Any,
        outcome: Outcome = Outcome.SUCCESS,
        reason: str | None = None,
    ) -> AuditEntry:
        """An audit entry about one entity, by this caller, now."""
        return AuditEntry(
            audit_id=new_id(),
            at=clock.now_iso(),
            actor=self.actor,
            source_ip=self.source_ip,
            request_id=self.request_id,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            before=before,
            after=after,
            outcome=outcome,
            reason=reason,
        )

    def loan_audit(
        self,
        action: Action,
        loan_id: str,
        before: Any,
        after: Any,
        outcome: Outcome = Outcome.SUCCESS,
        reason: str | None = None,
    ) -> AuditEntry:
        """An audit entry about one loan: loan-level actions use the loan id as the entity id."""
        return self.audit_entry(action, "loan", loan_id, before, after, outcome, reason)
