"""Moving loans from one collector to another in bulk: a collector's offboarding, or a manager's
reassignment of a list of loans (docs/rules.md, "Bulk reassignment").

Every loan moves by the assignment write of ``LoanService.assign``: the loan under its version
condition with its ``LOAN_ASSIGNED`` audit entry. Loans move several to a transaction
(``LoanService.reassign_many``), and one whose listed copy was out of date goes through the single-loan
write (``LoanService.reassign``), which reads it again, retried under ``OPTIMISTIC_WRITE``. A loan
already with the target is counted as ``already`` and not written, so a request sent again does
nothing twice.

Thousands of loans per collector: loans are read a page at a time and each page is moved in batches
by a small thread pool (the work is waiting on DynamoDB, not computing). A call has a time budget like the day-end
run's (``budget.Budget``): it always moves at least one page, then stops once less than a margin is
left and says how many loans remain; the caller answers 202 and the client sends the same request
again, which carries on where this one stopped (there is no cursor to hand back: what is left is
exactly what is still to move).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from chalicelib.domain.errors import NotFound, ValidationFailed
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.roles import MANAGE_LOANS
from chalicelib.services.budget import SAFETY_MARGIN_SHARE, Budget
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import LoanService
from chalicelib.services.ports import LoanFilter

WORKERS = 8
"""Batches moved at once. Each is a transaction against DynamoDB, so threads spend their time waiting;
eight keep a Lambda busy without hammering one collector's index partition."""
BATCH = 25
"""Loans one thread moves together: one transaction's worth (the DynamoDB adapter writes at most 25
loans to a transaction), so a page of 200 keeps all eight threads busy once."""
PAGE_SIZE = 200
"""Loans read, then moved, between two looks at the clock: well under a second of work on DynamoDB."""
COUNT_PAGE_SIZE = 1000
SAFETY_MARGIN_MS = 5_000
"""Stop when less than this is left (or a fifth of the starting budget, when that is less): enough to
count what remains and answer before API Gateway or Lambda gives up on the request."""


@dataclass(frozen=True)
class ReassignmentProgress:
    moved: int
    """Loans this call moved (each audited as LOAN_ASSIGNED)."""
    already: int
    """Loans that were with the target collector already (a retried or resumed request)."""
    remaining: int
    """Loans still to move when the call stopped for time; 0 when it is done."""

    @property
    def done(self) -> bool:
        return self.remaining == 0


def _budget(time_left_ms: Callable[[], int] | None) -> Budget:
    """The day-end run's budget with this module's margin: ``min(5 s, a fifth of the start)``."""
    if time_left_ms is None:
        return Budget(None)
    at_start = max(0, time_left_ms())
    return Budget(time_left_ms, min(SAFETY_MARGIN_MS, at_start // SAFETY_MARGIN_SHARE))


@dataclass
class _Tally:
    moved: int = 0
    already: int = 0

    def add(self, outcomes: Sequence[bool | None]) -> int:
        """Count one page's outcomes (``LoanService.reassign_many``); returns how many moved."""
        moved = sum(1 for o in outcomes if o is True)
        self.moved += moved
        self.already += sum(1 for o in outcomes if o is False)
        return moved

    def progress(self, remaining: int) -> ReassignmentProgress:
        return ReassignmentProgress(self.moved, self.already, remaining)


@dataclass
class ReassignmentService:
    loans: LoanService
    workers: int = WORKERS
    page_size: int = PAGE_SIZE

    def has_active_loans(self, collector_id: str) -> bool:
        """Whether any ACTIVE loan is assigned to ``collector_id`` (closed and written-off loans keep
        their collector as history and do not count). Read from the collector index, which DynamoDB
        updates a moment after each write: right after a move, ask again rather than trust one answer."""
        page = self.loans.loans.list(self._active_of(collector_id), 1, None)
        return bool(page.items)

    def move_collector_loans(
        self, ctx: RequestContext, from_collector: str, to_collector: str, time_left_ms: Callable[[], int] | None
    ) -> ReassignmentProgress:
        """Move every ACTIVE loan of ``from_collector`` to ``to_collector`` (an active collector, 400
        otherwise). Closed and written-off loans stay with ``from_collector``: who collected them is
        their history. ``from_collector`` need not be active any more (offboarding).

        The collector's loans are read from the collector index a page at a time. A page cursor is a
        key position, not an offset, so going on after a page whose loans just left the partition
        reads exactly the loans after them; but a loan given to ``from_collector`` meanwhile behind the
        cursor, or a page read from the index before it caught up with a move, would be missed or seen
        twice. So after each pass to the end of the partition another pass starts from the start, and
        the call is done when a pass moves nothing. (Starting every page from the start instead would
        read all of the collector's closed loans again for every page.)

        ``time_left_ms`` (None: no limit) is asked after each page; when the call stops for time,
        ``remaining`` counts the loans still to move and the same request, sent again, goes on."""
        ctx.require(MANAGE_LOANS)
        if from_collector == to_collector:
            raise ValidationFailed(
                "a collector's loans cannot be moved to the same collector",
                [{"field": "to_collector_id", "message": "must differ from from_collector_id"}],
            )
        self.loans._require_collector(to_collector)
        budget = _budget(time_left_ms)
        tally = _Tally()
        wanted = self._active_of(from_collector)

        def still_to_move(loan: Loan) -> bool:
            # The index said so a moment ago; the loan the write starts from must still say so (a
            # listed copy that is out of date never gets written: its version no longer matches).
            return loan.status is LoanStatus.ACTIVE and loan.collector_id == from_collector

        # Loans this call moved or found with the target: an index that has not caught up yet may list
        # them again, and they are neither read nor counted twice.
        settled: set[str] = set()

        def move(batch: list[Loan]) -> list[bool | None]:
            # The listed copies save a read each; the version condition catches a copy out of date.
            return self.loans.reassign_many(ctx, batch, to_collector, still_to_move)

        with self._pool() as pool:
            while True:
                moved_in_pass, cursor = 0, None
                while True:
                    page = self.loans.loans.list(wanted, self.page_size, cursor)
                    todo = [loan for loan in page.items if loan.loan_id not in settled]
                    outcomes = self._in_batches(pool, move, todo)
                    settled.update(loan.loan_id for loan, o in zip(todo, outcomes, strict=True) if o is not None)
                    moved_in_pass += tally.add(outcomes)
                    budget.progressed.set()
                    cursor = page.next_cursor
                    if budget.spent():
                        return tally.progress(self._count(wanted))
                    if cursor is None:
                        break
                if moved_in_pass == 0:
                    return tally.progress(0)

    def move_loans(
        self, ctx: RequestContext, loan_ids: Sequence[str], to_collector: str, time_left_ms: Callable[[], int] | None
    ) -> ReassignmentProgress:
        """Move the loans named to ``to_collector`` (an active collector, 400 otherwise), whatever their
        status, exactly as :meth:`LoanService.assign` would one by one: the manager named each loan. An
        id named twice counts once. The loans are read a hundred to a request first, and every id must
        name a loan: when any does not, nothing moves and the answer is 404 ``NOT_FOUND`` with
        ``details.loan_ids`` listing them.

        ``time_left_ms`` (None: no limit) is asked after each page of loans to move; when the call stops
        for time, ``remaining`` counts the loans not reached, so ``moved + already + remaining`` is every
        loan named. The same request, sent again, goes on: the loans moved before count as ``already``."""
        ctx.require(MANAGE_LOANS)
        self.loans._require_collector(to_collector)
        unique = list(dict.fromkeys(loan_ids))
        budget = _budget(time_left_ms)
        tally = _Tally()

        def move(batch: list[Loan]) -> list[bool | None]:
            return self.loans.reassign_many(ctx, batch, to_collector)

        found = self.loans.loans.get_many(unique)
        missing = [loan_id for loan_id in unique if loan_id not in found]
        if missing:
            raise NotFound(f"{len(missing)} of the loans named do not exist; nothing was moved", {"loan_ids": missing})
        with self._pool() as pool:
            # Loans found with the target just now count as already without another read; every page
            # after that is real work, so a call that stops after one page still gets further than the last.
            todo = [found[loan_id] for loan_id in unique if found[loan_id].collector_id != to_collector]
            tally.already = len(unique) - len(todo)
            for start in range(0, len(todo), self.page_size):
                tally.add(self._in_batches(pool, move, todo[start : start + self.page_size]))
                budget.progressed.set()
                left = len(todo) - start - self.page_size
                if left > 0 and budget.spent():
                    return tally.progress(left)
        return tally.progress(0)

    @staticmethod
    def _active_of(collector_id: str) -> LoanFilter:
        return LoanFilter(collector_id=collector_id, status=LoanStatus.ACTIVE.value)

    def _count(self, wanted: LoanFilter) -> int:
        """The loans still to move, counted exactly: a few reads of the collector index (a thousand loans
        a page), well inside the margin the call keeps for it."""
        count, cursor = 0, None
        while True:
            page = self.loans.loans.list(wanted, COUNT_PAGE_SIZE, cursor)
            count += len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return count

    def _in_batches(
        self, pool: ThreadPoolExecutor, move: Callable[[list[Loan]], list[bool | None]], loans: list[Loan]
    ) -> list[bool | None]:
        """``move`` over ``loans`` in batches of ``BATCH``, on the pool's threads: each loan's outcome in
        its place."""
        batches = [loans[start : start + BATCH] for start in range(0, len(loans), BATCH)]
        return [outcome for outcomes in pool.map(move, batches) for outcome in outcomes]

    @contextmanager
    def _pool(self) -> Iterator[ThreadPoolExecutor]:
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="reassign") as pool:
            yield pool
