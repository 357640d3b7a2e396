"""What each route answers, as pydantic models: the published contract's response schemas
(docs/api.md, "The contract"). ``chalicelib.api.openapi`` turns them into the OpenAPI document.

The views build their answers as plain dicts (``services.views``): building a model per answer would
cost every request time for nothing the client sees. These models are the promise those dicts keep;
the contract tests hold every answer the API gives to them (schemathesis checks each response against
the document, and ``tests/integration/test_openapi.py`` checks the examples). ``extra="forbid"`` makes
the document say ``additionalProperties: false``, so a field added to a view without being added here
is a contract failure rather than a silent change.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.audit import Action, Outcome
from chalicelib.domain.delinquency import Bucket, Classification
from chalicelib.domain.flags import FlagName, FlagSource
from chalicelib.domain.loan import LoanStatus
from chalicelib.domain.payment import PaymentMode, PaymentStatus
from chalicelib.domain.reconciliation import MismatchKind, ReconciliationStatus
from chalicelib.domain.reminders import ReminderKind, ReminderStatus
from chalicelib.domain.roles import Role
from chalicelib.domain.runs import RunOutcome, RunStatus

Paise = Annotated[int, Field(ge=0, description="Indian rupees in paise (1 ₹ = 100 paise), a JSON integer.")]
Count = Annotated[int, Field(ge=0)]
Timestamp = Annotated[dt.datetime, Field(description="ISO-8601 with offset (+05:30 for IST).")]
BusinessDate = Annotated[dt.date, Field(description="An IST business date, YYYY-MM-DD.")]
Cursor = Annotated[str | None, Field(description="Pass as `cursor` for the next page; null on the last page.")]


class Out(BaseModel):
    # Read only to write the OpenAPI document: built when it is first written, not at import.
    model_config = ConfigDict(extra="forbid", defer_build=True)


# --- errors ----------------------------------------------------------------------------------------


class ErrorBody(Out):
    code: str = Field(description="Stable machine-readable code, e.g. VALIDATION_ERROR, DUPLICATE_UTR.")
    message: str = Field(description="For people; never carries internal names or stack traces.")
    details: Any = Field(
        description="Code-specific: for VALIDATION_ERROR a list of {field, message, type?}; for "
        "DUPLICATE_UTR the original payment_id; otherwise an object or null."
    )


class ErrorOut(Out):
    """Every 4xx and 5xx answer."""

    error: ErrorBody


# --- health and auth ---------------------------------------------------------------------------------


class HealthChecks(Out):
    dynamodb: Literal["ok", "fail"]
    ssm: Literal["ok", "fail"]


class HealthOut(Out):
    status: Literal["ok", "fail"]
    checks: HealthChecks
    version: str
    stage: str


class TokenOut(Out):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: Annotated[int, Field(gt=0, description="Seconds until the token expires.")]
    sub: str
    role: Role


# --- loans ---------------------------------------------------------------------------------------------


class BorrowerOut(Out):
    name: str
    phone: str
    email: str | None
    address: str | None


class InstalmentOut(Out):
    seq: Annotated[int, Field(ge=1)]
    due_date: BusinessDate
    principal_paise: Paise
    interest_paise: Paise
    paid_principal_paise: Paise
    paid_interest_paise: Paise


class LegalOut(Out):
    escalated: bool
    escalated_on: BusinessDate | None


class LoanOut(Out):
    loan_id: str
    borrower: BorrowerOut
    status: LoanStatus
    principal_paise: Paise
    annual_rate_bps: Annotated[int, Field(ge=0)] | None = Field(description="Null for an imported schedule.")
    tenure_months: Annotated[int, Field(ge=1)] | None
    disbursement_date: BusinessDate
    outstanding_principal_paise: Paise
    overdue_paise: Paise
    dpd: Count
    bucket: Bucket
    classification: Classification
    npa_since: BusinessDate | None
    dpd_as_of: BusinessDate = Field(description="The business date dpd, bucket and classification hold for.")
    legal: LegalOut
    collector_id: str | None
    branch: str | None
    notes: str | None
    schedule: list[InstalmentOut]
    created_at: Timestamp
    updated_at: Timestamp
    version: Annotated[int, Field(ge=1)]


class LoanPage(Out):
    items: list[LoanOut]
    next_cursor: Cursor


class ReminderOut(Out):
    reminder_id: str
    kind: ReminderKind
    seq: Annotated[int, Field(ge=1)]
    due_date: BusinessDate
    business_date: BusinessDate = Field(description="The day-end date whose run queued it.")
    send_after: Timestamp
    status: ReminderStatus
    reason: str | None
    attempts: Count
    sent_at: Timestamp | None


class RemindersOut(Out):
    items: list[ReminderOut]


# --- payments -------------------------------------------------------------------------------------------


class AllocationLineOut(Out):
    seq: Annotated[int, Field(ge=1)]
    interest_paise: Paise
    principal_paise: Paise


class AllocationOut(Out):
    interest_paise: Paise
    principal_paise: Paise
    instalments: list[AllocationLineOut]


class PaymentOut(Out):
    payment_id: str
    utr: str
    loan_id: str
    amount_paise: Paise
    payment_date: BusinessDate
    mode: PaymentMode
    status: PaymentStatus
    allocation: AllocationOut = Field(description="Where the money sits now (a reversal re-allocates).")
    posted_at: Timestamp
    posted_by: str
    reversed_at: Timestamp | None
    reversed_by: str | None
    reversal_reason: str | None


class LoanAfterPaymentOut(Out):
    outstanding_principal_paise: Paise
    overdue_paise: Paise
    dpd: Count
    bucket: Bucket
    classification: Classification
    status: LoanStatus


class PostedPaymentOut(PaymentOut):
    loan: LoanAfterPaymentOut


class PaymentPage(Out):
    items: list[PaymentOut]
    next_cursor: Cursor


# --- users and reassignment ------------------------------------------------------------------------------


class UserOut(Out):
    username: str
    role: Role
    display_name: str | None
    branch: str | None
    active: bool
    created_at: Timestamp
    updated_at: Timestamp


class UserPage(Out):
    items: list[UserOut]
    next_cursor: Cursor


class ReassignmentOut(Out):
    moved: Count
    already: Count = Field(description="Loans that were with the new collector already.")
    remaining: Count
    done: bool


class OffboardedUserOut(UserOut):
    """A deactivation with ``reassign_to``, every loan moved."""

    reassignment: ReassignmentOut


class OffboardingPendingOut(Out):
    """202: loans remain to move; the user is still active and unchanged. Send the same request again."""

    user: UserOut
    reassignment: ReassignmentOut
    message: str


# --- audit, jobs, escalations, flags -------------------------------------------------------------------


class ActorOut(Out):
    sub: str
    role: str


class AuditEntryOut(Out):
    audit_id: str
    at: Timestamp
    actor: ActorOut
    source_ip: str | None
    request_id: str | None
    action: Action
    entity_type: str
    entity_id: str
    before: Any
    after: Any
    outcome: Outcome
    reason: str | None


class AuditPage(Out):
    items: list[AuditEntryOut]
    next_cursor: Cursor


class RunOut(Out):
    business_date: BusinessDate
    status: RunStatus
    trigger: str
    mode: str | None
    started_at: Timestamp
    finished_at: Timestamp | None
    loans_scanned: Count
    loans_updated: Count
    escalated: Count
    pending_escalation: Count
    errors: Count
    last_error: str | None


RunList = list[RunOut]


class RunStartOut(Out):
    outcome: RunOutcome | Literal["DISPATCHED"] = Field(
        description="DISPATCHED: handed to the job's own function (AWS); follow it in the history."
    )
    run: RunOut | None


class CaseOut(Out):
    case_id: str
    loan_id: str
    status: str
    escalated_on: BusinessDate
    dpd: Count
    overdue_paise: Paise
    outstanding_principal_paise: Paise
    borrower_name: str
    collector_id: str | None
    branch: str | None
    created_at: Timestamp


class CasePage(Out):
    items: list[CaseOut]
    next_cursor: Cursor


class FlagOut(Out):
    name: FlagName
    enabled: bool
    source: FlagSource
    value: str | None = Field(description="The parameter's text as stored; null when it is missing or unreadable.")


class FlagsOut(Out):
    items: list[FlagOut]
    cache_seconds: Count


# --- dashboard, reconciliation, scores -----------------------------------------------------------------


class LoanCountsOut(Out):
    total: Count
    active: Count


class CollectionsOut(Out):
    today_paise: Paise
    today_count: Count
    mtd_paise: Paise


class BucketFigures(Out):
    count: Count
    outstanding_principal_paise: Paise


class SummaryOut(Out):
    as_of: BusinessDate = Field(description="The last completed business date the figures hold for.")
    today: BusinessDate
    scope: str = Field(description="`book`, `collector:<id>` or `branch:<name>`.")
    loans: LoanCountsOut
    outstanding_principal_paise: Paise
    overdue_paise: Paise
    collections: CollectionsOut
    buckets: dict[Bucket, BucketFigures]
    classification: dict[Classification, Count]
    avg_dpd: Annotated[float, Field(ge=0, description="Mean dpd over loans with dpd > 0.")]
    legal_escalated: Count


class MismatchOut(Out):
    kind: MismatchKind
    entity_id: str
    expected: Any
    actual: Any


class ReconciliationOut(Out):
    run_id: str
    status: ReconciliationStatus
    trigger: str
    as_of: BusinessDate
    started_at: Timestamp
    finished_at: Timestamp | None
    loans_checked: Count
    payments_checked: Count
    claims_checked: Count
    mismatch_count: Count
    mismatches: list[MismatchOut]
    unverified: list[str]
    error: str | None


class ScoreRowOut(Out):
    collector_id: str
    loans: Count
    amount_due_paise: Paise
    collected_paise: Paise
    collection_efficiency: Annotated[float, Field(ge=0, description="Collected ÷ due in the month.")]
    cured: Count
    rolled_forward: Count
    score: Annotated[int, Field(ge=0, le=100)]


class ScoresOut(Out):
    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    enabled: bool
    as_of: BusinessDate | None = Field(description="The last business date a scoring pass covered.")
    frozen: bool
    items: list[ScoreRowOut]


class OpenApiOut(BaseModel):
    """The OpenAPI document itself (``GET /api/v1/openapi.json``); described only at its top level."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    openapi: Literal["3.1.0"]
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
