"""The ledger invariants the reconciliation checks, and what a broken one looks like (docs/reconciliation.md).

Pure: each check takes what was read and returns the mismatches it finds, with the entity to look at
and the values expected and found. Nothing here repairs anything: the reconciliation reports, people
repair (and then rebuild the counters, ``ops rebuild-aggregates``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib.clock import month_of
from chalicelib.domain.delinquency import assess_after
from chalicelib.domain.ledger import allocate
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.payment import Payment, PaymentStatus


class MismatchKind(StrEnum):
    ALLOCATION = "ALLOCATION_MISMATCH"
    """A loan's paid amounts are not what its standing payments allocate to it."""
    OUTSTANDING = "OUTSTANDING_MISMATCH"
    """A loan's stored outstanding principal is not its principal minus the principal paid."""
    DELINQUENCY = "DELINQUENCY_MISMATCH"
    """A loan's stored dpd, bucket, classification or overdue amount is not what the rules give for
    its schedule on the date it was evaluated for."""
    LEDGER_PAYMENT = "LEDGER_PAYMENT_MISMATCH"
    """A loan's ledger and the payments table disagree: a ledger entry whose payment is missing,
    reversed or different, or a standing payment its loan does not hold."""
    UTR_CLAIM_MISSING = "UTR_CLAIM_MISSING"
    """A payment whose UTR has no claim, or a claim naming another payment."""
    ORPHAN_UTR_CLAIM = "ORPHAN_UTR_CLAIM"
    """A UTR claim whose payment does not exist or carries another UTR."""
    AGGREGATE = "AGGREGATE_MISMATCH"
    """A scope's portfolio counters differ from a recount of its loans (the entity is the scope)."""
    COLLECTIONS = "COLLECTIONS_MISMATCH"
    """A scope's collections for a month differ from a recount of its standing payments."""


@dataclass(frozen=True)
class Mismatch:
    kind: MismatchKind
    entity_id: str
    expected: Any
    actual: Any

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "entity_id": self.entity_id, "expected": self.expected, "actual": self.actual}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Mismatch:
        return cls(MismatchKind(raw["kind"]), raw["entity_id"], raw["expected"], raw["actual"])


def _paid(loan_schedule: Iterable[Any]) -> dict[str, int]:
    rows = list(loan_schedule)
    return {
        "paid_principal_paise": sum(i.paid_principal_paise for i in rows),
        "paid_interest_paise": sum(i.paid_interest_paise for i in rows),
    }


def check_loan(loan: Loan, stored_outstanding: int | None, ledger: Mapping[str, Payment | None]) -> list[Mismatch]:
    """Every invariant of one loan as stored. ``ledger`` maps each payment id on the loan's ledger to
    that payment as the payments table holds it (None: not there)."""
    found = _ledger_payment_mismatches(loan, ledger)
    replayed, _ = allocate(loan.schedule, loan.payments)
    paid_by_replay = [(i.paid_principal_paise, i.paid_interest_paise) for i in replayed]
    paid_stored = [(i.paid_principal_paise, i.paid_interest_paise) for i in loan.schedule]
    if paid_by_replay != paid_stored:
        found.append(Mismatch(MismatchKind.ALLOCATION, loan.loan_id, _paid(replayed), _paid(loan.schedule)))
    expected_outstanding = loan.principal_paise - sum(i.paid_principal_paise for i in loan.schedule)
    if stored_outstanding != expected_outstanding:
        found.append(Mismatch(MismatchKind.OUTSTANDING, loan.loan_id, expected_outstanding, stored_outstanding))
    if loan.status is LoanStatus.ACTIVE:
        stored = loan.delinquency
        rules = assess_after(stored, loan.schedule, stored.as_of)
        if rules != stored:
            found.append(Mismatch(MismatchKind.DELINQUENCY, loan.loan_id, _delinquency(rules), _delinquency(stored)))
    return found


def _delinquency(d: Any) -> dict[str, Any]:
    return {
        "as_of": d.as_of.isoformat(),
        "dpd": d.dpd,
        "bucket": d.bucket.value,
        "classification": d.classification.value,
        "npa_since": d.npa_since.isoformat() if d.npa_since else None,
        "overdue_paise": d.overdue_paise,
    }


def _ledger_payment_mismatches(loan: Loan, ledger: Mapping[str, Payment | None]) -> list[Mismatch]:
    found = []
    for entry in loan.payments:
        payment = ledger.get(entry.payment_id)
        expected = {
            "payment_id": entry.payment_id,
            "status": PaymentStatus.POSTED.value,
            "amount_paise": entry.amount_paise,
            "payment_date": entry.payment_date.isoformat(),
        }
        actual = None
        if payment is not None:
            actual = {
                "payment_id": payment.payment_id,
                "status": payment.status.value,
                "amount_paise": payment.amount_paise,
                "payment_date": payment.payment_date.isoformat(),
            }
            if payment.loan_id != loan.loan_id:
                actual["loan_id"] = payment.loan_id
        if actual != expected:
            found.append(Mismatch(MismatchKind.LEDGER_PAYMENT, loan.loan_id, expected, actual))
    return found


def check_payment(payment: Payment, claim_payment_id: str | None, loan: Loan | None) -> list[Mismatch]:
    """A payment has exactly one UTR claim, naming it; a standing payment is on its loan's ledger."""
    found = []
    if claim_payment_id != payment.payment_id:
        found.append(Mismatch(MismatchKind.UTR_CLAIM_MISSING, payment.payment_id, payment.utr, claim_payment_id))
    if payment.status is PaymentStatus.POSTED:
        held = loan is not None and any(e.payment_id == payment.payment_id for e in loan.payments)
        if not held:
            found.append(
                Mismatch(
                    MismatchKind.LEDGER_PAYMENT,
                    payment.payment_id,
                    {"loan_id": payment.loan_id, "on_ledger": True},
                    {"loan_id": loan.loan_id if loan else None, "on_ledger": False},
                )
            )
    return found


def check_claim(utr: str, payment_id: str, payment: Payment | None) -> list[Mismatch]:
    """Every claim names a payment that exists and carries the claimed UTR."""
    if payment is not None and payment.utr == utr:
        return []
    actual = None if payment is None else {"payment_id": payment.payment_id, "utr": payment.utr}
    return [Mismatch(MismatchKind.ORPHAN_UTR_CLAIM, utr, {"payment_id": payment_id, "utr": utr}, actual)]


def compare_counters(
    kind: MismatchKind, entity_id: str, recounted: Mapping[str, int], stored: Mapping[str, int]
) -> Mismatch | None:
    """The counters that differ (absent counts as 0), or None when they all agree."""
    names = sorted(name for name in {*recounted, *stored} if recounted.get(name, 0) != stored.get(name, 0))
    if not names:
        return None
    return Mismatch(
        kind,
        entity_id,
        {name: recounted.get(name, 0) for name in names},
        {name: stored.get(name, 0) for name in names},
    )


def months_checked(today: dt.date) -> tuple[str, str]:
    """The months whose collections a run recounts: this month (the dashboard's) and the one before
    (payments may be dated up to a week back, across the month's end)."""
    first = today.replace(day=1)
    previous = first - dt.timedelta(days=1)
    return month_of(previous), month_of(first)


class ReconciliationStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class SourceKind(StrEnum):
    """Which table a segment of a run reads."""

    LOANS = "loans"
    PAYMENTS = "payments"
    CLAIMS = "claims"


MAX_LISTED_MISMATCHES = 500
"""A run lists at most this many mismatches (all are counted in ``mismatch_count`` and in the metric):
a corruption that touches the whole book must not make the run's record too large to store."""


@dataclass
class SegmentProgress:
    """One segment of a run: a part of a parallel scan of one table, and what it has found so far.

    ``pages`` only grows; a checkpoint is stored only over one with fewer pages, so two invocations of
    the same run (a retried Lambda event) never move a segment backwards, and the one behind stops."""

    source: SourceKind
    index: int
    total: int
    cursor: dict[str, Any] | None = None
    done: bool = False
    pages: int = 0
    checked: int = 0
    mismatches: list[dict[str, Any]] | None = None
    mismatch_count: int = 0
    partial: dict[str, dict[str, int]] | None = None
    """The segment's share of the recount: counter key label -> counters (``CounterKey.label``)."""

    @property
    def name(self) -> str:
        return f"{self.source.value}:{self.index}:{self.total}"


@dataclass
class ReconciliationRun:
    """One reconciliation: when and why it ran, and, once finished, its report."""

    run_id: str
    trigger: str
    as_of: dt.date
    started_at: str
    status: ReconciliationStatus = ReconciliationStatus.RUNNING
    finished_at: str | None = None
    months: tuple[str, ...] = ()
    """The months whose collections the run recounts (:func:`months_checked`)."""
    writes_at_start: dict[str, int] | None = None
    """Each counter key's writes when the run started (``CounterKey.label`` -> writes)."""
    loans_checked: int = 0
    payments_checked: int = 0
    claims_checked: int = 0
    mismatches: list[Mismatch] | None = None
    mismatch_count: int = 0
    unverified: list[str] | None = None
    """Counter keys written to while the run recounted them: neither confirmed nor refuted."""
    continuations: int = 0
    error: str | None = None
    score_months: tuple[str, ...] = ()
    """The months whose collector scores the run computes (docs/scoring.md): decided when it begins,
    from the ``SCORING_ENABLED`` flag read then and the months not frozen yet; empty when scoring was
    off, so one run is consistent whatever the flag does meanwhile."""
