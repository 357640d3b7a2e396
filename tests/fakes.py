"""In-memory implementations of the ports in ``chalicelib.services.ports``, for fast service tests.

They follow the DynamoDB adapters where behaviour is observable: the loan repository stores a loan
and its audit entry together or not at all, versions start at 1 and go up by one per update, listings
filter the same way and page with opaque cursors that are refused (ValidationFailed) when they do not
belong to the listing; audit listings are newest first by ``audit_id`` (time-ordered). The contract
suite in ``tests/integration/test_repository_contract.py`` holds these and the DynamoDB adapters to
the same behaviour.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chalicelib import clock
from chalicelib.domain.audit import Actor, AuditEntry
from chalicelib.domain.errors import Conflict, DomainError, LoanExists, ValidationFailed
from chalicelib.domain.loan import Loan
from chalicelib.domain.portfolio import MonthCollections, PortfolioChange, Scope, loan_change
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import AuditFilter, LoanFilter, LoginWindow, Page, ThrottleKey, User, UserFilter

T = TypeVar("T")

UNFILTERED_AUDIT_DAYS = 31
"""As the DynamoDB audit log: a listing without entity, actor or action and without ``from_day``
looks back this many days from ``to_day`` (or today)."""


def _encode_cursor(listing: Sequence[str | None], last_key: str) -> str:
    raw = json.dumps({"listing": list(listing), "after": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None, listing: Sequence[str | None]) -> str | None:
    """The key to resume after, or ValidationFailed for anything that is not this listing's cursor."""
    if cursor is None:
        return None
    bad = ValidationFailed("invalid cursor", [{"field": "cursor", "message": "not a cursor from this listing"}])
    try:
        data: Any = json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(data, dict) or set(data) != {"listing", "after"}:
        raise bad
    after = data["after"]
    if data["listing"] != list(listing) or not isinstance(after, str) or not after:
        raise bad
    return after


def _page(
    items: Iterable[T],
    key: Callable[[T], str],
    descending: bool,
    listing: Sequence[str | None],
    limit: int,
    cursor: str | None,
) -> Page[T]:
    after = _decode_cursor(cursor, listing)
    ordered = sorted(items, key=key, reverse=descending)
    if after is not None:
        ordered = [i for i in ordered if (key(i) < after if descending else key(i) > after)]
    taken = ordered[: limit + 1]
    if len(taken) <= limit:
        return Page(taken, None)
    page = taken[:limit]
    return Page(page, _encode_cursor(listing, key(page[-1])))


# One caller per role, for service tests.
ADMIN = RequestContext(Actor("root", "admin"), source_ip="10.0.0.1", request_id="req-admin")
MANAGER = RequestContext(Actor("meera", "manager"), source_ip="10.0.0.2", request_id="req-manager")
COLLECTOR = RequestContext(Actor("col1", "collector"), source_ip="10.0.0.3", request_id="req-col1")
OTHER_COLLECTOR = RequestContext(Actor("col2", "collector"), source_ip="10.0.0.4", request_id="req-col2")
AUDITOR = RequestContext(Actor("audra", "auditor"), source_ip="10.0.0.5", request_id="req-auditor")


class InMemoryAuditLog:
    def __init__(self) -> None:
        self.entries: dict[str, AuditEntry] = {}

    def append(self, entry: AuditEntry) -> None:
        if entry.audit_id in self.entries:
            raise ValueError(f"audit entry {entry.audit_id} already exists; the audit log is append-only")
        self.entries[entry.audit_id] = entry

    def list(self, filters: AuditFilter, limit: int, cursor: str | None) -> Page[AuditEntry]:
        from_day, to_day = filters.from_day, filters.to_day
        if not (filters.entity_id or filters.actor or filters.action):
            last = dt.date.fromisoformat(to_day) if to_day else clock.today_ist()
            to_day = last.isoformat()
            if from_day is None:
                from_day = (last - dt.timedelta(days=UNFILTERED_AUDIT_DAYS - 1)).isoformat()

        def wanted(e: AuditEntry) -> bool:
            return (
                (filters.entity_id is None or e.entity_id == filters.entity_id)
                and (filters.actor is None or e.actor.sub == filters.actor)
                and (filters.action is None or e.action.value == filters.action)
                and (from_day is None or e.day >= from_day)
                and (to_day is None or e.day <= to_day)
            )

        listing = ("audit", filters.entity_id, filters.actor, filters.action, filters.from_day, filters.to_day)
        return _page(filter(wanted, self.entries.values()), lambda e: e.audit_id, True, listing, limit, cursor)


BeforeUpdate = Callable[[Loan], None]


@dataclass
class InMemoryPortfolio:
    """The portfolio counters as plain sums (no shards): what the DynamoDB items add up to."""

    counters: dict[Scope, dict[str, int]] = field(default_factory=dict)
    collections: dict[tuple[Scope, dt.date], tuple[int, int]] = field(default_factory=dict)

    def apply(self, change: PortfolioChange) -> None:
        for scope, adds in change.counters.items():
            target = self.counters.setdefault(scope, {})
            for name, value in adds.items():
                target[name] = target.get(name, 0) + value
        for c in change.collections:
            paise, count = self.collections.get((c.scope, c.day), (0, 0))
            self.collections[(c.scope, c.day)] = (paise + c.paise, count + c.count)

    def read(self, scope: Scope, month: str) -> tuple[dict[str, int], MonthCollections]:
        days = {d.day: v for (s, d), v in self.collections.items() if s == scope and clock.month_of(d) == month}
        return (
            {k: v for k, v in self.counters.get(scope, {}).items() if v},
            MonthCollections(sum(p for p, _ in days.values()), sum(n for _, n in days.values()), days),
        )


@dataclass
class InMemoryLoanRepository:
    """Loans in a dict; shares ``audit`` with the services so entries written "in the same
    transaction" show up in the same log that ``AuditLog.list`` reads."""

    audit: InMemoryAuditLog
    loans: dict[str, Loan] = field(default_factory=dict)
    portfolio: InMemoryPortfolio = field(default_factory=InMemoryPortfolio)
    update_calls: int = field(default=0, init=False)
    created_many: list[list[tuple[Loan, AuditEntry]]] = field(default_factory=list, init=False)
    """What each ``create_many`` call was given."""
    updated_many: list[list[str]] = field(default_factory=list, init=False)
    """The ids each ``update_many`` call was given."""
    _before_update: list[BeforeUpdate] = field(default_factory=list, init=False, repr=False)

    def on_next_update(self, hook: BeforeUpdate) -> None:
        """Run ``hook(loan)`` at the start of a later ``update`` call (one hook per call, in order),
        before the version check: the place where a concurrent writer gets in first."""
        self._before_update.append(hook)

    def get(self, loan_id: str) -> Loan | None:
        return self.loans.get(loan_id)

    def get_many(self, loan_ids: Sequence[str]) -> dict[str, Loan]:
        """Through :meth:`get`, so a subclass's lock applies."""
        found = {loan_id: self.get(loan_id) for loan_id in loan_ids}
        return {loan_id: loan for loan_id, loan in found.items() if loan is not None}

    def create(self, loan: Loan, audit: AuditEntry) -> Loan:
        if loan.loan_id in self.loans:
            raise LoanExists.of(loan.loan_id)
        stored = dataclasses.replace(loan, version=1)
        self.audit.append(audit)
        self.loans[loan.loan_id] = stored
        self.portfolio.apply(loan_change(None, loan))
        return stored

    def create_many(self, created: Sequence[tuple[Loan, AuditEntry]]) -> list[Loan | DomainError]:
        ids = [loan.loan_id for loan, _ in created]
        assert len(set(ids)) == len(ids), f"create_many takes distinct ids: {ids}"
        self.created_many.append(list(created))
        answers: list[Loan | DomainError] = []
        for loan, audit in created:
            try:
                answers.append(self.create(loan, audit))
            except LoanExists as taken:
                answers.append(taken)
        return answers

    def update(self, before: Loan, loan: Loan, audit: AuditEntry) -> Loan:
        self.update_calls += 1
        if self._before_update:
            self._before_update.pop(0)(loan)
        current = self.loans.get(loan.loan_id)
        if current is None or current.version != loan.version:
            raise Conflict(
                f"loan {loan.loan_id} was changed by someone else; read it again and retry",
                {"loan_id": loan.loan_id},
            )
        stored = dataclasses.replace(loan, version=loan.version + 1)
        self.audit.append(audit)
        self.loans[loan.loan_id] = stored
        self.portfolio.apply(loan_change(current, loan))
        return stored

    def update_many(self, changes: Sequence[tuple[Loan, Loan, AuditEntry]]) -> list[Loan | DomainError]:
        """Each change through :meth:`update` (so its hooks and a subclass's lock apply to each loan)."""
        ids = [loan.loan_id for _, loan, _ in changes]
        assert len(set(ids)) == len(ids), f"update_many takes distinct ids: {ids}"
        self.updated_many.append([loan.loan_id for _, loan, _ in changes])
        answers: list[Loan | DomainError] = []
        for before, loan, audit in changes:
            try:
                answers.append(self.update(before, loan, audit))
            except Conflict as stale:
                answers.append(stale)
        return answers

    def list(self, filters: LoanFilter, limit: int, cursor: str | None) -> Page[Loan]:
        def wanted(loan: Loan) -> bool:
            d = loan.delinquency
            return (
                (filters.bucket is None or d.bucket.value == filters.bucket)
                and (filters.classification is None or d.classification.value == filters.classification)
                and (filters.status is None or loan.status.value == filters.status)
                and (filters.collector_id is None or loan.collector_id == filters.collector_id)
            )

        # The same access paths as DynamoDB: a cursor resumes within the collector's loans, within a
        # bucket, or across the whole book, and is refused anywhere else.
        listing: tuple[str, str | None]
        if filters.collector_id:
            listing = ("collector", filters.collector_id)
        elif filters.bucket:
            listing = ("bucket", filters.bucket)
        else:
            listing = ("all", None)
        return _page(filter(wanted, self.loans.values()), lambda loan: loan.loan_id, False, listing, limit, cursor)


class InMemoryUserStore:
    """Users in a dict. With ``audit`` given, ``create`` and ``update`` append their entry to it (the
    same transaction, as the DynamoDB store); without one they keep entries in ``audit_entries``."""

    def __init__(self, users: Iterable[User] = (), audit: InMemoryAuditLog | None = None) -> None:
        self.users: dict[str, User] = {u.username: u for u in users}
        self.audit = audit if audit is not None else InMemoryAuditLog()
        self.gets = 0
        """How many times ``get`` was called (the revocation cache's tests count reads)."""
        self.fail_reads: Exception | None = None
        """Raised by ``get`` while set (a storage outage)."""

    def get(self, username: str) -> User | None:
        self.gets += 1
        if self.fail_reads is not None:
            raise self.fail_reads
        return self.users.get(username)

    def put(self, user: User) -> None:
        self.users[user.username] = user

    def create(self, user: User, audit: AuditEntry) -> User:
        if user.username in self.users:
            raise Conflict(f"user {user.username} already exists", {"username": user.username})
        stored = dataclasses.replace(user, version=1)
        self.audit.append(audit)
        self.users[user.username] = stored
        return stored

    def update(self, user: User, audit: AuditEntry) -> User:
        current = self.users.get(user.username)
        if current is None or current.version != user.version:
            raise Conflict(
                f"user {user.username} was changed by someone else; read it again and retry",
                {"username": user.username},
            )
        stored = dataclasses.replace(user, version=user.version + 1)
        self.audit.append(audit)
        self.users[user.username] = stored
        return stored

    def list(self, filters: UserFilter, limit: int, cursor: str | None) -> Page[User]:
        def wanted(user: User) -> bool:
            return (filters.role is None or user.role == filters.role) and (
                filters.active is None or user.active == filters.active
            )

        listing = ("users", filters.role, None if filters.active is None else str(filters.active))
        return _page(filter(wanted, self.users.values()), lambda u: u.username, False, listing, limit, cursor)


@dataclass
class _Window:
    started_at: int
    attempts: int


class InMemoryLoginThrottle:
    """A fixed window per (username, source), as the DynamoDB throttle: the window opens at the first
    attempt and counts until ``window_seconds`` have passed; the next attempt after that opens a new one."""

    def __init__(self) -> None:
        self.windows: dict[ThrottleKey, _Window] = {}

    def count_attempt(self, key: ThrottleKey, now: int, window_seconds: int) -> LoginWindow:
        window = self.windows.get(key)
        if window is None or window.started_at < now - window_seconds:
            window = self.windows[key] = _Window(started_at=now, attempts=0)
        window.attempts += 1
        return LoginWindow(attempts=window.attempts, started_at=window.started_at)

    def clear(self, key: ThrottleKey) -> None:
        self.windows.pop(key, None)


@dataclass(frozen=True)
class MetricCall:
    name: str
    dimensions: dict[str, str]


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    dimensions: dict[str, str]


class RecordingMetrics:
    def __init__(self) -> None:
        self.calls: list[MetricCall] = []
        """Counts, one entry per occurrence (``count(name, times=3)`` adds three)."""
        self.measurements: list[Measurement] = []
        """Data points of ``measure``, one entry each."""

    def count(self, name: str, times: int = 1, **dimensions: str) -> None:
        self.calls.extend(MetricCall(name, dict(dimensions)) for _ in range(times))

    def measure(self, name: str, value: float, unit: str, **dimensions: str) -> None:
        self.measurements.append(Measurement(name, value, unit, dict(dimensions)))

    def counted(self, name: str) -> int:
        """How many times ``name`` was counted, whatever its dimensions."""
        return sum(1 for c in self.calls if c.name == name)

    def measured(self, name: str) -> list[Measurement]:
        return [m for m in self.measurements if m.name == name]
