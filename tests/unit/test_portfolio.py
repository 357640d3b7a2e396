"""The portfolio rules (chalicelib/domain/portfolio.py, docs/dashboard.md) as properties of pure domain
objects: what a loan contributes, what a write moves, the mean dpd read from the counters, the
collections of a payment and its reversal, and the recount.

Expected values are written out from the definitions in docs/dashboard.md (only ACTIVE loans count
in the money, bucket, classification and dpd figures; ``loans_total`` and ``legal_escalated`` count
every loan; a scope is the book, the loan's collector or the loan's branch), never by calling the
function under test on the same input. Counter names are taken from the module: they are names, not
rules.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.allocation import total_unpaid_paise
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import Bucket, Classification
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, initial_delinquency, reassess
from chalicelib.domain.payment import Payment, PaymentMode, PaymentStatus, post_to_loan, reverse_on_loan
from chalicelib.domain.portfolio import (
    ARREARS_SINCE,
    BOOK,
    LEGAL,
    LOAN_COUNTERS,
    LOANS_ACTIVE,
    LOANS_TOTAL,
    MONTH_COUNT,
    MONTH_PAISE,
    OUTSTANDING,
    OVERDUE,
    OVERDUE_LOANS,
    Collection,
    MonthCollections,
    Scope,
    ScopeKind,
    average_dpd,
    bucket_loans,
    bucket_outstanding,
    class_loans,
    contribution,
    day_count,
    day_paise,
    loan_change,
    loans_changed,
    payment_collections,
    recount,
    recount_collections,
    summarise,
)
from chalicelib.domain.schedule import Instalment

D = dt.date
DAY = dt.timedelta(days=1)
START = D(2025, 1, 10)
PROPERTY = settings(max_examples=150, deadline=None)
BOOKS = settings(max_examples=80, deadline=None)
"""For the properties of a whole book (several loans, each with its history)."""
COLLECTORS = (None, "collector1", "collector2", "collector3")
BRANCHES = (None, "PUNE", "NASHIK")

ScopeCounters = dict[Scope, dict[str, int]]


# --- building loans and payments ------------------------------------------------------------------


@st.composite
def schedules(draw: st.DrawFn) -> tuple[Instalment, ...]:
    """One to six instalments about a month apart from ``START``, some of a few paise."""
    count = draw(st.integers(1, 6))
    rows = []
    due = START + DAY * draw(st.integers(0, 20))
    for seq in range(1, count + 1):
        principal = draw(st.one_of(st.integers(1, 99), st.integers(100, 5_000_000)))
        interest = draw(st.integers(0, 500_000))
        rows.append(Instalment(seq, due, principal, interest))
        due += DAY * draw(st.integers(25, 35))
    return tuple(rows)


@st.composite
def loans(draw: st.DrawFn, loan_id: str = "L-PORT") -> Loan:
    """A new ACTIVE loan as the loan service creates it, evaluated on a business date from before its
    first due date to long after its last (so anywhere from current to NPA)."""
    schedule = draw(schedules())
    as_of = START + DAY * draw(st.integers(-20, 260))
    return Loan(
        loan_id=loan_id,
        borrower=Borrower("Asha Rao", "9876543210"),
        status=LoanStatus.ACTIVE,
        principal_paise=sum(i.principal_paise for i in schedule),
        disbursement_date=START - DAY * 40,
        schedule=schedule,
        delinquency=initial_delinquency(schedule, as_of),
        collector_id=draw(st.sampled_from(COLLECTORS)),
        branch=draw(st.sampled_from(BRANCHES)),
        version=1,
    )


Step = tuple[str, int, int]
"""(what, a number, another number): see :func:`apply`."""

PAY = st.tuples(st.just("pay"), st.integers(1, 1000), st.integers(0, 7))
REVERSE = st.tuples(st.just("reverse"), st.integers(0, 50), st.just(0))
STEPS = st.one_of(
    PAY,
    PAY,
    st.tuples(st.just("payoff"), st.just(0), st.integers(0, 7)),
    REVERSE,
    REVERSE,
    st.tuples(st.just("day_end"), st.integers(1, 40), st.just(0)),
    st.tuples(st.just("assign"), st.integers(0, len(COLLECTORS) - 1), st.just(0)),
    st.tuples(st.just("branch"), st.integers(0, len(BRANCHES) - 1), st.just(0)),
    st.tuples(st.just("escalate"), st.just(0), st.just(0)),
    st.tuples(st.just("write_off"), st.just(0), st.just(0)),
    st.tuples(st.just("notes"), st.integers(0, 9), st.just(0)),
)


def apply(loan: Loan, step: Step, number: int) -> Loan:
    """One write to a loan, the way the services make it: a payment (a share of what is owed, or all
    of it, which closes the loan) landing on the loan's business date and dated up to 7 days before;
    a reversal of a standing payment; a day-end some days later; an assignment to another collector
    (or none); another branch; a legal escalation; a write-off; a notes-only change. Steps that do not
    apply (paying a closed loan, reversing with nothing standing) leave the loan as it is."""
    what, n, backdate = step
    as_of = loan.delinquency.as_of
    if what in ("pay", "payoff"):
        owed = total_unpaid_paise(loan.schedule)
        if loan.status is not LoanStatus.ACTIVE or owed == 0:
            return loan
        amount = owed if what == "payoff" else min(owed, max(100, owed * n // 1000))
        paid, _ = post_to_loan(loan, amount, as_of, f"P{number:04d}", as_of - DAY * backdate)
        return paid
    if what == "reverse":
        if not loan.payments:
            return loan
        entry = loan.payments[n % len(loan.payments)]
        reversed_loan, _ = reverse_on_loan(loan, entry.payment_id, as_of)
        return reversed_loan
    if what == "day_end":
        return reassess(loan, as_of + DAY * n) if loan.status is LoanStatus.ACTIVE else loan
    if what == "assign":
        return dataclasses.replace(loan, collector_id=COLLECTORS[n])
    if what == "branch":
        return dataclasses.replace(loan, branch=BRANCHES[n])
    if what == "escalate":
        return dataclasses.replace(loan, legal_escalated=True, legal_escalated_on=as_of)
    if what == "write_off":
        return dataclasses.replace(loan, status=LoanStatus.WRITTEN_OFF)
    assert what == "notes"
    return dataclasses.replace(loan, notes=f"called {n} times")


@st.composite
def histories(draw: st.DrawFn, max_writes: int = 15) -> list[Loan]:
    """The successive stored states of one loan under a random sequence of writes."""
    states = [draw(loans())]
    for number, step in enumerate(draw(st.lists(STEPS, min_size=1, max_size=max_writes))):
        states.append(apply(states[-1], step, number))
    return states


def payment(
    amount: int, day: dt.date, collector: str | None, branch: str | None, status: PaymentStatus, pid: str = "P1"
) -> Payment:
    return Payment(
        payment_id=pid,
        utr=f"UTR{pid}XYZ",
        loan_id="L-PORT",
        amount_paise=amount,
        payment_date=day,
        mode=PaymentMode.UPI,
        status=status,
        posted_at="2025-03-01T12:00:00.000+05:30",
        posted_by=Actor("manager1", "manager"),
        landed_on=day,
        collector_id=collector,
        branch=branch,
    )


payments = st.builds(
    payment,
    amount=st.integers(1, 10_000_000),
    day=st.dates(D(2025, 1, 1), D(2025, 4, 30)),
    collector=st.sampled_from(COLLECTORS),
    branch=st.sampled_from(BRANCHES),
    status=st.sampled_from(PaymentStatus),
)


# --- the definitions, written out -----------------------------------------------------------------


def scopes_of(collector: str | None, branch: str | None) -> list[Scope]:
    """The book, the collector's scope when there is one, the branch's when there is one."""
    found = [Scope(ScopeKind.BOOK)]
    if collector:
        found.append(Scope(ScopeKind.COLLECTOR, collector))
    if branch:
        found.append(Scope(ScopeKind.BRANCH, branch))
    return found


def oldest_unpaid(loan: Loan, on: dt.date) -> dt.date | None:
    """The oldest due date on or before ``on`` with something still unpaid (day 1 of the dpd)."""
    unpaid = [i.due_date for i in loan.schedule if i.due_date <= on and i.paid_paise < i.due_paise]
    return min(unpaid) if unpaid else None


def expected_contribution(loan: Loan) -> dict[str, int]:
    """docs/dashboard.md: every loan counts in ``loans_total`` and (once escalated) in
    ``legal_escalated``; an ACTIVE one adds 1 to the active count, its bucket and its classification,
    its outstanding principal to the outstanding and its bucket's outstanding, its overdue amount, and
    when in arrears 1 loan and the ordinal of its oldest unpaid due date."""
    counts = dict.fromkeys(LOAN_COUNTERS, 0)
    counts[LOANS_TOTAL] = 1
    counts[LEGAL] = 1 if loan.legal_escalated else 0
    if loan.status is LoanStatus.ACTIVE:
        d = loan.delinquency
        outstanding = sum(i.principal_paise - i.paid_principal_paise for i in loan.schedule)
        counts[LOANS_ACTIVE] = 1
        counts[OUTSTANDING] = outstanding
        counts[OVERDUE] = d.overdue_paise
        counts[bucket_loans(d.bucket)] = 1
        counts[bucket_outstanding(d.bucket)] = outstanding
        counts[class_loans(d.classification)] = 1
        if d.dpd > 0:
            since = oldest_unpaid(loan, d.as_of)
            assert since is not None
            counts[OVERDUE_LOANS] = 1
            counts[ARREARS_SINCE] = since.toordinal()
    return counts


def nonzero(counters: Mapping[Scope, Mapping[str, int]]) -> ScopeCounters:
    """The same counters without zeroes, and without scopes left empty."""
    out: ScopeCounters = {}
    for scope, counts in counters.items():
        kept = {name: value for name, value in counts.items() if value != 0}
        if kept:
            out[scope] = kept
    return out


def add_into(total: ScopeCounters, scope: Scope, counts: Mapping[str, int], sign: int = 1) -> None:
    target = total.setdefault(scope, {})
    for name, value in counts.items():
        target[name] = target.get(name, 0) + sign * value


def by_hand(loans_: Iterable[Loan]) -> ScopeCounters:
    """Every scope's counters as the sum of its loans' contributions (written out above)."""
    total: ScopeCounters = {}
    for loan in loans_:
        for scope in scopes_of(loan.collector_id, loan.branch):
            add_into(total, scope, expected_contribution(loan))
    return nonzero(total)


# --- properties -----------------------------------------------------------------------------------


@PROPERTY
@given(histories())
def test_a_loan_contributes_what_docs_dashboard_md_says(states: list[Loan]) -> None:
    """In every state a loan reaches (paid, closed, reopened, reassessed, escalated, written off), its
    contribution is exactly the documented one: only ACTIVE loans count in the money, bucket,
    classification and dpd figures, and the arrears date is the oldest unpaid due date."""
    for loan in states:
        given_ = contribution(loan)
        assert set(given_) <= set(LOAN_COUNTERS)
        assert nonzero({BOOK: given_}) == nonzero({BOOK: expected_contribution(loan)})


@PROPERTY
@given(histories())
def test_the_changes_of_a_loans_writes_add_up_to_its_last_contribution_less_its_first(states: list[Loan]) -> None:
    """Summing ``loan_change`` over every write of one loan (payments, a payoff that closes it,
    reversals that reopen it, day-ends, moves between collectors and branches, escalation, write-off)
    gives, per scope, its last contribution in its last scopes less its first contribution in its
    first scopes; with the creation's change added, its last contribution alone. Each change drops
    zero movements: no counter of 0, no scope without a counter, and a write that moves nothing
    (a notes change) moves nothing; a payment's collections ride along unchanged."""
    first, last = states[0], states[-1]
    total: ScopeCounters = {}
    riding = (Collection(BOOK, START, 1_000, 1),)
    for before, after in itertools.pairwise(states):
        change = loan_change(before, after)
        assert change.collections == () and loan_change(before, after, riding).collections == riding
        for scope, counts in change.counters.items():
            assert counts, scope
            assert all(value != 0 for value in counts.values()), (scope, counts)
            add_into(total, scope, counts)
        if dataclasses.replace(after, notes=before.notes) == before:
            assert change.empty
    expected: ScopeCounters = {}
    for scope in scopes_of(last.collector_id, last.branch):
        add_into(expected, scope, expected_contribution(last))
    for scope in scopes_of(first.collector_id, first.branch):
        add_into(expected, scope, expected_contribution(first), -1)
    assert nonzero(total) == nonzero(expected)

    created = loan_change(None, first)
    for scope, counts in created.counters.items():
        add_into(total, scope, counts)
    assert nonzero(total) == by_hand([last])


@PROPERTY
@given(
    st.lists(st.tuples(st.integers(0, 2), STEPS), min_size=1, max_size=30), st.lists(loans(), min_size=3, max_size=3)
)
def test_counters_kept_by_the_changes_of_interleaved_writes_equal_a_recount(
    writes: list[tuple[int, Step]], book: list[Loan]
) -> None:
    """Three loans written in any interleaving: counters that start from the creations' changes and add
    every write's change equal the recount of the loans as they end, both as ``recount`` gives it and
    as the documented sum of contributions."""
    current = [dataclasses.replace(loan, loan_id=f"L-{n}") for n, loan in enumerate(book)]
    counters: ScopeCounters = {}
    for loan in current:
        for scope, counts in loan_change(None, loan).counters.items():
            add_into(counters, scope, counts)
    for number, (which, step) in enumerate(writes):
        before = current[which]
        current[which] = apply(before, step, number)
        for scope, counts in loan_change(before, current[which]).counters.items():
            add_into(counters, scope, counts)
    assert nonzero(counters) == nonzero(recount(current)) == by_hand(current)


@BOOKS
@given(st.lists(histories(4), max_size=8))
def test_the_change_of_loans_written_together_is_the_sum_of_their_own_changes(book_states: list[list[Loan]]) -> None:
    """``loans_changed`` (the bulk import's and the bulk reassignment's one addition per scope) moves
    each counter by exactly the sum of each write's own ``loan_change``, new loans and updates mixed,
    with zero movements dropped as there."""
    writes: list[tuple[Loan | None, Loan]] = []
    for n, states in enumerate(book_states):
        named = [dataclasses.replace(state, loan_id=f"L-{n}") for state in states]
        writes.append((None, named[0]) if len(named) == 1 else (named[-2], named[-1]))
    expected: ScopeCounters = {}
    for before, after in writes:
        for scope, counts in loan_change(before, after).counters.items():
            add_into(expected, scope, counts)
    together = loans_changed(writes)
    assert together.collections == ()
    assert together.counters == nonzero(expected)
    assert all(counts and all(together.counters[scope].values()) for scope, counts in together.counters.items())


@BOOKS
@given(st.lists(histories(6), max_size=6))
def test_recount_is_the_sum_of_the_contributions_of_each_scopes_loans(book_states: list[list[Loan]]) -> None:
    """``recount`` of a book (loans in every state) is, for each scope, the sum of the documented
    contributions of exactly the loans in that scope: all of them for the book, those held by the
    collector, those of the branch."""
    book = [dataclasses.replace(states[-1], loan_id=f"L-{n}") for n, states in enumerate(book_states)]
    counted = nonzero(recount(book))
    assert counted == by_hand(book)
    groups: dict[Scope, list[Loan]] = {Scope(ScopeKind.BOOK): book}
    for loan in book:
        if loan.collector_id:
            groups.setdefault(Scope(ScopeKind.COLLECTOR, loan.collector_id), []).append(loan)
        if loan.branch:
            groups.setdefault(Scope(ScopeKind.BRANCH, loan.branch), []).append(loan)
    for scope, members in groups.items():
        summed: dict[str, int] = {}
        for loan in members:
            for name, value in expected_contribution(loan).items():
                summed[name] = summed.get(name, 0) + value
        assert counted.get(scope, {}) == {k: v for k, v in summed.items() if v != 0}
    assert set(counted) <= set(groups)


@BOOKS
@given(st.lists(histories(6), max_size=8), st.integers(0, 60))
def test_the_mean_dpd_from_the_counters_is_the_brute_force_mean(book_states: list[list[Loan]], later: int) -> None:
    """``average_dpd`` on a date on or after every loan's evaluation equals the plain mean, computed as
    Python computes ``sum / len``, of ``on - arrears_since + 1`` over the ACTIVE loans in arrears
    (arrears_since: the oldest unpaid due date as of the loan's evaluation); 0 when there are none."""
    book = [states[-1] for states in book_states]
    on = max((loan.delinquency.as_of for loan in book), default=START) + DAY * later
    dpds = []
    for loan in book:
        if loan.status is LoanStatus.ACTIVE:
            since = oldest_unpaid(loan, loan.delinquency.as_of)
            if since is not None:
                dpds.append((on - since).days + 1)
    expected = sum(dpds) / len(dpds) if dpds else 0
    counters = recount(book).get(BOOK, {})
    assert average_dpd(counters, on) == expected
    if not dpds:
        assert average_dpd(counters, on) == 0
    if later == 0 and all(loan.delinquency.as_of == on for loan in book):
        # Every loan evaluated on ``on``: the mean is simply that of their stored dpd.
        stored = [loan.delinquency.dpd for loan in book if loan.status is LoanStatus.ACTIVE and loan.delinquency.dpd]
        assert average_dpd(counters, on) == (sum(stored) / len(stored) if stored else 0)


@PROPERTY
@given(payments)
def test_a_posted_then_reversed_payment_nets_to_zero_in_every_scope(p: Payment) -> None:
    """A posted payment adds its amount and a count of 1 on its payment date to the book, the collector
    it is credited to and its branch (and nothing else); the same payment reversed takes exactly that
    off again, so the two net to zero everywhere."""
    posted = dataclasses.replace(p, status=PaymentStatus.POSTED)
    reversed_ = dataclasses.replace(p, status=PaymentStatus.REVERSED)
    expected = {Collection(scope, p.payment_date, p.amount_paise, 1) for scope in scopes_of(p.collector_id, p.branch)}
    assert set(payment_collections(posted)) == expected
    assert len(payment_collections(posted)) == len(expected)
    net: dict[tuple[Scope, dt.date], tuple[int, int]] = {}
    for c in (*payment_collections(posted), *payment_collections(reversed_)):
        paise, count = net.get((c.scope, c.day), (0, 0))
        net[(c.scope, c.day)] = (paise + c.paise, count + c.count)
    assert set(net) == {(scope, p.payment_date) for scope in scopes_of(p.collector_id, p.branch)}
    assert all(value == (0, 0) for value in net.values()), net


@PROPERTY
@given(st.lists(payments, max_size=12))
def test_collections_recounted_from_payments_count_the_standing_ones_by_date(ps: list[Payment]) -> None:
    """``recount_collections``: per scope and month, the total and count of the standing (POSTED)
    payments dated in that month, and per day the same for that day; reversed payments are gone."""
    ps = [dataclasses.replace(p, payment_id=f"P{n}") for n, p in enumerate(ps)]
    expected: dict[tuple[Scope, str], dict[str, int]] = {}
    for p in ps:
        if p.status is not PaymentStatus.POSTED:
            continue
        for scope in scopes_of(p.collector_id, p.branch):
            target = expected.setdefault((scope, f"{p.payment_date:%Y-%m}"), {})
            for name, value in (
                (MONTH_PAISE, p.amount_paise),
                (MONTH_COUNT, 1),
                (day_paise(p.payment_date.day), p.amount_paise),
                (day_count(p.payment_date.day), 1),
            ):
                target[name] = target.get(name, 0) + value
    assert recount_collections(ps) == expected


@dataclass(frozen=True)
class Figures:
    loans_total: int
    loans_active: int
    outstanding: int
    overdue: int
    buckets: dict[str, tuple[int, int]]
    classification: dict[str, int]
    avg_dpd: float
    legal: int
    today: tuple[int, int]
    mtd: int


@BOOKS
@given(
    st.lists(histories(6), max_size=6),
    st.lists(st.tuples(payments, st.integers(0, 45)), max_size=10),
    st.integers(0, 30),
)
def test_a_summary_of_the_recount_shows_the_documented_figures(
    book_states: list[list[Loan]], dated: list[tuple[Payment, int]], later: int
) -> None:
    """``summarise`` over the recounted counters and collections shows, for the book, the figures of
    docs/dashboard.md computed from the loans and payments directly (payments dated up to 45 days
    before today, so some today, some earlier this month, some last month)."""
    book = [dataclasses.replace(states[-1], loan_id=f"L-{n}") for n, states in enumerate(book_states)]
    as_of = max((loan.delinquency.as_of for loan in book), default=START) + DAY * later
    today = as_of + DAY
    ps = [
        dataclasses.replace(p, payment_id=f"P{n}", payment_date=today - DAY * back) for n, (p, back) in enumerate(dated)
    ]
    month = recount_collections(ps, [f"{today:%Y-%m}"]).get((BOOK, f"{today:%Y-%m}"), {})
    days = {
        d: (month.get(day_paise(d), 0), month.get(day_count(d), 0)) for d in range(1, 32) if month.get(day_count(d), 0)
    }
    shown = summarise(
        BOOK,
        recount(book).get(BOOK, {}),
        MonthCollections(month.get(MONTH_PAISE, 0), month.get(MONTH_COUNT, 0), days),
        as_of,
        today,
    )
    active = [loan for loan in book if loan.status is LoanStatus.ACTIVE]
    arrears = [oldest_unpaid(loan, loan.delinquency.as_of) for loan in active]
    dpds = [(as_of - since).days + 1 for since in arrears if since is not None]
    standing = [p for p in ps if p.status is PaymentStatus.POSTED]

    def outstanding(loan: Loan) -> int:
        return sum(i.principal_paise - i.paid_principal_paise for i in loan.schedule)

    expected = Figures(
        loans_total=len(book),
        loans_active=len(active),
        outstanding=sum(outstanding(loan) for loan in active),
        overdue=sum(loan.delinquency.overdue_paise for loan in active),
        buckets={
            b.value: (
                sum(1 for loan in active if loan.delinquency.bucket is b),
                sum(outstanding(loan) for loan in active if loan.delinquency.bucket is b),
            )
            for b in Bucket
        },
        classification={
            c.value: sum(1 for loan in active if loan.delinquency.classification is c) for c in Classification
        },
        avg_dpd=sum(dpds) / len(dpds) if dpds else 0,
        legal=sum(1 for loan in book if loan.legal_escalated),
        today=(
            sum(p.amount_paise for p in standing if p.payment_date == today),
            sum(1 for p in standing if p.payment_date == today),
        ),
        mtd=sum(
            p.amount_paise for p in standing if (p.payment_date.year, p.payment_date.month) == (today.year, today.month)
        ),
    )
    assert shown.scope == BOOK and shown.as_of == as_of and shown.today == today
    assert (
        Figures(
            shown.loans_total,
            shown.loans_active,
            shown.outstanding_principal_paise,
            shown.overdue_paise,
            shown.buckets,
            shown.classification,
            shown.avg_dpd,
            shown.legal_escalated,
            (shown.collections_today_paise, shown.collections_today_count),
            shown.collections_mtd_paise,
        )
        == expected
    )
