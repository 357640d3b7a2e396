"""Bulk loan import (python -m ops import): every row held to the API's rules, bad rows reported
and skipped, re-runs store nothing twice.

The 10,000-row test runs on DynamoDB Local, not moto: moto's TransactWriteItems deep-copies every table
it touches before each transaction (to roll back), so each loan costs time in proportion to the loans
already stored — 500 loans took 39 s, 10,000 would take hours — and concurrent transactions from the
importer's threads corrupt that copy ("dictionary changed size during iteration"). The small cases run
on moto.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections import Counter
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from typer.testing import CliRunner, Result

from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.roles import Role
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import AuditFilter
from chalicelib.wiring import services
from ops.cli import app
from ops.csv_io import IMPORT_COLUMNS, ImportFileError, RowOutcome, import_loans, parse_row, stored_loan_ids
from tests.dynamodb_local.faults import Fault, hooked

COLLECTORS = ("col-asha", "col-vinod", "col-meena")
ROWS = 10_000
BAD_EVERY = 200
"""Row index 100, 300, 500, ... is bad: 50 bad rows spread through the file."""
READER = RequestContext(actor=Actor(sub="test", role="auditor"))


def _collectors() -> None:
    for name in COLLECTORS:
        services().auth.add_user(name, "collector-pass", Role.COLLECTOR)


def good_row(i: int, rng: random.Random) -> dict[str, str]:
    disbursed = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(0, 540))
    return {
        "loan_id": f"IMP-{i:05d}",
        "borrower_name": f"Borrower {i}",
        "phone": f"9{rng.randrange(10**8, 10**9)}",
        "email": f"b{i}@example.in" if i % 3 else "",
        "address": f"{i}, MG Road, Pune" if i % 2 else "",
        "principal_paise": str(rng.randrange(50_000, 1_000_000) * 100),
        "annual_rate_bps": str(rng.randrange(900, 3000)),
        "tenure_months": str(rng.choice((6, 12, 24, 36))),
        "disbursement_date": disbursed.isoformat(),
        "first_due_date": (disbursed + dt.timedelta(days=30)).isoformat(),
        "collector_id": COLLECTORS[i % len(COLLECTORS)] if i % 10 else "",
        "branch": "Pune",
    }


BAD_KINDS: dict[str, tuple[str, dict[str, str] | None]] = {
    # kind: (field the error must name, cells to change; None = reuse the previous row's loan_id)
    "bad phone": ("phone", {"phone": "12345"}),
    "float principal": ("principal_paise", {"principal_paise": "150000.50"}),
    "negative principal": ("principal_paise", {"principal_paise": "-500000"}),
    "missing field": ("borrower_name", {"borrower_name": ""}),
    "first due not after disbursement": (
        "first_due_date", {"first_due_date": "2025-03-01", "disbursement_date": "2025-03-01"}
    ),
    "unknown collector": ("collector_id", {"collector_id": "col-nobody"}),
    "duplicate loan_id in the file": ("loan_id", None),
}  # fmt: skip


def book(rows: int = ROWS) -> tuple[str, dict[int, tuple[str, str]]]:
    """CSV text of ``rows`` loans and, by file line, the (kind, field) of each planted bad row."""
    rng = random.Random(7)
    kinds = list(BAD_KINDS)
    bad: dict[int, tuple[str, str]] = {}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=IMPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for i in range(rows):
        row = good_row(i, rng)
        if i % BAD_EVERY == BAD_EVERY // 2:
            kind = kinds[len(bad) % len(kinds)]
            field, cells = BAD_KINDS[kind]
            row.update(cells if cells is not None else {"loan_id": f"IMP-{i - 1:05d}"})
            bad[i + 2] = (kind, field)  # line 1 is the header
        writer.writerow(row)
    return out.getvalue(), bad


def _count(table: str) -> int:
    client = boto3.client("dynamodb")
    total, kwargs = 0, {"TableName": settings().table_name(table), "Select": "COUNT"}
    while True:
        page = client.scan(**kwargs)
        total += int(page["Count"])
        if "LastEvaluatedKey" not in page:
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _import(path: Path, errors_out: Path) -> Result:
    return CliRunner().invoke(app, ["import", str(path), "--errors-out", str(errors_out)], env={"COLUMNS": "200"})


def _errors(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.dynamodb_local
@pytest.mark.long
def test_ten_thousand_rows_with_fifty_bad_ones_and_a_safe_rerun(local_stack: str, tmp_path: Path) -> None:
    _collectors()
    text, bad = book()
    assert len(bad) == 50 and set(Counter(kind for kind, _ in bad.values())) == set(BAD_KINDS)
    source = tmp_path / "loans.csv"
    source.write_text(text, encoding="utf-8")
    audits_before = _count("audit")

    first = _import(source, tmp_path / "errors-1.csv")

    assert first.exit_code == 1, first.output  # rows were refused
    assert "10000 rows: 9950 stored, 0 already imported, 50 with errors (50 problems)" in first.stdout
    errors = _errors(tmp_path / "errors-1.csv")
    assert {int(e["row"]): e["field"] for e in errors} == {row: field for row, (_, field) in bad.items()}
    assert len(errors) == 50
    for e in errors:
        kind = bad[int(e["row"])][0]
        assert e["message"], kind
        assert e["loan_id"].startswith("IMP-"), kind
    messages = {bad[int(e["row"])][0]: e["message"] for e in errors}
    for e in errors:
        if bad[int(e["row"])][0] == "duplicate loan_id in the file":
            assert e["message"] == f"{e['loan_id']} already appears in row {int(e['row']) - 1}"
    assert messages["float principal"] == "Input should be a valid integer"
    assert messages["negative principal"] == "Input should be greater than or equal to 1"
    assert messages["missing field"] == "Field required"
    assert messages["first due not after disbursement"] == "must be after disbursement_date"
    assert "no active collector 'col-nobody'" in messages["unknown collector"]
    assert _count("loans") == 9_950
    assert _count("audit") == audits_before + 9_950
    sample = services().loans.get(READER, "IMP-00001")
    assert sample.collector_id == COLLECTORS[1] and sample.borrower.email == "b1@example.in"
    assert sum(i.principal_paise for i in sample.schedule) == sample.principal_paise

    second = _import(source, tmp_path / "errors-2.csv")

    assert second.exit_code == 1, second.output
    assert "10000 rows: 0 stored, 9950 already imported, 50 with errors (50 problems)" in second.stdout
    assert _errors(tmp_path / "errors-2.csv") == errors
    assert _count("loans") == 9_950
    assert _count("audit") == audits_before + 9_950


def test_a_small_file_reports_each_outcome_once_and_reruns_store_nothing(moto_stack: str) -> None:
    _collectors()
    services().auth.add_user("ops-admin", "admin-pass-123", Role.ADMIN)
    text, _ = book(5)
    rows = text.splitlines()
    # Line 5 assigns the loan to a user who exists but is not a collector: refused, as by the API.
    rows[4] = rows[4].replace(f",{COLLECTORS[0]},", ",ops-admin,")
    source = "\n".join(rows) + "\n"
    seen: Counter[RowOutcome] = Counter()
    # One worker: moto's transactions are not safe under threads (a refused create can leave its audit
    # entry behind); the importer's threads are exercised on DynamoDB Local in the 10 000-row test.

    report = import_loans(io.StringIO(source), services().loans, workers=1, on_row=lambda o: seen.update([o]))

    assert (report.rows, report.stored, report.already_present, report.error_rows) == (5, 4, 0, 1)
    assert seen == Counter({RowOutcome.STORED: 4, RowOutcome.ERROR: 1})
    assert [(e.row, e.loan_id, e.field) for e in report.errors] == [(5, "IMP-00003", "collector_id")]
    entries = services().audit.list(AuditFilter(actor="system:import"), 50, None).items
    assert sorted(e.entity_id for e in entries) == ["IMP-00000", "IMP-00001", "IMP-00002", "IMP-00004"]
    assert {(e.actor.role, e.request_id, e.action.value) for e in entries} == {("admin", report.batch, "LOAN_CREATED")}
    audits = _count("audit")

    # Without the stored-id shortcut every row goes to LoanService.create_many, which answers LoanExists.
    by_create = import_loans(io.StringIO(source), services().loans, workers=1)
    by_lookup = import_loans(io.StringIO(source), services().loans, workers=1, stored=stored_loan_ids)

    for again in (by_create, by_lookup):
        assert (again.stored, again.already_present, again.errors) == (0, 4, report.errors)
    assert _count("audit") == audits
    assert stored_loan_ids(["IMP-00000", "IMP-00003", "nope"]) == {"IMP-00000"}


def test_a_transaction_the_database_drops_fails_only_its_own_rows_and_a_rerun_stores_them(moto_stack: str) -> None:
    """Rows are written a transaction's worth at a time (25): when the database does not take one, its
    rows, and only those, are reported, and running the file again stores exactly them."""
    _collectors()
    text, _ = book(60)
    loans = services().loans
    lost = Fault(2, lambda: EndpointConnectionError(endpoint_url="http://dynamodb"))

    with hooked(LoanModel, "before-call.dynamodb.TransactWriteItems", lost):
        first = import_loans(io.StringIO(text), loans, workers=1, stored=stored_loan_ids)

    assert lost.fired and lost.calls == 3
    assert (first.rows, first.stored, first.already_present, first.error_rows) == (60, 35, 0, 25)
    # Rows go to their transactions grouped by branch and collector (in file order within a group); data
    # row i is line i + 2. The second transaction held the 26th to 50th of them.
    rows = list(csv.DictReader(io.StringIO(text)))
    grouped = sorted(range(60), key=lambda i: (rows[i]["branch"], rows[i]["collector_id"]))
    dropped = sorted(i + 2 for i in grouped[25:50])
    assert [(e.row, e.loan_id, e.field) for e in first.errors] == [
        (line, f"IMP-{line - 2:05d}", "row") for line in dropped
    ]
    assert {e.message for e in first.errors} == {
        "UNAVAILABLE: the database is not answering; nothing was changed, try again"
    }
    assert _count("loans") == 35 and _count("audit") == 35
    assert stored_loan_ids([f"IMP-{line - 2:05d}" for line in dropped]) == set()

    again = import_loans(io.StringIO(text), loans, workers=1, stored=stored_loan_ids)

    assert (again.stored, again.already_present, again.errors) == (25, 35, [])
    assert _count("loans") == 60 and _count("audit") == 60
    assert services().loans.get(READER, f"IMP-{dropped[0] - 2:05d}").borrower.name == f"Borrower {dropped[0] - 2}"


def test_an_unexpected_failure_is_reported_on_its_own_rows_and_the_import_still_reports(moto_stack: str) -> None:
    """Whatever the store raises, the import ends with its report and errors file: the rows of the
    transaction it stopped are errors, the others stored."""
    _collectors()
    text, _ = book(30)
    broken = Fault(1, lambda: RuntimeError("a bug in the storage layer"))

    with hooked(LoanModel, "before-call.dynamodb.TransactWriteItems", broken):
        report = import_loans(io.StringIO(text), services().loans, workers=1, stored=stored_loan_ids)

    assert broken.fired
    assert (report.rows, report.stored, report.error_rows) == (30, 5, 25)
    assert {e.message for e in report.errors} == {
        "INTERNAL_ERROR: an unexpected error stopped this row's batch (logged); run the file again"
    }
    assert _count("loans") == 5


def test_the_file_is_refused_whole_when_its_header_is_wrong(moto_stack: str) -> None:
    text, _ = book(3)
    with pytest.raises(ImportFileError, match="unknown columns: amount"):
        import_loans(io.StringIO(text.replace("principal_paise", "amount", 1)), services().loans)
    with pytest.raises(ImportFileError, match="missing columns: phone"):
        import_loans(io.StringIO(text.replace(",phone,", ",", 1)), services().loans)
    with pytest.raises(ImportFileError, match="empty"):
        import_loans(io.StringIO(""), services().loans)
    assert _count("loans") == 0


def test_rows_are_typed_as_json_would_carry_them() -> None:
    rng = random.Random(1)
    row: dict[str, str | None] = dict(good_row(1, rng))

    assert not isinstance(parse_row(2, row), list)
    assert isinstance(parse_row(2, {**row, "tenure_months": "12.0"}), list)
    problems = parse_row(2, {**row, "first_due_date": "", "loan_id": "  "})
    assert isinstance(problems, list) and [(p.field, p.message) for p in problems] == [
        ("loan_id", "required in an import file: it is what makes a re-run safe")
    ]
    terms = parse_row(3, {**row, "first_due_date": ""})
    assert isinstance(terms, list) and terms[0].field == "first_due_date"
    extra = parse_row(4, {**row, None: "surplus"})  # type: ignore[dict-item]
    assert isinstance(extra, list) and extra[0].message == "more cells than the header has columns"
