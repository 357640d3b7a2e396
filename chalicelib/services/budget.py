"""How long a job may work in one invocation, shared by every job that can stop and continue (the
day-end run, the reconciliation, a bulk reassignment): docs/day-end.md, "Time budget and continuation".

An invocation always does some work before it looks at the clock, then stops once what is left of its
time falls under a margin scaled to the time it started with, so the same code makes progress under
Lambda's 15 minutes, an API request's 30 s and Chalice's test client's 3 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chalicelib.domain.errors import DomainError

SAFETY_MARGIN_MS = 60_000
"""Hand over when less than this is left of the invocation's time (a 900 s Lambda keeps 60 s)..."""
SAFETY_MARGIN_SHARE = 5
"""... or less than a fifth of the time it started with, when that is shorter (Chalice's test client
gives 3 s: it keeps 600 ms). Either way, only after the invocation has done at least one page."""


@dataclass
class Budget:
    """The time one invocation may spend. ``spent()`` is never true before the invocation has finished
    a page (every invocation makes progress); after that, once less than the margin is left."""

    time_left_ms: Callable[[], int] | None
    margin_ms: int = 0
    progressed: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, time_left_ms: Callable[[], int] | None) -> Budget:
        if time_left_ms is None:
            return cls(None)
        at_start = max(0, time_left_ms())
        return cls(time_left_ms, min(SAFETY_MARGIN_MS, at_start // SAFETY_MARGIN_SHARE))

    def spent(self) -> bool:
        return self.time_left_ms is not None and self.progressed.is_set() and self.time_left_ms() <= self.margin_ms


def fresh_budget(time_left_ms: int) -> Callable[[], int]:
    """The clock of a fresh invocation with ``time_left_ms`` to spend: a continuation run in this
    process gets what a continuation on Lambda would."""
    deadline = time.monotonic() + time_left_ms / 1000
    return lambda: int((deadline - time.monotonic()) * 1000)


def failure_message(exc: BaseException, run_id: str) -> str:
    """What a failed run's record says about its failure: safe to show to any reader of the history.
    A domain error's code and message are written for people; anything else (a botocore or PynamoDB
    error's repr carries ARNs, table names and request ids) is named by its class only, and the log
    line written with it carries the full exception under the same run id."""
    if isinstance(exc, DomainError):
        return f"{exc.code}: {exc.message}"
    return f"internal error ({type(exc).__name__}); see the job's logs for run {run_id}"
