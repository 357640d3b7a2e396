"""One DynamoDB transaction of conditional puts, with cancellation reasons turned into facts.

PynamoDB reports cancellation reasons in its own order (condition checks, deletes, puts, updates);
everything here is a put, so the reasons line up with the order the items were given in.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynamodb.exceptions import TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.adapters.dynamodb.errors import is_unavailable
from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.domain.errors import Unavailable


class TransactionRefused(Exception):
    """Nothing was written. ``failed`` holds the positions whose condition failed; ``contended`` is
    true when DynamoDB saw a concurrent transaction on one of the items (worth retrying)."""

    def __init__(self, failed: frozenset[int], contended: bool) -> None:
        super().__init__(f"transaction refused: conditions failed at {sorted(failed)}, contended={contended}")
        self.failed = failed
        self.contended = contended


def save_all(entries: Sequence[tuple[Model, Condition | None]]) -> None:
    """Put every item or none. Version attributes add their own conditions (and are bumped locally
    only after the commit)."""
    connection = LoanModel._get_connection().connection
    try:
        with TransactWrite(connection=connection) as tx:
            for item, condition in entries:
                tx.save(item, condition=condition)
    except TransactWriteError as exc:
        if is_unavailable(exc):
            raise Unavailable("the database is not answering; nothing was changed, try again") from exc
        codes = [r.code if r is not None else None for r in (exc.cancellation_reasons or [])]
        failed = frozenset(i for i, code in enumerate(codes) if code == "ConditionalCheckFailed")
        contended = "TransactionConflict" in codes
        if failed or contended:
            raise TransactionRefused(failed, contended) from exc
        raise
