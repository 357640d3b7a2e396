"""Portfolio figures: what the dashboard shows and what each loan and payment adds to them
(docs/dashboard.md).

A *scope* is a set of loans: the whole book, one collector's loans or one branch's loans. A scope's
figures are sums, so they are kept as counters: each loan *contributes* a fixed set of numbers
(:func:`contribution`), and a scope's counters are the sum of its loans' contributions. Every write
that changes a loan adds ``contribution(after) - contribution(before)`` to the loan's scopes in the
same transaction (:func:`loan_change`), so the counters equal a recount from the loans at every
commit, whatever order writes arrive in.

Two figures move with time rather than with writes, and are kept so that no job has to roll them:

- dpd grows by one every day while nothing is paid. A loan in arrears contributes the ordinal of the
  date its arrears date from, which does not move until a payment moves it; the mean dpd on any date
  D is then ``(D + 1) - sum(arrears_since) / overdue_loans`` (:func:`average_dpd`).
- collections are counted by the payment's date (IST), per day and per month, in one counter per
  scope and month (:func:`collection`); "today" is just the counter of today's date, so it starts
  at zero at IST midnight by itself.

Pure: no storage, no clock. Counter names are plain identifiers, used as stored attribute names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from chalicelib.clock import month_of
from chalicelib.domain.delinquency import Bucket, Classification
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.payment import Payment, PaymentStatus


class ScopeKind(StrEnum):
    BOOK = "book"
    COLLECTOR = "collector"
    BRANCH = "branch"


@dataclass(frozen=True, order=True)
class Scope:
    """One set of loans the dashboard can show: the book, a collector's loans, a branch's loans."""

    kind: ScopeKind
    name: str = ""
    """The collector's username or the branch; empty for the book."""

    @property
    def key(self) -> str:
        """``book``, ``collector:<username>`` or ``branch:<branch>``: how reports name the scope."""
        return self.kind.value if self.kind is ScopeKind.BOOK else f"{self.kind.value}:{self.name}"

    @classmethod
    def parse(cls, key: str) -> Scope:
        kind, _, name = key.partition(":")
        return cls(ScopeKind(kind), name)


BOOK = Scope(ScopeKind.BOOK)


def slug(value: str) -> str:
    """A bucket or classification as part of a counter name: ``1-30`` -> ``1_30``, ``90+`` -> ``90_plus``."""
    return value.lower().replace("-", "_").replace("+", "_plus")


def bucket_loans(bucket: Bucket) -> str:
    return f"bucket_{slug(bucket.value)}_loans"


def bucket_outstanding(bucket: Bucket) -> str:
    return f"bucket_{slug(bucket.value)}_outstanding"


def class_loans(classification: Classification) -> str:
    return f"class_{slug(classification.value)}_loans"


LOANS_TOTAL = "loans_total"
LOANS_ACTIVE = "loans_active"
OUTSTANDING = "outstanding"
OVERDUE = "overdue"
OVERDUE_LOANS = "overdue_loans"
ARREARS_SINCE = "arrears_since"
"""Sum over the loans in arrears of the ordinal (``date.toordinal()``) of the date their arrears date
from: the oldest unpaid due date, which is day 1."""
LEGAL = "legal_escalated"

LOAN_COUNTERS: tuple[str, ...] = (
    LOANS_TOTAL,
    LOANS_ACTIVE,
    OUTSTANDING,
    OVERDUE,
    OVERDUE_LOANS,
    ARREARS_SINCE,
    LEGAL,
    *(bucket_loans(b) for b in Bucket),
    *(bucket_outstanding(b) for b in Bucket),
    *(class_loans(c) for c in Classification),
)
"""Every counter a loan contributes to. Only ACTIVE loans count in outstanding, overdue, the buckets,
the classifications and the mean dpd: a closed loan owes nothing and a written-off one is no longer
collected. ``loans_total`` and ``legal_escalated`` count every loan."""

Counters = Mapping[str, int]

MONTH_PAISE = "month_paise"
MONTH_COUNT = "month_count"


def day_paise(day: int) -> str:
    """``p05``: the paise collected on the 5th. Short on purpose: a month's item holds 62 of these and
    must stay under 1 KB, or every transactional update of it costs 4 write units instead of 2."""
    return f"p{day:02d}"


def day_count(day: int) -> str:
    """``n05``: the payments counted on the 5th (see :func:`day_paise`)."""
    return f"n{day:02d}"


COLLECTION_COUNTERS = (MONTH_PAISE, MONTH_COUNT, *(f(d) for d in range(1, 32) for f in (day_paise, day_count)))
"""The counters of one scope's collections in one month: the month's total and count, and each day's."""


def collection_counters(c: Collection) -> dict[str, int]:
    """What one collection adds to its month's counters."""
    return {
        MONTH_PAISE: c.paise,
        MONTH_COUNT: c.count,
        day_paise(c.day.day): c.paise,
        day_count(c.day.day): c.count,
    }


def month_collections(values: Counters) -> MonthCollections:
    """A month's counters as the dashboard reads them."""
    days = {
        d: (values.get(day_paise(d), 0), values.get(day_count(d), 0))
        for d in range(1, 32)
        if values.get(day_count(d), 0) or values.get(day_paise(d), 0)
    }
    return MonthCollections(values.get(MONTH_PAISE, 0), values.get(MONTH_COUNT, 0), days)


def recount_collections(
    payments: Iterable[Payment], months: Iterable[str] | None = None
) -> dict[tuple[Scope, str], dict[str, int]]:
    """Collections recounted from payments (standing ones count; reversed ones are gone), by scope and
    month; only ``months`` when given."""
    wanted = set(months) if months is not None else None
    totals: dict[tuple[Scope, str], dict[str, int]] = {}
    for payment in payments:
        if payment.status is not PaymentStatus.POSTED:
            continue
        month = month_of(payment.payment_date)
        if wanted is not None and month not in wanted:
            continue
        for c in payment_collections(payment):
            target = totals.setdefault((c.scope, month), {})
            for name, value in collection_counters(c).items():
                target[name] = target.get(name, 0) + value
    return totals


def contribution(loan: Loan) -> dict[str, int]:
    """What one loan, as stored, adds to each scope it belongs to (only the counters it moves)."""
    counts = {LOANS_TOTAL: 1}
    if loan.legal_escalated:
        counts[LEGAL] = 1
    if loan.status is not LoanStatus.ACTIVE:
        return counts
    d = loan.delinquency
    outstanding = loan.outstanding_principal_paise
    counts.update(
        {
            LOANS_ACTIVE: 1,
            OUTSTANDING: outstanding,
            OVERDUE: d.overdue_paise,
            bucket_loans(d.bucket): 1,
            bucket_outstanding(d.bucket): outstanding,
            class_loans(d.classification): 1,
        }
    )
    if d.dpd > 0:
        counts[OVERDUE_LOANS] = 1
        counts[ARREARS_SINCE] = arrears_since(loan).toordinal()
    return counts


def arrears_since(loan: Loan) -> dt.date:
    """The date a loan's arrears date from, as its stored delinquency says (day 1 of its dpd)."""
    d = loan.delinquency
    return d.as_of - dt.timedelta(days=d.dpd - 1)


def loan_scopes(loan: Loan) -> tuple[Scope, ...]:
    """The scopes a loan's figures count in: the book, its collector's, its branch's."""
    scopes = [BOOK]
    if loan.collector_id:
        scopes.append(Scope(ScopeKind.COLLECTOR, loan.collector_id))
    if loan.branch:
        scopes.append(Scope(ScopeKind.BRANCH, loan.branch))
    return tuple(scopes)


class CounterKind(StrEnum):
    COUNTERS = "counters"
    """A scope's loan counters (:data:`LOAN_COUNTERS`)."""
    COLLECTIONS = "collections"
    """A scope's collections in one month (:data:`COLLECTION_COUNTERS`)."""


@dataclass(frozen=True, order=True)
class CounterKey:
    """One set of counters as stored: a scope's loan counters, or its collections in one month."""

    kind: CounterKind
    scope: str
    """:attr:`Scope.key`."""
    month: str | None = None

    @property
    def label(self) -> str:
        """How a report names it: the scope's key, with the month for collections."""
        return self.scope if self.month is None else f"{self.scope}@{self.month}"


@dataclass(frozen=True)
class CounterTotals:
    """A set of counters summed over its shards, and how many writes they have taken (a number that
    only grows: the reconciliation compares it before and after its recount)."""

    values: dict[str, int]
    writes: int


@dataclass(frozen=True)
class Collection:
    """Money counted in one scope's collections for one day: a posting adds, a reversal takes off."""

    scope: Scope
    day: dt.date
    paise: int
    count: int


@dataclass(frozen=True)
class PortfolioChange:
    """What one write adds to the counters: per scope, only the counters that move (none: no entry)."""

    counters: dict[Scope, dict[str, int]] = field(default_factory=dict)
    collections: tuple[Collection, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.counters and not self.collections


def _add(into: dict[Scope, dict[str, int]], scopes: Iterable[Scope], counts: Counters, sign: int) -> None:
    for scope in scopes:
        target = into.setdefault(scope, {})
        for name, value in counts.items():
            target[name] = target.get(name, 0) + sign * value


def loan_change(before: Loan | None, after: Loan, collections: Iterable[Collection] = ()) -> PortfolioChange:
    """The counters a write from ``before`` (None: a new loan) to ``after`` moves: the loan's old
    contribution leaves its old scopes and its new one joins its new scopes (an assignment moves the
    loan between collectors), with zero movements dropped. ``collections`` rides along (a payment)."""
    return PortfolioChange(_moves([(before, after)]), tuple(collections))


def loans_changed(writes: Iterable[tuple[Loan | None, Loan]]) -> PortfolioChange:
    """What writing these loans together moves, each from ``before`` (None: new) to ``after``: the sum
    of their :func:`loan_change`, one addition per scope however many loans it holds (the bulk
    import's and the bulk reassignment's transactions)."""
    return PortfolioChange(_moves(writes))


def _moves(writes: Iterable[tuple[Loan | None, Loan]]) -> dict[Scope, dict[str, int]]:
    moves: dict[Scope, dict[str, int]] = {}
    for before, after in writes:
        if before is not None:
            _add(moves, loan_scopes(before), contribution(before), -1)
        _add(moves, loan_scopes(after), contribution(after), +1)
    return _nonzero(moves)


def _nonzero(moves: dict[Scope, dict[str, int]]) -> dict[Scope, dict[str, int]]:
    counters = {}
    for scope, counts in moves.items():
        nonzero = {name: value for name, value in counts.items() if value != 0}
        if nonzero:
            counters[scope] = nonzero
    return counters


def payment_collections(payment: Payment) -> tuple[Collection, ...]:
    """A posted payment adds its amount to its date's collections, a reversed one takes it off again,
    in the book, the loan's branch and the collector credited with it: the one who held the loan when
    it was posted (stored on the payment), so a later reassignment does not move money already
    collected from one collector to another."""
    sign = 1 if payment.status is PaymentStatus.POSTED else -1
    scopes = [BOOK]
    if payment.collector_id:
        scopes.append(Scope(ScopeKind.COLLECTOR, payment.collector_id))
    if payment.branch:
        scopes.append(Scope(ScopeKind.BRANCH, payment.branch))
    return tuple(Collection(scope, payment.payment_date, sign * payment.amount_paise, sign) for scope in scopes)


def recount(loans: Iterable[Loan]) -> dict[Scope, dict[str, int]]:
    """The counters recounted from scratch (tests, the reconciliation and the rebuild use this)."""
    totals: dict[Scope, dict[str, int]] = {}
    for loan in loans:
        _add(totals, loan_scopes(loan), contribution(loan), +1)
    return totals


def average_dpd(counters: Counters, on: dt.date) -> float:
    """The mean dpd on ``on`` of the loans in arrears (0 when there are none): each such loan's dpd is
    ``on - arrears_since + 1``, so the sum over them is ``n * (on + 1) - sum(arrears_since)``."""
    n = counters.get(OVERDUE_LOANS, 0)
    if n <= 0:
        return 0
    return (n * (on.toordinal() + 1) - counters.get(ARREARS_SINCE, 0)) / n


@dataclass(frozen=True)
class Summary:
    """The dashboard for one scope, as of one business date and one IST day."""

    scope: Scope
    as_of: dt.date
    today: dt.date
    loans_total: int
    loans_active: int
    outstanding_principal_paise: int
    overdue_paise: int
    collections_today_paise: int
    collections_today_count: int
    collections_mtd_paise: int
    buckets: dict[str, tuple[int, int]]
    """Bucket -> (loans, outstanding principal paise)."""
    classification: dict[str, int]
    avg_dpd: float
    legal_escalated: int


@dataclass(frozen=True)
class MonthCollections:
    """One scope's collections in one month: the month's total and each day's."""

    month_paise: int = 0
    month_count: int = 0
    days: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    """Day of month -> (paise, count)."""


def summarise(scope: Scope, counters: Counters, month: MonthCollections, as_of: dt.date, today: dt.date) -> Summary:
    """The dashboard's figures from a scope's counters and its collections for ``today``'s month."""
    today_paise, today_count = month.days.get(today.day, (0, 0))
    return Summary(
        scope=scope,
        as_of=as_of,
        today=today,
        loans_total=counters.get(LOANS_TOTAL, 0),
        loans_active=counters.get(LOANS_ACTIVE, 0),
        outstanding_principal_paise=counters.get(OUTSTANDING, 0),
        overdue_paise=counters.get(OVERDUE, 0),
        collections_today_paise=today_paise,
        collections_today_count=today_count,
        collections_mtd_paise=month.month_paise,
        buckets={b.value: (counters.get(bucket_loans(b), 0), counters.get(bucket_outstanding(b), 0)) for b in Bucket},
        classification={c.value: counters.get(class_loans(c), 0) for c in Classification},
        avg_dpd=average_dpd(counters, as_of),
        legal_escalated=counters.get(LEGAL, 0),
    )
