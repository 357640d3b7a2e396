"""Denied attempts go on the audit trail (docs/rules.md, "Audit"): a 403 on a write route, a
financial-guard refusal, a duplicate UTR. Ops need to see who tried what from where, so each one is
an entry with outcome DENIED, the actor and the source IP.

Recording a denial must never change the answer the caller gets: the refusal stands even if the
audit table is unreachable (the failure is logged and counted as ``AuditWriteFailed`` instead), and
an oversized attempt is stored as a digest (``domain.audit.bounded_attempt``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.audit import Action, Outcome, bounded_attempt
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import AuditLog, Metrics

logger = logging.getLogger(__name__)
"""Written by the app's log handler (docs/logging.md)."""


@dataclass
class DenialRecorder:
    audit: AuditLog
    metrics: Metrics

    def record(
        self,
        ctx: RequestContext,
        action: Action,
        entity_type: str,
        entity_id: str,
        attempted: Any,
        reason: str,
    ) -> None:
        """Append one DENIED entry; never raises."""
        try:
            entry = ctx.audit_entry(
                action, entity_type, entity_id, None, bounded_attempt(attempted), Outcome.DENIED, reason
            )
            self.audit.append(entry)
        except Exception:
            logger.exception("could not audit a denied attempt", extra={"action": action.value, "reason": reason})
            self.metrics.count("AuditWriteFailed")
