"""The ledger's rules stated again, independently of the product, for the stateful model test
(tests/dynamodb_local/test_ledger_model.py).

Written from docs/rules.md and docs/day-end.md alone: nothing here imports ``chalicelib``. Where the
product folds a loan's history into one replay of its standing payments, this model walks the history
as it happened in the test (the loan's first evaluation, every completed day-end run, every payment
landing) and fills the schedule from the total paid rather than payment by payment. Agreement between
two differently built answers is the point of the test.

Money is integer paise; dates are ``datetime.date`` business dates (IST).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MIN_PAYMENT_PAISE = 100
MAX_PAYMENT_PAISE = 1_000_000_000
BACKDATE_DAYS = 7
ESCALATION_DPD = 90
NPA_DPD = 91
NPA_AFTER_DAYS = NPA_DPD - 1
"""npa_since is the date dpd reached 91: the oldest unpaid due date is day 1, so 90 days after it."""

BUCKETS = ("CURRENT", "1-30", "31-60", "61-90", "90+")
CLASSIFICATIONS = ("STANDARD", "SMA-0", "SMA-1", "SMA-2", "NPA")
NPA = "NPA"
ACTIVE = "ACTIVE"
CLOSED = "CLOSED"
POSTED = "POSTED"
REVERSED = "REVERSED"


def band(dpd: int) -> tuple[str, str]:
    """(bucket, classification) that a dpd alone gives."""
    if dpd < 0:
        raise ValueError(dpd)
    if dpd == 0:
        return "CURRENT", "STANDARD"
    if dpd <= 30:
        return "1-30", "SMA-0"
    if dpd <= 60:
        return "31-60", "SMA-1"
    if dpd <= 90:
        return "61-90", "SMA-2"
    return "90+", NPA


@dataclass(frozen=True)
class Row:
    seq: int
    due: dt.date
    principal: int
    interest: int

    @property
    def amount(self) -> int:
        return self.principal + self.interest


@dataclass(frozen=True)
class Paid:
    """What one instalment holds: interest and principal paid."""

    interest: int = 0
    principal: int = 0

    @property
    def total(self) -> int:
        return self.interest + self.principal


def fill(rows: Sequence[Row], total: int) -> list[Paid]:
    """The schedule holding ``total`` paise: the oldest due date first, interest before principal.
    Where money sits depends only on how much has been paid, not on which payment paid it."""
    held = [Paid()] * len(rows)
    left = total
    for n in sorted(range(len(rows)), key=lambda i: rows[i].due):
        interest = min(left, rows[n].interest)
        principal = min(left - interest, rows[n].principal)
        held[n] = Paid(interest, principal)
        left -= interest + principal
    if left:
        raise ValueError(f"{total} is more than the schedule holds")
    return held


@dataclass(frozen=True)
class Assessment:
    on: dt.date
    dpd: int
    bucket: str
    classification: str
    npa_since: dt.date | None
    overdue: int
    oldest_unpaid: dt.date | None


def assess(rows: Sequence[Row], total_paid: int, on: dt.date, before: Assessment | None) -> Assessment:
    """The loan at the end of ``on`` with ``total_paid`` on it, following ``before`` (NPA is sticky)."""
    held = fill(rows, total_paid)
    arrears = [(r.due, r.amount - h.total) for r, h in zip(rows, held, strict=True) if r.due <= on]
    unpaid = [due for due, owed in arrears if owed > 0]
    overdue = sum(owed for _, owed in arrears)
    oldest = min(unpaid) if unpaid else None
    dpd = (on - oldest).days + 1 if oldest else 0
    bucket, classification = band(dpd)
    if before is not None and before.classification == NPA and overdue > 0:
        return Assessment(on, dpd, bucket, NPA, before.npa_since, overdue, oldest)
    npa_since = oldest + dt.timedelta(days=NPA_AFTER_DAYS) if classification == NPA and oldest else None
    return Assessment(on, dpd, bucket, classification, npa_since, overdue, oldest)


@dataclass
class Payment:
    payment_id: str
    posted: int
    """Posting order across the whole test (the product orders by a time-ordered id instead)."""
    loan_id: str
    utr: str
    amount: int
    payment_date: dt.date
    landed_on: dt.date
    collector: str | None
    """Credited with the collection: whoever held the loan when it was posted."""
    status: str = POSTED
    taken_off: tuple[tuple[int, int, int], ...] | None = None
    """For a reversed payment: (seq, interest, principal) of what the reversal took off."""


@dataclass
class Loan:
    loan_id: str
    principal: int
    rows: tuple[Row, ...]
    collector: str | None
    first_evaluated: dt.date
    """The business date the loan was first evaluated for (the last completed one when it was created)."""
    last_written: dt.date
    """The business date of the latest payment, reversal or creation: what the stored figures hold for
    until a day-end run brings them further."""
    payments: list[Payment] = field(default_factory=list)
    escalated_on: dt.date | None = None

    @property
    def standing(self) -> list[Payment]:
        return [p for p in self.payments if p.status == POSTED]

    @property
    def paid(self) -> int:
        return sum(p.amount for p in self.standing)

    @property
    def scheduled(self) -> int:
        return sum(r.amount for r in self.rows)

    @property
    def owed(self) -> int:
        """Everything still unpaid, due or not: the most one payment may be."""
        return self.scheduled - self.paid

    @property
    def status(self) -> str:
        return ACTIVE if self.owed > 0 else CLOSED

    def held(self) -> list[Paid]:
        return fill(self.rows, self.paid)

    @property
    def outstanding(self) -> int:
        return self.principal - sum(h.principal for h in self.held())

    def allocations(self) -> dict[str, tuple[tuple[int, int, int], ...]]:
        """Where each standing payment's money sits: payments are filled in the order the money was
        paid (payment date, then posting order), each taking what the schedule held after the ones
        before it up to what it holds with it."""
        out: dict[str, tuple[tuple[int, int, int], ...]] = {}
        total = 0
        for p in sorted(self.standing, key=lambda p: (p.payment_date, p.posted)):
            before, after = fill(self.rows, total), fill(self.rows, total + p.amount)
            out[p.payment_id] = tuple(
                (r.seq, a.interest - b.interest, a.principal - b.principal)
                for r, b, a in zip(self.rows, before, after, strict=True)
                if a != b
            )
            total += p.amount
        return out

    def assessment(self, on: dt.date, runs: Iterable[dt.date]) -> Assessment:
        """The loan's delinquency at the end of ``on``, walking its history: its first evaluation, then
        date by date every completed run and every standing payment's landing (the day's end is
        assessed before the money landing on it, then each payment in posting order)."""
        landings: dict[dt.date, list[Payment]] = {}
        for p in self.standing:
            landings.setdefault(p.landed_on, []).append(p)
        dates = {self.first_evaluated, on, *landings}
        dates |= {d for d in runs if self.first_evaluated <= d <= on}
        state: Assessment | None = None
        total = 0
        for day in sorted(dates):
            if day > on:
                raise ValueError(f"{self.loan_id}: money landed on {day}, after {on}")
            state = assess(self.rows, total, day, state)
            for p in sorted(landings.get(day, []), key=lambda p: p.posted):
                total += p.amount
                state = assess(self.rows, total, day, state)
        assert state is not None
        return state


@dataclass(frozen=True)
class Expected:
    """A loan as the API should show it."""

    status: str
    dpd_as_of: dt.date
    dpd: int
    bucket: str
    classification: str
    npa_since: dt.date | None
    overdue: int
    outstanding: int
    escalated_on: dt.date | None
    held: tuple[Paid, ...]
    oldest_unpaid: dt.date | None


@dataclass
class Ledger:
    """The whole book of one test example."""

    loans: dict[str, Loan] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)
    utrs: dict[str, str] = field(default_factory=dict)
    """UTR -> the payment that used it first (reversed payments keep theirs)."""
    runs: list[dt.date] = field(default_factory=list)
    """Business dates of the completed day-end runs that did work (not superseded), in order."""
    superseded: set[dt.date] = field(default_factory=set)
    """Older dates run after a later one had completed: done, and nothing changed."""
    posted: int = 0

    @property
    def through(self) -> dt.date | None:
        """The latest completed run's business date: what loans are shown as of."""
        return max(self.runs) if self.runs else None

    def shown_on(self, loan: Loan) -> dt.date:
        """An active loan is shown as of the latest completed run, or later if a payment, reversal or its
        creation evaluated it for a later date; a closed one as of the write that closed it."""
        through = self.through
        if loan.status != ACTIVE or through is None or through <= loan.last_written:
            return loan.last_written
        return through

    def expected(self, loan: Loan) -> Expected:
        on = self.shown_on(loan)
        a = loan.assessment(on, self.runs)
        return Expected(
            status=loan.status,
            dpd_as_of=on,
            dpd=a.dpd,
            bucket=a.bucket,
            classification=a.classification,
            npa_since=a.npa_since,
            overdue=a.overdue,
            outstanding=loan.outstanding,
            escalated_on=loan.escalated_on,
            held=tuple(loan.held()),
            oldest_unpaid=a.oldest_unpaid,
        )

    # --- changes ------------------------------------------------------------------------------------

    def add_loan(self, loan: Loan) -> None:
        self.loans[loan.loan_id] = loan

    def payment_refusal(
        self, loan: Loan, amount: int, payment_date: dt.date, utr: str, today: dt.date, visible: bool
    ) -> tuple[int, str] | None:
        """(status, code) the API must refuse a payment with, the checks in their documented order;
        None when it is to be accepted. ``visible``: the caller may see the loan (a collector only
        their own); a loan they may not see has no residual, and is otherwise not found."""
        in_range = MIN_PAYMENT_PAISE <= amount <= MAX_PAYMENT_PAISE
        residual = 0 < amount < MIN_PAYMENT_PAISE and visible and loan.status == ACTIVE and amount == loan.owed
        if not (in_range or residual):
            return 422, "AMOUNT_OUT_OF_RANGE"
        if payment_date > today:
            return 422, "PAYMENT_DATE_IN_FUTURE"
        if payment_date < today - dt.timedelta(days=BACKDATE_DAYS):
            return 422, "PAYMENT_DATE_TOO_OLD"
        if not visible:
            return 404, "NOT_FOUND"
        if loan.status != ACTIVE:
            return 422, "LOAN_NOT_PAYABLE"
        if amount > loan.owed:
            return 422, "OVERPAYMENT"
        if utr in self.utrs:
            return 409, "DUPLICATE_UTR"
        return None

    def post(
        self, loan: Loan, payment_id: str, utr: str, amount: int, payment_date: dt.date, landed_on: dt.date
    ) -> Payment:
        self.posted += 1
        payment = Payment(payment_id, self.posted, loan.loan_id, utr, amount, payment_date, landed_on, loan.collector)
        loan.payments.append(payment)
        loan.last_written = landed_on
        self.payments[payment_id] = payment
        self.utrs[utr] = payment_id
        return payment

    def reverse(self, payment: Payment, landed_on: dt.date) -> None:
        loan = self.loans[payment.loan_id]
        payment.taken_off = loan.allocations()[payment.payment_id]
        payment.status = REVERSED
        loan.last_written = landed_on

    def day_end(self, business_date: dt.date, escalation_enabled: bool) -> list[str]:
        """A completed run for ``business_date`` (the newest date so far); the loans it escalates: every
        active loan not yet escalated whose dpd on that date, with every payment so far, is 90 or more."""
        if self.through is not None and business_date <= self.through:
            raise ValueError("a run for an older date changes nothing; record it elsewhere")
        self.runs.append(business_date)
        escalated = []
        if not escalation_enabled:
            return escalated
        for loan in self.loans.values():
            if loan.escalated_on is not None or loan.status != ACTIVE:
                continue
            if loan.assessment(business_date, self.runs).dpd >= ESCALATION_DPD:
                loan.escalated_on = business_date
                escalated.append(loan.loan_id)
        return escalated

    # --- the dashboard --------------------------------------------------------------------------------

    def summary(self, collector: str | None, as_of: dt.date, today: dt.date) -> dict[str, object]:
        """The dashboard's figures for the book (``collector`` None) or one collector, recounted."""
        loans = [lo for lo in self.loans.values() if collector is None or lo.collector == collector]
        active = [(lo, self.expected(lo)) for lo in loans if lo.status == ACTIVE]
        buckets = {b: {"count": 0, "outstanding_principal_paise": 0} for b in BUCKETS}
        classes = dict.fromkeys(CLASSIFICATIONS, 0)
        late: list[int] = []
        for _lo, e in active:
            buckets[e.bucket]["count"] += 1
            buckets[e.bucket]["outstanding_principal_paise"] += e.outstanding
            classes[e.classification] += 1
            if e.dpd > 0:
                assert e.oldest_unpaid is not None
                late.append((as_of - e.oldest_unpaid).days + 1)
        standing = [
            p for p in self.payments.values() if p.status == POSTED and (collector is None or p.collector == collector)
        ]
        month = [p for p in standing if (p.payment_date.year, p.payment_date.month) == (today.year, today.month)]
        day = [p for p in standing if p.payment_date == today]
        return {
            "loans": {"total": len(loans), "active": len(active)},
            "outstanding_principal_paise": sum(e.outstanding for _, e in active),
            "overdue_paise": sum(e.overdue for _, e in active),
            "collections": {
                "today_paise": sum(p.amount for p in day),
                "today_count": len(day),
                "mtd_paise": sum(p.amount for p in month),
            },
            "buckets": buckets,
            "classification": classes,
            "avg_dpd": sum(late) / len(late) if late else 0,
            "legal_escalated": sum(1 for lo in loans if lo.escalated_on is not None),
        }
