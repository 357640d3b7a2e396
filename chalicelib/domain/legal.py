"""Legal escalation (docs/day-end.md): a loan reaching dpd 90 gets one legal case, once and for good."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LegalCase:
    loan_id: str
    case_id: str
    escalated_on: dt.date
    dpd: int
    overdue_paise: int
    outstanding_principal_paise: int
    borrower_name: str
    collector_id: str | None
    branch: str | None
    created_at: str
    status: str = "OPEN"
