"""The latest business date a day-end run completed, cached briefly: every loan read needs it, and it
changes once a day."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

from chalicelib import clock

CACHE_SECONDS = 60


class CompletedThrough:
    """Callable giving the latest completed run date. A new run's date reaches other Lambda containers
    within ``CACHE_SECONDS``; the container that ran it knows at once through :meth:`note`."""

    def __init__(self, latest_completed: Callable[[], dt.date | None], cache_seconds: int = CACHE_SECONDS) -> None:
        self._latest_completed = latest_completed
        self._cache_seconds = cache_seconds
        self._value: dt.date | None = None
        self._read_at: int | None = None
        self._lock = threading.Lock()

    def __call__(self) -> dt.date | None:
        now = clock.now_epoch()
        with self._lock:
            if self._read_at is None or not 0 <= now - self._read_at < self._cache_seconds:
                self._value = self._latest_completed()
                self._read_at = now
            return self._value

    def note(self, business_date: dt.date) -> None:
        with self._lock:
            if self._value is None or business_date > self._value:
                self._value = business_date
