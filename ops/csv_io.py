"""Loans in and out as CSV: the bulk import of a loan book and the portfolio export.

Import file (UTF-8, comma separated, a header row naming the columns, in any order):

    column              required  meaning
    loan_id             yes       the lender's id, ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``; makes re-runs safe
    borrower_name       yes       borrower's name
    phone               yes       10-15 digits, optional leading +
    email               no        borrower's e-mail
    address             no        borrower's address
    principal_paise     yes       whole paise (₹1,000 = 100000); no decimal point, no grouping commas
    annual_rate_bps     yes       annual interest in basis points (12 % = 1200), 0..10000
    tenure_months       yes       number of monthly instalments, 1..600
    disbursement_date   yes       YYYY-MM-DD
    first_due_date      yes       YYYY-MM-DD, after disbursement_date
    collector_id        no        an active user with role collector
    branch              no        branch name

Every loan gets the generated reducing-balance EMI schedule (imported schedules go through the API).
An empty cell is an absent value. Optional columns may be left out of the header; unknown columns,
or required ones missing, refuse the whole file before anything is stored.

Each row is one ``POST /api/v1/loans`` body and is held to exactly the API's rules: the cells are
typed as JSON would carry them (a cell that is a number becomes a JSON number, anything else stays a
string, so ``1500.50`` paise is refused as "not a valid integer" just as the API refuses it), the body
is validated by :class:`chalicelib.api.schemas.CreateLoanIn`, and the loan is created by
:meth:`LoanService.create_many`, which applies the schedule and collector rules exactly as
:meth:`LoanService.create` does for the API and writes the loan with its ``LOAN_CREATED`` audit entry
(actor ``system:import``, role admin). There is no second validator.

Loans are written up to 25 to a DynamoDB transaction (rows of one branch and collector together), each
with its audit entry, and what they add to the portfolio counters summed once per scope. Against a
transaction per loan that halves the time a file takes and cuts the database's work per loan to about
a third (docs/performance.md, "The bulk import"). A row's outcome is still its own: a row whose id turns
out to be taken leaves its transaction, which is sent again without it; a transaction the database
does not take (``UNAVAILABLE``, or ``CONFLICT`` when other writers kept its counters busy) is reported on
its own rows, and the other transactions' loans are stored all the same.

Rows are numbered by their line in the file, the header being line 1 (a spreadsheet shows the same
numbers unless a cell holds a line break). A bad row is reported (row, field, message) and the import
carries on. A row whose ``loan_id`` is already stored is reported as already imported: neither an
error nor a second loan, so re-running a file (after fixing its bad rows, or after an interruption)
stores only what is missing. (The CLI first asks, 100 ids at a time, which loan ids exist, and does not
send those rows to ``LoanService.create_many`` at all, so their schedule and collector are not checked
again; its ``LoanExists`` covers any row that lookup missed.) A ``loan_id`` repeated inside
the file is an error on every row after its first appearance.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO

from pydantic import ValidationError

from chalicelib.adapters.dynamodb.batch import batch_get
from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.loans import LOANS_PER_TRANSACTION
from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.api.schemas import CreateLoanIn
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import DomainError, LoanExists, Unavailable
from chalicelib.domain.loan import Loan
from chalicelib.domain.money import format_inr
from chalicelib.domain.roles import Role
from chalicelib.services.context import RequestContext
from chalicelib.services.ids import new_id
from chalicelib.services.loans import LoanService, NewLoan
from chalicelib.services.ports import LoanFilter, User, UserStore

logger = logging.getLogger(__name__)

IMPORT_ACTOR = Actor(sub="system:import", role=Role.ADMIN.value)
EXPORT_ACTOR = Actor(sub="system:export", role=Role.ADMIN.value)

BORROWER_COLUMNS = {"borrower_name": "name", "phone": "phone", "email": "email", "address": "address"}
"""CSV column -> field of ``borrower`` in the API body."""
INTEGER_COLUMNS = frozenset({"principal_paise", "annual_rate_bps", "tenure_months"})
TERM_COLUMNS = ("annual_rate_bps", "tenure_months", "first_due_date")
OPTIONAL_COLUMNS = frozenset({"email", "address", "collector_id", "branch"})
IMPORT_COLUMNS = (
    "loan_id",
    "borrower_name",
    "phone",
    "email",
    "address",
    "principal_paise",
    "annual_rate_bps",
    "tenure_months",
    "disbursement_date",
    "first_due_date",
    "collector_id",
    "branch",
)
REQUIRED_COLUMNS = tuple(c for c in IMPORT_COLUMNS if c not in OPTIONAL_COLUMNS)
ROW_FIELD = "row"
"""The ``field`` of a problem with the row as a whole."""

DEFAULT_WORKERS = 8
"""Each thread writes one transaction of loans at a time, and the time goes in waiting for it, so a few
threads multiply throughput (measured when each loan was a transaction of its own: on DynamoDB Local, 4
to 16 threads the same, about 2.5 times one thread). The one DynamoDB client every table shares has
room for 32 connections."""
LOOKUP_BATCH = 100
"""BatchGetItem's limit: how many valid rows are checked for an existing loan_id at once."""

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

EXPORT_COLUMNS = (
    "loan_id",
    "borrower_name",
    "phone",
    "collector_id",
    "branch",
    "status",
    "principal_paise",
    "outstanding_principal_paise",
    "overdue_paise",
    "dpd",
    "bucket",
    "classification",
    "npa_since",
    "dpd_as_of",
    "outstanding_inr",
)
EXPORT_PAGE = 500
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ImportFileError(Exception):
    """The file as a whole cannot be imported (no header, unknown or missing columns); nothing was stored."""


class RowOutcome(StrEnum):
    STORED = "stored"
    ALREADY_PRESENT = "already imported"
    ERROR = "error"


@dataclass(frozen=True)
class RowError:
    row: int
    loan_id: str | None
    field: str
    message: str


@dataclass
class ImportReport:
    batch: str
    """``request_id`` of every audit entry this run wrote: finds them in the audit trail."""
    rows: int = 0
    stored: int = 0
    already_present: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def error_rows(self) -> int:
        return len({e.row for e in self.errors})

    def summary(self) -> str:
        return (
            f"{self.rows} rows: {self.stored} stored, {self.already_present} already imported, "
            f"{self.error_rows} with errors ({len(self.errors)} problems)"
        )


class MemoUsers:
    """A UserStore that remembers lookups for the length of one import: thousands of rows name the
    same few collectors, and each lookup would otherwise be a DynamoDB read. The rule applied to the
    answer is still LoanService's own."""

    def __init__(self, users: UserStore) -> None:
        self._users = users
        self._known: dict[str, User | None] = {}
        self._lock = threading.Lock()

    def get(self, username: str) -> User | None:
        with self._lock:
            if username in self._known:
                return self._known[username]
        user = self._users.get(username)
        with self._lock:
            self._known[username] = user
        return user

    def put(self, user: User) -> None:
        self._users.put(user)
        with self._lock:
            self._known.pop(user.username, None)


def _cell(raw: str | None) -> str | None:
    value = (raw or "").strip()
    return value or None


def row_to_body(record: dict[str, str | None]) -> dict[str, Any]:
    """The ``POST /api/v1/loans`` body a CSV record stands for: empty cells left out, numeric cells as
    JSON numbers, everything else as JSON strings."""
    body: dict[str, Any] = {}
    borrower: dict[str, Any] = {}
    for column in IMPORT_COLUMNS:
        value: Any = _cell(record.get(column))
        if value is None:
            continue
        if column in INTEGER_COLUMNS and _JSON_NUMBER.fullmatch(value):
            value = json.loads(value)
        if column in BORROWER_COLUMNS:
            borrower[BORROWER_COLUMNS[column]] = value
        else:
            body[column] = value
    body["borrower"] = borrower
    return body


def _column_for(loc: tuple[int | str, ...], body: dict[str, Any]) -> str:
    if loc[:1] == ("borrower",) and len(loc) > 1:
        return next(c for c, f in BORROWER_COLUMNS.items() if f == loc[1])
    if loc:
        return str(loc[0])
    # CreateLoanIn asks for all three schedule terms on the model, not on a field: name the empty cells.
    missing = [c for c in TERM_COLUMNS if c not in body]
    return "+".join(missing) or ROW_FIELD


def parse_row(row: int, record: dict[str, str | None]) -> NewLoan | list[RowError]:
    """Validate one record with the API's request schema; the command to run, or its problems."""
    loan_id = _cell(record.get("loan_id"))
    if None in record:
        return [RowError(row, loan_id, ROW_FIELD, "more cells than the header has columns")]
    if loan_id is None:
        return [RowError(row, None, "loan_id", "required in an import file: it is what makes a re-run safe")]
    body = row_to_body(record)
    try:
        validated = CreateLoanIn.model_validate_json(json.dumps(body), strict=True)
    except ValidationError as exc:
        return [
            RowError(row, loan_id, _column_for(tuple(err["loc"]), body), err["msg"])
            for err in exc.errors(include_url=False, include_input=False)
        ]
    return validated.to_command()


def _domain_errors(row: int, loan_id: str | None, exc: DomainError) -> list[RowError]:
    details = exc.details if isinstance(exc.details, list) else []
    problems = [d for d in details if isinstance(d, dict) and "field" in d]
    if not problems:
        return [RowError(row, loan_id, ROW_FIELD, f"{exc.code}: {exc.message}")]
    return [RowError(row, loan_id, str(d["field"]), str(d.get("message", exc.message))) for d in problems]


def _header_problems(names: list[str]) -> list[str]:
    """What is wrong with a header: columns the format does not have, required ones it lacks, repeats."""
    problems = []
    unknown = sorted(set(names) - set(IMPORT_COLUMNS))
    if unknown:
        problems.append(f"unknown columns: {', '.join(unknown)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"columns named twice: {', '.join(repeated)}")
    return problems


def _records(source: TextIO) -> Iterator[tuple[int, dict[str, str | None]]]:
    """Check the header now (before anything is stored), then yield (line number, record)."""
    reader = csv.DictReader(source)
    header = reader.fieldnames
    if not header:
        raise ImportFileError("the file is empty: expected a header row naming the columns")
    names = [h.strip() for h in header]
    problems = _header_problems(names)
    if problems:
        raise ImportFileError("; ".join(problems) + f" (the columns are: {', '.join(IMPORT_COLUMNS)})")
    reader.fieldnames = names
    return ((reader.line_num, record) for record in reader)


def count_rows(source: TextIO) -> int:
    """Data rows in a file (for a progress bar); rewinds it."""
    total = sum(1 for record in csv.reader(source) if record) - 1
    source.seek(0)
    return max(total, 0)


Settled = list[tuple[RowOutcome, list[RowError]]]


def _create(loans: LoanService, ctx: RequestContext, rows: Sequence[tuple[int, NewLoan]]) -> Settled:
    """Create the rows' loans together; each row's outcome, in order. Whatever goes wrong is reported on
    the rows it touched, so the import always finishes with its report and errors file; a row reported
    that way may have been stored after all, which a re-run then says."""
    answers: Sequence[Loan | DomainError]
    try:
        answers = loans.create_many(ctx, [cmd for _, cmd in rows])
    except DomainError as exc:
        answers = [exc] * len(rows)
    except Exception:
        logger.exception("rows %d to %d: unexpected error while storing them", rows[0][0], rows[-1][0])
        answers = [UNEXPECTED] * len(rows)
    settled: Settled = []
    for (row, cmd), answer in zip(rows, answers, strict=True):
        if isinstance(answer, LoanExists):
            settled.append((RowOutcome.ALREADY_PRESENT, []))
        elif isinstance(answer, DomainError):
            settled.append((RowOutcome.ERROR, _domain_errors(row, cmd.loan_id, answer)))
        else:
            settled.append((RowOutcome.STORED, []))
    return settled


@storage_call
def stored_loan_ids(loan_ids: Sequence[str]) -> set[str]:
    """Which of these loan ids are stored: one keys-only BatchGetItem (up to 100 ids)."""
    found = batch_get(LoanModel, loan_ids, consistent_read=True, attributes_to_get=["loan_id"])
    return {item.loan_id for item in found}


Created = Future[Settled]
UNEXPECTED = DomainError("an unexpected error stopped this row's batch (logged); run the file again")


@dataclass
class _ImportRun:
    """One run of an import: the rows seen so far, the valid ones waiting for their existence check,
    the creates in flight, and the report they all end in."""

    service: LoanService
    ctx: RequestContext
    report: ImportReport
    workers: int
    on_row: Callable[[RowOutcome], None]
    stored: Callable[[Sequence[str]], set[str]] | None
    first_seen: dict[str, int] = field(default_factory=dict)
    """loan_id -> the row it first appeared in: a loan_id repeated in the file is an error after that."""
    waiting: list[tuple[int, NewLoan]] = field(default_factory=list)
    in_flight: set[Created] = field(default_factory=set)

    def take(self, pool: ThreadPoolExecutor, row: int, record: dict[str, str | None]) -> None:
        """Parse and check one row; a good one waits for its batch, a bad one is settled as an error."""
        self.report.rows += 1
        parsed = parse_row(row, record)
        errors = parsed if isinstance(parsed, list) else []
        errors = [*errors, *self.repeated_id(row, _cell(record.get("loan_id")))]
        if errors or isinstance(parsed, list):
            self.settle(RowOutcome.ERROR, errors)
            return
        self.waiting.append((row, parsed))
        if len(self.waiting) >= LOOKUP_BATCH:
            self.store_waiting(pool)

    def repeated_id(self, row: int, loan_id: str | None) -> list[RowError]:
        if loan_id is None:
            return []
        first = self.first_seen.setdefault(loan_id, row)
        if first == row:
            return []
        return [RowError(row, loan_id, "loan_id", f"{loan_id} already appears in row {first}")]

    def already_stored(self) -> set[str]:
        """Which waiting loan ids exist: a shortcut for re-runs, so a failed lookup only costs writes."""
        if self.stored is None:
            return set()
        try:
            return self.stored([cmd.loan_id for _, cmd in self.waiting if cmd.loan_id])
        except Unavailable:
            return set()  # each create will find out for itself

    def store_waiting(self, pool: ThreadPoolExecutor) -> None:
        """Create the waiting rows that are not stored yet, a transaction's worth to a task, keeping
        two tasks per worker in flight."""
        present = self.already_stored()
        todo: list[tuple[int, NewLoan]] = []
        for row, cmd in self.waiting:
            if cmd.loan_id in present:
                self.settle(RowOutcome.ALREADY_PRESENT, [])
            else:
                todo.append((row, cmd))
        self.waiting.clear()
        # Rows of one branch and collector together: a transaction adds once to each scope its loans
        # belong to, so fewer scopes mean fewer counter items written, and fewer met by the other threads.
        todo.sort(key=lambda waiting: (waiting[1].branch or "", waiting[1].collector_id or ""))
        for start in range(0, len(todo), LOANS_PER_TRANSACTION):
            chunk = todo[start : start + LOANS_PER_TRANSACTION]
            self.in_flight.add(pool.submit(_create, self.service, self.ctx, chunk))
            if len(self.in_flight) >= self.workers * 2:
                self.collect(wait(self.in_flight, return_when=FIRST_COMPLETED).done)

    def collect(self, done: Iterable[Created]) -> None:
        for future in done:
            self.in_flight.discard(future)
            for outcome, errors in future.result():
                self.settle(outcome, errors)

    def settle(self, outcome: RowOutcome, errors: list[RowError]) -> None:
        """Count the row's outcome in the report and tell the caller (a progress bar)."""
        if outcome is RowOutcome.STORED:
            self.report.stored += 1
        elif outcome is RowOutcome.ALREADY_PRESENT:
            self.report.already_present += 1
        self.report.errors.extend(errors)
        self.on_row(outcome)

    def finish(self, pool: ThreadPoolExecutor) -> ImportReport:
        self.store_waiting(pool)
        self.collect(list(self.in_flight))
        self.report.errors.sort(key=lambda e: (e.row, e.field))
        return self.report


def import_loans(
    source: TextIO,
    loans: LoanService,
    workers: int = DEFAULT_WORKERS,
    on_row: Callable[[RowOutcome], None] = lambda _outcome: None,
    stored: Callable[[Sequence[str]], set[str]] | None = None,
) -> ImportReport:
    """Import every row of ``source``; see the module docstring for the format and the rules.

    Rows are read and validated here, in order, and created on ``workers`` threads, a transaction's
    worth of rows to a task and two tasks per thread in flight, so memory grows only with the set of
    loan ids seen (for the duplicate check).
    ``on_row`` is called once per row as it is settled (a progress bar). Raises ImportFileError before
    storing anything if the header is wrong.

    ``stored`` (e.g. :func:`stored_loan_ids`) is asked, per ``LOOKUP_BATCH`` valid rows, which loan ids
    exist already; those rows are reported as already imported without a write. It is only a shortcut
    for re-runs — a refused conditional transaction costs about what a write does (DynamoDB charges the
    write capacity either way), a keys-only batch read a fraction of it — since ``LoanService.create_many``
    answers ``LoanExists`` for any row the lookup missed, and the row is reported the same way."""
    records = _records(source)
    report = ImportReport(batch=f"import:{new_id()}")
    run = _ImportRun(
        service=dataclasses.replace(loans, users=MemoUsers(loans.users)),
        ctx=RequestContext(actor=IMPORT_ACTOR, request_id=report.batch),
        report=report,
        workers=workers,
        on_row=on_row,
        stored=stored,
    )
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
        for row, record in records:
            run.take(pool, row, record)
        return run.finish(pool)


def write_errors(errors: Iterable[RowError], target: TextIO) -> None:
    """Row errors as CSV (row, loan_id, field, message): fix the rows, re-run the whole file."""
    writer = csv.writer(target)
    writer.writerow(["row", "loan_id", "field", "message"])
    for e in errors:
        writer.writerow([e.row, e.loan_id or "", e.field, e.message])


def _text(value: str | None) -> str:
    """Free text as a spreadsheet will not run it as a formula (CSV injection)."""
    if value and value.startswith(_FORMULA_START):
        return "'" + value
    return value or ""


def export_row(loan: Loan) -> list[str | int]:
    d = loan.delinquency
    return [
        loan.loan_id,
        _text(loan.borrower.name),
        loan.borrower.phone,
        loan.collector_id or "",
        _text(loan.branch),
        loan.status.value,
        loan.principal_paise,
        loan.outstanding_principal_paise,
        d.overdue_paise,
        d.dpd,
        d.bucket.value,
        d.classification.value,
        d.npa_since.isoformat() if d.npa_since else "",
        d.as_of.isoformat(),
        format_inr(loan.outstanding_principal_paise),
    ]


def export_loans(loans: LoanService, filters: LoanFilter, target: TextIO) -> int:
    """Write every loan matching ``filters`` to ``target`` as CSV, paging through the service with an
    admin context (loans as the API shows them). Money stays integer paise; ``outstanding_inr`` is the
    same outstanding principal formatted for people. Returns the number of loans written."""
    ctx = RequestContext(actor=EXPORT_ACTOR)
    writer = csv.writer(target)
    writer.writerow(EXPORT_COLUMNS)
    written, cursor = 0, None
    while True:
        page = loans.list(ctx, filters, EXPORT_PAGE, cursor)
        for loan in page.items:
            writer.writerow(export_row(loan))
        written += len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return written
