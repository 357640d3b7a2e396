"""Cost of one reconciliation run (docs/reconciliation.md) on DynamoDB Local, on a book that reconciles clean.

1. A book whose ledger is whole is generated fast (:class:`LedgerBookBuilder`): each loan's schedule
   comes from ``generate_schedule``, its payments are ``LedgerEntry``s replayed with
   ``domain.ledger.replay`` (paid amounts, allocations and delinquency exactly as posting them would
   leave them), most loans paid up, some behind (the bucket mix of bench/dpd.py), a few closed. Loans,
   payments, UTR claims and the dashboard's counter items (a recount, spread over the shards) are
   written raw with ``BatchWriteItem`` (bench/dpd.py's ``write_items``). A few payments are then
   posted through ``services().payments.post``, so the book also holds payments as the product writes
   them. Generation and writing are timed apart from the measurement.
2. The real run, ``services().reconciliation.start("bench")``, runs once in this process (no Lambda to
   hand over to: no time limit) with every DynamoDB request metered (``bench.dynamo.DynamoMeter``:
   ``ReturnConsumedCapacity`` on every call, so capacity is DynamoDB Local's own accounting).

Reported: loans checked per second (wall clock: this machine's, nothing more), requests and read units
per loan checked, write units (the segments' checkpoints) per loan, and the compressed ``body`` of the
largest segment checkpoint divided by the scopes its share of the recount holds: the figure behind the
"roughly 20,000 collectors and branches" limit in docs/reconciliation.md. The run must be clean
(``mismatch_count == 0``, nothing unverified); the bench says whether it was. No pass/fail on time.

    python -m bench.reconciliation [--loans 10000] [--collectors 500] [--branches 60]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import random
import time
import zlib
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench import summary
from bench.dpd import (
    MIX,
    PRINCIPALS_PAISE,
    RATES_BPS,
    TENURES,
    BookBuilder,
    _cpu_model,
    _due,
    _month,
    bench_borrower,
    write_items,
)
from bench.dynamo import READ_OPERATIONS, DynamoMeter, NoSsm, dynamodb_local, install_meter
from bench.floor import item_size
from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb.aggregates import SHARDS, collections_key, counters_key
from chalicelib.adapters.dynamodb.mapping import loan_to_item, payment_to_item
from chalicelib.adapters.dynamodb.models import AggregateModel, UtrClaimModel
from chalicelib.adapters.dynamodb.reconciliation import _pack
from chalicelib.domain.allocation import is_fully_paid
from chalicelib.domain.audit import Actor
from chalicelib.domain.ledger import LedgerEntry, replay
from chalicelib.domain.loan import ESCALATION_DPD, Loan, LoanStatus, initial_delinquency
from chalicelib.domain.payment import Payment, PaymentMode, PaymentStatus
from chalicelib.domain.portfolio import (
    CounterKind,
    Scope,
    ScopeKind,
    arrears_since,
    loan_scopes,
    payment_collections,
    recount,
    recount_collections,
)
from chalicelib.domain.reconciliation import ReconciliationRun
from chalicelib.services.context import RequestContext
from chalicelib.services.ids import new_id
from chalicelib.services.payments import NewPayment
from infra.provision import provision
from local.dynamodb_local import jar as dynamodb_local_jar

ADMIN = RequestContext(actor=Actor("bench", "admin"))
SEED_ACTOR = Actor("bench-seed", "manager")
BEHIND = {"CURRENT": (0, 0), "1-30": (1, 1), "31-60": (2, 2), "61-90": (3, 3), "90+": (4, 12)}
"""Instalments left unpaid, per bucket of bench/dpd.py's MIX (the bucket the loan ends up in is
whatever the replay gives: an unpaid instalment due yesterday is 1 dpd, one due 40 days ago 40)."""
PARTIAL_SHARE = 0.25
"""Loans behind that paid the next instalment's interest (partly paid is still unpaid)."""
CLOSED_SHARE = 0.03
"""Loans paid off (CLOSED): they stay in the book and in ``loans_total``."""
MAX_PAYMENTS_PER_LOAN = 3
"""A loan's paid instalments arrive in 1 to 3 payments (lump sums), to keep the seed small."""
SERVICE_PAYMENTS = 100
SEED_CHUNK = 5_000


# --- a book whose ledger is whole -----------------------------------------------------------------


@dataclass
class LedgerBook:
    as_of: dt.date
    loans: list[Loan]
    payments: list[Payment]
    build_seconds: float
    by_bucket: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)


class LedgerBookBuilder:
    """Loans as their own payments left them, every figure as of ``as_of`` (the last completed
    business date): what the reconciliation must find clean. Collector ``COL<n mod collectors>``,
    branch ``BR<n mod branches>`` (bench/dpd.py's layout: 500 and 60 by default)."""

    def __init__(self, as_of: dt.date, seed: int, collectors: int = 500, branches: int = 60) -> None:
        self.as_of = as_of
        self.rng = random.Random(seed)
        self.collectors = collectors
        self.branches = branches
        self.schedules = BookBuilder(as_of + dt.timedelta(days=1), 0.0, seed)
        """bench/dpd.py's schedules: ``generate_schedule``'s amounts once per set of terms, dated here."""

    def _behind(self) -> int:
        roll, bucket = self.rng.random(), MIX[-1][0]
        for name, share in MIX:
            if roll < share:
                bucket = name
                break
            roll -= share
        low, high = BEHIND[bucket]
        return self.rng.randint(low, high)

    def loan(self, n: int) -> tuple[Loan, list[Payment]]:
        rng, as_of = self.rng, self.as_of
        terms = (rng.choice(PRINCIPALS_PAISE), rng.choice(RATES_BPS), rng.choice(TENURES))
        tenure = terms[2]
        closed = rng.random() < CLOSED_SHARE
        due_day = rng.randint(1, 28)
        last_due = _due(*_month(as_of.year, as_of.month, 0 if due_day <= as_of.day else -1), due_day)
        due_count = tenure if closed else rng.randint(1, tenure - 1)
        paid = due_count - (0 if closed else min(due_count, self._behind()))
        partial = paid < due_count and rng.random() < PARTIAL_SHARE
        # Instalments on the due day, the last one due on last_due; the first ``paid`` settled and,
        # if ``partial``, the next one's interest: what the lump sums below add up to.
        schedule = self.schedules._schedule(terms, last_due, -(due_count - 1), paid, partial)
        loan_id = f"LN{n:09d}"
        collector, branch = f"COL{n % self.collectors:04d}", f"BR{n % self.branches:03d}"
        # Lump sums: payment j settles the instalments up to cuts[j] and is dated on that one's due
        # date (the partial interest rides on the last payment).
        count = min(max(1, paid), rng.randint(1, MAX_PAYMENTS_PER_LOAN)) if paid or partial else 0
        cuts = [round(paid * (j + 1) / count) for j in range(count)]
        entries: list[LedgerEntry] = []
        payments: list[Payment] = []
        settled = 0
        for j, cut in enumerate(cuts):
            amount = sum(i.principal_paise + i.interest_paise for i in schedule[settled:cut])
            if j == count - 1 and partial:
                amount += schedule[paid].interest_paise
            day = schedule[max(cut, 1) - 1].due_date
            settled = cut
            payment_id = new_id()
            entries.append(LedgerEntry(payment_id, day, day, amount))
            payments.append(
                Payment(
                    payment_id=payment_id,
                    utr=f"BENCH{n:09d}P{j}",
                    loan_id=loan_id,
                    amount_paise=amount,
                    payment_date=day,
                    mode=PaymentMode.NACH if j % 2 == 0 else PaymentMode.UPI,
                    status=PaymentStatus.POSTED,
                    posted_at=f"{day.isoformat()}T18:00:00.000+05:30",
                    posted_by=SEED_ACTOR,
                    landed_on=day,
                    collector_id=collector,
                    branch=branch,
                )
            )
        # Each payment settles everything due on its date, so the loan is never NPA when money lands
        # and the replayed history (domain.ledger.replay) ends where a fresh assessment does.
        delinquency = initial_delinquency(schedule, as_of)
        disbursed = _due(*_month(schedule[0].due_date.year, schedule[0].due_date.month, -1), due_day)
        stamp = f"{disbursed.isoformat()}T10:00:00.000+05:30"
        loan = Loan(
            loan_id=loan_id,
            borrower=bench_borrower(n),
            status=LoanStatus.CLOSED if closed else LoanStatus.ACTIVE,
            principal_paise=terms[0],
            disbursement_date=disbursed,
            schedule=schedule,
            delinquency=delinquency,
            annual_rate_bps=terms[1],
            collector_id=collector,
            branch=branch,
            payments=tuple(entries),
            created_at=stamp,
            updated_at=stamp,
            version=1 + len(entries),
        )
        if not closed and delinquency.dpd >= ESCALATION_DPD:
            on = arrears_since(loan) + dt.timedelta(days=ESCALATION_DPD - 1)
            loan = dataclasses.replace(loan, legal_escalated=True, legal_escalated_on=on)
        return loan, payments

    def check(self, loan: Loan) -> None:
        """The loan is what its ledger replays to (``domain.ledger.replay``), the way posting its
        payments one by one would have left it: the shortcut above is only a shortcut."""
        unpaid = tuple(dataclasses.replace(i, paid_principal_paise=0, paid_interest_paise=0) for i in loan.schedule)
        result = replay(unpaid, loan.payments, self.as_of)
        assert (result.schedule, result.delinquency) == (loan.schedule, loan.delinquency), loan.loan_id
        assert is_fully_paid(result.schedule) == (loan.status is LoanStatus.CLOSED), loan.loan_id

    def build_into(self, book: LedgerBook, start: int, count: int, check_every: int) -> LedgerBook:
        """Loans ``start`` .. ``start + count - 1`` and their payments, added to ``book`` (alone: a new
        book); one loan in ``check_every`` is replayed as a check (:meth:`check`)."""
        started = time.perf_counter()
        for n in range(start, start + count):
            loan, payments = self.loan(n)
            if n % check_every == 0:
                self.check(loan)
            book.loans.append(loan)
            book.payments += payments
            book.by_status[loan.status.value] += 1
            if loan.status is LoanStatus.ACTIVE:
                book.by_bucket[loan.delinquency.bucket.value] += 1
        book.build_seconds += time.perf_counter() - started
        return book


# --- the seed: items written raw --------------------------------------------------------------------


Group = tuple[tuple[ScopeKind, int], ...]
"""The shard a loan or payment adds to in each of its scopes (by kind of scope)."""


def counter_items(loans: list[Loan], payments: list[Payment]) -> list[dict[str, Any]]:
    """The counter items a live book would hold for these loans and payments: ``domain.portfolio``'s
    ``recount`` and ``recount_collections``, spread over the shards. A live write adds to one shard
    per scope picked at random; here each scope's loans (and payments) take its shards in turn, which
    spreads the same sums without leaving a shard empty. Each loan (payment) falls in one group, its
    shard in each of its scopes; a group is recounted at once and its sums go to those shards."""
    turns: Counter[tuple[str, str | None]] = Counter()

    def shards_of(scopes: tuple[Scope, ...], month: str | None) -> Group:
        picked = []
        for scope in scopes:
            turn = (scope.key, month)
            picked.append((scope.kind, turns[turn] % SHARDS[scope.kind]))
            turns[turn] += 1
        return tuple(picked)

    loan_groups: dict[Group, list[Loan]] = {}
    for loan in loans:
        loan_groups.setdefault(shards_of(loan_scopes(loan), None), []).append(loan)
    payment_groups: dict[Group, list[Payment]] = {}
    for payment in payments:
        scopes = tuple(c.scope for c in payment_collections(payment))
        payment_groups.setdefault(shards_of(scopes, clock.month_of(payment.payment_date)), []).append(payment)
    items: dict[tuple[str, str | None, int], dict[str, int]] = {}
    writes: Counter[tuple[str, str | None, int]] = Counter()

    def add(scope: Scope, month: str | None, group: Group, values: dict[str, int], count: int) -> None:
        shard = dict(group)[scope.kind]
        key = (scope.key, month, shard)
        target = items.setdefault(key, {})
        for name, value in values.items():
            target[name] = target.get(name, 0) + value
        writes[key] += count

    for group, members in loan_groups.items():
        for scope, values in recount(members).items():
            add(scope, None, group, values, values.get("loans_total", 0))
    for group, paid in payment_groups.items():
        for (scope, paid_in), values in recount_collections(paid).items():
            add(scope, paid_in, group, values, values.get("month_count", 0))
    out: list[dict[str, Any]] = []
    for (scope_key, month, shard), values in items.items():
        scope = Scope.parse(scope_key)
        if month is None:
            pk, kind = counters_key(scope, shard), CounterKind.COUNTERS.value
        else:
            pk, kind = collections_key(scope, month, shard), CounterKind.COLLECTIONS.value
        # Written out directly (PynamoDB's serialize of ~90 attributes is the slow part); the first
        # item is checked against AggregateModel's own serialization.
        item: dict[str, Any] = {"pk": {"S": pk}, "kind": {"S": kind}, "scope": {"S": scope_key}}
        item["shard"] = {"N": str(shard)}
        item["writes"] = {"N": str(writes[scope_key, month, shard])}
        if month is not None:
            item["month"] = {"S": month}
        item.update({name: {"N": str(value)} for name, value in values.items()})
        if not out:
            extra = {"month": month} if month is not None else {}
            model = AggregateModel(
                pk, kind=kind, scope=scope_key, shard=shard, writes=writes[scope_key, month, shard], **extra, **values
            )
            assert model.serialize() == item, (model.serialize(), item)
        out.append(item)
    return out


def claim_item(payment: Payment) -> dict[str, Any]:
    claim = UtrClaimModel(
        payment.utr, payment_id=payment.payment_id, loan_id=payment.loan_id, claimed_at=payment.posted_at
    )
    item: dict[str, Any] = claim.serialize()
    return item


@dataclass
class Seeded:
    book: LedgerBook
    seconds: float
    """Generating and writing, together: the next chunk is built while the last one is written."""
    items: int


def seed(
    endpoint: str,
    stage: str,
    builder: LedgerBookBuilder,
    size: int,
    threads: int,
    with_payments: bool = True,
    check_every: int = 25,
) -> Seeded:
    """Provision ``stage`` and write a book of ``size`` loans raw: loans, counters, and
    (``with_payments``) payments and claims, chunk by chunk (``BatchWriteItem``, bench/dpd.py's
    ``write_items``, in a writer thread while the next chunk is generated)."""
    started = time.perf_counter()
    provision(stage, boto3.client("dynamodb", endpoint_url=endpoint), ssm=NoSsm(), quiet=True)
    book = LedgerBook(builder.as_of, [], [], 0.0)
    written = 0

    def write(table: str, items: list[dict[str, Any]]) -> None:
        if items:
            write_items(endpoint, f"loan-crm-{stage}-{table}", items, threads)

    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: list[Future[None]] = []
        for start in range(0, size, SEED_CHUNK):
            first_payment = len(book.payments)
            builder.build_into(book, start, min(SEED_CHUNK, size - start), check_every)
            loans = [loan_to_item(loan).serialize() for loan in book.loans[start:]]
            payments = book.payments[first_payment:] if with_payments else []
            tables = {
                "loans": loans,
                "payments": [payment_to_item(p).serialize() for p in payments],
                "utr-claims": [claim_item(p) for p in payments],
            }
            for table, items in tables.items():
                pending.append(writer.submit(write, table, items))
                written += len(items)
        counters = counter_items(book.loans, book.payments if with_payments else [])
        pending.append(writer.submit(write, "aggregates", counters))
        written += len(counters)
        for future in pending:
            future.result()
    return Seeded(book, time.perf_counter() - started, written)


def post_through_service(loans: list[Loan], count: int, seed_: int, prefix: str) -> int:
    """``count`` payments on ACTIVE loans through ``services().payments.post``, dated today: one EMI
    or what is left, whichever is smaller. Returns how many were posted."""
    rng = random.Random(seed_)
    active = [loan for loan in loans if loan.status is LoanStatus.ACTIVE]
    service = wiring.services().payments
    today = clock.today_ist()
    for n, loan in enumerate(rng.sample(active, count)):
        emi = loan.schedule[0].principal_paise + loan.schedule[0].interest_paise
        owed = sum(i.unpaid_paise for i in loan.schedule)
        service.post(ADMIN, NewPayment(loan.loan_id, f"{prefix}{n:08d}", min(emi, owed), today, PaymentMode.UPI))
    return count


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class Stored:
    """One item of the run in the ``reconciliations`` table: the run record or a segment checkpoint."""

    part: str
    body_bytes: int
    """The compressed JSON ``body`` (``adapters.dynamodb.reconciliation._pack``)."""
    item_bytes: int
    """The whole item, as DynamoDB sizes it: what the 400 KB limit applies to."""
    body: dict[str, Any]


def run_items(endpoint: str, stage: str, run_id: str) -> list[Stored]:
    client = boto3.client("dynamodb", endpoint_url=endpoint)
    found = []
    pages = client.get_paginator("query").paginate(
        TableName=f"loan-crm-{stage}-reconciliations",
        KeyConditionExpression="run_id = :r",
        ExpressionAttributeValues={":r": {"S": run_id}},
        ConsistentRead=True,
    )
    for page in pages:
        for item in page["Items"]:
            body = item["body"]["B"]
            found.append(Stored(item["part"]["S"], len(body), item_size(item), json.loads(zlib.decompress(body))))
    return found


@dataclass
class ScopeShare:
    """Part of a checkpoint's share of the recount, packed on its own: bytes per scope it holds."""

    label: str
    scopes: int
    sets: int
    packed_bytes: int
    records: int
    """Loans (loans segments) or payments (payments segments) the scopes count, in this segment."""

    @property
    def per_scope(self) -> float:
        return self.packed_bytes / self.scopes if self.scopes else 0.0


def shares(partial: dict[str, dict[str, int]]) -> list[ScopeShare]:
    """The share of the recount split by kind of scope, each packed as a checkpoint packs it."""
    out = []
    for label, prefix in (("all", ""), ("collectors", "collector:"), ("branches", "branch:"), ("book", "book")):
        part = {k: v for k, v in partial.items() if k.startswith(prefix)}
        scopes = {k.partition("@")[0] for k in part}
        records = sum(v.get("loans_total", 0) + v.get("month_count", 0) for v in part.values())
        out.append(ScopeShare(label, len(scopes), len(part), len(_pack(part)), records))
    return out


@dataclass
class RunMeasurement:
    run: ReconciliationRun
    wall: float
    python_cpu: float
    requests: Counter[str]
    read_units: float
    write_units: float
    by_target: Counter[str]


def measure_run(stage: str, meter: DynamoMeter) -> RunMeasurement:
    service = wiring.services().reconciliation
    with contextlib.redirect_stdout(io.StringIO()):  # EMF metric lines
        meter.reset(f"loan-crm-{stage}-")
        cpu, started = time.process_time(), time.perf_counter()
        run = service.start("bench")
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return RunMeasurement(
        run, wall, cpu, Counter(meter.requests), meter.read_units, meter.write_units, Counter(meter.by_target)
    )


def report(book: LedgerBook, m: RunMeasurement, parts: list[Stored], collectors: int, branches: int) -> None:
    run = m.run
    loans = run.loans_checked
    print(f"\nreconciliation of {len(book.loans):,} loans, {run.payments_checked:,} payments, as of {run.as_of}")
    print(f"  status {run.status.value}; mismatch_count {run.mismatch_count}; unverified {len(run.unverified or [])}")
    clean = (
        run.status.value == "COMPLETED"
        and run.mismatch_count == 0
        and not run.unverified
        and run.loans_checked == len(book.loans)
    )
    verdict = "yes" if clean else "NO"
    print(f"  clean run (COMPLETED, mismatch_count == 0, nothing unverified, every loan checked): {verdict}")
    if run.mismatches:
        for mismatch in run.mismatches[:5]:
            print(f"    {mismatch}")
    print(f"  checked: loans {run.loans_checked:,}, payments {run.payments_checked:,}, claims {run.claims_checked:,}")
    print(f"  wall {m.wall:.1f} s, Python CPU {m.python_cpu:.1f} s (this machine, machine-dependent)")
    print(f"  loans/s (loans checked / wall, machine-dependent): {loans / m.wall:,.0f}")
    print(
        f"  records/s (loans + payments + claims / wall, machine-dependent): "
        f"{(run.loans_checked + run.payments_checked + run.claims_checked) / m.wall:,.0f}"
    )
    requests = sum(m.requests.values())
    print(f"  requests {requests:,} ({requests / loans:.3f} per loan checked)")
    ops = sorted(m.requests, key=lambda op: (op not in READ_OPERATIONS, op))
    for op in ops:
        print(f"    {op:<22}{m.requests[op]:>8,}{m.requests[op] / loans:>10.3f} per loan")
    print(f"  read units  {m.read_units:>10,.1f} ({m.read_units / loans:.3f} per loan checked)")
    print(f"  write units {m.write_units:>10,.1f} ({m.write_units / loans:.3f} per loan checked)")
    summary.record(
        f"reconciliation, {loans:,} loans",
        f"{m.wall:.0f} s, {requests / loans:.3f} requests, {m.read_units / loans:.2f} read and "
        f"{m.write_units / loans:.3f} write units per loan checked; mismatches {run.mismatch_count}",
    )
    for target, units in sorted(m.by_target.items(), key=lambda kv: (kv[0][0], -kv[1])):
        if units:
            print(f"    {target:<34}{units:>10,.1f}{units / loans:>10.3f} per loan")
    report_items(parts, collectors, branches)


def report_items(parts: list[Stored], collectors: int, branches: int) -> None:
    segments = [p for p in parts if p.part != "run"]
    print(f"  segment checkpoints: {len(segments)} ({collectors} collectors and {branches} branches in the book)")
    print(f"    {'source':<10}{'largest body B':>16}{'item B':>9}{'scopes':>8}{'sets':>7}{'body B / scope':>16}")
    largest: dict[str, Stored] = {}
    for part in segments:
        source = part.part.split(":")[0]
        if source not in largest or part.body_bytes > largest[source].body_bytes:
            largest[source] = part
    for source, top in sorted(largest.items()):
        partial = top.body.get("partial") or {}
        scopes = len({k.partition("@")[0] for k in partial})
        per = f"{top.body_bytes / scopes:.1f}" if scopes else "-"
        print(f"    {source:<10}{top.body_bytes:>16,}{top.item_bytes:>9,}{scopes:>8,}{len(partial):>7,}{per:>16}")
    for source in ("loans", "payments"):
        if source not in largest:
            continue
        top = largest[source]
        print(f"  {top.part}'s share of the recount, packed by kind of scope (the checkpoint's own format):")
        what = "loans" if source == "loans" else "payments"
        for share in shares(top.body.get("partial") or {}):
            if not share.scopes:
                continue
            limit = f"{400 * 1024 / share.per_scope:,.0f}" if share.scopes > 1 else "-"
            print(
                f"    {share.label:<11}{share.scopes:>6,} scopes {share.sets:>6,} sets {share.packed_bytes:>8,} B "
                f"{share.per_scope:>7.1f} B/scope, {share.records / share.scopes:>8,.1f} {what}/scope in the segment; "
                f"400 KB / (B/scope) = {limit}"
            )
    for part in parts:
        if part.part == "run":
            writes = part.body.get("writes_at_start") or {}
            print(
                f"  run record: body {part.body_bytes:,} B, item {part.item_bytes:,} B; writes_at_start holds "
                f"{len(writes):,} counter sets (those the run compares): "
                f"{part.body_bytes / max(1, len(writes)):.1f} B per set"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--loans", type=int, default=10_000)
    parser.add_argument("--collectors", type=int, default=500)
    parser.add_argument("--branches", type=int, default=60)
    parser.add_argument("--threads", type=int, default=8, help="BatchWriteItem threads for the seed")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("loan-crm").setLevel(logging.WARNING)  # the run's own log line
    meter = DynamoMeter()
    install_meter(meter)
    overall = time.perf_counter()
    stage = f"recon{args.loans}"
    # The clock stands still for the whole bench, so the book's dates and the run's agree.
    frozen = clock.FixedClock(clock.now_ist())
    with clock.use_clock(frozen), dynamodb_local() as server:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint
        os.environ["STAGE"] = stage
        wiring.reset()
        as_of = clock.last_completed_business_date()
        builder = LedgerBookBuilder(as_of, args.seed, args.collectors, args.branches)
        seeded = seed(server.endpoint, stage, builder, args.loans, args.threads)
        book = seeded.book
        print(
            f"generated {len(book.loans):,} loans and {len(book.payments):,} payments as of {as_of} and wrote "
            f"{seeded.items:,} items in {seeded.seconds:.1f} s (of which {book.build_seconds:.1f} s building loans)"
        )
        print(f"  loans by status: {dict(book.by_status)}; active by bucket: {dict(sorted(book.by_bucket.items()))}")
        with contextlib.redirect_stdout(io.StringIO()):
            post_through_service(book.loans, SERVICE_PAYMENTS, args.seed, "BENCHSVC")
        print(f"  + {SERVICE_PAYMENTS} payments posted through services().payments.post", flush=True)
        measured = measure_run(stage, meter)
        parts = run_items(server.endpoint, stage, measured.run.run_id)
    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    print(
        f"\nmachine: {_cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"DynamoDB Local {dynamodb_local_jar().parent.name}"
    )
    report(book, measured, parts, args.collectors, args.branches)
    print(f"\ntotal bench time {time.perf_counter() - overall:.0f} s (DynamoDB Local on this machine; not AWS)")


if __name__ == "__main__":
    main()
