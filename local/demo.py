"""Demo users and a demo loan book for the local stage, spanning every delinquency bucket.

Built on the real services rather than raw table writes, so every demo loan passes the same
validation as one created through the API and has its ``LOAN_CREATED`` audit entry.

    python -m local.demo [--loans 300]

Idempotent: loan ids are fixed (``DEMO-00001`` ...) and loans or users that already exist are kept,
so a re-run adds only what is missing. Loan ``n`` depends only on the seed and ``n``, never on
``--loans``, so seeding 40 and later 300 extends the same book.

The demo passwords below are published: they exist for the local stage only, and the CLI refuses any
other stage.

There are no payments yet, so delinquency comes from the schedule alone, as of the last completed
business date: about four loans in five fall due after it (CURRENT); the fifth has its first
instalment placed so that its dpd lands in 1-30, 31-60, 61-90 or 90+.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field, replace

from chalicelib import clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.delinquency import Bucket
from chalicelib.domain.errors import LoanExists, Unavailable
from chalicelib.domain.loan import Borrower, Loan
from chalicelib.domain.roles import Role
from chalicelib.domain.schedule import generate_schedule
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.services.ports import LoanFilter
from chalicelib.wiring import Services, services
from local.environment import STAGE, Ports, StartupError, aws_environment

DEFAULT_LOANS = 300
DEFAULT_SEED = 20_240_601
DEMO_PREFIX = "DEMO-"
SEED_ACTOR = Actor(sub="system:seed", role=Role.ADMIN.value)

DEMO_PASSWORDS: dict[Role, str] = {
    Role.ADMIN: "admin-demo-pass",
    Role.MANAGER: "manager-demo-pass",
    Role.AUDITOR: "auditor-demo-pass",
    Role.COLLECTOR: "collector-demo-pass",
}

ONBOARDING_EXAMPLE: dict[str, str] = {
    "username": "col-meera",
    "password": "monsoon-ledger-2026",
    "role": "collector",
    "display_name": "Meera Nair",
    "branch": "Kochi",
}
"""The new collector of the README's and the banner's onboarding example (her password passes the
policy of docs/auth.md; she is not seeded, the example creates her)."""

COLLECTOR_BRANCHES: dict[str, str] = {
    "col-anita": "Pune",
    "col-ravi": "Bengaluru",
    "col-imran": "Hyderabad",
    "col-priya": "Chennai",
    "col-suresh": "Jaipur",
}
"""Collectors work the loans of their home branch, as field collections teams usually do."""

DEMO_USERS: tuple[tuple[str, Role], ...] = (
    ("admin", Role.ADMIN),
    ("manager", Role.MANAGER),
    ("auditor", Role.AUDITOR),
    *((name, Role.COLLECTOR) for name in COLLECTOR_BRANCHES),
)

LOANS_PER_DELINQUENT = 5
"""One loan in each consecutive block of this many is overdue; the rest are CURRENT."""

DELINQUENT_CYCLE: tuple[Bucket, ...] = (
    Bucket.B1_30,
    Bucket.B31_60,
    Bucket.B61_90,
    Bucket.B90_PLUS,
    Bucket.B1_30,
    Bucket.B31_60,
)
"""Buckets of successive overdue loans: every bucket appears within four blocks (20 loans), and early
arrears are commoner than late ones, as in a real book."""

DPD_RANGES: dict[Bucket, tuple[int, int]] = {
    Bucket.B1_30: (1, 30),
    Bucket.B31_60: (31, 60),
    Bucket.B61_90: (61, 90),
    Bucket.B90_PLUS: (91, 400),
}

UNASSIGNED_SHARE = 0.05
"""Newly booked loans wait a little for a manager to assign them; keeps the assign endpoint demoable."""

FIRST_NAMES = (
    "Aarav", "Aditi", "Akash", "Ananya", "Arjun", "Deepa", "Farhan", "Gaurav", "Harpreet", "Ishaan",
    "Jyoti", "Kavya", "Lakshmi", "Manoj", "Meera", "Mohammed", "Neha", "Nikhil", "Pooja", "Rahul",
    "Rajesh", "Rekha", "Rohan", "Sandeep", "Shreya", "Sunita", "Tanvi", "Varun", "Vikram", "Zoya",
)  # fmt: skip
LAST_NAMES = (
    "Agarwal", "Bhat", "Chatterjee", "Das", "Desai", "Gill", "Iyer", "Joshi", "Kapoor", "Khan",
    "Kulkarni", "Menon", "Mishra", "Nair", "Patel", "Pillai", "Rao", "Reddy", "Shah", "Sharma",
    "Singh", "Verma", "Yadav",
)  # fmt: skip
STREETS = ("MG Road", "Station Road", "Gandhi Nagar", "Nehru Street", "Lake View Colony", "Civil Lines")
TENURES = (6, 9, 12, 18, 24, 36, 48, 60)


@dataclass
class SeedReport:
    users_created: list[str] = field(default_factory=list)
    loans_created: int = 0
    loans_existing: int = 0
    buckets: Counter[str] = field(default_factory=Counter)
    collectors: Counter[str] = field(default_factory=Counter)

    @property
    def loans_total(self) -> int:
        return self.loans_created + self.loans_existing

    def count(self, loan: Loan) -> None:
        self.buckets[loan.delinquency.bucket.value] += 1
        self.collectors[loan.collector_id or "(unassigned)"] += 1

    def summary(self) -> str:
        """A few lines for a terminal: what was added, and the book by bucket and by collector."""
        users = ", ".join(self.users_created) if self.users_created else "none (all present)"
        lines = [
            f"demo loans: {self.loans_total} ({self.loans_created} created, {self.loans_existing} already there)",
            f"demo users created: {users}",
            "  by bucket:    " + "  ".join(f"{b.value} {self.buckets[b.value]}" for b in Bucket),
            "  by collector: " + "  ".join(f"{c} {n}" for c, n in sorted(self.collectors.items())),
        ]
        return "\n".join(lines)


def demo_loan_id(number: int) -> str:
    return f"{DEMO_PREFIX}{number:05d}"


def _rng(seed: int, key: str) -> random.Random:
    # A string seed is hashed with SHA-512, so the book is the same on every machine and Python run.
    return random.Random(f"{seed}:{key}")  # noqa: S311 - demo data must be reproducible, not secret


def _bucket_for_loan(number: int, seed: int) -> Bucket:
    block, position = divmod(number - 1, LOANS_PER_DELINQUENT)
    # Which loan of the block is overdue is drawn per block, so the pattern is not every fifth id.
    overdue_position = _rng(seed, f"block:{block}").randrange(LOANS_PER_DELINQUENT)
    if position != overdue_position:
        return Bucket.CURRENT
    return DELINQUENT_CYCLE[block % len(DELINQUENT_CYCLE)]


def _borrower(rng: random.Random, city: str) -> Borrower:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    phone = rng.choice("6789") + "".join(rng.choice("0123456789") for _ in range(9))
    email = f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com" if rng.random() < 0.6 else None
    address = f"{rng.randint(1, 400)}, {rng.choice(STREETS)}, {city}"
    return Borrower(name=f"{first} {last}", phone=phone, email=email, address=address)


def _broken_period_interest(principal_paise: int, annual_rate_bps: int, days: int) -> int:
    """Simple interest for the days between disbursement and the first due date (actual/365, floored),
    which the generated schedule never charges: the reason a lender imports its own schedule."""
    return principal_paise * annual_rate_bps * days // (10_000 * 365)


def demo_loan(number: int, seed: int, business_date: dt.date) -> NewLoan:
    """Loan ``number`` of the demo book, shown as of ``business_date`` (the last completed one)."""
    rng = _rng(seed, f"loan:{number}")
    collector_id = None if rng.random() < UNASSIGNED_SHARE else rng.choice(tuple(COLLECTOR_BRANCHES))
    branch = COLLECTOR_BRANCHES[collector_id] if collector_id else rng.choice(tuple(COLLECTOR_BRANCHES.values()))
    principal_paise = rng.randrange(50_000, 1_000_001, 5_000) * 100
    annual_rate_bps = rng.randrange(1000, 3001, 25)
    tenure_months = rng.choice(TENURES)
    bucket = _bucket_for_loan(number, seed)
    if bucket is Bucket.CURRENT:
        # Booked within the last four weeks, first instalment still ahead: nothing can be overdue.
        today = business_date + dt.timedelta(days=1)
        disbursement_date = today - dt.timedelta(days=rng.randint(0, 27))
        first_due_date = disbursement_date + dt.timedelta(days=rng.randint(30, 40))
    else:
        # With nothing paid, the first instalment is the oldest unpaid one: it alone fixes the dpd.
        dpd = rng.randint(*DPD_RANGES[bucket])
        first_due_date = business_date - dt.timedelta(days=dpd - 1)
        disbursement_date = first_due_date - dt.timedelta(days=rng.randint(25, 40))
    loan = NewLoan(
        loan_id=demo_loan_id(number),
        borrower=_borrower(rng, branch),
        principal_paise=principal_paise,
        disbursement_date=disbursement_date,
        collector_id=collector_id,
        branch=branch,
    )
    if bucket is Bucket.CURRENT or number % 2 == 0:
        return replace(loan, terms=GeneratedTerms(annual_rate_bps, tenure_months, first_due_date))
    rows = [
        (i.due_date, i.principal_paise, i.interest_paise)
        for i in generate_schedule(principal_paise, annual_rate_bps, tenure_months, disbursement_date, first_due_date)
    ]
    due_date, principal, interest = rows[0]
    gap_days = (first_due_date - disbursement_date).days
    rows[0] = (due_date, principal, interest + _broken_period_interest(principal_paise, annual_rate_bps, gap_days))
    return replace(loan, imported_schedule=rows, notes="imported from the legacy LMS")


def seed_users(svc: Services, report: SeedReport) -> None:
    for username, role in DEMO_USERS:
        existing = svc.auth.users.get(username)
        # Hashing is deliberately slow, so present users are left alone: that is what makes re-runs quick.
        if existing is not None and existing.role == role.value:
            continue
        svc.auth.add_user(username, DEMO_PASSWORDS[role], role)
        report.users_created.append(username)


def seed(loans: int = DEFAULT_LOANS, seed: int = DEFAULT_SEED) -> SeedReport:
    """Create the demo users and loans ``DEMO-00001`` .. ``DEMO-{loans}`` that are missing."""
    svc = services()
    ctx = RequestContext(actor=SEED_ACTOR)
    report = SeedReport()
    seed_users(svc, report)
    existing = _existing_demo_loans(svc, ctx)
    business_date = clock.last_completed_business_date()
    for number in range(1, loans + 1):
        loan_id = demo_loan_id(number)
        loan = existing.get(loan_id)
        if loan is None:
            try:
                loan = svc.loans.create(ctx, demo_loan(number, seed, business_date))
                report.loans_created += 1
            except LoanExists:
                # Another seeder got there between our scan and our write.
                loan = svc.loans.get(ctx, loan_id)
                report.loans_existing += 1
        else:
            report.loans_existing += 1
        report.count(loan)
    return report


def _existing_demo_loans(svc: Services, ctx: RequestContext) -> dict[str, Loan]:
    # One scan rather than a read per id: it is what makes a re-run (every `make run`) take a blink.
    found: dict[str, Loan] = {}
    cursor = None
    while True:
        page = svc.loans.list(ctx, LoanFilter(), 1000, cursor)
        found.update((loan.loan_id, loan) for loan in page.items if loan.loan_id.startswith(DEMO_PREFIX))
        cursor = page.next_cursor
        if cursor is None:
            return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Seed the local stage with demo users and loans.")
    parser.add_argument("--loans", type=int, default=DEFAULT_LOANS, help=f"loans in the book (default {DEFAULT_LOANS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed of the book")
    args = parser.parse_args(argv)
    if args.loans < 0:
        parser.error("--loans must not be negative")
    try:
        ports = Ports.from_env()
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, value in aws_environment(ports).items():
        os.environ.setdefault(name, value)
    stage = os.environ["STAGE"]
    if stage != STAGE:
        print(f"error: the demo passwords are published; seed the {STAGE} stage only, not {stage!r}", file=sys.stderr)
        return 2
    try:
        report = seed(args.loans, args.seed)
    except Unavailable:
        endpoint = os.environ["AWS_ENDPOINT_URL_DYNAMODB"]
        print(f"error: no DynamoDB at {endpoint}; start the local stack first (`make run`)", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
