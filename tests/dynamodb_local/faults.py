"""Botocore hooks that make one DynamoDB call fail, for the crash-resume tests on DynamoDB Local.

A hook is registered on the botocore client a PynamoDB model sends through. Every table shares that one
client (``adapters/dynamodb/models.py``, ``_shared_client``), so a hook on ``UpdateItem`` sees the
updates of every table: a test counts calls of a kind only one table gets during what it watches (the
run record's updates during a day-end run, with reconciliation and reminders off).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pynamodb.models import Model


class Fault:
    """Raise a fresh ``make_error()`` on the n-th call seen (counted across the job's threads), once.
    ``n=0`` only counts."""

    def __init__(self, n: int, make_error: Callable[[], Exception] | None = None) -> None:
        self.n = n
        self.make_error = make_error
        self.calls = 0
        self.fired = False
        self._lock = threading.Lock()

    def __call__(self, **_kwargs: Any) -> None:
        with self._lock:
            self.calls += 1
            fire = self.calls == self.n and self.make_error is not None
        if fire:
            assert self.make_error is not None
            self.fired = True
            raise self.make_error()


@contextmanager
def hooked(model: type[Model], event: str, handler: Callable[..., Any]) -> Iterator[None]:
    events = model._get_connection().connection.client.meta.events
    events.register(event, handler)
    try:
        yield
    finally:
        events.unregister(event, handler)
