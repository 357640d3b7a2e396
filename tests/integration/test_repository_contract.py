"""One contract for LoanRepository and AuditLog, held against the in-memory fakes, DynamoDB on moto
and DynamoDB Local (the chalice todo-app ``test_db.py`` pattern): whatever the services are tested
with must behave like what runs in production."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from chalicelib import clock
from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Action, Actor, AuditEntry, Outcome
from chalicelib.domain.delinquency import Classification, assess
from chalicelib.domain.errors import Conflict, LoanExists, ValidationFailed
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, initial_delinquency
from chalicelib.domain.portfolio import BOOK as BOOK_SCOPE
from chalicelib.domain.portfolio import Scope, ScopeKind, recount
from chalicelib.domain.schedule import Instalment, generate_schedule, import_schedule
from chalicelib.services.ids import new_id
from chalicelib.services.ports import AuditFilter, AuditLog, LoanFilter, LoanRepository, Page
from tests.fakes import InMemoryAuditLog, InMemoryLoanRepository

T = TypeVar("T")

NOW = dt.datetime(2025, 6, 15, 11, 30, tzinfo=IST)
BUSINESS_DATE = dt.date(2025, 6, 14)
ADMIN = Actor("root", "admin")
MANAGER = Actor("meera", "manager")


@dataclass
class Backend:
    name: str
    loans: LoanRepository
    audit: AuditLog
    clock: FixedClock


def _dynamodb_backend(name: str, fixed: FixedClock) -> Backend:
    # Imported here so that the in-memory backend runs without the DynamoDB adapters' imports.
    from chalicelib.adapters.dynamodb import models
    from chalicelib.adapters.dynamodb.audit import DynamoAuditLog
    from chalicelib.adapters.dynamodb.loans import DynamoLoanRepository
    from chalicelib.config import settings

    # The stack fixtures set STAGE and the endpoint; bind the models to that stage's tables as
    # wiring.build does for the app.
    models.bind(settings())
    return Backend(name, DynamoLoanRepository(), DynamoAuditLog(), fixed)


@pytest.fixture(
    params=["memory", "moto", pytest.param("dynamodb_local", marks=pytest.mark.dynamodb_local)],
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with use_clock(FixedClock(NOW)) as fixed:
        assert isinstance(fixed, FixedClock)
        if request.param == "memory":
            audit = InMemoryAuditLog()
            yield Backend("memory", InMemoryLoanRepository(audit=audit), audit, fixed)
        elif request.param == "moto":
            request.getfixturevalue("moto_stack")
            yield _dynamodb_backend("moto", fixed)
        else:
            request.getfixturevalue("local_stack")
            yield _dynamodb_backend("dynamodb_local", fixed)


@pytest.fixture(params=["moto", pytest.param("dynamodb_local", marks=pytest.mark.dynamodb_local)])
def dynamodb(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The DynamoDB backends only: for what happens to a transaction on its way (the fakes have none)."""
    with use_clock(FixedClock(NOW)) as fixed:
        assert isinstance(fixed, FixedClock)
        request.getfixturevalue("moto_stack" if request.param == "moto" else "local_stack")
        yield _dynamodb_backend(request.param, fixed)


# --- building domain objects -----------------------------------------------------------------


def borrower(n: int = 0) -> Borrower:
    return Borrower(name=f"Borrower {n}", phone=f"98{n:08d}", email=f"b{n}@example.com", address=f"{n} MG Road")


def imported_loan(
    loan_id: str,
    dpd: int = 0,
    collector_id: str | None = None,
    status: LoanStatus = LoanStatus.ACTIVE,
    sticky_npa: bool = False,
) -> Loan:
    """A two-instalment loan whose first instalment is ``dpd`` days past due on BUSINESS_DATE (0: not due yet).

    With ``sticky_npa`` the loan was NPA before and stays NPA at this dpd (a part-paid NPA)."""
    first_due = BUSINESS_DATE - dt.timedelta(days=dpd - 1) if dpd else BUSINESS_DATE + dt.timedelta(days=10)
    rows = [(first_due, 50_000_00, 1_250_00), (first_due + dt.timedelta(days=31), 50_000_00, 625_00)]
    schedule = tuple(import_schedule(1_00_000_00, first_due - dt.timedelta(days=30), rows))
    if sticky_npa:
        delinquency = assess(
            schedule,
            BUSINESS_DATE,
            previous_classification=Classification.NPA,
            previous_npa_since=BUSINESS_DATE - dt.timedelta(days=200),
        )
    else:
        delinquency = initial_delinquency(schedule, BUSINESS_DATE)
    assert delinquency.dpd == dpd
    return Loan(
        loan_id=loan_id,
        borrower=borrower(),
        status=status,
        principal_paise=1_00_000_00,
        disbursement_date=first_due - dt.timedelta(days=30),
        schedule=schedule,
        delinquency=delinquency,
        collector_id=collector_id,
        created_at=clock.now_iso(),
        updated_at=clock.now_iso(),
    )


def rich_loan(loan_id: str) -> Loan:
    """A generated loan with every optional field set and part-payments on its schedule."""
    schedule = generate_schedule(12_34_567_89, 1875, 24, dt.date(2024, 1, 10), dt.date(2024, 2, 29))
    paid = [
        dataclasses.replace(i, paid_principal_paise=i.principal_paise, paid_interest_paise=i.interest_paise)
        for i in schedule[:3]
    ]
    part = dataclasses.replace(schedule[3], paid_interest_paise=schedule[3].interest_paise, paid_principal_paise=1)
    full = (*paid, part, *schedule[4:])
    delinquency = initial_delinquency(full, BUSINESS_DATE)
    assert delinquency.npa_since is not None
    return Loan(
        loan_id=loan_id,
        borrower=Borrower(name="Asha Rao", phone="+919876543210", email=None, address="12 MG Road, Pune"),
        status=LoanStatus.ACTIVE,
        principal_paise=12_34_567_89,
        disbursement_date=dt.date(2024, 1, 10),
        schedule=full,
        delinquency=delinquency,
        annual_rate_bps=1875,
        collector_id="col1",
        branch="Pune-2",
        notes="₹ promised; call after 6pm",
        legal_escalated=True,
        legal_escalated_on=dt.date(2024, 9, 1),
        created_at="2025-06-15T11:30:00.000+05:30",
        updated_at="2025-06-15T11:30:00.000+05:30",
    )


def entry(
    entity_id: str,
    action: Action = Action.LOAN_UPDATED,
    actor: Actor = MANAGER,
    before: Any = None,
    after: Any = None,
    outcome: Outcome = Outcome.SUCCESS,
) -> AuditEntry:
    return AuditEntry(
        audit_id=new_id(),
        at=clock.now_iso(),
        actor=actor,
        source_ip="10.1.2.3",
        request_id=f"req-{entity_id}",
        action=action,
        entity_type="loan",
        entity_id=entity_id,
        before=before,
        after=after,
        outcome=outcome,
        reason=None,
    )


def created(backend: Backend, loan: Loan) -> Loan:
    stored = backend.loans.create(loan, entry(loan.loan_id, Action.LOAN_CREATED, ADMIN, after={"v": 1}))
    # Audit ids are time-ordered: step the clock so the next write is strictly newer.
    backend.clock.advance(seconds=1)
    return stored


def move_clock(backend: Backend, when: dt.datetime) -> None:
    backend.clock.advance(seconds=(when - backend.clock.now()).total_seconds())


def audit_of(backend: Backend, **filters: Any) -> list[AuditEntry]:
    return all_pages(lambda limit, cursor: backend.audit.list(AuditFilter(**filters), limit, cursor), 100)


def all_pages(fetch: Callable[[int, str | None], Page[T]], limit: int) -> list[T]:
    items: list[T] = []
    cursor: str | None = None
    for _ in range(1000):
        page = fetch(limit, cursor)
        assert len(page.items) <= limit
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


# --- loans: create and get -------------------------------------------------------------------


def test_create_then_get_round_trips_every_field(backend: Backend) -> None:
    loan = rich_loan("RICH-1")
    stored = backend.loans.create(loan, entry("RICH-1", Action.LOAN_CREATED))
    got = backend.loans.get("RICH-1")

    expected = dataclasses.replace(loan, version=1)
    assert stored == expected
    assert got is not None
    for field in dataclasses.fields(Loan):
        value, want = getattr(got, field.name), getattr(expected, field.name)
        assert value == want, field.name
        assert type(value) is type(want), field.name
    for got_row, want_row in zip(got.schedule, expected.schedule, strict=True):
        for field in dataclasses.fields(Instalment):
            assert type(getattr(got_row, field.name)) is type(getattr(want_row, field.name)), field.name
    for field in dataclasses.fields(got.delinquency):
        value = getattr(got.delinquency, field.name)
        assert type(value) is type(getattr(expected.delinquency, field.name)), field.name
    assert got.outstanding_principal_paise == expected.outstanding_principal_paise


def test_optional_fields_round_trip_as_none(backend: Backend) -> None:
    loan = dataclasses.replace(
        imported_loan("BARE-1"), borrower=Borrower(name="Ravi", phone="9000000001"), notes=None, branch=None
    )
    backend.loans.create(loan, entry("BARE-1", Action.LOAN_CREATED))
    assert backend.loans.get("BARE-1") == dataclasses.replace(loan, version=1)


def test_get_of_a_missing_loan_is_none(backend: Backend) -> None:
    assert backend.loans.get("NOT-THERE") is None


def test_get_many_answers_the_loans_that_exist_as_get_does_beyond_one_request(backend: Backend) -> None:
    """More ids than one BatchGetItem takes, some missing and one named twice: each loan that exists,
    once, equal to what ``get`` reads; the missing ones absent."""
    stored = backend.loans.create_many([(bulk_loan(n), entry(f"BULK-{n:02d}")) for n in range(0, 120, 2)])
    asked = [f"BULK-{n:02d}" for n in range(120)] + ["BULK-04"]

    found = backend.loans.get_many(asked)

    assert sorted(found) == sorted(loan.loan_id for loan in stored if isinstance(loan, Loan))
    assert all(found[loan_id] == backend.loans.get(loan_id) for loan_id in found)
    assert backend.loans.get_many([]) == {}


def test_create_writes_the_audit_entry_with_the_loan(backend: Backend) -> None:
    audit = entry("AUD-1", Action.LOAN_CREATED, ADMIN, before=None, after={"principal_paise": 10**12, "n": [1, 2]})
    backend.loans.create(imported_loan("AUD-1"), audit)
    [stored] = audit_of(backend, entity_id="AUD-1")
    assert stored == audit
    assert type(stored.after["principal_paise"]) is int


def test_create_on_a_taken_id_changes_nothing(backend: Backend) -> None:
    first = created(backend, imported_loan("TAKEN", dpd=10, collector_id="col1"))
    before_audit = audit_of(backend, entity_id="TAKEN")

    intruder = dataclasses.replace(imported_loan("TAKEN", dpd=45), borrower=borrower(9), collector_id="col2")
    with pytest.raises(LoanExists):
        backend.loans.create(intruder, entry("TAKEN", Action.LOAN_CREATED, ADMIN, after={"v": 2}))

    assert backend.loans.get("TAKEN") == first
    assert audit_of(backend, entity_id="TAKEN") == before_audit
    assert len(before_audit) == 1


# --- loans: many at once (the bulk import) ----------------------------------------------------


def portfolio_of(backend: Backend) -> Any:
    if isinstance(backend.loans, InMemoryLoanRepository):
        return backend.loans.portfolio
    from chalicelib.adapters.dynamodb.aggregates import DynamoPortfolio

    return DynamoPortfolio()


def test_create_many_answers_each_loan_in_its_place_and_leaves_a_taken_id_alone(backend: Backend) -> None:
    first = created(backend, imported_loan("MANY-2", dpd=10, collector_id="col1"))
    before_audit = audit_of(backend, entity_id="MANY-2")
    loans = [imported_loan(f"MANY-{n}", dpd=5 * n, collector_id=f"col{n % 2}") for n in range(5)]
    audits = [entry(loan.loan_id, Action.LOAN_CREATED, ADMIN, after={"n": n}) for n, loan in enumerate(loans)]

    answers = backend.loans.create_many(list(zip(loans, audits, strict=True)))

    assert isinstance(answers[2], LoanExists)
    assert backend.loans.get("MANY-2") == first
    assert audit_of(backend, entity_id="MANY-2") == before_audit
    for n in (0, 1, 3, 4):
        answer = answers[n]
        assert isinstance(answer, Loan) and answer.version == 1
        assert backend.loans.get(f"MANY-{n}") == answer == dataclasses.replace(loans[n], version=1)
        assert audit_of(backend, entity_id=f"MANY-{n}") == [audits[n]]
    # The refused transaction was sent again without the taken loan: counted once, the others once.
    assert_counters(backend, [first, *(loans[n] for n in (0, 1, 3, 4))])


def assert_counters(backend: Backend, loans: list[Loan]) -> None:
    """The portfolio counters of every scope these loans touch are their recount (no other loans stored)."""
    portfolio = portfolio_of(backend)
    month = clock.month_of(BUSINESS_DATE)
    for scope, expected in recount(loans).items():
        counted, _ = portfolio.read(scope, month)
        assert counted == {name: value for name, value in expected.items() if value}, scope


def bulk_loan(n: int) -> Loan:
    return dataclasses.replace(imported_loan(f"BULK-{n:02d}", dpd=n % 95, collector_id=f"col{n}"), branch=f"B{n}")


def test_create_many_cuts_its_transactions_at_dynamodb_s_limit_of_a_hundred_items() -> None:
    from chalicelib.adapters.dynamodb.loans import (
        LOANS_PER_TRANSACTION,
        TRANSACTION_ACTIONS,
        _transaction_groups,
        _Write,
    )

    writes = [_Write(None, bulk_loan(n), entry(f"BULK-{n:02d}")) for n in range(60)]
    # Each loan adds its put, its audit entry's and the counters of two scopes of its own; the book's is shared.
    assert [len(group) for group in _transaction_groups(writes)] == [24, 24, 12]
    assert 2 * 24 + (1 + 2 * 24) <= TRANSACTION_ACTIONS < 2 * 25 + (1 + 2 * 25)
    shared = [
        _Write(None, imported_loan(f"ONE-{n:02d}", collector_id="col1"), entry(f"ONE-{n:02d}")) for n in range(60)
    ]
    assert [len(group) for group in _transaction_groups(shared)] == [LOANS_PER_TRANSACTION] * 2 + [10]
    assert [write for group in _transaction_groups(writes) for write in group] == writes


def test_update_many_counts_the_scopes_a_loan_leaves_as_well_as_those_it_joins() -> None:
    """A move from a collector and branch of each loan's own to one shared collector touches as many
    counters as a new loan in a scope pair of its own: the transactions are cut the same way."""
    from chalicelib.adapters.dynamodb.loans import _transaction_groups, _Write

    writes = []
    for n in range(60):
        before = dataclasses.replace(bulk_loan(n), version=1)
        writes.append(_Write(before, dataclasses.replace(before, collector_id="target"), entry(before.loan_id)))
    assert [len(group) for group in _transaction_groups(writes)] == [24, 24, 12]
    assert writes[0].scopes == {
        BOOK_SCOPE,
        Scope(ScopeKind.COLLECTOR, "col0"),
        Scope(ScopeKind.COLLECTOR, "target"),
        Scope(ScopeKind.BRANCH, "B0"),
    }


def test_create_many_beyond_one_transaction_stores_every_loan_and_counts_each_once(backend: Backend) -> None:
    # Sixty loans, each with a collector and a branch of its own: more puts and counter additions than
    # one DynamoDB transaction may hold, so the adapter writes them in several (see the next test).
    loans = [bulk_loan(n) for n in range(60)]
    answers = backend.loans.create_many(
        [(loan, entry(loan.loan_id, Action.LOAN_CREATED, ADMIN, after={"n": n})) for n, loan in enumerate(loans)]
    )

    assert answers == [dataclasses.replace(loan, version=1) for loan in loans]
    assert [backend.loans.get(loan.loan_id) for loan in loans] == answers
    assert len(audit_of(backend, action=Action.LOAN_CREATED)) == 60
    assert_counters(backend, loans)


@pytest.mark.parametrize("lost", ["before", "after"])
def test_create_many_answers_a_dropped_transaction_on_its_own_loans_only(dynamodb: Backend, lost: str) -> None:
    """The second of three transactions fails: its 24 loans are answered UNAVAILABLE (``before``: never
    sent, so not stored; ``after``: stored, its answer lost), the other two transactions' stored."""
    backend = dynamodb
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    from chalicelib.adapters.dynamodb.models import LoanModel
    from tests.dynamodb_local.faults import Fault, hooked

    error = EndpointConnectionError if lost == "before" else ReadTimeoutError
    fault = Fault(2, lambda: error(endpoint_url="http://dynamodb"))
    loans = [bulk_loan(n) for n in range(60)]
    with hooked(LoanModel, f"{lost}-call.dynamodb.TransactWriteItems", fault):
        answers = backend.loans.create_many(
            [(loan, entry(loan.loan_id, Action.LOAN_CREATED, ADMIN, after={"n": n})) for n, loan in enumerate(loans)]
        )

    assert fault.fired and fault.calls == 3
    assert [type(a).__name__ for a in answers] == ["Loan"] * 24 + ["Unavailable"] * 24 + ["Loan"] * 12
    dropped_stored = lost == "after"
    assert [backend.loans.get(loan.loan_id) is not None for loan in loans] == [True] * 24 + [dropped_stored] * 24 + [
        True
    ] * 12
    stored = loans[:24] + loans[48:] + (loans[24:48] if dropped_stored else [])
    assert len(audit_of(backend, action=Action.LOAN_CREATED)) == len(stored)
    assert_counters(backend, stored)


def test_create_many_sends_a_contended_transaction_again_and_stores_it_once(dynamodb: Backend) -> None:
    """Another writer held a counter (``TransactionConflict``) and, on the next attempt, two of the ids
    turn out to be taken: the transaction is sent again, then again without those two, and each other
    loan and its counters land once."""
    from botocore.exceptions import ClientError

    from chalicelib.adapters.dynamodb.models import LoanModel
    from tests.dynamodb_local.faults import hooked

    taken = [created(dynamodb, bulk_loan(n)) for n in (1, 3)]
    attempts: list[int] = []

    def contended_once(**_: Any) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
                },
                "TransactWriteItems",
            )

    loans = [bulk_loan(n) for n in range(6)]
    with hooked(LoanModel, "before-call.dynamodb.TransactWriteItems", contended_once):
        answers = dynamodb.loans.create_many(
            [(loan, entry(loan.loan_id, Action.LOAN_CREATED, ADMIN, after={"n": n})) for n, loan in enumerate(loans)]
        )

    assert len(attempts) == 3  # contended, refused for the two taken ids, stored
    assert [type(a).__name__ for a in answers] == ["Loan", "LoanExists", "Loan", "LoanExists", "Loan", "Loan"]
    assert [dynamodb.loans.get(loan.loan_id) for loan in loans] == [
        answer if isinstance(answer, Loan) else taken.pop(0) for answer in answers
    ]
    stored = [loans[n] for n in (0, 2, 4, 5)]
    assert len(audit_of(dynamodb, action=Action.LOAN_CREATED)) == 6
    assert_counters(dynamodb, [bulk_loan(1), bulk_loan(3), *stored])


def test_update_many_sends_a_contended_transaction_again_and_leaves_a_stale_loan_out(dynamodb: Backend) -> None:
    """Another writer held a counter, and meanwhile one of the loans was changed: the transaction is sent
    again, then again without the stale loan (``Conflict``), and each other loan moves once, with one
    entry, and the counters count it once in its new collector's scope."""
    from botocore.exceptions import ClientError

    from chalicelib.adapters.dynamodb.models import LoanModel
    from tests.dynamodb_local.faults import hooked

    stored = dynamodb.loans.create_many([(bulk_loan(n), entry(f"BULK-{n:02d}")) for n in range(4)])
    read = [loan for loan in stored if isinstance(loan, Loan)]
    attempts: list[int] = []
    meanwhile: list[Loan] = []

    def contended_once(**_: Any) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            meanwhile.append(dynamodb.loans.update(read[1], dataclasses.replace(read[1], notes="edited"), entry("x")))
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
                },
                "TransactWriteItems",
            )

    moved = [dataclasses.replace(loan, collector_id="target") for loan in read]
    with hooked(LoanModel, "before-call.dynamodb.TransactWriteItems", contended_once):
        answers = dynamodb.loans.update_many(
            [
                (before, after, entry(after.loan_id, Action.LOAN_ASSIGNED))
                for before, after in zip(read, moved, strict=True)
            ]
        )

    # contended; the stale loan's condition failed; stored (the edit inside the hook is a fourth call)
    assert len(attempts) == 4
    assert [type(a).__name__ for a in answers] == ["Loan", "Conflict", "Loan", "Loan"]
    assert [dynamodb.loans.get(loan.loan_id) for loan in read] == [answers[0], meanwhile[0], answers[2], answers[3]]
    assert sorted(e.entity_id for e in audit_of(dynamodb, action=Action.LOAN_ASSIGNED)) == [
        "BULK-00",
        "BULK-02",
        "BULK-03",
    ]
    assert_counters(dynamodb, [moved[0], meanwhile[0], moved[2], moved[3]])


@pytest.mark.dynamodb_local
def test_bulk_writes_keep_each_transaction_under_dynamodb_s_4_mb(local_stack: str) -> None:
    """Twenty-five of the largest loans the API takes (600 instalments, every text at its longest in
    four-byte characters) with their creation entries weigh more than one transaction may carry: they
    are stored in several. Moved to another collector together (their entries are small), they fit in
    one, which DynamoDB takes."""
    from chalicelib.adapters.dynamodb import models
    from chalicelib.adapters.dynamodb.loans import TRANSACTION_BYTES, DynamoLoanRepository, _transaction_groups, _Write
    from chalicelib.config import settings
    from chalicelib.services.context import RequestContext
    from chalicelib.services.views import loan_dict

    models.bind(settings())
    wide = "\U0001f600"  # four bytes in UTF-8, a surrogate pair (twelve bytes) in escaped JSON
    schedule = tuple(generate_schedule(5_00_00_000_00, 2400, 600, dt.date(2025, 1, 1), dt.date(2025, 2, 1)))
    pairs = []
    for n in range(25):
        loan = Loan(
            loan_id=f"HEAVY-{n:02d}-" + "x" * 54,
            borrower=Borrower(wide * 200, "+" + "9" * 14, "e" * 64 + "@" + "d" * 60 + ".in", wide * 2000),
            status=LoanStatus.ACTIVE,
            principal_paise=5_00_00_000_00,
            disbursement_date=dt.date(2025, 1, 1),
            schedule=schedule,
            delinquency=initial_delinquency(schedule, BUSINESS_DATE),
            annual_rate_bps=2400,
            collector_id="c" * 128,
            branch=wide * 200,
            notes=wide * 2000,
            created_at=clock.now_iso(),
            updated_at=clock.now_iso(),
        )
        ctx = RequestContext(actor=ADMIN)
        view = loan_dict(dataclasses.replace(loan, version=1))
        pairs.append((loan, ctx.loan_audit(Action.LOAN_CREATED, loan.loan_id, None, view)))
    writes = [_Write(None, loan, audit) for loan, audit in pairs]
    assert sum(write.weight for write in writes) > 4 * 2**20
    groups = list(_transaction_groups(writes))
    assert len(groups) > 1 and all(sum(write.weight for write in group) <= TRANSACTION_BYTES for group in groups)

    repository = DynamoLoanRepository()
    answers = repository.create_many(pairs)

    assert [type(a).__name__ for a in answers] == ["Loan"] * 25
    stored = [answer for answer in answers if isinstance(answer, Loan)]
    moved = repository.update_many(
        [(loan, dataclasses.replace(loan, collector_id="d" * 128), entry(loan.loan_id)) for loan in stored]
    )
    assert [(a.collector_id, a.version) for a in moved if isinstance(a, Loan)] == [("d" * 128, 2)] * 25
    assert [repository.get(loan.loan_id) for loan in stored] == moved


def test_update_many_answers_each_loan_in_its_place_and_leaves_a_stale_one_alone(backend: Backend) -> None:
    """A loan changed by someone else since it was read is answered ``Conflict`` and left as they left
    it; the others of its transaction are written, each with its entry, and the counters equal a
    recount."""
    stored = backend.loans.create_many(
        [(loan, entry(loan.loan_id, Action.LOAN_CREATED, ADMIN)) for loan in (bulk_loan(n) for n in range(5))]
    )
    read = [loan for loan in stored if isinstance(loan, Loan)]
    meanwhile = backend.loans.update(read[2], dataclasses.replace(read[2], notes="someone else"), entry("BULK-02"))
    audit_before = audit_of(backend, entity_id="BULK-02")
    changes = [
        (loan, dataclasses.replace(loan, collector_id="target"), entry(loan.loan_id, Action.LOAN_ASSIGNED))
        for loan in read
    ]

    answers = backend.loans.update_many(changes)

    assert isinstance(answers[2], Conflict) and answers[2].details == {"loan_id": "BULK-02"}
    assert backend.loans.get("BULK-02") == meanwhile
    assert audit_of(backend, entity_id="BULK-02") == audit_before
    for n in (0, 1, 3, 4):
        assert answers[n] == dataclasses.replace(changes[n][1], version=2) == backend.loans.get(f"BULK-{n:02d}")
        assert audit_of(backend, entity_id=f"BULK-{n:02d}", action=Action.LOAN_ASSIGNED) == [changes[n][2]]
    assert_counters(backend, [meanwhile, *(changes[n][1] for n in (0, 1, 3, 4))])


def test_update_many_beyond_one_transaction_moves_every_loan_and_counts_each_once(backend: Backend) -> None:
    loans = [bulk_loan(n) for n in range(60)]
    stored = backend.loans.create_many([(loan, entry(loan.loan_id, Action.LOAN_CREATED, ADMIN)) for loan in loans])
    moved = [dataclasses.replace(loan, collector_id="target") for loan in stored if isinstance(loan, Loan)]

    answers = backend.loans.update_many(
        [
            (before, after, entry(after.loan_id, Action.LOAN_ASSIGNED))
            for before, after in zip(stored, moved, strict=True)
            if isinstance(before, Loan)
        ]
    )

    assert answers == [dataclasses.replace(loan, version=2) for loan in moved]
    assert [backend.loans.get(loan.loan_id) for loan in loans] == answers
    assert len(audit_of(backend, action=Action.LOAN_ASSIGNED)) == 60
    assert_counters(backend, moved)
    counters, _ = portfolio_of(backend).read(Scope(ScopeKind.COLLECTOR, "col7"), clock.month_of(BUSINESS_DATE))
    assert not any(counters.values())


# --- loans: optimistic updates ---------------------------------------------------------------


def test_update_with_the_current_version_bumps_it(backend: Backend) -> None:
    v1 = created(backend, imported_loan("UPD-1"))
    assert v1.version == 1

    v2 = backend.loans.update(v1, dataclasses.replace(v1, notes="first"), entry("UPD-1", after={"notes": "first"}))
    assert v2.version == 2
    assert v2 == dataclasses.replace(v1, notes="first", version=2)
    assert backend.loans.get("UPD-1") == v2
    backend.clock.advance(seconds=1)

    v3 = backend.loans.update(v2, dataclasses.replace(v2, collector_id="col9"), entry("UPD-1", Action.LOAN_ASSIGNED))
    assert v3.version == 3
    assert backend.loans.get("UPD-1") == v3
    assert [e.action for e in audit_of(backend, entity_id="UPD-1")] == [
        Action.LOAN_ASSIGNED,
        Action.LOAN_UPDATED,
        Action.LOAN_CREATED,
    ]


def test_update_with_a_stale_version_writes_nothing(backend: Backend) -> None:
    v1 = created(backend, imported_loan("STALE"))
    v2 = backend.loans.update(v1, dataclasses.replace(v1, notes="winner"), entry("STALE", after={"notes": "winner"}))
    backend.clock.advance(seconds=1)
    audit_before = audit_of(backend, entity_id="STALE")

    loser = entry("STALE", after={"notes": "loser"})
    with pytest.raises(Conflict):
        backend.loans.update(v1, dataclasses.replace(v1, notes="loser"), loser)

    assert backend.loans.get("STALE") == v2
    after = audit_of(backend, entity_id="STALE")
    assert after == audit_before
    assert loser.audit_id not in {e.audit_id for e in audit_of(backend, actor=MANAGER.sub)}


def test_update_of_a_loan_never_created_is_a_conflict_and_writes_nothing(backend: Backend) -> None:
    ghost = entry("GHOST")
    with pytest.raises(Conflict):
        backend.loans.update(imported_loan("GHOST"), imported_loan("GHOST"), ghost)
    with pytest.raises(Conflict):
        backend.loans.update(imported_loan("GHOST"), dataclasses.replace(imported_loan("GHOST"), version=1), ghost)
    assert backend.loans.get("GHOST") is None
    assert audit_of(backend, entity_id="GHOST") == []


# --- loans: listing --------------------------------------------------------------------------

BOOK = {
    # loan_id: (dpd, collector, status, sticky NPA) -> bucket / classification
    "A": (0, "col1", LoanStatus.ACTIVE, False),  # CURRENT / STANDARD
    "B": (10, "col1", LoanStatus.ACTIVE, False),  # 1-30 / SMA-0
    "C": (45, "col2", LoanStatus.ACTIVE, False),  # 31-60 / SMA-1
    "D": (0, "col2", LoanStatus.CLOSED, False),  # CURRENT / STANDARD
    "E": (120, None, LoanStatus.ACTIVE, False),  # 90+ / NPA
    "F": (75, "col1", LoanStatus.ACTIVE, True),  # 61-90 / NPA (sticky)
    "G": (200, None, LoanStatus.WRITTEN_OFF, False),  # 90+ / NPA
    "H": (75, "col2", LoanStatus.ACTIVE, False),  # 61-90 / SMA-2
    "I": (15, "col1", LoanStatus.ACTIVE, False),  # 1-30 / SMA-0
}


@pytest.fixture
def book(backend: Backend) -> Backend:
    for loan_id, (dpd, collector_id, status, sticky) in BOOK.items():
        created(backend, imported_loan(loan_id, dpd, collector_id, status, sticky))
    return backend


LIST_CASES: list[tuple[LoanFilter, set[str]]] = [
    (LoanFilter(), set("ABCDEFGHI")),
    (LoanFilter(bucket="CURRENT"), {"A", "D"}),
    (LoanFilter(bucket="1-30"), {"B", "I"}),
    (LoanFilter(bucket="61-90"), {"F", "H"}),
    (LoanFilter(bucket="90+"), {"E", "G"}),
    (LoanFilter(classification="NPA"), {"E", "F", "G"}),
    (LoanFilter(classification="SMA-2"), {"H"}),
    (LoanFilter(status="ACTIVE"), set("ABCEFHI")),
    (LoanFilter(status="CLOSED"), {"D"}),
    (LoanFilter(status="WRITTEN_OFF"), {"G"}),
    (LoanFilter(collector_id="col1"), {"A", "B", "F", "I"}),
    (LoanFilter(collector_id="col2"), {"C", "D", "H"}),
    (LoanFilter(collector_id="nobody"), set()),
    (LoanFilter(bucket="61-90", classification="NPA"), {"F"}),
    (LoanFilter(bucket="90+", status="ACTIVE"), {"E"}),
    (LoanFilter(classification="NPA", status="ACTIVE"), {"E", "F"}),
    (LoanFilter(collector_id="col1", bucket="1-30"), {"B", "I"}),
    (LoanFilter(collector_id="col1", classification="NPA"), {"F"}),
    (LoanFilter(collector_id="col2", status="CLOSED"), {"D"}),
    (LoanFilter(collector_id="col2", bucket="CURRENT", status="ACTIVE"), set()),
    (LoanFilter(collector_id="col1", bucket="61-90", classification="NPA", status="ACTIVE"), {"F"}),
    (LoanFilter(bucket="31-60", collector_id="col1"), set()),
]


def test_list_filters_by_bucket_classification_status_and_collector(book: Backend) -> None:
    # One book per backend, many listings: provisioning tables is what costs time here.
    for filters, expected in LIST_CASES:
        for limit in (100, 2):
            loan_ids = [i for page in _pages(book, filters, limit) for i in page]
            assert len(loan_ids) == len(set(loan_ids)), (filters, limit)
            assert set(loan_ids) == expected, (filters, limit)


def test_listed_loans_are_whole_loans(book: Backend) -> None:
    [loan] = book.loans.list(LoanFilter(classification="SMA-2"), 10, None).items
    assert loan == book.loans.get("H")
    assert loan.version == 1


@pytest.fixture
def big_book(backend: Backend) -> Backend:
    """25 loans: odd numbers col1, even col2; every third (from 0) 45 dpd, the rest 10 dpd."""
    for n in range(25):
        collector = "col1" if n % 2 else "col2"
        created(backend, imported_loan(f"L{n:03d}", dpd=10 if n % 3 else 45, collector_id=collector))
    return backend


def _pages(backend: Backend, filters: LoanFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = backend.loans.list(filters, limit, cursor)
        pages.append([loan.loan_id for loan in page.items])
        if page.next_cursor is None:
            return pages
        assert len(pages) < 50, "paging did not end"
        cursor = page.next_cursor


def _loan_ids(keep: Callable[[int], bool]) -> set[str]:
    return {f"L{n:03d}" for n in range(25) if keep(n)}


def test_paging_25_loans_by_7_visits_each_once(big_book: Backend) -> None:
    pages = _pages(big_book, LoanFilter(), 7)
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert sorted(i for p in pages for i in p) == sorted(_loan_ids(lambda n: True))


def test_paging_with_filters_visits_each_match_once(big_book: Backend) -> None:
    cases = [
        (LoanFilter(bucket="1-30"), _loan_ids(lambda n: n % 3 != 0)),
        (LoanFilter(collector_id="col1"), _loan_ids(lambda n: n % 2 == 1)),
        (LoanFilter(classification="SMA-1"), _loan_ids(lambda n: n % 3 == 0)),
        (LoanFilter(collector_id="col2", bucket="31-60"), _loan_ids(lambda n: n % 6 == 0)),
    ]
    for filters, expected in cases:
        pages = _pages(big_book, filters, 3)
        loan_ids = [i for p in pages for i in p]
        assert len(loan_ids) == len(set(loan_ids)), filters
        assert set(loan_ids) == expected, filters
        assert all(len(p) == 3 for p in pages[:-1]), filters


def test_no_cursor_after_a_page_that_ends_exactly_at_the_last_loan(backend: Backend) -> None:
    for n in range(21):
        created(backend, imported_loan(f"X{n:02d}"))
    assert [len(p) for p in _pages(backend, LoanFilter(), 7)] == [7, 7, 7]
    assert [len(p) for p in _pages(backend, LoanFilter(bucket="CURRENT"), 21)] == [21]
    assert [len(p) for p in _pages(backend, LoanFilter(), 100)] == [21]


def test_empty_listing_has_no_cursor(backend: Backend) -> None:
    page = backend.loans.list(LoanFilter(), 10, None)
    assert (list(page.items), page.next_cursor) == ([], None)


def _b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


TAMPERED = [
    "not a cursor",
    "%%%%",
    _b64([1, 2, 3]),
    _b64("L001"),
    _b64({"loan_id": {"N": "1"}}),
    _b64({"loan_id": {"S": ""}}),
    _b64({"loan_id": {"S": "L001"}, "extra": {"S": "x"}}),
    _b64({"audit_id": {"S": "0" * 26}, "day": {"S": "2025-06-13"}, "entity_id": {"S": "P1"}}),
    _b64({"after": "L001"}),
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
]


def test_tampered_loan_cursor_is_a_validation_error(big_book: Backend) -> None:
    for filters in (LoanFilter(), LoanFilter(bucket="1-30"), LoanFilter(collector_id="col1")):
        for cursor in TAMPERED:
            with pytest.raises(ValidationFailed):
                big_book.loans.list(filters, 5, cursor)


def test_loan_cursor_from_another_listing_is_a_validation_error(big_book: Backend) -> None:
    pairs = [
        (LoanFilter(bucket="1-30"), LoanFilter()),
        (LoanFilter(), LoanFilter(bucket="1-30")),
        (LoanFilter(collector_id="col1"), LoanFilter(bucket="1-30")),
        (LoanFilter(collector_id="col1"), LoanFilter(collector_id="col2")),
        (LoanFilter(bucket="1-30"), LoanFilter(bucket="31-60")),
        (LoanFilter(collector_id="col2", bucket="31-60"), LoanFilter(collector_id="col1", bucket="31-60")),
    ]
    for issued_for, used_for in pairs:
        cursor = big_book.loans.list(issued_for, 2, None).next_cursor
        assert cursor is not None
        with pytest.raises(ValidationFailed):
            big_book.loans.list(used_for, 2, cursor)


# --- audit -----------------------------------------------------------------------------------


@pytest.fixture
def trail(backend: Backend) -> list[AuditEntry]:
    """Audit entries over three IST days, oldest first, each a second after the previous."""
    written: list[AuditEntry] = []
    plan = [
        # (day offset from 2025-06-13, entity, action, actor)
        (0, "L1", Action.LOAN_CREATED, ADMIN),
        (0, "L2", Action.LOAN_CREATED, ADMIN),
        (0, "L1", Action.LOAN_UPDATED, MANAGER),
        (1, "L1", Action.FINANCIAL_GUARD_BLOCKED, MANAGER),
        (1, "L2", Action.LOAN_ASSIGNED, ADMIN),
        (1, "L3", Action.LOAN_CREATED, MANAGER),
        (2, "L1", Action.LOAN_ASSIGNED, MANAGER),
        (2, "L2", Action.LOAN_UPDATED, MANAGER),
        (2, "L3", Action.LOAN_UPDATED, ADMIN),
    ]
    for n, (day, entity_id, action, actor) in enumerate(plan):
        # 00:10 IST: still that IST day, though in UTC it is the evening before.
        move_clock(backend, dt.datetime(2025, 6, 13, 0, 10, tzinfo=IST) + dt.timedelta(days=day, seconds=n))
        e = entry(entity_id, action, actor, after={"n": n})
        if action is Action.FINANCIAL_GUARD_BLOCKED:
            e = dataclasses.replace(e, outcome=Outcome.DENIED, reason="protected fields: dpd")
        backend.audit.append(e)
        written.append(e)
    move_clock(backend, NOW)
    return written


def ids(entries: list[AuditEntry]) -> list[str]:
    return [e.audit_id for e in entries]


def _audit_matches(e: AuditEntry, f: AuditFilter) -> bool:
    """What a filter means, written out independently of both implementations."""
    return (
        (f.entity_id is None or e.entity_id == f.entity_id)
        and (f.actor is None or e.actor.sub == f.actor)
        and (f.action is None or e.action.value == f.action)
        and (f.from_day is None or e.day >= f.from_day)
        and (f.to_day is None or e.day <= f.to_day)
    )


def expected_for(entries: list[AuditEntry], filters: AuditFilter) -> list[str]:
    return [e.audit_id for e in reversed(entries) if _audit_matches(e, filters)]


def test_audit_entries_round_trip(backend: Backend, trail: list[AuditEntry]) -> None:
    listed = audit_of(backend, entity_id="L1", action="FINANCIAL_GUARD_BLOCKED")
    assert listed == [trail[3]]
    assert listed[0].day == "2025-06-14"
    assert trail[0].day == "2025-06-13"
    assert trail[0].at.startswith("2025-06-13T00:10:00")


def test_audit_unfiltered_is_newest_first(backend: Backend, trail: list[AuditEntry]) -> None:
    assert ids(audit_of(backend)) == [e.audit_id for e in reversed(trail)]


def test_audit_filters_by_entity_actor_and_action_newest_first(backend: Backend, trail: list[AuditEntry]) -> None:
    cases = [
        AuditFilter(entity_id="L1"),
        AuditFilter(entity_id="L3"),
        AuditFilter(actor="root"),
        AuditFilter(action="LOAN_CREATED"),
        AuditFilter(entity_id="L2", actor="meera"),
        AuditFilter(entity_id="L1", action="LOAN_ASSIGNED"),
        AuditFilter(actor="meera", action="LOAN_UPDATED"),
        AuditFilter(entity_id="L1", actor="meera", action="LOAN_UPDATED"),
        AuditFilter(entity_id="nope"),
    ]
    for filters in cases:
        listed = ids(audit_of(backend, **dataclasses.asdict(filters)))
        assert listed == expected_for(trail, filters), filters
    # The cases are not vacuous: each selects a proper, non-empty subset except the last.
    sizes = [len(expected_for(trail, f)) for f in cases]
    assert all(0 < n < len(trail) for n in sizes[:-1]) and sizes[-1] == 0


def test_audit_day_range_is_inclusive_ist_days(backend: Backend, trail: list[AuditEntry]) -> None:
    ranges = [
        ("2025-06-13", "2025-06-13"),
        ("2025-06-14", "2025-06-14"),
        ("2025-06-14", None),
        (None, "2025-06-14"),
        ("2025-06-13", "2025-06-15"),
        ("2025-06-16", None),
        ("2025-06-01", "2025-06-12"),
    ]
    others = [
        AuditFilter(),
        AuditFilter(entity_id="L1"),
        AuditFilter(actor="meera"),
        AuditFilter(action="LOAN_UPDATED"),
    ]
    for from_day, to_day in ranges:
        for other in others:
            filters = dataclasses.replace(other, from_day=from_day, to_day=to_day)
            listed = ids(audit_of(backend, **dataclasses.asdict(filters)))
            assert listed == expected_for(trail, filters), filters


def test_unfiltered_audit_without_from_looks_back_31_days(backend: Backend) -> None:
    move_clock(backend, NOW - dt.timedelta(days=31))
    old = entry("OLD")
    backend.audit.append(old)
    move_clock(backend, NOW - dt.timedelta(days=30))
    recent = entry("RECENT")
    backend.audit.append(recent)
    move_clock(backend, NOW)

    assert ids(audit_of(backend)) == [recent.audit_id]
    assert ids(audit_of(backend, from_day=old.day)) == [recent.audit_id, old.audit_id]
    assert ids(audit_of(backend, entity_id="OLD")) == [old.audit_id]


def _audit_pages(backend: Backend, filters: AuditFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = backend.audit.list(filters, limit, cursor)
        pages.append(ids(list(page.items)))
        if page.next_cursor is None:
            return pages
        assert len(pages) < 50, "paging did not end"
        cursor = page.next_cursor


@pytest.fixture
def long_trail(backend: Backend) -> list[AuditEntry]:
    """25 entries, five per IST day over 2025-06-11..15, alternating two loans; every third by meera."""
    written = []
    for n in range(25):
        move_clock(backend, dt.datetime(2025, 6, 11, 9, 0, tzinfo=IST) + dt.timedelta(days=n // 5, minutes=n))
        e = entry("P1" if n % 2 else "P2", Action.LOAN_UPDATED, ADMIN if n % 3 else MANAGER)
        backend.audit.append(e)
        written.append(e)
    move_clock(backend, NOW)
    return written


def test_audit_paging_visits_each_entry_once_newest_first(backend: Backend, long_trail: list[AuditEntry]) -> None:
    cases = [
        AuditFilter(),
        AuditFilter(action="LOAN_UPDATED"),
        AuditFilter(entity_id="P1"),
        AuditFilter(actor="root"),
        AuditFilter(entity_id="P2", actor="meera"),
        AuditFilter(from_day="2025-06-12", to_day="2025-06-14"),
        AuditFilter(entity_id="P1", from_day="2025-06-12", to_day="2025-06-14"),
    ]
    for filters in cases:
        expected = expected_for(long_trail, filters)
        assert expected, filters
        for limit in (1, 4, 7):
            pages = _audit_pages(backend, filters, limit)
            assert [i for p in pages for i in p] == expected, (filters, limit)
            assert all(len(p) == limit for p in pages[:-1]), (filters, limit)
            assert 1 <= len(pages[-1]) <= limit, (filters, limit)


def test_tampered_audit_cursor_is_a_validation_error(backend: Backend, long_trail: list[AuditEntry]) -> None:
    for filters in (AuditFilter(), AuditFilter(entity_id="P1"), AuditFilter(action="LOAN_UPDATED")):
        for cursor in TAMPERED:
            with pytest.raises(ValidationFailed):
                backend.audit.list(filters, 5, cursor)


def test_audit_cursor_from_another_listing_is_a_validation_error(
    backend: Backend, long_trail: list[AuditEntry]
) -> None:
    pairs = [
        (AuditFilter(entity_id="P1"), AuditFilter()),
        (AuditFilter(), AuditFilter(entity_id="P1")),
        (AuditFilter(entity_id="P1"), AuditFilter(entity_id="P2")),
        (AuditFilter(actor="root"), AuditFilter(action="LOAN_UPDATED")),
        (AuditFilter(actor="root"), AuditFilter(actor="meera")),
        # The same filters over another day range: the cursor points outside it.
        (AuditFilter(entity_id="P1"), AuditFilter(entity_id="P1", to_day="2025-06-12")),
        (AuditFilter(), AuditFilter(to_day="2025-06-12")),
        (AuditFilter(actor="root", to_day="2025-06-12"), AuditFilter(actor="root", from_day="2025-06-14")),
    ]
    for issued_for, used_for in pairs:
        cursor = backend.audit.list(issued_for, 2, None).next_cursor
        assert cursor is not None
        with pytest.raises(ValidationFailed):
            backend.audit.list(used_for, 2, cursor)


GARBAGE = [
    *("", "zzz", "0", "Z" * 26, "0" * 26, "col2", "31-60", "P2", "root"),
    *("2099-01-01", "1999-01-01", "2025-06-0x", "20250613", "2025-06-13"),
]


def tampered_variants(cursor: str) -> Iterator[str]:
    """The cursor with each string inside it replaced, in turn, by each garbage value: what a client
    that decodes and edits a cursor could send."""
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from paths(v, (*prefix, i))
        elif isinstance(node, str):
            yield prefix

    for path in list(paths(raw)):
        for value in GARBAGE:
            copy = json.loads(json.dumps(raw))
            node = copy
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
            yield _b64(copy)


def _matches(loan: Loan, filters: LoanFilter) -> bool:
    return (
        (filters.bucket is None or loan.delinquency.bucket.value == filters.bucket)
        and (filters.classification is None or loan.delinquency.classification.value == filters.classification)
        and (filters.status is None or loan.status.value == filters.status)
        and (filters.collector_id is None or loan.collector_id == filters.collector_id)
    )


def test_an_edited_loan_cursor_never_fails_otherwise_nor_widens_the_listing(big_book: Backend) -> None:
    for filters in (
        LoanFilter(),
        LoanFilter(bucket="1-30"),
        LoanFilter(collector_id="col1"),
        LoanFilter(collector_id="col1", bucket="31-60"),
    ):
        cursor = big_book.loans.list(filters, 2, None).next_cursor
        assert cursor is not None
        for variant in tampered_variants(cursor):
            try:
                page = big_book.loans.list(filters, 5, variant)
            except ValidationFailed:
                continue
            assert all(_matches(loan, filters) for loan in page.items), (filters, variant)


def test_an_edited_audit_cursor_never_fails_otherwise_nor_widens_the_listing(
    backend: Backend, long_trail: list[AuditEntry]
) -> None:
    for filters in (
        AuditFilter(from_day="2025-06-12", to_day="2025-06-14"),
        AuditFilter(entity_id="P1", from_day="2025-06-12", to_day="2025-06-14"),
        AuditFilter(actor="root", to_day="2025-06-14"),
        AuditFilter(action="LOAN_UPDATED", from_day="2025-06-12"),
    ):
        cursor = backend.audit.list(filters, 2, None).next_cursor
        assert cursor is not None
        for variant in tampered_variants(cursor):
            try:
                page = backend.audit.list(filters, 5, variant)
            except ValidationFailed:
                continue
            assert all(_audit_matches(e, filters) for e in page.items), (filters, variant)
