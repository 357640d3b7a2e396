"""Backoff between optimistic-concurrency retries."""

from __future__ import annotations

import random
import time


def backoff(attempt: int, base_seconds: float = 0.01, cap_seconds: float = 0.2) -> None:
    """Full-jitter exponential backoff, so writers that collided do not collide again in step."""
    time.sleep(random.uniform(0, min(cap_seconds, base_seconds * 2**attempt)))  # noqa: S311 - not crypto
