"""In-memory ``RunStore`` and ``DelinquencyStore`` (protocols in ``chalicelib.services.ports``) and a stub
``Flags``, for fast tests of the day-end job.

They mirror the DynamoDB adapters (``chalicelib/adapters/dynamodb/runs.py`` and ``delinquency.py``):

- a run is taken with one conditional step: free if there is no record, or it FAILED or was SKIPPED,
  or it is RUNNING with ``lease_until < now``; a taken record keeps its mode, segments, errors and
  ``started_at``, and its ``continuations`` only when taken by a continuation (else 0); otherwise
  ALREADY_COMPLETED (record COMPLETED) or IN_PROGRESS;
- ``checkpoint`` needs the same ``run_id`` and status RUNNING, ``finish`` the same ``run_id``, else
  ``LostLease``; ``plan`` and ``release`` need the same ``run_id`` (else ``ConditionFailed``, which
  is what a failed PynamoDB conditional update is to the job: an ordinary exception); ``release``
  adds 1 to ``continuations``;
- ``skip`` has the same condition as ``acquire``;
- the loans are the dict of an ``InMemoryLoanRepository`` (tests/fakes.py), so loan services and the
  job see one book; ``watched(day, shard)`` lists, in ``loan_id`` order, the loans whose watch date
  (``domain.loan.watch_date``) is ``day`` and whose ``watch_shard`` is ``shard``, as the sparse
  ``watch-index``, and ``pending(shard)`` those whose watch is ``PENDING_ESCALATION``; pages are
  ``page_size`` long and a full page always carries a cursor;
- ``save_evaluation`` stores the loan with ``version + 1``, its audit entries and its legal case
  together, only if the stored loan still has the version read, its ``dpd_as_of`` is not after the
  business date and the loan has no legal case yet; ``Conflict`` otherwise, with nothing written.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.adapters.dynamodb.mapping import pending_key_for, watch_key_for
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import Conflict
from chalicelib.domain.flags import FlagName, FlagSource, FlagValue
from chalicelib.domain.legal import LegalCase
from chalicelib.domain.loan import Loan, PendingEscalation, watch_date
from chalicelib.domain.portfolio import loan_change
from chalicelib.domain.runs import LostLease, RunOutcome, RunRecord, RunStatus, Segment, SegmentBusy, SegmentState
from tests.fakes import InMemoryLoanRepository


class ConditionFailed(Exception):
    """A conditional update other than checkpoint/finish was refused (PynamoDB's UpdateError)."""


def _copy(record: RunRecord) -> RunRecord:
    """A copy through which the caller cannot change the stored record, as with a database."""
    return dataclasses.replace(record, segments=_copy_states(record.segments))


def _copy_states(states: Mapping[Segment, SegmentState]) -> dict[Segment, SegmentState]:
    """Segment states as a database would hand them over or keep them: copies. Written out rather than
    ``copy.deepcopy``: the day-end tests copy states on every claim, plan, checkpoint and finish, and the
    generic deep copy was a fifth of the longest of them. Segments are frozen, so they are shared;
    everything a segment's state holds that can change is copied."""
    return {
        segment: dataclasses.replace(
            state,
            cursor=copy.deepcopy(state.cursor),
            page=None if state.page is None else list(state.page),
        )
        for segment, state in states.items()
    }


class InMemoryRunStore:
    def __init__(self) -> None:
        self.records: dict[dt.date, RunRecord] = {}
        self.lock = threading.RLock()
        self.checkpoints = 0
        self.before_checkpoint: Callable[[Segment], None] | None = None
        """Called with the segment before each checkpoint is applied (fault injection)."""
        self.claims: dict[dt.date, dict[Segment, tuple[str, int]]] = {}
        """Per date, segment -> (worker, until): the fanned-out workers' claims (``claims`` in DynamoDB)."""

    def _free(self, record: RunRecord | None, now: int) -> bool:
        return (
            record is None
            or record.status in (RunStatus.FAILED, RunStatus.SKIPPED)
            or (record.status is RunStatus.RUNNING and record.lease_until < now)
        )

    def _refusal(self, business_date: dt.date) -> RunOutcome:
        current = self.records.get(business_date)
        if current is not None and current.status is RunStatus.COMPLETED:
            return RunOutcome.ALREADY_COMPLETED
        return RunOutcome.IN_PROGRESS

    def get(self, business_date: dt.date) -> RunRecord | None:
        with self.lock:
            record = self.records.get(business_date)
            return _copy(record) if record else None

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
        with self.lock:
            current = self.records.get(business_date)
            if not self._free(current, now):
                return self._refusal(business_date)
            if current is None:
                current = RunRecord(business_date, RunStatus.RUNNING, trigger, run_id, 0, now_iso)
            current.status = RunStatus.RUNNING
            current.run_id = run_id
            current.trigger = trigger
            current.lease_until = now + lease_seconds
            current.finished_at = None
            if not continuation:
                current.continuations = 0
            self.records[business_date] = current
            self.claims[business_date] = {}
            return _copy(current)

    def _owned(self, business_date: dt.date, run_id: str) -> RunRecord | None:
        record = self.records.get(business_date)
        return record if record is not None and record.run_id == run_id else None

    def plan(self, business_date: dt.date, run_id: str, mode: str, segments: dict[Segment, SegmentState]) -> None:
        with self.lock:
            record = self._owned(business_date, run_id)
            if record is None:
                raise ConditionFailed("plan: run_id differs")
            record.mode = mode
            record.segments = _copy_states(segments)

    def checkpoint(
        self,
        business_date: dt.date,
        run_id: str,
        states: Mapping[Segment, SegmentState],
        lease_until: int,
        worker: str | None = None,
    ) -> None:
        if self.before_checkpoint is not None:
            for segment in states:
                self.before_checkpoint(segment)
        with self.lock:
            record = self._owned(business_date, run_id)
            if record is None or record.status is not RunStatus.RUNNING:
                raise LostLease(business_date.isoformat())
            if worker is not None:
                claims = self.claims.setdefault(business_date, {})
                if any(claims.get(segment, ("", 0))[0] != worker for segment in states):
                    raise LostLease(business_date.isoformat())
                claims.update({segment: (worker, lease_until) for segment in states})
            record.segments.update(_copy_states(states))
            record.lease_until = lease_until
            self.checkpoints += 1

    def claim(
        self,
        business_date: dt.date,
        run_id: str,
        segments: Sequence[Segment],
        worker: str,
        now: int,
        lease_seconds: int,
    ) -> RunRecord:
        with self.lock:
            record = self._owned(business_date, run_id)
            if record is None or record.status is not RunStatus.RUNNING:
                raise LostLease(business_date.isoformat())
            claims = self.claims.setdefault(business_date, {})
            for segment in segments:
                owner, until = claims.get(segment, (worker, 0))
                if owner != worker and until >= now:
                    raise SegmentBusy(business_date.isoformat())
            claims.update({segment: (worker, now + lease_seconds) for segment in segments})
            record.lease_until = now + lease_seconds
            return _copy(record)

    def release_claims(self, business_date: dt.date, run_id: str, segments: Sequence[Segment], worker: str) -> None:
        with self.lock:
            record = self._owned(business_date, run_id)
            claims = self.claims.setdefault(business_date, {})
            if record is None or record.status is not RunStatus.RUNNING:
                return
            if all(claims.get(segment, ("", 0))[0] == worker for segment in segments):
                claims.update({segment: (worker, 0) for segment in segments})

    def finish(
        self, business_date: dt.date, run_id: str, status: RunStatus, now_iso: str, error: str | None = None
    ) -> RunRecord:
        with self.lock:
            record = self._owned(business_date, run_id)
            if record is None or record.status is not RunStatus.RUNNING:  # as the store: only a running run
                raise LostLease(business_date.isoformat())
            record.status = status
            record.finished_at = now_iso
            if status is not RunStatus.COMPLETED:
                record.lease_until = 0
            if error is not None:
                record.errors += 1
                record.last_error = error[:1000]
            return _copy(record)

    def release(self, business_date: dt.date, run_id: str) -> None:
        with self.lock:
            record = self._owned(business_date, run_id)
            if record is None:
                raise ConditionFailed("release: run_id differs")
            record.lease_until = 0
            record.continuations += 1

    def skip(self, business_date: dt.date, trigger: str, run_id: str, now: int, now_iso: str) -> RunOutcome:
        with self.lock:
            current = self.records.get(business_date)
            if not self._free(current, now):
                return self._refusal(business_date)
            if current is None:
                current = RunRecord(business_date, RunStatus.SKIPPED, trigger, run_id, 0, now_iso)
            current.status = RunStatus.SKIPPED
            current.trigger = trigger
            current.run_id = run_id
            current.lease_until = 0
            current.finished_at = now_iso
            self.records[business_date] = current
            return RunOutcome.SKIPPED

    def latest_completed(self, before: dt.date | None = None) -> dt.date | None:
        with self.lock:
            dates = [
                d for d, r in self.records.items() if r.status is RunStatus.COMPLETED and (before is None or d < before)
            ]
            return max(dates, default=None)

    def history(self, limit: int, before: dt.date | None) -> list[RunRecord]:
        with self.lock:
            records = [_copy(r) for d, r in self.records.items() if before is None or d < before]
        records.sort(key=lambda r: r.business_date, reverse=True)
        return records[:limit]


def scan_segment_of(loan_id: str, total: int) -> int:
    """Which parallel-scan segment holds a loan (any stable hash will do; DynamoDB uses its own)."""
    return zlib.adler32(loan_id.encode()) % total


@dataclass
class InMemoryDelinquencyStore:
    repo: InMemoryLoanRepository
    watch_shards: int
    page_size: int = 3
    cases: dict[str, LegalCase] = field(default_factory=dict)
    saves: int = 0
    before_save: Callable[[Loan], None] | None = None
    """Called with the loan about to be saved, before any condition is checked (fault injection, or a
    concurrent writer getting in first)."""
    lock: threading.RLock = field(default_factory=threading.RLock)

    def shard_of(self, loan_id: str) -> int:
        return zlib.crc32(loan_id.encode()) % self.watch_shards

    def watch_key(self, loan: Loan) -> str | None:
        watch = watch_date(loan)
        if watch is None:
            return None
        shard = self.shard_of(loan.loan_id)
        return pending_key_for(shard) if isinstance(watch, PendingEscalation) else watch_key_for(watch, shard)

    def _page(self, loans: list[Loan], cursor: dict[str, Any] | None, key: dict[str, str]) -> tuple[list[Loan], Any]:
        after = cursor["loan_id"] if cursor else ""
        rest = sorted((x for x in loans if x.loan_id > after), key=lambda x: x.loan_id)
        page = rest[: self.page_size]
        next_cursor = {**key, "loan_id": page[-1].loan_id} if len(page) == self.page_size else None
        return page, next_cursor

    def watched(self, day: dt.date, shard: int, cursor: dict[str, Any] | None) -> tuple[list[Loan], Any]:
        wanted = watch_key_for(day, shard)
        with self.lock:
            loans = [x for x in self.repo.loans.values() if self.watch_key(x) == wanted]
            return self._page(loans, cursor, {"watch_key": wanted})

    def pending(self, shard: int, cursor: dict[str, Any] | None) -> tuple[list[Loan], Any]:
        wanted = pending_key_for(shard)
        with self.lock:
            loans = [x for x in self.repo.loans.values() if self.watch_key(x) == wanted]
            return self._page(loans, cursor, {"watch_key": wanted})

    def scan_segment(self, segment: int, total: int, cursor: dict[str, Any] | None) -> tuple[list[Loan], Any]:
        with self.lock:
            loans = [x for x in self.repo.loans.values() if scan_segment_of(x.loan_id, total) == segment]
            return self._page(loans, cursor, {})

    def get(self, loan_id: str) -> Loan | None:
        with self.lock:
            return self.repo.loans.get(loan_id)

    def save_evaluation(
        self, before: Loan, loan: Loan, business_date: dt.date, audits: list[AuditEntry], case: LegalCase | None
    ) -> None:
        if self.before_save is not None:
            self.before_save(loan)
        with self.lock:
            current = self.repo.loans.get(loan.loan_id)
            if current is None or current.version != loan.version:
                raise Conflict(f"loan {loan.loan_id}: version changed")
            if current.delinquency.as_of > business_date:
                raise Conflict(f"loan {loan.loan_id}: evaluated for a later date")
            if case is not None and case.loan_id in self.cases:
                raise Conflict(f"loan {loan.loan_id}: already has a legal case")
            if any(a.audit_id in self.repo.audit.entries for a in audits):
                raise ValueError("audit entry already exists; the audit log is append-only")
            self.repo.loans[loan.loan_id] = dataclasses.replace(loan, version=loan.version + 1)
            self.repo.portfolio.apply(loan_change(current, loan))
            for entry in audits:
                self.repo.audit.append(entry)
            if case is not None:
                self.cases[case.loan_id] = case
            self.saves += 1


class StubFlags:
    """Flags as plain switches; ``unreadable`` names flags whose parameter cannot be read (off)."""

    def __init__(self, **enabled: bool) -> None:
        self.enabled: dict[FlagName, bool] = {name: True for name in FlagName}
        for name, value in enabled.items():
            self.enabled[FlagName(name)] = value
        self.unreadable: set[FlagName] = set()
        self.reads: list[tuple[FlagName, bool]] = []

    def set(self, name: str, value: bool) -> None:
        self.enabled[FlagName(name)] = value

    def read(self, name: FlagName, fresh: bool = False) -> FlagValue:
        self.reads.append((name, fresh))
        if name in self.unreadable:
            return FlagValue(name, False, FlagSource.UNREADABLE)
        value = self.enabled[name]
        return FlagValue(name, value, FlagSource.PARAMETER, "true" if value else "false")

    def all(self) -> list[FlagValue]:
        return [self.read(name) for name in FlagName]
