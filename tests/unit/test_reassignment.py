"""Bulk reassignment (docs/rules.md, "Bulk reassignment") with in-memory fakes and a frozen clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Action, AuditEntry
from chalicelib.domain.errors import Conflict, DomainError, Forbidden, NotFound, Unavailable, ValidationFailed
from chalicelib.domain.loan import Borrower, Loan, LoanStatus
from chalicelib.retry import RetryPolicy
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import GeneratedTerms, LoanService, NewLoan
from chalicelib.services.ports import LoanFilter, Page, User
from chalicelib.services.reassignment import ReassignmentProgress, ReassignmentService
from tests.fakes import (
    ADMIN,
    AUDITOR,
    COLLECTOR,
    MANAGER,
    InMemoryAuditLog,
    InMemoryLoanRepository,
    InMemoryUserStore,
    RecordingMetrics,
)

NOW = dt.datetime(2025, 6, 15, 11, 30, tzinfo=IST)


class LockedLoanRepository(InMemoryLoanRepository):
    """The fake loan repository, safe for the service's worker threads: one lock around each call, as
    DynamoDB serialises the writes to one item. ``cost`` runs inside every update (a fake clock's tick)."""

    def __init__(self, audit: InMemoryAuditLog) -> None:
        super().__init__(audit=audit)
        self.lock = threading.RLock()
        self.cost: Callable[[], None] = lambda: None

    def get(self, loan_id: str) -> Loan | None:
        with self.lock:
            return super().get(loan_id)

    def update(self, before: Loan, loan: Loan, audit: AuditEntry) -> Loan:
        with self.lock:
            self.cost()
            return super().update(before, loan, audit)

    def list(self, filters: LoanFilter, limit: int, cursor: str | None) -> Page[Loan]:
        with self.lock:
            return super().list(filters, limit, cursor)


class StaleIndexRepository(LockedLoanRepository):
    """Listings read from a copy of the loans taken by :meth:`freeze`, as a secondary index that has
    not caught up with the writes since: loans moved since still show under their old collector."""

    snapshot: dict[str, Loan] | None = None

    def freeze(self) -> None:
        self.snapshot = dict(self.loans)

    def list(self, filters: LoanFilter, limit: int, cursor: str | None) -> Page[Loan]:
        with self.lock:
            if self.snapshot is None:
                return super().list(filters, limit, cursor)
            current, self.loans = self.loans, self.snapshot
            try:
                return super().list(filters, limit, cursor)
            finally:
                self.loans = current


class FakeTime:
    """A Lambda's remaining time that goes down by ``per_move_ms`` with every loan written."""

    def __init__(self, left_ms: int, per_move_ms: int) -> None:
        self.left_ms = left_ms
        self.per_move_ms = per_move_ms

    def tick(self) -> None:
        self.left_ms -= self.per_move_ms

    def __call__(self) -> int:
        return self.left_ms


class World:
    def __init__(self, repo: LockedLoanRepository | None = None, page_size: int = 10) -> None:
        self.audit = repo.audit if repo is not None else InMemoryAuditLog()
        self.repo = repo if repo is not None else LockedLoanRepository(self.audit)
        self.users = InMemoryUserStore(
            [
                User("col1", "collector", "x"),
                User("col2", "collector", "x"),
                User("col3", "collector", "x"),
                User("retired", "collector", "x", active=False),
                User("meera", "manager", "x"),
            ]
        )
        self.loans = LoanService(loans=self.repo, audit=self.audit, users=self.users, metrics=RecordingMetrics())
        self.service = ReassignmentService(loans=self.loans, page_size=page_size)
        self._template: Loan | None = None

    def add(
        self, count: int, collector_id: str | None, status: LoanStatus = LoanStatus.ACTIVE, prefix: str = "L"
    ) -> list[str]:
        """``count`` loans stored directly (copies of one created loan), ids ``{prefix}0000`` ..."""
        if self._template is None:
            self._template = self.loans.create(
                ADMIN,
                NewLoan(
                    loan_id="TEMPLATE",
                    borrower=Borrower("Asha Rao", "9876543210"),
                    principal_paise=1_00_000_00,
                    disbursement_date=dt.date(2025, 6, 1),
                    terms=GeneratedTerms(1200, 12, dt.date(2025, 7, 5)),
                ),
            )
            del self.repo.loans["TEMPLATE"]
            self.audit.entries.clear()
        ids = [f"{prefix}{n:04d}" for n in range(count)]
        for loan_id in ids:
            self.repo.loans[loan_id] = dataclasses.replace(
                self._template, loan_id=loan_id, collector_id=collector_id, status=status
            )
        return ids

    def collector_of(self, loan_id: str) -> str | None:
        return self.repo.loans[loan_id].collector_id

    def with_collector(self, collector_id: str) -> list[str]:
        return sorted(i for i, loan in self.repo.loans.items() if loan.collector_id == collector_id)

    def assigned(self) -> list[AuditEntry]:
        return [e for e in self.audit.entries.values() if e.action is Action.LOAN_ASSIGNED]


@pytest.fixture(autouse=True)
def clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(NOW)) as c:
        assert isinstance(c, FixedClock)
        yield c


@pytest.fixture
def world() -> World:
    return World()


# --- a collector's loans ---------------------------------------------------------------------------


def test_every_active_loan_of_the_collector_moves_each_with_one_audit_entry(world: World) -> None:
    active = world.add(45, "col1")
    closed = world.add(3, "col1", LoanStatus.CLOSED, prefix="C")
    written_off = world.add(2, "col1", LoanStatus.WRITTEN_OFF, prefix="W")
    others = world.add(5, "col3", prefix="O")
    versions = {i: world.repo.loans[i].version for i in active}

    progress = world.service.move_collector_loans(MANAGER, "col1", "col2", None)

    assert progress == ReassignmentProgress(moved=45, already=0, remaining=0)
    assert progress.done
    assert world.with_collector("col2") == active
    # Closed and written-off loans keep their collector: it is their history.
    assert world.with_collector("col1") == sorted(closed + written_off)
    assert world.with_collector("col3") == others
    assert all(world.repo.loans[i].version == versions[i] + 1 for i in active)
    entries = world.assigned()
    assert Counter(e.entity_id for e in entries) == Counter(active)
    for e in entries:
        assert (e.before, e.after) == ({"collector_id": "col1"}, {"collector_id": "col2"})
        assert (e.actor, e.source_ip, e.request_id) == (MANAGER.actor, MANAGER.source_ip, MANAGER.request_id)


def test_a_repeated_request_moves_nothing_and_audits_nothing(world: World) -> None:
    world.add(12, "col1")
    world.service.move_collector_loans(ADMIN, "col1", "col2", None)
    entries = len(world.audit.entries)

    again = world.service.move_collector_loans(ADMIN, "col1", "col2", None)

    assert again == ReassignmentProgress(0, 0, 0)
    assert len(world.audit.entries) == entries


def test_a_collector_without_loans_is_done_at_once(world: World) -> None:
    assert world.service.move_collector_loans(MANAGER, "col3", "col2", None) == ReassignmentProgress(0, 0, 0)


def test_one_worker_or_eight_the_outcome_is_the_same(world: World) -> None:
    world.add(37, "col1")
    world.service.workers = 1
    assert world.service.move_collector_loans(MANAGER, "col1", "col2", None).moved == 37
    assert len(world.with_collector("col2")) == 37


@pytest.mark.parametrize("target", ["nobody", "retired", "meera"])
def test_the_target_must_be_an_active_collector(world: World, target: str) -> None:
    ids = world.add(5, "col1")
    with pytest.raises(ValidationFailed) as raised:
        world.service.move_collector_loans(MANAGER, "col1", target, None)
    assert raised.value.details[0]["field"] == "collector_id"
    with pytest.raises(ValidationFailed):
        world.service.move_loans(MANAGER, ids, target, None)
    assert world.with_collector("col1") == ids
    assert world.assigned() == []


def test_moving_to_the_same_collector_is_refused(world: World) -> None:
    world.add(2, "col1")
    with pytest.raises(ValidationFailed) as raised:
        world.service.move_collector_loans(MANAGER, "col1", "col1", None)
    assert raised.value.details[0]["field"] == "to_collector_id"


def test_an_inactive_collector_loses_their_loans(world: World) -> None:
    # Offboarding: the collector leaving may be deactivated already; only the target must be active.
    ids = world.add(4, "retired")
    assert world.service.move_collector_loans(MANAGER, "retired", "col2", None).moved == 4
    assert world.with_collector("col2") == ids


@pytest.mark.parametrize("ctx", [COLLECTOR, AUDITOR])
def test_only_admin_and_manager_reassign(world: World, ctx: RequestContext) -> None:
    ids = world.add(3, "col1")
    with pytest.raises(Forbidden):
        world.service.move_collector_loans(ctx, "col1", "col2", None)
    with pytest.raises(Forbidden):
        world.service.move_loans(ctx, ids, "col2", None)
    with pytest.raises(Forbidden):
        world.loans.reassign(ctx, ids[0], "col2")
    assert world.with_collector("col1") == ids
    assert world.assigned() == []


# --- the time budget -------------------------------------------------------------------------------


def test_a_call_stops_when_the_budget_runs_low_and_a_repeat_finishes(world: World) -> None:
    ids = world.add(200, "col1")
    # 10 s left, 100 ms per loan: the margin is min(5 s, 10 s / 5) = 2 s, so 8 s of work, 8 pages of 10.
    time_left = FakeTime(10_000, 100)
    world.repo.cost = time_left.tick

    first = world.service.move_collector_loans(MANAGER, "col1", "col2", time_left)

    assert first == ReassignmentProgress(moved=80, already=0, remaining=120)
    assert not first.done
    assert len(world.with_collector("col2")) == 80

    second = world.service.move_collector_loans(MANAGER, "col1", "col2", FakeTime(10_000, 0))

    assert second == ReassignmentProgress(moved=120, already=0, remaining=0)
    assert world.with_collector("col2") == ids
    assert Counter(e.entity_id for e in world.assigned()) == Counter(ids)


def test_a_call_always_moves_a_page_first(world: World) -> None:
    world.add(25, "col1")
    nothing_left = FakeTime(0, 0)
    calls = []
    while True:
        progress = world.service.move_collector_loans(MANAGER, "col1", "col2", nothing_left)
        calls.append(progress)
        if progress.done:
            break
    assert calls == [
        ReassignmentProgress(10, 0, 15),
        ReassignmentProgress(10, 0, 5),
        ReassignmentProgress(5, 0, 0),
    ]


def test_the_margin_is_at_most_five_seconds(world: World) -> None:
    world.add(70, "col1")
    # 60 s at the start, 1 s per loan, pages of 10: a margin of 5 s (not a fifth, 12 s) stops the call
    # after the sixth page, when nothing is left; a 12 s margin would have stopped it after the fifth.
    time_left = FakeTime(60_000, 1000)
    world.repo.cost = time_left.tick
    assert world.service.move_collector_loans(MANAGER, "col1", "col2", time_left) == ReassignmentProgress(60, 0, 10)


def test_a_list_stops_for_time_and_its_counts_cover_every_loan_named(world: World) -> None:
    ids = world.add(40, "col1")
    there = world.add(5, "col2", prefix="T")
    named = ids[:25] + there + ids[25:]
    time_left = FakeTime(0, 0)

    first = world.service.move_loans(MANAGER, named, "col2", time_left)
    # One page of 10, then out of time: the 5 loans found with col2 count as already.
    assert first == ReassignmentProgress(moved=10, already=5, remaining=30)

    rounds = [first]
    while not rounds[-1].done:
        rounds.append(world.service.move_loans(MANAGER, named, "col2", time_left))
    # Each repeat gets one page further: what earlier calls moved counts as already.
    assert rounds[1:] == [
        ReassignmentProgress(10, 15, 20),
        ReassignmentProgress(10, 25, 10),
        ReassignmentProgress(10, 35, 0),
    ]
    assert world.with_collector("col2") == sorted(ids + there)
    assert Counter(e.entity_id for e in world.assigned()) == Counter(ids)


# --- a list of loans -------------------------------------------------------------------------------


def test_a_list_moves_each_loan_once_whatever_its_status_and_counts_duplicates_once(world: World) -> None:
    ids = world.add(6, "col1")
    closed = world.add(1, "col3", LoanStatus.CLOSED, prefix="C")
    unassigned = world.add(1, None, prefix="U")
    there = world.add(2, "col2", prefix="T")
    named = [*ids, ids[0], ids[3], *closed, *unassigned, *there, there[0]]

    progress = world.service.move_loans(MANAGER, named, "col2", None)

    assert progress == ReassignmentProgress(moved=8, already=2, remaining=0)
    assert world.with_collector("col2") == sorted(ids + closed + unassigned + there)
    assert Counter(e.entity_id for e in world.assigned()) == Counter(ids + closed + unassigned)
    assert [e.before for e in world.assigned() if e.entity_id == unassigned[0]] == [{"collector_id": None}]

    again = world.service.move_loans(MANAGER, named, "col2", None)
    assert again == ReassignmentProgress(moved=0, already=10, remaining=0)
    assert len(world.assigned()) == 8


def test_unknown_ids_are_named_and_nothing_moves(world: World) -> None:
    ids = world.add(3, "col1")
    with pytest.raises(NotFound) as raised:
        world.service.move_loans(MANAGER, [ids[0], "NOPE-1", ids[1], "NOPE-2", "NOPE-1"], "col2", None)
    assert raised.value.details == {"loan_ids": ["NOPE-1", "NOPE-2"]}
    assert world.with_collector("col1") == ids
    assert world.assigned() == []


def test_an_empty_list_moves_nothing(world: World) -> None:
    assert world.service.move_loans(MANAGER, [], "col2", None) == ReassignmentProgress(0, 0, 0)


# --- what the index shows a moment late ------------------------------------------------------------


def test_a_stale_index_is_harmless_and_the_call_ends() -> None:
    world = World(StaleIndexRepository(InMemoryAuditLog()))
    repo = world.repo
    assert isinstance(repo, StaleIndexRepository)
    ids = world.add(23, "col1")
    # Since the index was read: one loan closed, one given to col3, one to col2 by someone else.
    repo.freeze()
    stored = repo.loans
    stored[ids[0]] = dataclasses.replace(stored[ids[0]], version=2, status=LoanStatus.CLOSED)
    stored[ids[1]] = dataclasses.replace(stored[ids[1]], version=2, collector_id="col3")
    stored[ids[2]] = dataclasses.replace(stored[ids[2]], version=2, collector_id="col2")

    progress = world.service.move_collector_loans(MANAGER, "col1", "col2", None)

    # The listed copies are out of date: their writes are refused by the version condition, and the loans
    # read again are left alone (closed, col3's) or counted as already (col2's). The index lists the
    # moved loans again on the next pass, and they are not counted twice.
    assert progress == ReassignmentProgress(moved=20, already=1, remaining=0)
    assert world.collector_of(ids[0]) == "col1"
    assert world.collector_of(ids[1]) == "col3"
    assert world.with_collector("col2") == sorted(ids[2:])
    assert Counter(e.entity_id for e in world.assigned()) == Counter(ids[3:])


def test_loans_given_to_the_leaving_collector_during_the_move_are_moved_too(world: World) -> None:
    ids = world.add(30, "col1", prefix="M")
    late: list[str] = []
    original_list = world.repo.list

    def list_then_assign(filters: LoanFilter, limit: int, cursor: str | None) -> Page[Loan]:
        page = original_list(filters, limit, cursor)
        if not late:
            # Someone assigns a loan to col1 behind the cursor (its id sorts first) while the move runs.
            late.extend(world.add(1, "col1", prefix="A"))
        return page

    world.repo.list = list_then_assign  # type: ignore[method-assign]
    progress = world.service.move_collector_loans(MANAGER, "col1", "col2", None)
    assert progress == ReassignmentProgress(31, 0, 0)
    assert world.with_collector("col2") == sorted(ids + late)


# --- has_active_loans and the single-loan write ----------------------------------------------------


def test_has_active_loans_counts_only_active_loans(world: World) -> None:
    assert not world.service.has_active_loans("col1")
    world.add(2, "col1", LoanStatus.CLOSED, prefix="C")
    assert not world.service.has_active_loans("col1")
    world.add(1, "col1")
    assert world.service.has_active_loans("col1")
    world.service.move_collector_loans(MANAGER, "col1", "col2", None)
    assert not world.service.has_active_loans("col1")
    assert world.service.has_active_loans("col2")


def test_reassign_many_writes_up_to_date_copies_together_and_reads_every_other_loan(world: World) -> None:
    """The copies that say "move" are written in one ``update_many``; a loan whose copy was out of date
    (its version condition failed) and one whose copy says "nothing to do" are each read and decided
    on the fresh loan, as :meth:`LoanService.reassign` decides."""
    [fresh, stale, closed, there, elsewhere] = world.add(5, "col1")
    listed = dict(world.repo.loans)
    stored = world.repo.loans
    stored[stale] = dataclasses.replace(stored[stale], notes="edited", version=2)
    stored[closed] = dataclasses.replace(stored[closed], status=LoanStatus.CLOSED, version=2)
    listed[there] = dataclasses.replace(listed[there], collector_id="col2")  # a copy not to be trusted
    stored[elsewhere] = dataclasses.replace(stored[elsewhere], collector_id="col2", version=2)

    def active(loan: Loan) -> bool:
        return loan.status is LoanStatus.ACTIVE

    outcomes = world.loans.reassign_many(
        MANAGER, [listed[i] for i in (fresh, stale, closed, there, elsewhere)], "col2", active
    )

    assert outcomes == [True, True, None, True, False]
    assert world.repo.updated_many == [[fresh, stale, closed, elsewhere]]
    assert {i: world.collector_of(i) for i in (fresh, stale, closed, there, elsewhere)} == {
        fresh: "col2",
        stale: "col2",
        closed: "col1",
        there: "col2",
        elsewhere: "col2",
    }
    assert stored[stale].notes == "edited"
    assert Counter(e.entity_id for e in world.assigned()) == Counter([fresh, stale, there])


def test_reassign_many_raises_a_storage_failure_after_the_loans_written_before_it(world: World) -> None:
    ids = world.add(4, "col1")

    class Failing(LockedLoanRepository):
        def update_many(self, changes: Any) -> list[Loan | DomainError]:
            answers = super().update_many(changes[:2])
            return [*answers, *(Unavailable("the database is not answering") for _ in changes[2:])]

    failing = Failing(world.audit)
    failing.loans = world.repo.loans
    world.loans.loans = failing
    with pytest.raises(Unavailable):
        world.loans.reassign_many(MANAGER, [world.repo.loans[i] for i in ids], "col2")
    assert [world.collector_of(i) for i in ids] == ["col2", "col2", "col1", "col1"]


def test_reassign_many_moves_a_contended_batch_one_loan_at_a_time(world: World) -> None:
    """A transaction other writers kept contended (``Conflict`` for every loan of it, nothing written)
    is not a failure of the move: each of its loans is read and moved on its own."""
    ids = world.add(3, "col1")
    single = world.repo.update

    class Contended(LockedLoanRepository):
        def update_many(self, changes: Any) -> list[Loan | DomainError]:
            return [Conflict("other writers kept the portfolio counters busy") for _ in changes]

        def update(self, before: Loan, loan: Loan, audit: AuditEntry) -> Loan:
            return single(before, loan, audit)

    contended = Contended(world.audit)
    contended.loans = world.repo.loans
    world.loans.loans = contended

    assert world.loans.reassign_many(MANAGER, [world.repo.loans[i] for i in ids], "col2") == [True] * 3
    assert [world.collector_of(i) for i in ids] == ["col2"] * 3
    assert world.repo.update_calls == 3
    assert Counter(e.entity_id for e in world.assigned()) == Counter(ids)


def test_a_page_moves_in_batches_of_one_transaction_each(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    active = world.add(60, "col1")
    world.service.page_size = 60
    read_first: list[str] = []
    monkeypatch.setattr(world.loans, "reassign", lambda _ctx, loan_id, *_args: read_first.append(loan_id))

    assert world.service.move_collector_loans(MANAGER, "col1", "col2", None).moved == 60

    assert sorted(len(batch) for batch in world.repo.updated_many) == [10, 25, 25]
    assert sorted(i for batch in world.repo.updated_many for i in batch) == active
    assert read_first == []  # every listed copy was up to date: no loan needed a read of its own


def test_reassign_retries_a_lost_race_and_decides_on_the_fresh_loan(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RetryPolicy, "pause", lambda _policy, _attempt: None)
    [loan_id] = world.add(1, "col1")

    def concurrent_close(_: Loan) -> None:
        stored = world.repo.loans[loan_id]
        world.repo.loans[loan_id] = dataclasses.replace(stored, status=LoanStatus.CLOSED, version=stored.version + 1)

    world.repo.on_next_update(concurrent_close)
    still_active = world.loans.reassign(MANAGER, loan_id, "col2", lambda loan: loan.status is LoanStatus.ACTIVE)
    assert still_active is None
    assert world.collector_of(loan_id) == "col1"
    assert world.assigned() == []

    world.repo.on_next_update(lambda _: concurrent_close(_))
    assert world.loans.reassign(MANAGER, loan_id, "col2") is True
    assert world.collector_of(loan_id) == "col2"
    assert world.repo.update_calls == 3
    assert world.loans.reassign(MANAGER, loan_id, "col2") is False
    assert len(world.assigned()) == 1
