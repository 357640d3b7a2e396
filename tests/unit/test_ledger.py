"""The ledger replay (docs/rules.md): a loan is always the replay of its standing payments.

- Posting and reversing incrementally, with day-ends in between, gives the same loan as
  ``ledger.replay`` from scratch, and the same delinquency as a day-by-day simulation in which the
  reversed payments were never posted.
- Money is conserved and allocated in payment order (payment date, then posting time), oldest
  instalment first, interest before principal.
- A reversal is "never posted"; a later payment moves onto the oldest unpaid instalment; NPA comes
  back with its original date unless the standing payments alone would have upgraded the loan.
- A residual below ₹1 can be cleared by paying exactly it, and nothing else below ₹1 is accepted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from chalicelib.domain.allocation import Allocation, apply_payment, total_unpaid_paise
from chalicelib.domain.delinquency import (
    Bucket,
    Classification,
    Delinquency,
    assess,
    dpd_on,
    overdue_paise,
)
from chalicelib.domain.errors import AmountOutOfRange, InvalidSchedule
from chalicelib.domain.ledger import LedgerEntry, allocate, allocation_order, replay
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, initial_delinquency, reassess
from chalicelib.domain.payment import (
    BACKDATE_DAYS,
    allocations_now,
    check_amount,
    check_payment_date,
    post_to_loan,
    reverse_on_loan,
)
from chalicelib.domain.schedule import Instalment, due_dates, generate_schedule, import_schedule

DAY = dt.timedelta(days=1)
PROPERTY = settings(max_examples=200, deadline=None)
SECONDARY = settings(max_examples=150, deadline=None)


# --- realistic loans --------------------------------------------------------------------------


def make_loan(schedule: Sequence[Instalment], disbursed: dt.date, business_date: dt.date) -> Loan:
    """A new loan as the loan service creates it: delinquency as of the last completed business date."""
    schedule = tuple(schedule)
    return Loan(
        loan_id="LN-LEDGER",
        borrower=Borrower("Ravi Kumar", "9123456780"),
        status=LoanStatus.ACTIVE,
        principal_paise=sum(i.principal_paise for i in schedule),
        disbursement_date=disbursed,
        schedule=schedule,
        delinquency=initial_delinquency(schedule, business_date),
        version=1,
    )


@st.composite
def new_loans(draw: st.DrawFn) -> Loan:
    """A generated EMI loan or an imported schedule (which may hold instalments of a few paise, so
    residuals below ₹1 come up), created on a business date from before its first due date to long
    after it (an imported loan can be NPA from the start)."""
    disbursed = dt.date(2025, 1, 1) + dt.timedelta(days=draw(st.integers(0, 120)))
    first_due = disbursed + dt.timedelta(days=draw(st.integers(10, 45)))
    if draw(st.booleans()):
        principal = draw(st.integers(5_000_00, 25_00_000_00))  # ₹5,000 to ₹25 lakh
        rate_bps = draw(st.integers(0, 3_600))
        tenure = draw(st.integers(1, 18))
        try:
            schedule = generate_schedule(principal, rate_bps, tenure, disbursed, first_due)
        except InvalidSchedule:
            assume(False)
    else:
        count = draw(st.integers(1, 10))
        parts = draw(
            st.lists(
                st.tuples(
                    st.one_of(st.integers(0, 99), st.integers(100, 3_00_000_00)),
                    st.one_of(st.integers(0, 99), st.integers(0, 30_000_00)),
                ).map(lambda r: r if r[0] + r[1] else (1, 0)),
                min_size=count,
                max_size=count,
            )
        )
        principal = sum(p for p, _ in parts)
        assume(principal >= 1)
        rows = [(due, p, i) for due, (p, i) in zip(due_dates(first_due, count), parts, strict=True)]
        schedule = import_schedule(principal, disbursed, rows)
    created = max(disbursed, first_due + dt.timedelta(days=draw(st.integers(-20, 150))))
    return make_loan(schedule, disbursed, created)


# An operation: day-ends that evaluate the loan; days that pass without the loan being written (a
# missed run, or a run that skips an unchanged loan); a payment (how much); a reversal (which).
day_ends = st.tuples(st.just("days"), st.integers(1, 35), st.just(0))
unwritten_days = st.tuples(st.just("skip"), st.integers(1, 20), st.just(0))
payments = st.tuples(
    st.just("pay"),
    st.sampled_from(["part", "oldest", "oldest", "overdue", "all", "all-but", "min"]),
    st.integers(0, 1000),
)
reversals = st.tuples(st.just("reverse"), st.integers(0, 50), st.just(0))
operations = st.lists(st.one_of(day_ends, unwritten_days, payments, payments, reversals), min_size=3, max_size=18)
backdates = st.integers(0, BACKDATE_DAYS)


def amount_for(loan: Loan, business_date: dt.date, how: str, n: int) -> int:
    """A payment amount the service would accept (docs/rules.md step 2 and 4)."""
    owed = total_unpaid_paise(loan.schedule)
    if how == "all" or owed < 100:
        return owed
    if how == "overdue":
        amount = overdue_paise(loan.schedule, business_date) or owed * n // 1000
    elif how == "all-but":  # leaves a residual of 1..99 paise
        amount = owed - 1 - n % 99
    elif how == "min":
        amount = 100
    elif how == "oldest":  # the oldest unpaid instalment: dpd drops while older arrears may remain
        amount = next(i.unpaid_paise for i in sorted(loan.schedule, key=lambda i: i.due_date) if i.unpaid_paise)
    else:
        amount = owed * n // 1000
    return min(owed, max(100, amount))


@dataclass
class Run:
    """A loan driven the way the services drive it, and what is needed to check it."""

    schedule: tuple[Instalment, ...]
    created: dt.date
    loan: Loan
    business_date: dt.date
    posted: int = 0

    def day_ends(self, days: int) -> None:
        """The day-end job: every business date in turn; it evaluates ACTIVE loans only."""
        for _ in range(days):
            self.business_date += DAY
            if self.loan.status is LoanStatus.ACTIVE:
                self.loan = reassess(self.loan, self.business_date)

    def dates_pass(self, days: int) -> None:
        """Business dates complete without the loan being written."""
        self.business_date += dt.timedelta(days=days)

    def pay(self, amount: int, backdated: int) -> tuple[str, Allocation]:
        """A payment posted today, landing on the last completed business date (yesterday)."""
        today = self.business_date + DAY
        payment_date = today - dt.timedelta(days=backdated)
        check_payment_date(payment_date, today)
        check_amount(amount, total_unpaid_paise(self.loan.schedule))
        payment_id = f"PAY{self.posted:05d}"  # time-ordered, as a ULID is
        self.posted += 1
        self.loan, allocation = post_to_loan(self.loan, amount, self.business_date, payment_id, payment_date)
        return payment_id, allocation

    def reverse(self, payment_id: str) -> Allocation:
        self.loan, taken_off = reverse_on_loan(self.loan, payment_id, self.business_date)
        return taken_off


def start(loan: Loan) -> Run:
    return Run(loan.schedule, loan.delinquency.as_of, loan, loan.delinquency.as_of)


def figures(d: Delinquency) -> tuple[object, ...]:
    return (d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise)


@dataclass
class Life:
    """Reference model, independent of ``ledger.replay``: the loan's life, day by day, with only the
    standing payments ever posted. Assessed on its creation date; then each business date's day-end,
    and each payment's recompute on the date it landed, in posting order."""

    schedule: tuple[Instalment, ...]
    day: dt.date
    paid: int
    state: Delinquency

    @classmethod
    def begin(cls, schedule: tuple[Instalment, ...], created: dt.date) -> Life:
        return cls(schedule, created, 0, assess(schedule, created))

    @classmethod
    def without_reversed(cls, run: Run) -> Life:
        """The life lived again from the start with the standing payments only."""
        life = cls.begin(run.schedule, run.created)
        for entry in sorted(run.loan.payments, key=lambda e: e.payment_id):  # posting order
            assert entry.landed_on >= life.day, "landing dates go forward with posting order"
            life.to(entry.landed_on)
            life.land(entry.amount_paise)
        life.to(run.business_date)
        return life

    @property
    def current(self) -> tuple[Instalment, ...]:
        return apply_payment(self.schedule, self.paid)[0] if self.paid else self.schedule

    def to(self, end: dt.date) -> None:
        while self.day < end:
            self.day += DAY
            self.state = assess(self.current, self.day, self.state.classification, self.state.npa_since)

    def land(self, amount: int) -> None:
        self.paid += amount
        self.state = assess(self.current, self.day, self.state.classification, self.state.npa_since)


def assert_is_its_replay(run: Run) -> None:
    """The loan as stored is the replay of its standing payments as of the date it was last evaluated,
    and shown as of today (``reassess``, as the loan service presents an unwritten loan) it is the
    replay as of today."""
    loan, business_date = run.loan, run.business_date
    result = replay(run.schedule, loan.payments, business_date)
    assert loan.schedule == result.schedule
    assert loan.status is (LoanStatus.CLOSED if total_unpaid_paise(loan.schedule) == 0 else LoanStatus.ACTIVE)
    if loan.status is LoanStatus.ACTIVE:
        as_of = loan.delinquency.as_of
        assert as_of <= business_date
        assert loan.delinquency == replay(run.schedule, loan.payments, as_of).delinquency
        shown = reassess(loan, business_date).delinquency
        assert shown == result.delinquency
    else:
        # Nothing owed: nothing overdue, whenever it was last evaluated (the job skips it).
        assert figures(loan.delinquency) == figures(result.delinquency)
    d = result.delinquency
    assert d.dpd == dpd_on(loan.schedule, business_date)
    assert d.overdue_paise == overdue_paise(loan.schedule, business_date)
    assert (d.classification is Classification.NPA) == (d.npa_since is not None)


def assert_conserved(loan: Loan) -> None:
    allocations = allocations_now(loan)
    assert set(allocations) == {e.payment_id for e in loan.payments}
    total = sum(e.amount_paise for e in loan.payments)
    for entry in loan.payments:
        assert allocations[entry.payment_id].total_paise == entry.amount_paise
    assert sum(a.total_paise for a in allocations.values()) == total
    assert sum(i.paid_paise for i in loan.schedule) == total
    assert (
        sum(a.principal_paise for a in allocations.values()) == loan.principal_paise - loan.outstanding_principal_paise
    )
    for inst in loan.schedule:
        assert 0 <= inst.paid_interest_paise <= inst.interest_paise
        assert 0 <= inst.paid_principal_paise <= inst.principal_paise
        if inst.paid_principal_paise:
            assert inst.paid_interest_paise == inst.interest_paise, "principal before interest"
    settled = [i.is_settled for i in sorted(loan.schedule, key=lambda i: i.due_date)]
    first_unsettled = settled.index(False) if False in settled else len(settled)
    for inst in sorted(loan.schedule, key=lambda i: i.due_date)[first_unsettled + 1 :]:
        assert inst.paid_paise == 0, "a later instalment was paid before an older one"


# --- property: incremental = replay from scratch = the day-by-day life without reversed money ---


@PROPERTY
@given(loan=new_loans(), ops=operations, backdate=st.lists(backdates, min_size=18, max_size=18))
def test_posting_and_reversing_incrementally_equals_a_replay_from_scratch(
    loan: Loan, ops: list[tuple[str, object, int]], backdate: list[int]
) -> None:
    run = start(loan)
    life = Life.begin(run.schedule, run.created)
    standing: list[str] = []
    for step, (kind, a, n) in enumerate(ops):
        before = run.loan
        if kind == "days":
            assert isinstance(a, int)
            run.day_ends(a)
            life.to(run.business_date)
        elif kind == "skip":
            assert isinstance(a, int)
            run.dates_pass(a)
            life.to(run.business_date)
        elif kind == "pay":
            if run.loan.status is not LoanStatus.ACTIVE:
                continue
            assert isinstance(a, str)
            amount = amount_for(run.loan, run.business_date, a, n)
            payment_id, allocation = run.pay(amount, backdate[step])
            life.land(amount)
            assert allocations_now(run.loan)[payment_id] == allocation
            standing.append(payment_id)
            if allocations_now(run.loan) != {**allocations_now(before), payment_id: allocation}:
                event("a backdated payment moved money ahead of an earlier-posted one")
        elif standing:
            assert isinstance(a, int)
            payment_id = standing.pop(a % len(standing))
            taken_off = allocations_now(run.loan)[payment_id]
            assert run.reverse(payment_id) == taken_off
            life = Life.without_reversed(run)
            moved = {k: v for k, v in allocations_now(before).items() if k != payment_id}
            if allocations_now(run.loan) != moved:
                event("a reversal moved a standing payment's money")
            if before.status is LoanStatus.CLOSED:
                event("a reversal reopened a closed loan")
            if before.delinquency.classification != run.loan.delinquency.classification:
                event(
                    f"a reversal changed {before.delinquency.classification} to {run.loan.delinquency.classification}"
                )
        d = run.loan.delinquency
        if d.classification is Classification.NPA and d.dpd <= 90:
            event("sticky NPA below dpd 91")
        if 0 < total_unpaid_paise(run.loan.schedule) < 100:
            event("a residual below ₹1 is owed")
        assert [e.payment_id for e in run.loan.payments] == standing
        assert_is_its_replay(run)
        assert_conserved(run.loan)
        # And the truth, lived day by day as if the reversed payments had never been posted.
        assert run.loan.schedule == life.current
        shown = reassess(run.loan, run.business_date) if run.loan.status is LoanStatus.ACTIVE else run.loan
        assert figures(shown.delinquency) == figures(life.state)


@SECONDARY
@given(loan=new_loans(), ops=operations, backdate=st.lists(backdates, min_size=18, max_size=18))
def test_reversing_everything_gives_back_the_unpaid_loan(
    loan: Loan, ops: list[tuple[str, object, int]], backdate: list[int]
) -> None:
    run = start(loan)
    for step, (kind, a, n) in enumerate(ops):
        if kind in ("days", "skip"):
            assert isinstance(a, int)
            run.day_ends(a)
        elif kind == "pay" and run.loan.status is LoanStatus.ACTIVE:
            assert isinstance(a, str)
            run.pay(amount_for(run.loan, run.business_date, a, n), backdate[step])
    for entry in list(run.loan.payments):
        run.reverse(entry.payment_id)
    assert run.loan.payments == ()
    assert run.loan.schedule == run.schedule
    assert run.loan.status is LoanStatus.ACTIVE
    assert run.loan.delinquency == initial_delinquency(run.schedule, run.business_date)


# --- property: conservation and allocation order ----------------------------------------------


def reference_lines(schedule: Sequence[Instalment], entries: Sequence[LedgerEntry]) -> dict[str, list[tuple]]:
    """Where each payment's money must go: the schedule laid out as one line of slots (instalment by
    due date, interest then principal), each payment in (payment date, posting time) order taking the
    next stretch of it."""
    slots = []
    for inst in sorted(schedule, key=lambda i: (i.due_date, i.seq)):
        slots += [[inst.seq, 0, inst.interest_paise], [inst.seq, 1, inst.principal_paise]]
    lines: dict[str, list[tuple]] = {}
    position = 0
    for entry in sorted(entries, key=lambda e: (e.payment_date, e.payment_id)):
        left = entry.amount_paise
        taken: dict[int, list[int]] = {}
        while left:
            seq, kind, room = slots[position]
            take = min(left, room)
            if take:
                taken.setdefault(seq, [0, 0])[kind] += take
                slots[position][2] -= take
                left -= take
            if slots[position][2] == 0:
                position += 1
        lines[entry.payment_id] = [(seq, i, p) for seq, (i, p) in taken.items()]
    return lines


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[Loan, list[LedgerEntry]]:
    """A loan and standing payments posted over a few weeks, each backdated up to 7 days, so posting
    order and payment-date order often disagree."""
    loan = draw(new_loans())
    owed = total_unpaid_paise(loan.schedule)
    count = draw(st.integers(1, 8))
    cuts = sorted(draw(st.lists(st.integers(0, owed), min_size=count, max_size=count)))
    amounts = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    if draw(st.booleans()):
        amounts[-1] += owed - cuts[-1]  # the last one pays everything off
    landed = loan.delinquency.as_of
    entries = []
    for n, amount in enumerate(amounts):
        landed += dt.timedelta(days=draw(st.integers(0, 6)))
        paid_on = landed + DAY - dt.timedelta(days=draw(backdates))
        if amount:
            entries.append(LedgerEntry(f"PAY{n:05d}", paid_on, landed, amount))
    assume(entries)
    return loan, entries


@SECONDARY
@given(ledger=ledgers(), data=st.data())
def test_allocation_conserves_money_and_follows_payment_order(
    ledger: tuple[Loan, list[LedgerEntry]], data: st.DataObject
) -> None:
    loan, entries = ledger
    schedule, allocations = allocate(loan.schedule, entries)
    total = sum(e.amount_paise for e in entries)
    assert [a.total_paise for a in allocations] == [e.amount_paise for e in entries]
    assert sum(a.total_paise for a in allocations) == total == sum(i.paid_paise for i in schedule)
    assert sum(a.interest_paise for a in allocations) == sum(i.paid_interest_paise for i in schedule)
    assert sum(a.principal_paise for a in allocations) == sum(i.paid_principal_paise for i in schedule)
    for inst in schedule:  # Instalment refuses overpayment itself; checked here all the same
        assert inst.paid_interest_paise <= inst.interest_paise
        assert inst.paid_principal_paise <= inst.principal_paise
    assert all(line.interest_paise + line.principal_paise > 0 for a in allocations for line in a.lines)

    expected = reference_lines(loan.schedule, entries)
    for entry, allocation in zip(entries, allocations, strict=True):
        got = [(line.seq, line.interest_paise, line.principal_paise) for line in allocation.lines]
        assert got == expected[entry.payment_id]

    # Order is the payment date, then posting time, whatever order the ledger lists them in.
    shuffled = data.draw(st.permutations(entries))
    again_schedule, again = allocate(loan.schedule, shuffled)
    assert again_schedule == schedule
    assert dict(zip([e.payment_id for e in shuffled], again, strict=True)) == dict(
        zip([e.payment_id for e in entries], allocations, strict=True)
    )
    by_id = dict(zip([e.payment_id for e in entries], allocations, strict=True))
    due = {i.seq: i.due_date for i in loan.schedule}
    for earlier in entries:
        for later in entries:
            if earlier.payment_date < later.payment_date and by_id[earlier.payment_id].lines:
                last_of_earlier = max(due[line.seq] for line in by_id[earlier.payment_id].lines)
                first_of_later = min(due[line.seq] for line in by_id[later.payment_id].lines)
                assert last_of_earlier <= first_of_later

    # The replay on a loan agrees, and says the same for the same ledger in any order.
    business_date = max(e.landed_on for e in entries)
    result = replay(loan.schedule, entries, business_date)
    assert (result.schedule, result.allocations) == (schedule, allocations)
    assert replay(loan.schedule, shuffled, business_date).delinquency == result.delinquency


def test_allocation_order_is_payment_date_then_posting_time() -> None:
    early = LedgerEntry("PAY00009", dt.date(2026, 3, 2), dt.date(2026, 3, 8), 100)
    late_first = LedgerEntry("PAY00001", dt.date(2026, 3, 5), dt.date(2026, 3, 5), 100)
    late_second = LedgerEntry("PAY00002", dt.date(2026, 3, 5), dt.date(2026, 3, 5), 100)
    assert sorted([late_second, early, late_first], key=allocation_order) == [early, late_first, late_second]


def test_a_ledger_that_overpays_or_lands_after_the_asked_date_is_refused() -> None:
    schedule = import_schedule(1000, dt.date(2026, 1, 1), [(dt.date(2026, 2, 1), 1000, 10)])
    with pytest.raises(ValueError, match="exceeds"):
        replay(schedule, [LedgerEntry("P1", dt.date(2026, 2, 1), dt.date(2026, 2, 1), 1011)], dt.date(2026, 2, 2))
    with pytest.raises(ValueError, match="landed"):
        replay(schedule, [LedgerEntry("P1", dt.date(2026, 2, 1), dt.date(2026, 2, 3), 10)], dt.date(2026, 2, 2))


# --- property: a reversal is "never posted" ---------------------------------------------------


@SECONDARY
@given(
    loan=new_loans(),
    shares=st.lists(st.integers(1, 250), min_size=3, max_size=5),
    gaps=st.lists(st.integers(0, 20), min_size=6, max_size=6),
    backdate=st.lists(backdates, min_size=5, max_size=5),
    pays_off=st.booleans(),
    data=st.data(),
)
def test_posting_a_b_c_then_reversing_b_equals_posting_a_c_only(
    loan: Loan,
    shares: list[int],
    gaps: list[int],
    backdate: list[int],
    pays_off: bool,
    data: st.DataObject,
) -> None:
    owed = total_unpaid_paise(loan.schedule)
    amounts = [max(100, owed * s // 1000) for s in shares]  # at most a quarter of the loan each
    if pays_off:
        amounts[-1] = owed - sum(amounts[:-1])  # the last one closes the loan
    assume(sum(amounts[:-1]) < owed and amounts[-1] >= 100 and sum(amounts) <= owed)
    bounced = data.draw(st.integers(0, len(amounts) - 1))

    def life(skip: int | None) -> Run:
        run = start(loan)
        for n, amount in enumerate(amounts):
            run.day_ends(gaps[n])
            if n != skip:
                run.pay(amount, backdate[n])
            else:
                run.posted += 1  # the same ids for the others: their posting times do not change
        run.day_ends(gaps[-1])
        return run

    with_bounce = life(None)
    with_bounce.reverse(f"PAY{bounced:05d}")
    never = life(bounced)
    assert with_bounce.business_date == never.business_date
    assert with_bounce.loan == never.loan


# --- examples ---------------------------------------------------------------------------------

DISBURSED = dt.date(2025, 12, 10)
FIRST_DUE = dt.date(2026, 1, 5)


def emi_loan(business_date: dt.date) -> Loan:
    """₹3,00,000 at 18% over 12 months, due on the 5th from January 2026."""
    return make_loan(generate_schedule(3_00_000_00, 1_800, 12, DISBURSED, FIRST_DUE), DISBURSED, business_date)


def lines(allocation: Allocation) -> list[int]:
    return [line.seq for line in allocation.lines]


def test_reversing_the_first_of_two_payments_moves_the_second_onto_the_oldest_instalment() -> None:
    """Issue 9: subtracting the bounced payment's allocation left the later money on a later instalment
    and the loan a bucket worse than the truth (61-90 and dpd 90, eligible for legal escalation),
    instead of 31-60."""
    loan = emi_loan(dt.date(2026, 3, 9))
    emi = loan.schedule[0].due_paise
    run = start(loan)
    a, alloc_a = run.pay(2 * emi, 0)  # lands 9 Mar: January and February
    assert lines(alloc_a) == [1, 2]
    run.day_ends(23)  # to 1 Apr
    b, alloc_b = run.pay(emi, 0)  # lands 1 Apr: March
    assert lines(alloc_b) == [3]
    run.day_ends(3)  # to 4 Apr
    assert figures(run.loan.delinquency)[:3] == (0, Bucket.CURRENT, Classification.STANDARD)

    taken_off = run.reverse(a)

    assert taken_off == alloc_a
    moved = allocations_now(run.loan)[b]
    assert [(line.seq, line.interest_paise, line.principal_paise) for line in moved.lines] == [
        (1, loan.schedule[0].interest_paise, loan.schedule[0].principal_paise)
    ]
    assert [i.is_settled for i in run.loan.schedule[:4]] == [True, False, False, False]
    d = run.loan.delinquency
    # Oldest unpaid is 5 Feb: day 1 on 5 Feb, day 59 on 4 Apr. Without the move it would be 5 Jan: 90.
    assert (d.as_of, d.dpd, d.bucket, d.classification, d.npa_since) == (
        dt.date(2026, 4, 4),
        59,
        Bucket.B31_60,
        Classification.SMA_1,
        None,
    )
    assert d.overdue_paise == 2 * emi  # February and March; April is not due yet
    assert d.dpd < 90  # not eligible for legal escalation


NPA_LOAN_DATE = dt.date(2026, 5, 10)
"""January to May unpaid: dpd 126 on 10 May, NPA since 5 Jan + 90 days = 5 Apr."""
ORIGINAL_NPA_SINCE = dt.date(2026, 4, 5)


def npa_run() -> tuple[Run, int]:
    loan = emi_loan(NPA_LOAN_DATE)
    d = loan.delinquency
    assert (d.dpd, d.classification, d.npa_since) == (126, Classification.NPA, ORIGINAL_NPA_SINCE)
    return start(loan), loan.schedule[0].due_paise


def test_reversing_the_payment_that_lifted_an_npa_makes_it_npa_again_with_its_original_date() -> None:
    run, emi = npa_run()
    a, _ = run.pay(5 * emi, 0)  # all that is overdue on 10 May
    assert figures(run.loan.delinquency) == (0, Bucket.CURRENT, Classification.STANDARD, None, 0)
    run.day_ends(10)  # 20 May: June not yet due

    run.reverse(a)

    d = run.loan.delinquency
    assert (d.as_of, d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        dt.date(2026, 5, 20),
        136,
        Bucket.B90_PLUS,
        Classification.NPA,
        ORIGINAL_NPA_SINCE,
        5 * emi,
    )


def test_a_later_payment_that_alone_cleared_the_overdue_when_it_landed_keeps_the_loan_upgraded() -> None:
    run, emi = npa_run()
    a, _ = run.pay(5 * emi, 0)  # lands 10 May, upgrades
    run.day_ends(5)
    b, _ = run.pay(5 * emi, 0)  # lands 15 May: prepays June to October
    run.day_ends(5)  # 20 May

    run.reverse(a)

    d = run.loan.delinquency
    assert figures(d) == (0, Bucket.CURRENT, Classification.STANDARD, None, 0)
    assert lines(allocations_now(run.loan)[b]) == [1, 2, 3, 4, 5]
    # The same as a loan on which only B was ever posted.
    only_b, _ = npa_run()
    only_b.day_ends(5)
    only_b.pay(5 * emi, 0)
    only_b.day_ends(5)
    assert run.loan.schedule == only_b.loan.schedule
    assert run.loan.delinquency == only_b.loan.delinquency


def test_a_later_payment_that_alone_fell_short_when_it_landed_leaves_the_loan_npa() -> None:
    run, emi = npa_run()
    a, _ = run.pay(5 * emi, 0)  # lands 10 May, upgrades
    run.day_ends(29)  # 8 Jun: June (due 5 Jun) is overdue
    assert run.loan.delinquency.classification is Classification.SMA_0
    run.pay(5 * emi, 0)  # lands 8 Jun: June, then prepays July to October
    run.day_ends(2)  # 10 Jun

    run.reverse(a)

    # Without A, on 8 Jun B paid January to May but June was overdue too: never all overdue, so
    # the NPA of 5 Apr is not upgraded, though dpd is only 6 (June, due 5 Jun).
    d = run.loan.delinquency
    assert (d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        6,
        Bucket.B1_30,
        Classification.NPA,
        ORIGINAL_NPA_SINCE,
        emi,
    )
    # Paying June afterwards is what upgrades it.
    run.pay(emi, 0)
    assert figures(run.loan.delinquency) == (0, Bucket.CURRENT, Classification.STANDARD, None, 0)


def test_an_npa_reached_after_an_upgrade_keeps_its_own_date_when_the_upgrade_bounces_later() -> None:
    run, emi = npa_run()
    a, _ = run.pay(5 * emi, 0)
    run.day_ends(120)  # 7 Sep: June unpaid since 5 Jun: dpd 95, NPA again since 3 Sep
    d = run.loan.delinquency
    assert (d.classification, d.npa_since) == (Classification.NPA, dt.date(2026, 6, 5) + dt.timedelta(days=90))

    run.reverse(a)

    # Never upgraded: the first NPA date stands.
    assert (run.loan.delinquency.classification, run.loan.delinquency.npa_since) == (
        Classification.NPA,
        ORIGINAL_NPA_SINCE,
    )
    assert run.loan.delinquency.dpd == (dt.date(2026, 9, 7) - FIRST_DUE).days + 1


def test_npa_history_follows_the_order_money_landed_in_not_the_payment_dates() -> None:
    """B is paid before A but lands after it. Its money is allocated first (payment date), but
    the NPA history sees it only from the date it landed: on 3 Jun A alone left arrears, and by
    6 Jun, when B landed, June had fallen due too, so the overdue was never all paid at once. Replayed
    in payment-date order, A and B together would have cleared everything on 3 Jun (SMA-0 today)."""
    run, emi = npa_run()
    run.day_ends(24)  # 3 Jun
    a, _ = run.pay(3 * emi, 0)  # paid 4 Jun, lands 3 Jun
    assert run.loan.delinquency.classification is Classification.NPA
    run.day_ends(3)  # 6 Jun: June (due 5 Jun) is overdue
    b, _ = run.pay(2 * emi, 6)  # paid 1 Jun, lands 6 Jun
    assert [lines(allocations_now(run.loan)[p]) for p in (b, a)] == [[1, 2], [3, 4, 5]]
    d = run.loan.delinquency
    assert (d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        2,
        Bucket.B1_30,
        Classification.NPA,
        ORIGINAL_NPA_SINCE,
        emi,
    )
    assert replay(run.schedule, run.loan.payments, run.business_date).delinquency == d


def test_a_backdated_payment_posted_later_takes_the_oldest_instalment() -> None:
    loan = emi_loan(dt.date(2026, 3, 9))
    emi = loan.schedule[0].due_paise
    run = start(loan)
    a, _ = run.pay(emi, 0)  # paid 10 Mar
    run.day_ends(2)
    _, alloc_b = run.pay(emi, 6)  # paid 6 Mar, posted on the 12th
    assert lines(alloc_b) == [1]
    assert lines(allocations_now(run.loan)[a]) == [2]


# --- residual below ₹1 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "remaining"),
    [(1, 1), (37, 37), (99, 99), (100, 5), (100, None), (1_000_000_000, None), (1_000_000_000, 7)],
)
def test_amounts_accepted(amount: int, remaining: int | None) -> None:
    check_amount(amount, remaining)


@pytest.mark.parametrize(
    ("amount", "remaining"),
    [
        (0, 0),
        (0, None),
        (-1, -1),
        (-100, None),
        (1, None),
        (99, None),
        (1, 2),
        (98, 99),
        (99, 100),
        (50, 49),
        (1_000_000_001, 1_000_000_001),
        (1_000_000_001, None),
        (10**12, 10**12),
    ],
)
def test_amounts_refused(amount: int, remaining: int | None) -> None:
    with pytest.raises(AmountOutOfRange) as err:
        check_amount(amount, remaining)
    assert err.value.code == "AMOUNT_OUT_OF_RANGE"
    assert err.value.details == {"min_paise": 100, "max_paise": 1_000_000_000}


@settings(max_examples=200, deadline=None)
@given(
    amount=st.one_of(st.integers(-200, 200), st.integers(-(10**13), 10**13)),
    remaining=st.one_of(st.none(), st.integers(-200, 200), st.integers(0, 10**13)),
)
def test_below_one_rupee_only_the_exact_remaining_amount_is_accepted(amount: int, remaining: int | None) -> None:
    accepted = 100 <= amount <= 1_000_000_000 or (0 < amount < 100 and amount == remaining)
    if accepted:
        check_amount(amount, remaining)
    else:
        with pytest.raises(AmountOutOfRange):
            check_amount(amount, remaining)


@settings(max_examples=100, deadline=None)
@given(loan=new_loans(), residual=st.integers(1, 99))
def test_a_residual_below_one_rupee_can_be_cleared_by_paying_exactly_it(loan: Loan, residual: int) -> None:
    owed = total_unpaid_paise(loan.schedule)
    assume(owed - residual >= 100)
    run = start(loan)
    run.pay(owed - residual, 0)
    remaining = total_unpaid_paise(run.loan.schedule)
    assert remaining == residual
    for wrong in {residual - 1, residual + 1} - {0, 100}:
        with pytest.raises(AmountOutOfRange):
            check_amount(wrong, remaining)
    run.day_ends(1)
    _, allocation = run.pay(residual, 0)  # check_amount(residual, remaining) passes inside
    assert allocation.total_paise == residual
    assert run.loan.status is LoanStatus.CLOSED
    assert figures(run.loan.delinquency) == (0, Bucket.CURRENT, Classification.STANDARD, None, 0)
    assert_is_its_replay(run)
    # A bounced residual payment reopens the loan with the residual owed again.
    run.reverse(run.loan.payments[-1].payment_id)
    assert run.loan.status is LoanStatus.ACTIVE
    assert total_unpaid_paise(run.loan.schedule) == residual
