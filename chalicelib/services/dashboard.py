"""The morning numbers (docs/dashboard.md): one scope's figures from its maintained counters, never
from a scan, so a call costs the same at one loan and at ten million."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib import clock
from chalicelib.domain.errors import Forbidden, ValidationFailed
from chalicelib.domain.portfolio import BOOK, Scope, ScopeKind, Summary, summarise
from chalicelib.domain.roles import READ_LOANS
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import PortfolioReader


@dataclass
class DashboardService:
    portfolio: PortfolioReader

    def summary(self, ctx: RequestContext, collector_id: str | None = None, branch: str | None = None) -> Summary:
        """The book, one collector's loans or one branch's loans. A collector sees their own portfolio
        only, with or without naming it; asking for anyone else's is refused (403)."""
        ctx.require(READ_LOANS)
        scope = _scope(ctx, collector_id, branch)
        today = clock.today_ist()
        counters, month = self.portfolio.read(scope, clock.month_of(today))
        return summarise(scope, counters, month, clock.last_completed_business_date(), today)


def _scope(ctx: RequestContext, collector_id: str | None, branch: str | None) -> Scope:
    if collector_id is not None and branch is not None:
        raise ValidationFailed(
            "filter by collector_id or by branch, not both",
            [{"field": "branch", "message": "not together with collector_id"}],
        )
    if ctx.is_collector:
        if branch is not None or collector_id not in (None, ctx.actor.sub):
            raise Forbidden("a collector sees only their own portfolio")
        return Scope(ScopeKind.COLLECTOR, ctx.actor.sub)
    if collector_id is not None:
        return Scope(ScopeKind.COLLECTOR, collector_id)
    if branch is not None:
        return Scope(ScopeKind.BRANCH, branch)
    return BOOK
