"""Loan use cases (docs/rules.md) with in-memory fakes and a frozen clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Action, AuditEntry, Outcome
from chalicelib.domain.delinquency import Bucket, Classification
from chalicelib.domain.errors import (
    Conflict,
    FinancialFieldProtected,
    Forbidden,
    InvalidSchedule,
    LoanExists,
    NotFound,
    ValidationFailed,
)
from chalicelib.domain.loan import Borrower, Loan, LoanStatus
from chalicelib.retry import OPTIMISTIC_WRITE, RetryPolicy
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import ContactChanges, GeneratedTerms, LoanService, NewLoan
from chalicelib.services.ports import AuditFilter, LoanFilter, User
from chalicelib.services.views import loan_dict
from tests.fakes import (
    ADMIN,
    AUDITOR,
    COLLECTOR,
    MANAGER,
    OTHER_COLLECTOR,
    BeforeUpdate,
    InMemoryAuditLog,
    InMemoryLoanRepository,
    InMemoryUserStore,
    RecordingMetrics,
)

NOW = dt.datetime(2025, 6, 15, 11, 30, tzinfo=IST)
TODAY = dt.date(2025, 6, 15)
BUSINESS_DATE = dt.date(2025, 6, 14)
"""The last completed business date at NOW: delinquency of a new loan is shown as of this day."""


ASHA = Borrower(name="Asha Rao", phone="9876543210", email="asha@example.com", address="12 MG Road, Pune")


class World:
    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.audit = InMemoryAuditLog()
        self.repo = InMemoryLoanRepository(audit=self.audit)
        self.users = InMemoryUserStore(
            [
                User("col1", "collector", "x"),
                User("col2", "collector", "x"),
                User("retired", "collector", "x", active=False),
                User("meera", "manager", "x"),
            ]
        )
        self.metrics = RecordingMetrics()
        self.service = LoanService(loans=self.repo, audit=self.audit, users=self.users, metrics=self.metrics)

    def entries(self, loan_id: str | None = None) -> list[AuditEntry]:
        return list(self.audit.list(AuditFilter(entity_id=loan_id), 1000, None).items)

    def imported(self, loan_id: str, due_dates: list[dt.date], collector_id: str | None = "col1") -> Loan:
        rows = [(due, 10_000_00, 500_00) for due in due_dates]
        loan = self.service.create(
            MANAGER,
            NewLoan(
                loan_id=loan_id,
                borrower=ASHA,
                principal_paise=10_000_00 * len(due_dates),
                disbursement_date=min(due_dates) - dt.timedelta(days=30),
                imported_schedule=rows,
                collector_id=collector_id,
            ),
        )
        # Audit ids order by time; a later write must be at a later instant to list as newer.
        self.clock.advance(seconds=1)
        return loan


@pytest.fixture
def clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(NOW)) as c:
        assert isinstance(c, FixedClock)
        yield c


@pytest.fixture
def world(clock: FixedClock) -> World:
    return World(clock)


def generated(**overrides: Any) -> NewLoan:
    fields: dict[str, Any] = {
        "borrower": ASHA,
        "principal_paise": 1_00_000_00,
        "disbursement_date": dt.date(2025, 6, 1),
        "terms": GeneratedTerms(annual_rate_bps=1200, tenure_months=12, first_due_date=dt.date(2025, 7, 5)),
        "collector_id": "col1",
        "branch": "Pune",
    }
    fields.update(overrides)
    return NewLoan(**fields)


# --- create ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ctx", [ADMIN, MANAGER])
def test_create_generated_loan_writes_it_with_its_audit_entry(world: World, ctx: RequestContext) -> None:
    loan = world.service.create(ctx, generated())

    assert loan.loan_id.startswith("LN")
    assert world.repo.get(loan.loan_id) == loan
    assert loan.version == 1
    assert loan.status is LoanStatus.ACTIVE
    assert len(loan.schedule) == 12
    assert sum(i.principal_paise for i in loan.schedule) == 1_00_000_00
    assert loan.schedule[0].due_date == dt.date(2025, 7, 5)
    assert loan.annual_rate_bps == 1200
    assert loan.created_at == loan.updated_at == "2025-06-15T11:30:00.000+05:30"

    [entry] = world.entries()
    assert entry.action is Action.LOAN_CREATED
    assert entry.outcome is Outcome.SUCCESS
    assert (entry.entity_type, entry.entity_id) == ("loan", loan.loan_id)
    assert (entry.actor, entry.source_ip, entry.request_id) == (ctx.actor, ctx.source_ip, ctx.request_id)
    assert entry.before is None
    assert entry.after == loan_dict(loan)
    assert entry.after["version"] == 1


def test_new_loan_not_yet_due_is_current_as_of_the_last_completed_business_date(world: World) -> None:
    loan = world.service.create(MANAGER, generated())
    d = loan.delinquency
    assert (d.as_of, d.dpd, d.bucket, d.classification, d.npa_since, d.overdue_paise) == (
        BUSINESS_DATE,
        0,
        Bucket.CURRENT,
        Classification.STANDARD,
        None,
        0,
    )


def test_generated_loan_with_past_due_dates_is_overdue_from_the_start(world: World) -> None:
    cmd = generated(
        disbursement_date=dt.date(2025, 4, 1),
        terms=GeneratedTerms(annual_rate_bps=1200, tenure_months=12, first_due_date=dt.date(2025, 5, 5)),
    )
    loan = world.service.create(MANAGER, cmd)
    # 5 May is day 1; 14 June is 40 days later, so day 41. Instalments of 5 May and 5 June are unpaid.
    assert loan.delinquency.dpd == 41
    assert loan.delinquency.bucket is Bucket.B31_60
    assert loan.delinquency.classification is Classification.SMA_1
    assert loan.delinquency.overdue_paise == loan.schedule[0].due_paise + loan.schedule[1].due_paise


def test_imported_loan_due_40_days_before_the_business_date_shows_dpd_41(world: World) -> None:
    due = BUSINESS_DATE - dt.timedelta(days=40)
    loan = world.imported("IMP-1", [due, due + dt.timedelta(days=60)])

    assert loan.annual_rate_bps is None
    assert [(i.seq, i.due_date, i.principal_paise, i.interest_paise) for i in loan.schedule] == [
        (1, due, 10_000_00, 500_00),
        (2, due + dt.timedelta(days=60), 10_000_00, 500_00),
    ]
    d = loan.delinquency
    assert (d.as_of, d.dpd, d.bucket.value, d.classification.value, d.overdue_paise) == (
        BUSINESS_DATE,
        41,
        "31-60",
        "SMA-1",
        10_500_00,
    )
    [entry] = world.entries("IMP-1")
    assert entry.action is Action.LOAN_CREATED
    assert (entry.after["dpd"], entry.after["bucket"], entry.after["classification"]) == (41, "31-60", "SMA-1")
    assert entry.after["dpd_as_of"] == "2025-06-14"


@pytest.mark.parametrize(
    ("due", "dpd", "classification"),
    [
        (TODAY, 0, "STANDARD"),  # today has not ended: not overdue yet
        (BUSINESS_DATE, 1, "SMA-0"),  # the due date itself is day 1
        (BUSINESS_DATE - dt.timedelta(days=29), 30, "SMA-0"),
        (BUSINESS_DATE - dt.timedelta(days=30), 31, "SMA-1"),
        (BUSINESS_DATE - dt.timedelta(days=89), 90, "SMA-2"),
    ],
)
def test_imported_loan_delinquency_boundaries(world: World, due: dt.date, dpd: int, classification: str) -> None:
    loan = world.imported("IMP-B", [due])
    assert (loan.delinquency.dpd, loan.delinquency.classification.value) == (dpd, classification)


def test_imported_loan_already_npa_records_the_day_it_became_npa(world: World) -> None:
    due = BUSINESS_DATE - dt.timedelta(days=120)
    loan = world.imported("IMP-NPA", [due])
    assert loan.delinquency.dpd == 121
    assert loan.delinquency.classification is Classification.NPA
    assert loan.delinquency.bucket is Bucket.B90_PLUS
    # dpd reached 91 ninety days after the due date (day 1).
    assert loan.delinquency.npa_since == due + dt.timedelta(days=90)


def test_create_with_a_taken_loan_id_is_refused_and_changes_nothing(world: World) -> None:
    first = world.service.create(MANAGER, generated(loan_id="LOAN-1"))
    with pytest.raises(LoanExists):
        world.service.create(ADMIN, generated(loan_id="LOAN-1", borrower=Borrower("Other", "9000000000")))
    assert world.repo.get("LOAN-1") == first
    assert len(world.entries()) == 1


def test_invalid_imported_schedule_is_refused_without_a_trace(world: World) -> None:
    with pytest.raises(InvalidSchedule):
        world.service.create(
            MANAGER,
            NewLoan(
                loan_id="BAD",
                borrower=ASHA,
                principal_paise=100_00,
                disbursement_date=dt.date(2025, 1, 1),
                imported_schedule=[(dt.date(2025, 2, 1), 99_00, 0)],
            ),
        )
    assert world.repo.get("BAD") is None
    assert world.entries() == []


@pytest.mark.parametrize("collector_id", ["nobody", "retired", "meera"])
def test_collector_id_must_name_an_active_collector(world: World, collector_id: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        world.service.create(MANAGER, generated(loan_id="L-C", collector_id=collector_id))
    assert [d["field"] for d in caught.value.details] == ["collector_id"]
    assert world.repo.get("L-C") is None
    assert world.entries() == []


def test_loan_without_collector_is_allowed(world: World) -> None:
    assert world.service.create(MANAGER, generated(collector_id=None)).collector_id is None


@pytest.mark.parametrize("ctx", [COLLECTOR, AUDITOR])
def test_only_admin_and_manager_create(world: World, ctx: RequestContext) -> None:
    with pytest.raises(Forbidden):
        world.service.create(ctx, generated(loan_id="L-F"))
    assert world.repo.get("L-F") is None
    assert world.entries() == []


def test_create_many_holds_each_loan_to_the_rules_of_create_and_answers_it_in_its_place(world: World) -> None:
    taken = world.service.create(MANAGER, generated(loan_id="L-TAKEN"))
    cmds = [
        generated(loan_id="L-1"),
        generated(loan_id="L-2", collector_id="retired"),
        generated(loan_id="L-TAKEN", principal_paise=5_00_000_00),
        generated(loan_id="L-3", collector_id="col2"),
        generated(loan_id="L-1", principal_paise=7_00_000_00),
    ]

    answers = world.service.create_many(MANAGER, cmds)

    assert [type(answer) for answer in answers] == [Loan, ValidationFailed, LoanExists, Loan, ValidationFailed]
    assert [d["field"] for d in answers[4].details] == ["loan_id"]  # type: ignore[union-attr]
    # The repository is asked to store each id once: the second L-1 never reaches it.
    assert [loan.loan_id for loan, _ in world.repo.created_many[-1]] == ["L-1", "L-TAKEN", "L-3"]
    assert world.repo.get("L-TAKEN") == taken
    assert world.repo.get("L-2") is None
    for n in (0, 3):
        alone = LoanService(
            loans=InMemoryLoanRepository(audit=InMemoryAuditLog()),
            audit=world.audit,
            users=world.users,
            metrics=world.metrics,
        ).create(MANAGER, cmds[n])
        assert answers[n] == world.repo.get(cmds[n].loan_id or "") == alone
        [entry] = world.entries(cmds[n].loan_id)
        assert entry.action is Action.LOAN_CREATED and entry.after == loan_dict(alone)
    first = world.repo.get("L-1")
    assert first is not None and first.principal_paise == 1_00_000_00  # the second L-1 was refused


@pytest.mark.parametrize("ctx", [COLLECTOR, AUDITOR])
def test_only_admin_and_manager_create_many(world: World, ctx: RequestContext) -> None:
    with pytest.raises(Forbidden):
        world.service.create_many(ctx, [generated(loan_id="L-F")])
    assert world.repo.get("L-F") is None
    assert world.entries() == []


# --- read and list ---------------------------------------------------------------------------


def test_collectors_see_only_their_own_loans(world: World) -> None:
    mine = world.imported("MINE", [TODAY + dt.timedelta(days=10)], collector_id="col1")
    world.imported("THEIRS", [TODAY + dt.timedelta(days=10)], collector_id="col2")
    world.imported("NOBODYS", [TODAY + dt.timedelta(days=10)], collector_id=None)

    assert world.service.get(COLLECTOR, "MINE") == mine
    errors = []
    for loan_id in ("THEIRS", "NOBODYS", "MISSING"):
        with pytest.raises(NotFound) as caught:
            world.service.get(COLLECTOR, loan_id)
        errors.append(caught.value.code)
    assert errors == ["NOT_FOUND"] * 3


@pytest.mark.parametrize("ctx", [ADMIN, MANAGER, AUDITOR])
def test_other_roles_read_any_loan(world: World, ctx: RequestContext) -> None:
    world.imported("THEIRS", [TODAY], collector_id="col2")
    assert world.service.get(ctx, "THEIRS").loan_id == "THEIRS"


def test_collector_listing_is_scoped_to_their_own_loans(world: World) -> None:
    overdue, current = BUSINESS_DATE - dt.timedelta(days=5), TODAY + dt.timedelta(days=5)
    world.imported("A1", [overdue], collector_id="col1")
    world.imported("A2", [current], collector_id="col1")
    world.imported("B1", [overdue], collector_id="col2")
    world.imported("U1", [overdue], collector_id=None)

    def ids(ctx: RequestContext, filters: LoanFilter) -> set[str]:
        return {loan.loan_id for loan in world.service.list(ctx, filters, 100, None).items}

    assert ids(COLLECTOR, LoanFilter()) == {"A1", "A2"}
    assert ids(COLLECTOR, LoanFilter(collector_id="col1")) == {"A1", "A2"}
    assert ids(COLLECTOR, LoanFilter(collector_id="col2")) == set()
    assert ids(COLLECTOR, LoanFilter(bucket="1-30")) == {"A1"}
    assert ids(OTHER_COLLECTOR, LoanFilter()) == {"B1"}
    assert ids(MANAGER, LoanFilter()) == {"A1", "A2", "B1", "U1"}
    assert ids(MANAGER, LoanFilter(collector_id="col2")) == {"B1"}
    assert ids(AUDITOR, LoanFilter(bucket="1-30")) == {"A1", "B1", "U1"}


def test_collector_cannot_page_into_another_collectors_listing(world: World) -> None:
    for n in range(3):
        world.imported(f"B{n}", [TODAY], collector_id="col2")
    page = world.service.list(MANAGER, LoanFilter(collector_id="col2"), 1, None)
    assert page.next_cursor is not None
    with pytest.raises(ValidationFailed):
        world.service.list(COLLECTOR, LoanFilter(), 1, page.next_cursor)


# --- contact updates -------------------------------------------------------------------------


def contact(notes: Any = dataclasses.MISSING, **borrower: str | None) -> ContactChanges:
    given = notes is not dataclasses.MISSING
    return ContactChanges(borrower=dict(borrower), notes=notes if given else None, notes_given=given)


@pytest.fixture
def loan(world: World) -> Loan:
    return world.imported("L1", [TODAY + dt.timedelta(days=20)])


def test_update_contact_merges_named_fields_only(world: World, loan: Loan, clock: FixedClock) -> None:
    clock.advance(minutes=5)
    updated = world.service.update_contact(MANAGER, "L1", contact(phone="9123456789"))

    assert updated.borrower == dataclasses.replace(ASHA, phone="9123456789")
    assert updated.version == loan.version + 1
    assert updated.updated_at == "2025-06-15T11:35:01.000+05:30"
    assert updated.created_at == loan.created_at
    assert world.repo.get("L1") == updated
    # Nothing but the contact data and the bookkeeping changed.
    assert dataclasses.replace(updated, borrower=ASHA, version=loan.version, updated_at=loan.updated_at) == loan


def test_update_contact_none_clears_email_and_address(world: World, loan: Loan) -> None:
    updated = world.service.update_contact(ADMIN, "L1", contact(email=None, address=None))
    assert updated.borrower == Borrower(name=ASHA.name, phone=ASHA.phone, email=None, address=None)


def test_update_contact_sets_and_clears_notes(world: World, loan: Loan) -> None:
    with_notes = world.service.update_contact(MANAGER, "L1", contact(notes="promised Friday"))
    assert with_notes.notes == "promised Friday"
    assert with_notes.borrower == ASHA
    kept = world.service.update_contact(MANAGER, "L1", contact(email="new@example.com"))
    assert kept.notes == "promised Friday"
    cleared = world.service.update_contact(MANAGER, "L1", contact(notes=None))
    assert cleared.notes is None
    assert cleared.borrower.email == "new@example.com"


@pytest.mark.parametrize("changes", [{"name": None}, {"phone": None}, {"name": ""}, {"phone": ""}])
def test_name_and_phone_cannot_be_cleared(world: World, loan: Loan, changes: dict[str, str | None]) -> None:
    with pytest.raises(ValidationFailed):
        world.service.update_contact(MANAGER, "L1", contact(**changes))
    assert world.repo.get("L1") == loan
    assert len(world.entries("L1")) == 1


def test_update_contact_audits_before_and_after(world: World, loan: Loan) -> None:
    world.service.update_contact(MANAGER, "L1", contact(notes="visit", address="4 FC Road"))
    newest = world.entries("L1")[0]
    assert newest.action is Action.LOAN_UPDATED
    assert newest.outcome is Outcome.SUCCESS
    assert (newest.actor, newest.source_ip, newest.request_id) == (MANAGER.actor, "10.0.0.2", "req-manager")
    assert newest.before == {
        "borrower": {"name": ASHA.name, "phone": ASHA.phone, "email": ASHA.email, "address": ASHA.address},
        "notes": None,
    }
    assert newest.after == {
        "borrower": {"name": ASHA.name, "phone": ASHA.phone, "email": ASHA.email, "address": "4 FC Road"},
        "notes": "visit",
    }


@pytest.mark.parametrize(
    "changes",
    [contact(), contact(name=ASHA.name), contact(email=ASHA.email, address=ASHA.address), contact(notes=None)],
)
def test_noop_update_writes_nothing(world: World, loan: Loan, clock: FixedClock, changes: ContactChanges) -> None:
    clock.advance(minutes=1)
    result = world.service.update_contact(MANAGER, "L1", changes)
    assert result == loan
    assert world.repo.get("L1") == loan
    assert world.repo.update_calls == 0
    assert len(world.entries("L1")) == 1


@pytest.mark.parametrize("ctx", [COLLECTOR, AUDITOR])
def test_only_admin_and_manager_update_contact(world: World, loan: Loan, ctx: RequestContext) -> None:
    with pytest.raises(Forbidden):
        world.service.update_contact(ctx, "L1", contact(notes="x"))
    assert world.repo.get("L1") == loan


def test_update_contact_of_a_missing_loan_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        world.service.update_contact(MANAGER, "NOPE", contact(notes="x"))


def concurrent_write(world: World, loan_id: str, **changes: Any) -> None:
    """What another process's successful update looks like from here: the stored loan moves on."""
    current = world.repo.loans[loan_id]
    world.repo.loans[loan_id] = dataclasses.replace(current, version=current.version + 1, **changes)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pauses the retry would take, recorded instead of slept."""
    pauses: list[int] = []
    monkeypatch.setattr(RetryPolicy, "pause", lambda _policy, attempt: pauses.append(attempt))
    return pauses


def test_update_contact_retries_after_a_conflict_and_keeps_the_other_change(
    world: World, loan: Loan, no_backoff: list[int]
) -> None:
    world.repo.on_next_update(lambda _: concurrent_write(world, "L1", notes="written by someone else"))

    updated = world.service.update_contact(MANAGER, "L1", contact(email="new@example.com"))

    assert world.repo.update_calls == 2
    assert updated.borrower.email == "new@example.com"
    assert updated.notes == "written by someone else"
    assert updated.version == loan.version + 2
    assert world.repo.get("L1") == updated
    newest = world.entries("L1")[0]
    assert newest.action is Action.LOAN_UPDATED
    assert newest.before["notes"] == "written by someone else"
    # Only the write that went through is audited.
    assert [e.action for e in world.entries("L1")] == [Action.LOAN_UPDATED, Action.LOAN_CREATED]


def test_update_contact_gives_up_with_conflict_after_the_loan_write_attempts(
    world: World, loan: Loan, no_backoff: list[int]
) -> None:
    def other_writer(n: int) -> BeforeUpdate:
        return lambda _: concurrent_write(world, "L1", notes=f"other {n}")

    for n in range(OPTIMISTIC_WRITE.attempts + 1):
        world.repo.on_next_update(other_writer(n))

    with pytest.raises(Conflict):
        world.service.update_contact(MANAGER, "L1", contact(email="new@example.com"))

    assert world.repo.update_calls == OPTIMISTIC_WRITE.attempts
    assert no_backoff == list(range(OPTIMISTIC_WRITE.attempts - 1)), "a pause between attempts, none after the last"
    stored = world.repo.get("L1")
    assert stored is not None
    assert stored.borrower.email == ASHA.email
    assert stored.notes == f"other {OPTIMISTIC_WRITE.attempts - 1}"
    assert [e.action for e in world.entries("L1")] == [Action.LOAN_CREATED]


# --- the financial guard ---------------------------------------------------------------------


@pytest.mark.parametrize("ctx", [MANAGER, COLLECTOR, AUDITOR])
def test_refusing_a_financial_change_audits_counts_and_changes_nothing(
    world: World, loan: Loan, ctx: RequestContext
) -> None:
    body = {"notes": "fixing", "borrower": {"name": "Asha", "DPD": 0}, "principalPaise": 1}

    with pytest.raises(FinancialFieldProtected) as caught:
        world.service.refuse_financial_change(ctx, "L1", body, ["borrower.DPD", "principalPaise"])

    assert caught.value.code == "FINANCIAL_FIELD_PROTECTED"
    assert caught.value.details == {"fields": ["borrower.DPD", "principalPaise"]}
    assert world.repo.get("L1") == loan
    assert world.repo.update_calls == 0
    newest = world.entries("L1")[0]
    assert newest.action is Action.FINANCIAL_GUARD_BLOCKED
    assert newest.outcome is Outcome.DENIED
    assert (newest.entity_type, newest.entity_id) == ("loan", "L1")
    assert newest.after == body
    assert (newest.actor, newest.source_ip, newest.request_id) == (ctx.actor, ctx.source_ip, ctx.request_id)
    assert newest.reason is not None
    assert "borrower.DPD" in newest.reason
    assert "principalPaise" in newest.reason
    assert [c.name for c in world.metrics.calls] == ["FinancialGuardTriggered"]


def test_an_oversized_attempt_is_audited_as_a_digest(world: World, loan: Loan) -> None:
    body = {"dpd": 0, "notes": "x" * 60_000}
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    with pytest.raises(FinancialFieldProtected):
        world.service.refuse_financial_change(MANAGER, "L1", body, ["dpd"])

    newest = world.entries("L1")[0]
    assert newest.outcome is Outcome.DENIED
    assert newest.after["sha256"] == hashlib.sha256(raw).hexdigest()
    assert newest.after["bytes"] == len(raw)
    assert len(json.dumps(newest.after)) < 1_000


def test_a_refusal_stands_when_its_audit_entry_cannot_be_written(
    world: World, loan: Loan, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(entry: AuditEntry) -> None:
        raise RuntimeError("audit table unreachable")

    monkeypatch.setattr(world.audit, "append", unreachable)
    with pytest.raises(FinancialFieldProtected):
        world.service.refuse_financial_change(MANAGER, "L1", {"dpd": 0}, ["dpd"])
    assert world.repo.get("L1") == loan
    assert [c.name for c in world.metrics.calls] == ["AuditWriteFailed", "FinancialGuardTriggered"]


def test_a_contact_update_writes_the_loan_as_stored_not_as_shown(world: World, loan: Loan) -> None:
    """Reads show dpd as of the latest completed run; writes must not store that derived view, or the
    stored delinquency would change with no DELINQUENCY_CHANGED entry and the audit chain would break."""
    world.service.evaluated_through = lambda: loan.delinquency.as_of + dt.timedelta(days=20)
    shown = world.service.update_contact(MANAGER, "L1", ContactChanges({"phone": "9123456780"}, None, False))

    stored = world.repo.get("L1")
    assert stored is not None
    assert stored.delinquency == loan.delinquency
    assert shown.delinquency.as_of == loan.delinquency.as_of + dt.timedelta(days=20)


# --- assignment ------------------------------------------------------------------------------


def test_assign_audits_before_and_after_collector(world: World, loan: Loan) -> None:
    assigned = world.service.assign(MANAGER, "L1", "col2")

    assert assigned.collector_id == "col2"
    assert assigned.version == loan.version + 1
    assert world.repo.get("L1") == assigned
    newest = world.entries("L1")[0]
    assert newest.action is Action.LOAN_ASSIGNED
    assert (newest.before, newest.after) == ({"collector_id": "col1"}, {"collector_id": "col2"})
    assert (newest.actor, newest.source_ip) == (MANAGER.actor, MANAGER.source_ip)
    assert world.service.get(OTHER_COLLECTOR, "L1") == assigned
    with pytest.raises(NotFound):
        world.service.get(COLLECTOR, "L1")


def test_assigning_an_unassigned_loan_audits_none_before(world: World) -> None:
    world.imported("U", [TODAY], collector_id=None)
    world.service.assign(ADMIN, "U", "col1")
    assert world.entries("U")[0].before == {"collector_id": None}


def test_assigning_the_same_collector_again_writes_nothing(world: World, loan: Loan) -> None:
    assert world.service.assign(MANAGER, "L1", "col1") == loan
    assert world.repo.update_calls == 0
    assert len(world.entries("L1")) == 1


@pytest.mark.parametrize("ctx", [COLLECTOR, AUDITOR])
def test_only_admin_and_manager_assign(world: World, loan: Loan, ctx: RequestContext) -> None:
    with pytest.raises(Forbidden):
        world.service.assign(ctx, "L1", "col2")
    assert world.repo.get("L1") == loan


@pytest.mark.parametrize("collector_id", ["nobody", "retired", "meera"])
def test_assign_needs_an_active_collector(world: World, loan: Loan, collector_id: str) -> None:
    with pytest.raises(ValidationFailed):
        world.service.assign(MANAGER, "L1", collector_id)
    assert world.repo.get("L1") == loan


def test_assign_retries_after_a_conflict(world: World, loan: Loan, no_backoff: list[int]) -> None:
    world.repo.on_next_update(lambda _: concurrent_write(world, "L1", notes="other"))
    assigned = world.service.assign(MANAGER, "L1", "col2")
    assert (assigned.collector_id, assigned.notes, world.repo.update_calls) == ("col2", "other", 2)


def test_assign_gives_up_after_the_loan_write_attempts(world: World, loan: Loan, no_backoff: list[int]) -> None:
    for _ in range(OPTIMISTIC_WRITE.attempts):
        world.repo.on_next_update(lambda _: concurrent_write(world, "L1"))
    with pytest.raises(Conflict):
        world.service.assign(MANAGER, "L1", "col2")
    assert world.repo.update_calls == OPTIMISTIC_WRITE.attempts
    stored = world.repo.get("L1")
    assert stored is not None and stored.collector_id == "col1"
