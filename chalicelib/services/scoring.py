"""Reading collector scores (docs/scoring.md). The figures are computed by the reconciliation pass and
stored per month; this reads them, never the loans. The current IST month is live: its collected
amounts come from the dashboard's collection counters at the moment of the call, so a payment posted
now counts at once; a closed month is answered as stored (frozen once a pass ran for its last day)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib import clock
from chalicelib.clock import month_of, parse_month
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.flags import FlagName
from chalicelib.domain.scoring import READ_SCORES, MonthScores, ScoreRow
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import Flags, LiveCollections, ScoreStore


@dataclass(frozen=True)
class ScoresAnswer:
    month: str
    enabled: bool
    as_of: str | None = None
    frozen: bool = False
    rows: tuple[ScoreRow, ...] = ()


def score_row_dict(row: ScoreRow) -> dict[str, Any]:
    """A collector's row as the API answers it (docs/api.md, "Collector scores")."""
    return {
        "collector_id": row.collector_id,
        "loans": row.loans,
        "amount_due_paise": row.amount_due_paise,
        "collected_paise": row.collected_paise,
        # A ratio, computed exactly (a Fraction of paise); a float only here, in the JSON answer.
        "collection_efficiency": float(row.collection_efficiency),
        "cured": row.cured,
        "rolled_forward": row.rolled_forward,
        "score": row.score,
    }


def month_asked(raw: str | None) -> str:
    """The month a request names (``YYYY-MM``), this IST month when it names none; a malformed month or
    one after this month is a 400."""
    this = month_of(clock.today_ist())
    if raw is None:
        return this
    try:
        first = parse_month(raw)
    except ValueError:
        raise ValidationFailed("month must be YYYY-MM", [{"field": "month", "message": "YYYY-MM (IST)"}]) from None
    if month_of(first) > this:
        raise ValidationFailed("month is in the future", [{"field": "month", "message": f"at most {this}"}])
    return month_of(first)


@dataclass
class ScoringService:
    scores: ScoreStore
    live: LiveCollections
    flags: Flags

    def month(self, ctx: RequestContext, month: str | None = None) -> ScoresAnswer:
        """One month's rows: every collector's for admins and managers, a collector's own only. With
        ``SCORING_ENABLED`` off nothing is read and the answer says so."""
        ctx.require(READ_SCORES)
        asked = month_asked(month)
        if not self.flags.read(FlagName.SCORING_ENABLED).enabled:
            return ScoresAnswer(asked, enabled=False)
        own = ctx.actor.sub if ctx.is_collector else None
        stored = self.scores.month(asked) or MonthScores(asked)
        rows = {r.collector_id: r for r in stored.rows if own is None or r.collector_id == own}
        if asked == month_of(clock.today_ist()):
            live = self.live.collected(asked, [own] if own is not None else list(rows), every_collector=own is None)
            for collector in {*rows, *(c for c, paise in live.items() if paise)}:
                row = rows.get(collector, ScoreRow(collector))
                rows[collector] = row.with_collected(live.get(collector, 0))
        ordered = tuple(rows[c] for c in sorted(rows))
        return ScoresAnswer(asked, True, stored.as_of.isoformat() if stored.as_of else None, stored.frozen, ordered)
