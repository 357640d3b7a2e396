"""A loan's standing payments and the replay of its schedule from them (docs/rules.md, "Payments").

The paid amounts on a loan's schedule are never edited on their own: they are always the replay of
the loan's standing payments over the scheduled amounts. Posting adds an entry and replays; a
reversal removes one and replays, so the loan is exactly what it would be had the bounced payment
never been posted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


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
