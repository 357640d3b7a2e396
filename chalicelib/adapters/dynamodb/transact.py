"""One DynamoDB transaction of conditional puts, each under a name, with cancellation reasons turned
into the names of the entries whose condition failed.

Ordering caveat: DynamoDB returns one cancellation reason per operation, in the order the operations
were sent, and PynamoDB sends them grouped by kind (condition checks, then deletes, then puts, then
updates), not in the order they were added. Entries here are puts or updates (the portfolio counters'
additions), so :func:`save_all` pairs the reasons with the puts' names first and the updates' names
after, whatever order the entries were given in. Adding another kind of operation would have to be
done here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.adapters.dynamodb.errors import is_unavailable
from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.domain.errors import Unavailable
from chalicelib.retry import TRANSACTION_CONTENTION, RetryPolicy, retry


@dataclass(frozen=True)
class Entry:
    """One put of a transaction: ``name`` says which part of the write it is (``"utr_claim"``,
    ``"loan"``) so a refusal can say which condition failed."""

    name: str
    item: Model
    condition: Condition | None = None
    actions: Sequence[Action] = ()
    """Given: an update of ``item``'s key with these actions (a counter's addition) instead of a put."""


def audit_entries(items: Sequence[Model]) -> list[Entry]:
    """Audit entries ride along unconditionally, named ``audit:0``, ``audit:1``, ..."""
    return [Entry(f"audit:{n}", item) for n, item in enumerate(items)]


class TransactionRefused(Exception):
    """Nothing was written. ``failed`` holds the names of the entries whose condition failed;
    ``contended`` is true when DynamoDB saw a concurrent transaction on one of the items (worth
    retrying)."""

    def __init__(self, failed: frozenset[str], contended: bool) -> None:
        super().__init__(f"transaction refused: conditions failed at {sorted(failed)}, contended={contended}")
        self.failed = failed
        self.contended = contended


def save_all(entries: Sequence[Entry]) -> None:
    """Put every item or none. Version attributes add their own conditions (and are bumped locally
    only after the commit). Entry names must be distinct."""
    # Puts first, then updates: the order PynamoDB sends them in, which the refusal's pairing needs.
    ordered = [e for e in entries if not e.actions] + [e for e in entries if e.actions]
    names = [entry.name for entry in ordered]
    if len(set(names)) != len(names):
        raise ValueError(f"transaction entry names repeat: {names}")
    connection = LoanModel._get_connection().connection
    try:
        # A token of its own for each transaction sent: when the SDK sends it again because the answer
        # was lost, DynamoDB answers the first outcome instead of running it twice (where the puts'
        # conditions would then fail against the transaction's own items).
        with TransactWrite(connection=connection, client_request_token=str(uuid.uuid4())) as tx:
            for entry in ordered:
                if entry.actions:
                    tx.update(entry.item, list(entry.actions), condition=entry.condition)
                else:
                    tx.save(entry.item, condition=entry.condition)
    except TransactWriteError as exc:
        if is_unavailable(exc) or _throttled(exc):
            raise Unavailable("the database is not answering; nothing was changed, try again") from exc
        refused = _refusal(names, exc)
        if refused is None:
            raise
        raise refused from exc


def _throttled(exc: TransactWriteError) -> bool:
    """A cancellation because an item's partition was throttled: nothing was written and nothing is
    known to be wrong with the request, so it is the database not answering (the SDK does not retry a
    cancelled transaction)."""
    return any(r is not None and r.code == "ThrottlingError" for r in (exc.cancellation_reasons or []))


def _refusal(names: Sequence[str], exc: TransactWriteError) -> TransactionRefused | None:
    """The refusal the cancellation reasons describe (see the ordering caveat above), or None when
    they name neither a failed condition nor a concurrent transaction."""
    codes = [r.code if r is not None else None for r in (exc.cancellation_reasons or [])]
    failed = frozenset(name for name, code in zip(names, codes, strict=False) if code == "ConditionalCheckFailed")
    contended = "TransactionConflict" in codes
    if failed or contended:
        return TransactionRefused(failed, contended)
    return None


def save_unless_taken(
    entries: Callable[[], Sequence[Entry]], policy: RetryPolicy, busy: Callable[[], Exception]
) -> frozenset[str]:
    """Put every entry or none: the names of the entries whose condition failed (then nothing was
    written), or none (everything was). A transaction cancelled only because another writer held one of
    its items (the same key, or a portfolio counter's shard) is sent again under ``policy``: once that
    writer settles, the conditions decide; ``busy()`` when it keeps being contended. ``entries`` is
    asked again for each attempt, so counters' shards are picked afresh
    (``aggregates.portfolio_entries``)."""

    def attempt() -> frozenset[str]:
        try:
            save_all(entries())
        except TransactionRefused as exc:
            if exc.failed:
                return exc.failed
            raise
        return frozenset()

    return retry(policy, attempt, retry_on=TransactionRefused, exhausted=busy)


def create_all(
    entries: Callable[[], Sequence[Entry]], new: str, taken: Callable[[], Exception], busy: Callable[[], Exception]
) -> None:
    """Put every entry or none, where the entry named ``new`` must not exist yet (its condition says
    so, and no other entry has one): ``taken()`` is raised when it does (:func:`save_unless_taken`,
    under ``TRANSACTION_CONTENTION``)."""
    if save_unless_taken(entries, TRANSACTION_CONTENTION, busy):
        raise taken()
