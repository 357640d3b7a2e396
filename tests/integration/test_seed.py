from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import boto3
import pytest

from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import Bucket
from chalicelib.domain.loan import Loan
from chalicelib.domain.roles import Role
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import LoanFilter
from chalicelib.wiring import services
from local.demo import (
    COLLECTOR_BRANCHES,
    DEMO_PASSWORDS,
    DEMO_USERS,
    ONBOARDING_EXAMPLE,
    demo_loan,
    demo_loan_id,
    seed,
)
from local.runner import onboarding
from tests.integration.api_helpers import Api, api_fixture  # noqa: F401 - the `api` fixture

LOANS = 40
READER = RequestContext(actor=Actor(sub="test", role="auditor"))


def _all_loans() -> list[Loan]:
    page = services().loans.list(READER, LoanFilter(), 1000, None)
    assert page.next_cursor is None
    return list(page.items)


def _audit_count() -> int:
    table = settings().table_name("audit")
    return int(boto3.client("dynamodb").scan(TableName=table, Select="COUNT")["Count"])


def test_seed_builds_a_book_spanning_every_bucket_and_is_idempotent(moto_stack: str) -> None:
    report = seed(LOANS)

    assert report.loans_created == LOANS
    assert sorted(report.users_created) == sorted(name for name, _ in DEMO_USERS)
    users = services().auth.users
    for name, role in DEMO_USERS:
        user = users.get(name)
        assert user is not None and user.role == role.value
    assert services().auth.login("col-ravi", DEMO_PASSWORDS[Role.COLLECTOR]).role == "collector"

    loans = _all_loans()
    assert len(loans) == LOANS
    assert {loan.loan_id for loan in loans} == {f"DEMO-{n:05d}" for n in range(1, LOANS + 1)}
    buckets = Counter(loan.delinquency.bucket for loan in loans)
    assert set(buckets) == set(Bucket), buckets
    assert buckets[Bucket.CURRENT] / LOANS == pytest.approx(0.8, abs=0.05)
    assert report.buckets == Counter({b.value: n for b, n in buckets.items()})
    per_collector = Counter(loan.collector_id for loan in loans)
    assert set(COLLECTOR_BRANCHES) <= set(per_collector)
    assert max(per_collector.values()) < LOANS / 2
    for loan in loans:
        assert loan.schedule[0].due_date > loan.disbursement_date
        assert sum(i.principal_paise for i in loan.schedule) == loan.principal_paise
        assert 5_000_000 <= loan.principal_paise <= 100_000_000
        assert loan.borrower.phone[0] in "6789" and len(loan.borrower.phone) == 10
    audits = _audit_count()
    assert audits == LOANS

    again = seed(LOANS)

    assert (again.loans_created, again.loans_existing, again.users_created) == (0, LOANS, [])
    assert again.buckets == report.buckets and again.collectors == report.collectors
    assert len(_all_loans()) == LOANS
    assert _audit_count() == audits


def test_the_book_is_the_same_on_every_run() -> None:
    day = dt.date(2026, 3, 31)
    assert demo_loan(7, 1, day) == demo_loan(7, 1, day)
    assert demo_loan(7, 1, day) != demo_loan(8, 1, day)


def test_the_onboarding_example_of_the_readme_and_banner_works_on_the_demo_book(api: Api) -> None:
    """The users example a new user is shown (local.runner.onboarding, README) runs as printed."""
    seed(3)
    example = ONBOARDING_EXAMPLE
    successor = next(iter(COLLECTOR_BRANCHES))
    loan_id = demo_loan_id(2)

    created = api.post("/api/v1/users", example)
    assert created.status == 201, created.json
    assert created.json["username"] == example["username"]
    assert example["password"] not in json.dumps(created.json)
    assert api.post(f"/api/v1/loans/{loan_id}/assign", {"collector_id": example["username"]}).status == 200
    assert api.patch(f"/api/v1/users/{example['username']}", {"active": False}).status == 409

    offboarded = api.patch(f"/api/v1/users/{example['username']}", {"active": False, "reassign_to": successor})

    assert offboarded.status == 200, offboarded.json
    assert offboarded.json["active"] is False
    assert api.loan(loan_id)["collector_id"] == successor
    banner = onboarding("http://127.0.0.1:8080", "-H 'Content-Type: application/json'", successor)
    assert json.dumps(example) in banner and loan_id in banner
