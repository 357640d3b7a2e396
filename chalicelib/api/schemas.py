"""Request bodies, validated strictly: unknown fields refused, paise only as JSON integers (a float,
string or bool is a 400 even if it looks whole), integers within 64 bits, dates only as ``YYYY-MM-DD``
and within the business date range (docs/api.md)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from chalicelib.domain.loan import LOAN_ID_PATTERN, Borrower
from chalicelib.domain.payment import UTR_PATTERN, PaymentMode, normalise_utr
from chalicelib.domain.users import MAX_PASSWORD_CHARS, USERNAME_PATTERN
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.services.users import NewUser, UserChanges

MAX_PRINCIPAL_PAISE = 1_000_000_000_000
"""₹1,000 crore: far above any retail loan; only there so absurd numbers are refused, not stored."""
FIRST_BUSINESS_DATE = dt.date(2000, 1, 1)
LAST_BUSINESS_DATE = dt.date(2099, 12, 31)
"""Every business date the API accepts, in a body or a query, lies in this range (400 otherwise)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

SPACES = " \t\r\n"
"""What is trimmed from the ends of free text: the ASCII spaces a form or a CSV leaves behind. Only
these, so the published pattern (:data:`_EDGES` at each end) says exactly what is accepted; Python's
``str.strip()`` would also remove characters a JSON Schema whitespace class does not match."""
_EDGES = r"[ \t\r\n]*"


def _trimmed(value: str) -> str:
    return value.strip(SPACES)


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be blank")
    return value


# Lengths and patterns are judged on the text as sent, then it is trimmed: a limit the contract
# publishes (maxLength 200) holds for what the client sends, with no hidden allowance for spaces.
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(_trimmed), AfterValidator(_not_blank)
]
LongText = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_trimmed)]
Phone = Annotated[str, StringConstraints(pattern=rf"^{_EDGES}\+?[0-9]{{10,15}}{_EDGES}$"), AfterValidator(_trimmed)]
_EMAIL_PART = "[^@ \t\r\n]+"
Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=rf"^{_EDGES}{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}{_EDGES}$"),
    AfterValidator(_trimmed),
]
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN.pattern)]
LoanId = Annotated[str, StringConstraints(pattern=LOAN_ID_PATTERN.pattern)]
Paise = Annotated[int, Field(strict=True, ge=0, le=MAX_PRINCIPAL_PAISE)]
Int64 = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
BusinessDate = Annotated[dt.date, Field(ge=FIRST_BUSINESS_DATE, le=LAST_BUSINESS_DATE)]


class StrictModel(BaseModel):
    # defer_build: a model's validator is built on its first use, not at import. A cold container then
    # pays for the models of the route it serves, not for every route's (docs/architecture.md, "Cold start").
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class BorrowerIn(StrictModel):
    name: Text
    phone: Phone
    email: Email | None = None
    address: LongText | None = None


class ScheduleRowIn(StrictModel):
    due_date: BusinessDate
    principal_paise: Paise
    interest_paise: Paise


class CreateLoanIn(StrictModel):
    """Either generated terms (rate, tenure, first due date) or an imported schedule, never both."""

    loan_id: LoanId | None = None
    borrower: BorrowerIn
    principal_paise: Annotated[int, Field(strict=True, ge=1, le=MAX_PRINCIPAL_PAISE)]
    disbursement_date: BusinessDate
    annual_rate_bps: Annotated[int, Field(strict=True, ge=0, le=10_000)] | None = None
    tenure_months: Annotated[int, Field(strict=True, ge=1, le=600)] | None = None
    first_due_date: BusinessDate | None = None
    schedule: Annotated[list[ScheduleRowIn], Field(min_length=1, max_length=600)] | None = None
    collector_id: Identifier | None = None
    branch: Text | None = None
    notes: LongText | None = None

    @model_validator(mode="after")
    def one_kind_of_schedule(self) -> CreateLoanIn:
        terms = {
            "annual_rate_bps": self.annual_rate_bps,
            "tenure_months": self.tenure_months,
            "first_due_date": self.first_due_date,
        }
        given = {k for k, v in terms.items() if v is not None}
        if self.schedule is not None:
            if given:
                raise ValueError(f"give either schedule or {', '.join(sorted(terms))}, not both")
        elif given != set(terms):
            missing = ", ".join(sorted(set(terms) - given))
            raise ValueError(f"missing {missing} (or give an imported schedule)")
        return self

    def to_command(self) -> NewLoan:
        """The service command for this validated body (the API and the CSV import both use it)."""
        terms = None
        if self.schedule is None:
            assert self.annual_rate_bps is not None and self.tenure_months is not None and self.first_due_date
            terms = GeneratedTerms(self.annual_rate_bps, self.tenure_months, self.first_due_date)
        return NewLoan(
            loan_id=self.loan_id,
            borrower=Borrower(**self.borrower.model_dump()),
            principal_paise=self.principal_paise,
            disbursement_date=self.disbursement_date,
            terms=terms,
            imported_schedule=[(r.due_date, r.principal_paise, r.interest_paise) for r in self.schedule or ()],
            collector_id=self.collector_id,
            branch=self.branch,
            notes=self.notes,
        )


class BorrowerPatchIn(StrictModel):
    name: Text | None = None
    phone: Phone | None = None
    email: Email | None = None
    address: LongText | None = None


class PatchLoanIn(StrictModel):
    borrower: BorrowerPatchIn | None = None
    notes: LongText | None = None

    def borrower_changes(self) -> dict[str, Any]:
        if self.borrower is None:
            return {}
        return {name: getattr(self.borrower, name) for name in self.borrower.model_fields_set}


class AssignIn(StrictModel):
    collector_id: Identifier


class TokenIn(StrictModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


def _utr(value: object) -> object:
    return normalise_utr(value) if isinstance(value, str) else value


Utr = Annotated[
    str,
    BeforeValidator(_utr),
    StringConstraints(pattern=UTR_PATTERN.pattern),
    # What a client may send, before normalise_utr trims and upper-cases it.
    WithJsonSchema({"type": "string", "pattern": rf"^{_EDGES}[A-Za-z0-9]{{6,35}}{_EDGES}$"}),
]


class PaymentIn(StrictModel):
    loan_id: LoanId
    utr: Utr
    amount_paise: Int64
    """Only the JSON type (and that it fits 64 bits) is checked here (400); the range is a business
    rule (422 AMOUNT_OUT_OF_RANGE)."""
    payment_date: BusinessDate
    mode: PaymentMode


def _reason_length(value: str) -> str:
    if len(value) < 3:
        raise ValueError("at least 3 characters besides spaces")
    return value


class ReverseIn(StrictModel):
    reason: Annotated[
        str, StringConstraints(min_length=3, max_length=500), AfterValidator(_trimmed), AfterValidator(_reason_length)
    ]


class RunDpdIn(StrictModel):
    business_date: BusinessDate | None = None
    """Defaults to the last completed business date (yesterday, IST)."""
    full_scan: bool = False


class StartReconciliationIn(StrictModel):
    """No fields: a run always checks the whole book. An empty body is accepted too."""


RoleName = Literal["admin", "manager", "collector", "auditor"]
Password = Annotated[str, StringConstraints(max_length=MAX_PASSWORD_CHARS)]
"""Only a bound here; the password policy (``domain.users.password_problems``) is the service's, so every
problem of a new user is listed in one answer."""
NewUsername = Annotated[str, StringConstraints(max_length=256)]
"""Checked against the username rule by the service, beside the password that must not contain it."""
Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN.pattern)]


class CreateUserIn(StrictModel):
    username: NewUsername
    password: Password
    role: RoleName
    display_name: Text | None = None
    branch: Text | None = None

    def to_command(self) -> NewUser:
        return NewUser(self.username, self.password, self.role, self.display_name, self.branch)


class PatchUserIn(StrictModel):
    """Only the fields given change. ``display_name`` and ``branch`` may be null (cleared); the others
    may not: a null role or password means nothing sensible."""

    display_name: Text | None = None
    branch: Text | None = None
    role: RoleName | None = None
    active: bool | None = None
    password: Password | None = None
    reassign_to: Username | None = None

    @model_validator(mode="after")
    def something_to_change(self) -> PatchUserIn:
        nulls = sorted(
            name
            for name in ("role", "active", "password", "reassign_to")
            if name in self.model_fields_set and getattr(self, name) is None
        )
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        if not self.model_fields_set:
            raise ValueError("nothing to change")
        return self

    def to_changes(self) -> UserChanges:
        given = self.model_fields_set
        return UserChanges(
            display_name=self.display_name,
            display_name_given="display_name" in given,
            branch=self.branch,
            branch_given="branch" in given,
            role=self.role,
            active=self.active,
            password=self.password,
            reassign_to=self.reassign_to,
        )
