"""Trying again: the one helper every retry loop of the product goes through, and every policy it runs.

These failures are worth another attempt, and each has its policy here, stated once:

- ``OPTIMISTIC_WRITE``: an optimistic write lost a race. The item (a loan, or a login counter) changed
  between our read and our conditional write; the attempt reads again, decides again and writes
  again. Distinct payments landing on one loan together must all land, so this allows many attempts
  with backoff before the caller gets 409 ``CONFLICT`` (503 for the login counter).
- ``TRANSACTION_CONTENTION``: DynamoDB cancelled a transaction because another transaction held one of
  its items (``TransactionConflict``), not because a condition failed. The same write is simply sent
  again once the other settles. ``BULK_CONTENTION`` is the same for the bulk import's and the bulk
  reassignment's transactions of many loans, which meet each other more often.
- ``UNPROCESSED_KEYS``: DynamoDB did part of a batched read or write and handed the rest back (it
  does so when a partition is throttled); the rest is sent again.
- ``REMINDER_PUBLISH``: a reminder's publish to its topic did not get an answer.

All pause with *full jitter* (a random wait between 0 and an exponentially growing cap), so writers
that collided once do not collide again in step. Throttling and network errors are not retried here:
the AWS SDK retries those itself (``max_retry_attempts`` on the PynamoDB models, botocore's defaults
elsewhere) before an error reaches this code. The one exception is a batched read that DynamoDB
throttled in part: its answer is a success, which the SDK does not retry, with the unread keys in it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    """How many times the operation runs at most, the first time included."""
    base_seconds: float
    """Cap of the first pause; it doubles with each attempt ..."""
    cap_seconds: float
    """... up to this."""

    def pause(self, attempt: int) -> None:
        """Sleep before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2**attempt)
        time.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not cryptography


OPTIMISTIC_WRITE = RetryPolicy(attempts=12, base_seconds=0.02, cap_seconds=0.5)
"""Read, decide, write-if-unchanged: payments and reversals, contact edits and assignment, the day-end
run's write of one loan, the login counter. Twelve attempts cover a burst of writers on one item (each
attempt that loses does so because another one won) in well under the API's time limit."""

REMINDER_PUBLISH = RetryPolicy(attempts=3, base_seconds=0.2, cap_seconds=1.0)
"""One reminder's publish when the topic does not answer (a timeout, a dropped connection): sent again
at once with the same deduplication id, which the topic drops if the first one did arrive. The
attempts across sender runs after a refused publish are ``domain.reminders.RETRY_AFTER_MINUTES``."""

TRANSACTION_CONTENTION = RetryPolicy(attempts=3, base_seconds=0.01, cap_seconds=0.2)
"""The same transaction again; contention clears as soon as the other transaction commits."""

BULK_CONTENTION = RetryPolicy(attempts=8, base_seconds=0.02, cap_seconds=1.0)
"""The same, for the bulk writes' transactions of many loans (the import, the reassignment): each adds
to the counters of every collector and branch its loans belong to, so their threads meet each other on
a counter far more often than single writes do, and no one is waiting on one transaction's answer. At
most about 2.3 s of pauses; a reassignment then moves that transaction's loans one at a time."""

UNPROCESSED_KEYS = RetryPolicy(attempts=8, base_seconds=0.05, cap_seconds=1.0)
"""A batched read's keys that DynamoDB handed back unread (a throttled partition, or an answer past
16 MB), or a batched write's puts it handed back undone, sent again after a pause, as AWS asks of
clients. The attempts are one budget for the whole read or write, however many requests it takes: at
most 3.55 s of pauses in all, so a request inside the API's time limit gives up with 503 rather than a
timeout."""


def retry(
    policy: RetryPolicy,
    attempt: Callable[[], T],
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    exhausted: Callable[[], BaseException],
) -> T:
    """Run ``attempt`` until it returns, retrying (after ``policy``'s pause) when it raises one of
    ``retry_on``; any other exception goes straight to the caller. When every attempt failed, raise
    ``exhausted()`` — the error the caller's client sees, chained to the last failure."""
    last: BaseException | None = None
    for n in range(policy.attempts):
        try:
            return attempt()
        except retry_on as exc:
            last = exc
            if n + 1 < policy.attempts:
                policy.pause(n)
    raise exhausted() from last
