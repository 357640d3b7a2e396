"""What the services need from storage, as protocols. DynamoDB implementations live in
``chalicelib.adapters.dynamodb``; in-memory fakes for fast tests live in ``tests/fakes.py``; one
contract suite holds both to the same behaviour."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import DomainError
from chalicelib.domain.flags import FlagName, FlagValue
from chalicelib.domain.legal import LegalCase
from chalicelib.domain.loan import Loan
from chalicelib.domain.payment import Payment
from chalicelib.domain.portfolio import CounterKey, CounterTotals, MonthCollections, Scope
from chalicelib.domain.reconciliation import ReconciliationRun, SegmentProgress
from chalicelib.domain.reminders import Reminder
from chalicelib.domain.runs import (
    FanOut,
    ReminderAnchor,
    RunOutcome,
    RunRecord,
    RunRequest,
    RunStatus,
    Segment,
    SegmentState,
)
from chalicelib.domain.scoring import MonthScores, Reassignment

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


@dataclass(frozen=True)
class LoanFilter:
    bucket: str | None = None
    classification: str | None = None
    status: str | None = None
    collector_id: str | None = None


@dataclass(frozen=True)
class AuditFilter:
    entity_id: str | None = None
    actor: str | None = None
    action: str | None = None
    from_day: str | None = None
    """Inclusive IST date ``YYYY-MM-DD``."""
    to_day: str | None = None
    """Inclusive IST date ``YYYY-MM-DD``."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    password_hash: str
    active: bool = True
    display_name: str | None = None
    branch: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    tokens_valid_after: int = 0
    """Epoch seconds: a token issued (``iat``) before this is refused. Set when the password changes
    or the user is deactivated (docs/auth.md, "Ending tokens")."""
    version: int = 0
    """0 for a user not stored yet, or stored before users had versions; each update adds one."""


@dataclass(frozen=True)
class UserFilter:
    role: str | None = None
    active: bool | None = None


MetricUnit = Literal["Count", "Seconds", "Milliseconds"]
"""The CloudWatch units the app's measurements use."""


class Metrics(Protocol):
    def count(self, name: str, times: int = 1, **dimensions: str) -> None:
        """Count ``times`` occurrences of a business event in one data point (alarms watch some of these)."""
        ...

    def measure(self, name: str, value: float, unit: MetricUnit, **dimensions: str) -> None:
        """One data point of a quantity (a duration, how many loans are in a bucket), 0 included: for
        the dashboard, and for alarms that need a point every time (docs/logging.md, "Metrics")."""
        ...


class Flags(Protocol):
    def read(self, name: FlagName, fresh: bool = False) -> FlagValue:
        """The flag's effective value; ``fresh`` bypasses the cache (jobs, at the start of a run)."""
        ...

    def all(self) -> list[FlagValue]: ...


class LoanRepository(Protocol):
    def get(self, loan_id: str) -> Loan | None: ...

    def get_many(self, loan_ids: Sequence[str]) -> dict[str, Loan]:
        """The loans of these ids that exist, by id, each read as :meth:`get` reads it (strongly
        consistent), a hundred to a request."""
        ...

    def create(self, loan: Loan, audit: AuditEntry) -> Loan:
        """Store a new loan, its audit entry and its portfolio counters atomically; LoanExists if the
        id is taken."""
        ...

    def create_many(self, created: Sequence[tuple[Loan, AuditEntry]]) -> list[Loan | DomainError]:
        """Store many new loans as :meth:`create` does, each with its audit entry, answering each in its
        place: the stored loan, ``LoanExists``, or the error that stopped its write (the others are
        stored all the same). Ids must be distinct."""
        ...

    def update(self, before: Loan, loan: Loan, audit: AuditEntry) -> Loan:
        """Replace ``before``, the loan as read, with ``loan`` if its stored version is still
        ``loan.version``; Conflict otherwise. The audit entry and the portfolio counters' change
        (``domain.portfolio.loan_change``) are written in the same transaction. Returns the loan with
        its new version."""
        ...

    def update_many(self, changes: Sequence[tuple[Loan, Loan, AuditEntry]]) -> list[Loan | DomainError]:
        """:meth:`update` for many loans at once, given as ``(before, loan, audit)``, answering each in
        its place: the loan with its new version, ``Conflict`` when its stored version was not
        ``loan.version``, or the error that stopped its write (the others are written all the same).
        Ids must be distinct."""
        ...

    def list(self, filters: LoanFilter, limit: int, cursor: str | None) -> Page[Loan]: ...


class AuditLog(Protocol):
    def append(self, entry: AuditEntry) -> None: ...

    def list(self, filters: AuditFilter, limit: int, cursor: str | None) -> Page[AuditEntry]:
        """Newest first."""
        ...


class UserStore(Protocol):
    """What logins and loans need of users: read one, and (demo seed, ops CLI) store one unaudited."""

    def get(self, username: str) -> User | None: ...

    def put(self, user: User) -> None:
        """Create or replace a user, unaudited (the demo seed and ``AuthService.add_user``)."""
        ...


class UserRepository(UserStore, Protocol):
    """The users API's store: every change with its audit entry. A separate protocol from
    :class:`UserStore` so the lookups that only read (the CSV import's memo) need not implement it."""

    def create(self, user: User, audit: AuditEntry) -> User:
        """Store a new user and its audit entry atomically; Conflict if the username is taken.
        Returns the user with version 1."""
        ...

    def update(self, user: User, audit: AuditEntry) -> User:
        """Replace the user if its stored version is still ``user.version``; Conflict otherwise (and
        if it does not exist). The audit entry is written in the same transaction. Returns the user
        with its new version."""
        ...

    def list(self, filters: UserFilter, limit: int, cursor: str | None) -> Page[User]:
        """Users matching ``filters``, each once across the pages, in no promised order (DynamoDB scans
        in hash order, the fakes in username order)."""
        ...


@dataclass(frozen=True)
class ThrottleKey:
    """Whose login attempts count together: one username tried from one source."""

    username: str
    source: str
    """A normalised source address, or ``unknown`` (see ``services.auth.throttle_source``)."""


@dataclass(frozen=True)
class LoginWindow:
    """The throttle window one attempt was counted in."""

    attempts: int
    """Attempts counted in this window so far, the one just counted included."""
    started_at: int
    """Epoch seconds of the window's first attempt; the window lasts ``window_seconds`` from there."""


class LoginThrottle(Protocol):
    def count_attempt(self, key: ThrottleKey, now: int, window_seconds: int) -> LoginWindow:
        """Count one attempt atomically, before its password is checked: into the window that started
        at most ``window_seconds`` before ``now``, or into a new window opened at ``now``. Concurrent
        attempts in one window each get a different count, so a limit on the count is exact."""
        ...

    def clear(self, key: ThrottleKey) -> None:
        """Forget ``key``'s attempts (after a successful login)."""
        ...


class PortfolioReader(Protocol):
    def read(self, scope: Scope, month: str) -> tuple[dict[str, int], MonthCollections]:
        """A scope's counters (``domain.portfolio.LOAN_COUNTERS``; absent ones are 0) and its
        collections in ``month`` (``YYYY-MM``), read consistently, in a fixed number of items."""
        ...


class UtrTaken(Exception):
    """The UTR claim already exists: some earlier payment owns this UTR."""

    def __init__(self, utr: str) -> None:
        super().__init__(f"UTR {utr} already claimed")
        self.utr = utr


@dataclass(frozen=True)
class ReceiptRecord:
    """The Idempotency-Key record a change writes with itself: the answer the request gets, stored
    under ``record_id`` by the change's own transaction (docs/api.md, "Idempotency-Key")."""

    record_id: str
    validation: str
    answer: dict[str, Any]
    expires_at: int


class Answered(Exception):
    """A live record under the request's key gives the answer (a replay, or a refusal of the key):
    raised by :meth:`Receipt.met`, carried out of the service untouched."""


class Receipt(Protocol):
    """An Idempotency-Key as a service sees it: an opaque record id, what to do about a record met
    under it, and the record that stores an answer. Made by the API layer; no HTTP in the service."""

    record_id: str

    def met(self, found: object | None) -> None:
        """Raise :class:`Answered` when ``found`` (a live record under the key, None when there is
        none) answers the request already; return when the request is to run."""
        ...

    def record(self, result: Any) -> ReceiptRecord:
        """The record that answers the request with ``result`` (rendered now, before the commit)."""
        ...


class ReceiptTaken(Exception):
    """A change's transaction met a live record under its receipt's id: nothing was written."""


class PaymentRepository(Protocol):
    def get(self, payment_id: str) -> Payment | None: ...

    def receipt_and_loan(self, record_id: str, loan_id: str) -> tuple[object | None, Loan | None]:
        """The live Idempotency-Key record under ``record_id`` and the loan as stored, in one read."""
        ...

    def receipt(self, record_id: str) -> object | None:
        """The live Idempotency-Key record under ``record_id``."""
        ...

    def payment_id_for_utr(self, utr: str) -> str | None: ...

    def post(
        self,
        payment: Payment,
        before: Loan,
        loan: Loan,
        audits: Sequence[AuditEntry],
        receipt: ReceiptRecord | None = None,
    ) -> Loan:
        """Store payment, UTR claim, loan (``before`` as read: version unchanged, still ACTIVE), audit
        entries, the portfolio counters' change (the loan's, and the payment's collections) and the
        receipt's record (only where no live record is) atomically. ReceiptTaken if a live record was
        there, else UtrTaken if the UTR was used before; Conflict if the loan changed meanwhile."""
        ...

    def reverse(self, payment: Payment, before: Loan, loan: Loan, audits: Sequence[AuditEntry]) -> Loan:
        """Store the reversed payment (only if still POSTED), the loan (``before`` as read), the audit
        entries and the portfolio counters' change atomically.
        AlreadyReversed or Conflict otherwise."""
        ...

    def list_for_loan(self, loan_id: str, limit: int, cursor: str | None) -> Page[Payment]:
        """Newest first."""
        ...


# --- the day-end run (docs/day-end.md) -----------------------------------------------------------------

LoansPage = tuple[list[Loan], dict[str, Any] | None]
"""One page of loans and the cursor of the next page (None after the last)."""


class RunStore(Protocol):
    """The run records, one per business date. Every transition is conditional, so two invocations for
    one date never both believe they own its run (docs/day-end.md, "Exactly once")."""

    def get(self, business_date: dt.date) -> RunRecord | None: ...

    def acquire(
        self,
        business_date: dt.date,
        run_id: str,
        trigger: str,
        now: int,
        lease_seconds: int,
        now_iso: str,
        continuation: bool = False,
    ) -> RunRecord | RunOutcome:
        """Take the date's run if it is free, keeping an earlier attempt's checkpoints; otherwise the
        reason it is not (``ALREADY_COMPLETED`` or ``IN_PROGRESS``)."""
        ...

    def plan(self, business_date: dt.date, run_id: str, mode: str, segments: dict[Segment, SegmentState]) -> None: ...

    def checkpoint(
        self,
        business_date: dt.date,
        run_id: str,
        states: Mapping[Segment, SegmentState],
        lease_until: int,
        worker: str | None = None,
    ) -> None:
        """Store these segments' progress and renew the lease; ``LostLease`` if the run is not ours. A
        segment worker (``worker``) must also still hold each segment's claim, which it renews."""
        ...

    def claim(
        self,
        business_date: dt.date,
        run_id: str,
        segments: Sequence[Segment],
        worker: str,
        now: int,
        lease_seconds: int,
    ) -> RunRecord:
        """Claim these segments of a fanned-out run for one worker, all or none, and renew the run's lease:
        each is free if unclaimed, its claim ran out, or this worker holds it. ``LostLease`` if the run is
        no longer the attempt ``run_id`` or not running; ``SegmentBusy`` if another live worker holds one."""
        ...

    def release_claims(self, business_date: dt.date, run_id: str, segments: Sequence[Segment], worker: str) -> None:
        """Let the worker's claims lapse at once, so that a retry need not wait them out."""
        ...

    def finish(
        self, business_date: dt.date, run_id: str, status: RunStatus, now_iso: str, error: str | None = None
    ) -> RunRecord:
        """``LostLease`` if another invocation took the run over meanwhile."""
        ...

    def release(self, business_date: dt.date, run_id: str) -> None:
        """Hand the run to a continuation (counted), which may then take it at once."""
        ...

    def skip(self, business_date: dt.date, trigger: str, run_id: str, now: int, now_iso: str) -> RunOutcome: ...

    def latest_completed(self, before: dt.date | None = None) -> dt.date | None: ...


class DelinquencyStore(Protocol):
    """The loans as the day-end run reads and writes them."""

    def watched(self, day: dt.date, shard: int, cursor: dict[str, Any] | None) -> LoansPage: ...

    def pending(self, shard: int, cursor: dict[str, Any] | None) -> LoansPage: ...

    def scan_segment(self, segment: int, total: int, cursor: dict[str, Any] | None) -> LoansPage: ...

    def reminder_candidates(
        self, anchor: ReminderAnchor, day: dt.date, shard: int, cursor: dict[str, Any] | None
    ) -> LoansPage: ...

    def get(self, loan_id: str) -> Loan | None: ...

    def save_evaluation(
        self, before: Loan, loan: Loan, business_date: dt.date, audits: list[AuditEntry], case: LegalCase | None
    ) -> None:
        """Store the loan (``before`` as read), its audit entries, the portfolio counters' change and any
        legal case together, only if the stored loan still
        has the version read, is not evaluated for a later date and has no legal case yet; ``Conflict``
        otherwise, with nothing written."""
        ...


class ReminderStore(Protocol):
    """Borrower reminders (docs/reminders.md): one per loan, kind and instalment, ever."""

    def queue(self, reminders: Sequence[Reminder]) -> int:
        """Store each reminder that does not exist yet; how many were new."""
        ...

    def stored_keys(self, reminders: Sequence[Reminder]) -> set[tuple[str, str]]:
        """Which of ``reminders`` are stored already, as ``(loan_id, key)``: read in batches, so a caller
        holding many can skip the ones that exist instead of being refused a put for each. A read may lag
        a put made a moment ago; the put of a reminder found missing is still conditioned."""
        ...

    def for_loan(self, loan_id: str) -> list[Reminder]: ...

    def get(self, loan_id: str, key: str) -> Reminder | None: ...

    def waiting(self, shard: int, until: dt.datetime, cursor: Cursor) -> tuple[list[Reminder], Cursor]:
        """Reminders of one outbox shard the sender may try at ``until`` or before, oldest first."""
        ...

    def on_day(self, day: dt.date) -> list[Reminder]:
        """The reminders whose ``send_after`` falls on an IST day."""
        ...

    def replace(self, before: Reminder, after: Reminder, audit: AuditEntry | None = None) -> bool:
        """Write ``after`` (with ``audit`` in the same transaction) only if the stored reminder is still
        ``before`` (same status and attempts); False if another sender got there first."""
        ...


class ReminderPublisher(Protocol):
    def publish(self, reminder: Reminder, message: dict[str, Any]) -> str:
        """Publish one reminder's message, deduplicated by its id; the message id. Raises on failure."""
        ...


class JobDispatcher(Protocol):
    """Where a day-end invocation can start another one. On AWS Lambda a run is handed to a fresh
    invocation of the job's function; anywhere else (``chalice local``, the test client, a script) there
    is none, and the caller does the work in its own process (docs/day-end.md, "Time budget and
    continuation")."""

    def start(self, request: RunRequest) -> bool:
        """Start a run in the job's own function, asynchronously; False: there is none to start it in."""
        ...

    def hand_on(self, request: RunRequest) -> bool:
        """Start the continuation of a run that stopped for time, asynchronously; False: there is no
        function to start it in."""
        ...

    def fan_out(self, plan: FanOut) -> bool:
        """Hand a planned run's segments to parallel workers (the day-end state machine); False: there is
        none here, and the caller works them itself."""
        ...


# --- the reconciliation (docs/reconciliation.md) ---------------------------------------------------------

Cursor = dict[str, Any] | None


@dataclass(frozen=True)
class StoredLoan:
    """A loan as read, with the outstanding principal exactly as stored (the loan's own figure is
    derived from its schedule, so a stored value gone wrong would not show in it)."""

    loan: Loan
    outstanding_paise: int | None


class LedgerReader(Protocol):
    """Consistent reads of the ledger's tables, in parallel scan segments or by key."""

    def loans_segment(self, segment: int, total: int, cursor: Cursor) -> tuple[list[StoredLoan], Cursor]: ...

    def payments_segment(self, segment: int, total: int, cursor: Cursor) -> tuple[list[Payment], Cursor]: ...

    def claims_segment(self, segment: int, total: int, cursor: Cursor) -> tuple[list[tuple[str, str]], Cursor]:
        """(UTR, payment id) pairs."""
        ...

    def loans(self, ids: Iterable[str]) -> dict[str, StoredLoan]: ...

    def payments(self, ids: Iterable[str]) -> dict[str, Payment]: ...

    def claims(self, utrs: Iterable[str]) -> dict[str, str]:
        """UTR -> the payment id its claim names, for the UTRs that have a claim."""
        ...


class PortfolioStore(PortfolioReader, Protocol):
    def totals(self) -> dict[CounterKey, CounterTotals]:
        """Every stored set of counters, summed over its shards, with its writes."""
        ...

    def correct(self, key: CounterKey, delta: dict[str, int], audit: AuditEntry) -> None:
        """Add ``delta`` to ``key``'s counters with the audit entry that explains it, atomically."""
        ...


class ReconciliationRuns(Protocol):
    def create(self, run: ReconciliationRun, segments: Sequence[SegmentProgress]) -> None: ...

    def get(self, run_id: str) -> ReconciliationRun | None: ...

    def latest(self) -> ReconciliationRun | None:
        """The latest finished run."""
        ...

    def segments(self, run_id: str) -> list[SegmentProgress]: ...

    def checkpoint(self, run_id: str, segment: SegmentProgress) -> bool:
        """Store progress unless a checkpoint as far along exists (False: another invocation is ahead)."""
        ...

    def hand_over(self, run_id: str) -> int:
        """Count a hand-over to a continuation; the count after it."""
        ...

    def finish(self, run: ReconciliationRun) -> bool:
        """Record the outcome once; False if another invocation finished the run first."""
        ...


class RunDispatcher(Protocol):
    """Where a job can start another invocation of itself (see :class:`JobDispatcher`)."""

    def start(self, run_id: str) -> bool: ...

    def hand_on(self, run_id: str) -> bool: ...

    def fan_out(self, run_id: str, segments: list[str]) -> bool:
        """Hand the run's unfinished segments (by name) to parallel workers; False: none here."""
        ...


# --- collector scoring (docs/scoring.md) ------------------------------------------------------------------


class ScoreStore(Protocol):
    """The stored months of collector scores, written by the reconciliation pass."""

    def month(self, month: str) -> MonthScores | None:
        """The month's rows and who wrote them; None before any pass wrote it."""
        ...

    def is_frozen(self, month: str) -> bool: ...

    def write_month(self, scores: MonthScores, run_id: str) -> bool:
        """Replace the month's rows with ``scores`` unless the month is frozen (False then, nothing
        changed by this call); ``scores.frozen`` freezes it for good."""
        ...


class AssignmentLog(Protocol):
    def reassignments_since(self, first_day: dt.date) -> dict[str, list[Reassignment]]:
        """Every successful ``LOAN_ASSIGNED`` audit entry from ``first_day`` (IST) on, by loan id."""
        ...


class LiveCollections(Protocol):
    def collected(self, month: str, collectors: Iterable[str], every_collector: bool = False) -> dict[str, int]:
        """Each collector's collections in ``month`` from the dashboard's counters (collectors with
        none may be left out): those named, and every user with the collector role if asked."""
        ...


# --- the morning digest (docs/runbook/monitoring.md) ------------------------------------------------------


class AlertPublisher(Protocol):
    """The stage's alerts topic: what the on-call people (e-mail, pager) are subscribed to."""

    def publish(self, subject: str, message: str) -> str:
        """Publish one plain-text message; the message id. ``subject`` is what an e-mail subscriber sees
        as the subject line (ASCII, one line, under 100 characters). Raises on failure."""
        ...
