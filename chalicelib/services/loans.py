"""Loan use cases: create, read, list, contact updates behind the financial guard, assignment.

Every change is stored with its audit entry in one transaction by the repository; every refusal of
the guard is audited on its own (there is no change to go with it).
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from chalicelib import clock
from chalicelib.domain.audit import Action, AuditEntry
from chalicelib.domain.errors import Conflict, DomainError, FinancialFieldProtected, NotFound, ValidationFailed
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, initial_delinquency, reassess
from chalicelib.domain.roles import MANAGE_LOANS, Role
from chalicelib.domain.schedule import Instalment, generate_schedule, import_schedule
from chalicelib.retry import OPTIMISTIC_WRITE, retry
from chalicelib.services.context import RequestContext
from chalicelib.services.denials import DenialRecorder
from chalicelib.services.ids import new_loan_id
from chalicelib.services.ports import AuditLog, LoanFilter, LoanRepository, Metrics, Page, UserStore
from chalicelib.services.views import borrower_dict, loan_dict

T = TypeVar("T")


@dataclass(frozen=True)
class GeneratedTerms:
    annual_rate_bps: int
    tenure_months: int
    first_due_date: dt.date


@dataclass(frozen=True)
class NewLoan:
    borrower: Borrower
    principal_paise: int
    disbursement_date: dt.date
    terms: GeneratedTerms | None = None
    imported_schedule: Sequence[tuple[dt.date, int, int]] | None = None
    loan_id: str | None = None
    collector_id: str | None = None
    branch: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class ContactChanges:
    """Only the keys present in the request are applied (merge); ``None`` clears an optional field."""

    borrower: dict[str, str | None]
    notes: str | None
    notes_given: bool


@dataclass
class LoanService:
    loans: LoanRepository
    audit: AuditLog
    users: UserStore
    metrics: Metrics
    new_loan_id: Callable[[], str] = new_loan_id
    evaluated_through: Callable[[], dt.date | None] = lambda: None
    """The latest business date a day-end run completed. The run writes only loans whose bucket,
    classification or escalation changed; every other loan is shown as of that date by deriving its
    dpd from the schedule here, with the same rules the run applies."""

    def __post_init__(self) -> None:
        self.denials = DenialRecorder(self.audit, self.metrics)

    def present(self, loan: Loan) -> Loan:
        """The loan as of the latest completed run (or its own later evaluation by a payment)."""
        through = self.evaluated_through()
        if through is None or loan.status is not LoanStatus.ACTIVE or through <= loan.delinquency.as_of:
            return loan
        return reassess(loan, through)

    def _require_collector(self, collector_id: str | None) -> None:
        if collector_id is None:
            return
        user = self.users.get(collector_id)
        if user is None or user.role != Role.COLLECTOR.value or not user.active:
            raise ValidationFailed(
                "collector_id does not name an active collector",
                [{"field": "collector_id", "message": f"no active collector {collector_id!r}"}],
            )

    def create(self, ctx: RequestContext, cmd: NewLoan) -> Loan:
        """Create a loan with a generated or imported schedule, showing its delinquency as of the last
        completed business date (an imported loan can be overdue from the start)."""
        ctx.require(MANAGE_LOANS)
        return self.loans.create(*self._new_loan(ctx, cmd))

    def create_many(self, ctx: RequestContext, cmds: Sequence[NewLoan]) -> builtins.list[Loan | DomainError]:
        """:meth:`create` for many loans at once (the bulk import): each held to the same rules and
        answered in its place, with the stored loan or the error that refused it (``LoanExists`` for an
        id stored before; ``ValidationFailed`` for an id given earlier in ``cmds``, which may yet fail
        to be stored). The loans accepted are written several to a transaction; a storage failure
        answers only the loans of the transaction it stopped."""
        ctx.require(MANAGE_LOANS)
        answers: builtins.list[Loan | DomainError | None] = []
        accepted: builtins.list[tuple[int, tuple[Loan, AuditEntry]]] = []
        ids: set[str] = set()
        for cmd in cmds:
            try:
                new = self._new_loan(ctx, cmd)
                loan_id = new[0].loan_id
                if loan_id in ids:
                    raise ValidationFailed(
                        f"loan_id {loan_id} appears twice in one batch",
                        [{"field": "loan_id", "message": f"{loan_id} appears earlier in this batch"}],
                    )
            except DomainError as refused:
                answers.append(refused)
                continue
            ids.add(loan_id)
            accepted.append((len(answers), new))
            answers.append(None)
        stored = self.loans.create_many([new for _, new in accepted])
        for (place, _), answer in zip(accepted, stored, strict=True):
            answers[place] = answer
        return [answer for answer in answers if answer is not None]

    def _new_loan(self, ctx: RequestContext, cmd: NewLoan) -> tuple[Loan, AuditEntry]:
        """The loan ``cmd`` asks for and its ``LOAN_CREATED`` entry, once every rule holds."""
        frozen_schedule = _schedule_for(cmd)
        self._require_collector(cmd.collector_id)
        now = clock.now_iso()
        loan = Loan(
            loan_id=cmd.loan_id or self.new_loan_id(),
            borrower=cmd.borrower,
            status=LoanStatus.ACTIVE,
            principal_paise=cmd.principal_paise,
            disbursement_date=cmd.disbursement_date,
            schedule=frozen_schedule,
            delinquency=initial_delinquency(frozen_schedule, clock.last_completed_business_date()),
            annual_rate_bps=cmd.terms.annual_rate_bps if cmd.terms else None,
            collector_id=cmd.collector_id,
            branch=cmd.branch,
            notes=cmd.notes,
            created_at=now,
            updated_at=now,
        )
        stored_view = loan_dict(dataclasses.replace(loan, version=1))
        return loan, ctx.loan_audit(Action.LOAN_CREATED, loan.loan_id, None, stored_view)

    def get(self, ctx: RequestContext, loan_id: str) -> Loan:
        """A loan the caller may see, as of the latest completed run (:meth:`present`)."""
        return self.present(self.stored(ctx, loan_id))

    def stored(self, ctx: RequestContext, loan_id: str) -> Loan:
        """A loan the caller may see, exactly as stored: what every write starts from, so that its
        audit entries' ``before`` is the stored state and the loan's trail chains. Collectors get 404
        for loans not assigned to them, exactly as for loans that do not exist, so ids cannot be
        probed."""
        return self.visible(ctx, loan_id, self.loans.get(loan_id))

    def visible(self, ctx: RequestContext, loan_id: str, loan: Loan | None) -> Loan:
        """``loan`` (read as stored) if the caller may see it; NotFound otherwise (:meth:`stored`)."""
        if loan is None or (ctx.is_collector and loan.collector_id != ctx.actor.sub):
            raise NotFound(f"loan {loan_id} not found")
        return loan

    def list(self, ctx: RequestContext, filters: LoanFilter, limit: int, cursor: str | None) -> Page[Loan]:
        if ctx.is_collector:
            if filters.collector_id not in (None, ctx.actor.sub):
                return Page([], None)
            filters = dataclasses.replace(filters, collector_id=ctx.actor.sub)
        page = self.loans.list(filters, limit, cursor)
        return Page([self.present(loan) for loan in page.items], page.next_cursor)

    def refuse_financial_change(self, ctx: RequestContext, loan_id: str, body: Any, paths: builtins.list[str]) -> None:
        """Record and refuse an attempt to write protected fields; always raises."""
        reason = "protected fields: " + ", ".join(paths)
        self.denials.record(ctx, Action.FINANCIAL_GUARD_BLOCKED, "loan", loan_id, body, reason)
        self.metrics.count("FinancialGuardTriggered")
        raise FinancialFieldProtected(
            "financial fields cannot be changed through this API; the whole request was refused",
            {"fields": paths},
        )

    def update_contact(self, ctx: RequestContext, loan_id: str, changes: ContactChanges) -> Loan:
        """Merge borrower contact data and notes; nothing else on a loan is writable here. A merge
        re-applied to a freshly read loan is still the same change, so a lost race is simply retried."""
        ctx.require(MANAGE_LOANS)

        def attempt() -> Loan:
            loan = self.stored(ctx, loan_id)
            updated = _with_contact(loan, changes)
            if updated == loan:
                return self.present(loan)
            updated = dataclasses.replace(updated, updated_at=clock.now_iso())
            before = {"borrower": borrower_dict(loan), "notes": loan.notes}
            after = {"borrower": borrower_dict(updated), "notes": updated.notes}
            entry = ctx.loan_audit(Action.LOAN_UPDATED, loan_id, before, after)
            return self.present(self.loans.update(loan, updated, entry))

        return retry_loan_write(attempt, f"loan {loan_id} is being changed by others; try again")

    def assign(self, ctx: RequestContext, loan_id: str, collector_id: str) -> Loan:
        ctx.require(MANAGE_LOANS)
        self._require_collector(collector_id)

        def attempt() -> Loan:
            loan = self.stored(ctx, loan_id)
            if loan.collector_id == collector_id:
                return self.present(loan)
            return self.present(self.loans.update(loan, *_assignment(ctx, loan, collector_id)))

        return retry_loan_write(attempt, f"loan {loan_id} is being changed by others; try again")

    def reassign(
        self, ctx: RequestContext, loan_id: str, collector_id: str, only_if: Callable[[Loan], bool] | None = None
    ) -> bool | None:
        """One loan of a bulk reassignment (``services/reassignment.py``), read first: :meth:`assign`'s
        write, for a caller that has checked ``collector_id`` with :meth:`_require_collector` once for
        all its loans rather than once per loan, and that needs to know what happened. The same write
        as :meth:`assign`: the loan under its version condition with its ``LOAN_ASSIGNED`` entry in one
        transaction, retried under ``OPTIMISTIC_WRITE``. ``only_if`` is asked on every attempt's loan,
        so a loan that changed after the caller picked it (closed, or given to someone else) is left
        alone. True: this call moved the loan; False: it was with ``collector_id`` already; None:
        ``only_if`` refused it. Nothing is written unless True."""
        ctx.require(MANAGE_LOANS)

        def attempt() -> bool | None:
            loan = self.stored(ctx, loan_id)
            if loan.collector_id == collector_id:
                return False
            if not _to_move(loan, collector_id, only_if):
                return None
            self.loans.update(loan, *_assignment(ctx, loan, collector_id))
            return True

        return retry_loan_write(attempt, f"loan {loan_id} is being changed by others; try again")

    def reassign_many(
        self,
        ctx: RequestContext,
        listed: Sequence[Loan],
        collector_id: str,
        only_if: Callable[[Loan], bool] | None = None,
    ) -> builtins.list[bool | None]:
        """:meth:`reassign` for many loans at once, each answered in its place, from the copies the
        caller just listed or read (distinct loans), which save each loan to move its read. The loans
        whose copy says they are to move are written several to a transaction
        (``LoanRepository.update_many``: each under its own version condition with its
        ``LOAN_ASSIGNED`` entry, one counter addition per scope): about a third of DynamoDB's work per
        loan of a transaction each. Every other loan goes through :meth:`reassign`, which reads it
        before deciding: one whose copy was out of date (its version condition failed), one whose
        transaction other writers kept contended, and one whose copy says not to move it (a decision
        not to write is only ever taken on a loan read, never on a listed copy). A storage failure is
        raised, as :meth:`reassign` raises it, after the loans written before it: the same call sent
        again finds them with ``collector_id``."""
        ctx.require(MANAGE_LOANS)
        to_move = [loan for loan in listed if _to_move(loan, collector_id, only_if)]
        answers = self.loans.update_many([(loan, *_assignment(ctx, loan, collector_id)) for loan in to_move])
        failure = next((a for a in answers if isinstance(a, DomainError) and not isinstance(a, Conflict)), None)
        if failure is not None:
            raise failure
        moved = {answer.loan_id for answer in answers if isinstance(answer, Loan)}
        return [
            True if loan.loan_id in moved else self.reassign(ctx, loan.loan_id, collector_id, only_if)
            for loan in listed
        ]


def _to_move(loan: Loan, collector_id: str, only_if: Callable[[Loan], bool] | None) -> bool:
    """Whether a reassignment to ``collector_id`` writes ``loan``: not with it already, and not
    refused by the caller's ``only_if``."""
    return loan.collector_id != collector_id and (only_if is None or only_if(loan))


def _assignment(ctx: RequestContext, loan: Loan, collector_id: str) -> tuple[Loan, AuditEntry]:
    """The one way a loan changes collector, for a single assignment and a bulk move alike: the loan
    and its LOAN_ASSIGNED entry, written together under the loan's version."""
    updated = dataclasses.replace(loan, collector_id=collector_id, updated_at=clock.now_iso())
    entry = ctx.loan_audit(
        Action.LOAN_ASSIGNED, loan.loan_id, {"collector_id": loan.collector_id}, {"collector_id": collector_id}
    )
    return updated, entry


def _schedule_for(cmd: NewLoan) -> tuple[Instalment, ...]:
    """The loan's schedule, generated from its terms or imported as given; ``InvalidSchedule`` if unacceptable."""
    if cmd.terms is not None:
        schedule = generate_schedule(
            cmd.principal_paise,
            cmd.terms.annual_rate_bps,
            cmd.terms.tenure_months,
            cmd.disbursement_date,
            cmd.terms.first_due_date,
        )
    else:
        schedule = import_schedule(cmd.principal_paise, cmd.disbursement_date, cmd.imported_schedule or ())
    return tuple(schedule)


def _with_contact(loan: Loan, changes: ContactChanges) -> Loan:
    """The loan with ``changes`` merged in; a borrower must keep a name and a phone (400 otherwise)."""
    merged = {**borrower_dict(loan), **changes.borrower}
    if not merged.get("name") or not merged.get("phone"):
        raise ValidationFailed("borrower name and phone cannot be removed")
    return dataclasses.replace(
        loan,
        borrower=Borrower(**merged),
        notes=changes.notes if changes.notes_given else loan.notes,
    )


def retry_loan_write(attempt: Callable[[], T], busy: str) -> T:
    """Run one optimistic attempt (read the loan, decide, write if unchanged) under the ``OPTIMISTIC_WRITE``
    policy of ``chalicelib.retry`` until no concurrent write to the same loan gets in between: a
    version conflict means another write won, so the attempt reads the loan again and decides again.
    When the policy's attempts are spent the client gets 409 CONFLICT saying ``busy``; nothing was
    written. Every loan write of the services goes through here (contact, assignment, payments)."""
    return retry(OPTIMISTIC_WRITE, attempt, retry_on=Conflict, exhausted=lambda: Conflict(busy))
