"""Loan endpoints: create, read, list, contact updates behind the financial guard, assignment."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api.http import Call, created, endpoint
from chalicelib.api.operations import PAGING, QueryParam, enum_param
from chalicelib.api.paging import page_params
from chalicelib.api.schemas import IDENTIFIER_PATTERN, AssignIn, CreateLoanIn, PatchLoanIn
from chalicelib.domain.delinquency import Bucket, Classification
from chalicelib.domain.errors import Conflict, FinancialFieldProtected, InvalidSchedule, LoanExists, ValidationFailed
from chalicelib.domain.guard import protected_among
from chalicelib.domain.loan import LoanStatus
from chalicelib.domain.roles import MANAGE_LOANS
from chalicelib.services.loans import ContactChanges
from chalicelib.services.ports import LoanFilter
from chalicelib.services.views import loan_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)

_FILTER_VALUES: dict[str, frozenset[str]] = {
    "bucket": frozenset(b.value for b in Bucket),
    "classification": frozenset(c.value for c in Classification),
    "status": frozenset(s.value for s in LoanStatus),
}

LIST_QUERY = (
    enum_param("bucket", _FILTER_VALUES["bucket"], "Only loans in this DPD bucket."),
    enum_param("classification", _FILTER_VALUES["classification"], "Only loans with this classification."),
    enum_param("status", _FILTER_VALUES["status"], "Only loans with this status."),
    QueryParam(
        "collector_id",
        {"type": "string", "pattern": IDENTIFIER_PATTERN.pattern},
        "Only this collector's loans (a collector always sees only their own).",
    ),
    *PAGING,
)


@endpoint(
    bp,
    "/api/v1/loans",
    methods=("POST",),
    roles=MANAGE_LOANS,
    summary="Create a loan: a generated EMI schedule, or an imported one",
    body=CreateLoanIn,
    answers={201: "LoanOut"},
    errors=(LoanExists, InvalidSchedule),
    tag="loans",
)
def create_loan(call: Call) -> Response:
    """Give `annual_rate_bps`, `tenure_months` and `first_due_date` for a monthly reducing-balance EMI
    schedule, or `schedule` to import one as given (never both). The loan shows its delinquency as of
    the last completed business date at once. `collector_id` must name an active collector (400)."""
    cmd = call.parse(CreateLoanIn).to_command()
    return created(loan_dict(services().loans.create(call.ctx, cmd)))


@endpoint(
    bp,
    "/api/v1/loans",
    methods=("GET",),
    summary="List loans, filtered and paged",
    query=LIST_QUERY,
    answers={200: "LoanPage"},
    tag="loans",
)
def list_loans(call: Call) -> dict[str, Any]:
    """A collector sees only the loans assigned to them, whatever the filters say."""
    params = call.query()
    for name, allowed in _FILTER_VALUES.items():
        if name in params and params[name] not in allowed:
            raise ValidationFailed(
                f"unknown {name}", [{"field": name, "message": "one of " + ", ".join(sorted(allowed))}]
            )
    collector_id = params.get("collector_id") or None
    if collector_id is not None and not IDENTIFIER_PATTERN.fullmatch(collector_id):
        raise ValidationFailed("unknown collector_id", [{"field": "collector_id", "message": "not a username"}])
    limit, cursor = page_params(params)
    filters = LoanFilter(
        bucket=params.get("bucket"),
        classification=params.get("classification"),
        status=params.get("status"),
        collector_id=collector_id,
    )
    page = services().loans.list(call.ctx, filters, limit, cursor)
    return {"items": [loan_dict(loan) for loan in page.items], "next_cursor": page.next_cursor}


@endpoint(
    bp,
    "/api/v1/loans/{loan_id}",
    methods=("GET",),
    summary="Read a loan with its schedule and delinquency",
    answers={200: "LoanOut"},
    tag="loans",
)
def get_loan(call: Call, loan_id: str) -> dict[str, Any]:
    """404 also for a loan a collector is not assigned to."""
    return loan_dict(services().loans.get(call.ctx, loan_id))


@endpoint(
    bp,
    "/api/v1/loans/{loan_id}/reminders",
    methods=("GET",),
    summary="A loan's borrower reminders, queued and sent",
    answers={200: "RemindersOut"},
    tag="loans",
)
def list_loan_reminders(call: Call, loan_id: str) -> dict[str, Any]:
    """Whoever may see the loan may see its reminders (a collector: only on their own loans)."""
    loan = services().loans.stored(call.ctx, loan_id)
    return {"items": services().reminders.for_loan(loan.loan_id)}


@endpoint(
    bp,
    "/api/v1/loans/{loan_id}",
    methods=("PATCH",),
    roles=MANAGE_LOANS,
    check_roles_in_view=True,
    summary="Change a borrower's contact data or the notes (a merge)",
    body=PatchLoanIn,
    answers={200: "LoanOut"},
    errors=(FinancialFieldProtected, Conflict),
    tag="loans",
)
def patch_loan(call: Call, loan_id: str) -> dict[str, Any]:
    """Fields not named keep their values. A body naming any financial field (dpd, bucket, status,
    classification, schedule, any `*_paise`, npa_since, legal, dpd_as_of, version: any letter case, any
    depth) is refused whole with 403 FINANCIAL_FIELD_PROTECTED, for every role, and audited."""
    # The guard looks at the body before anything else, for every role: a collector trying to rewrite
    # dpd is exactly the attempt the audit trail must show. It sees every key as written — in an array
    # body, or repeated in one object where only the last value would survive parsing — so a protected
    # field cannot hide behind a harmless duplicate. Whatever else is wrong with the body (a repeated
    # key, NaN) is judged after the guard and the role check: a 400, and nothing is applied.
    document = call.document()
    paths = protected_among(document.key_paths)
    loans = services().loans
    if paths:
        loans.refuse_financial_change(call.ctx, loan_id, document.attempted(), paths)
    call.ctx.require(MANAGE_LOANS)
    body = call.parse(PatchLoanIn)
    changes = ContactChanges(
        borrower=body.borrower_changes(), notes=body.notes, notes_given="notes" in body.model_fields_set
    )
    return loan_dict(loans.update_contact(call.ctx, loan_id, changes))


@endpoint(
    bp,
    "/api/v1/loans/{loan_id}/assign",
    methods=("POST",),
    roles=MANAGE_LOANS,
    summary="Assign a loan to a collector",
    body=AssignIn,
    answers={200: "LoanOut"},
    errors=(Conflict,),
    tag="loans",
)
def assign_loan(call: Call, loan_id: str) -> dict[str, Any]:
    """`collector_id` must name an active collector (400)."""
    body = call.parse(AssignIn)
    return loan_dict(services().loans.assign(call.ctx, loan_id, body.collector_id))
