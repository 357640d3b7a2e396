"""Cost of posting one payment, on DynamoDB Local (docs/rules.md; issue "Prove it: benchmark").

Measures, per accepted payment through the real handler (``chalice.test.Client``, in-process):
DynamoDB requests by operation, consumed capacity units (each request is sent with
``ReturnConsumedCapacity=TOTAL`` by a botocore hook, so the figures are DynamoDB's own), and handler
wall time — against a bare ``TransactWriteItems`` of the same four items, timed in the same run. Then
the same for reversing each payment of the first case (an admin's ``POST /payments/{id}/reverse``).
Prints figures and ratios; there is no pass/fail.

    python -m bench.payments [--payments 200]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from typing import Any

import boto3
from chalice.test import Client

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench import summary
from bench.dynamo import DynamoMeter, NoSsm, dynamodb_local, install_meter, unmetered_client
from bench.floor import Priced, WritePricer
from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb.mapping import audit_to_item, loan_to_item, payment_to_item
from chalicelib.adapters.dynamodb.models import UtrClaimModel
from chalicelib.domain.audit import Actor
from chalicelib.domain.loan import Borrower
from chalicelib.domain.roles import Role
from chalicelib.services.auth import issue_token
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.services.ports import AuditFilter
from infra.provision import provision


def create_loans(count: int) -> list[str]:
    ids = [f"BENCH-{n:05d}" for n in range(count)]
    loans = wiring.services().loans
    for loan_id in ids:
        loans.create(
            RequestContext(actor=Actor("bench", "admin")),
            NewLoan(
                loan_id=loan_id,
                borrower=Borrower("Bench Borrower", "9876543210"),
                principal_paise=50_000_000,
                disbursement_date=dt.date(2026, 1, 1),
                terms=GeneratedTerms(2000, 36, dt.date(2026, 2, 5)),
            ),
        )
    return ids


def _bare_transactions(count: int) -> list[float]:
    """The same four puts a payment writes (payment, UTR claim, loan, audit), pre-built, sent raw."""
    loans = wiring.services().loans.loans
    payments = wiring.services().payments.payments
    client = boto3.client("dynamodb")
    sample = payments.list_for_loan("BENCH-00000", 1, None).items[0]
    loan = loans.get("BENCH-00000")
    assert loan is not None
    audits = wiring.services().audit.list(AuditFilter(entity_id="BENCH-00000"), 1, None).items
    timings = []
    for n in range(count):
        pay = payment_to_item(sample)
        pay.payment_id = f"BARE{n:08d}"
        claim = UtrClaimModel(f"BAREUTR{n:08d}", payment_id=pay.payment_id, loan_id=loan.loan_id, claimed_at="x")
        loan_item = loan_to_item(loan)
        loan_item.loan_id = f"BARE-LOAN-{n:05d}"
        audit = audit_to_item(audits[0])
        audit.audit_id = f"BAREAUDIT{n:08d}"
        items = [
            (pay, "loan-crm-bench-payments"),
            (claim, "loan-crm-bench-utr-claims"),
            (loan_item, "loan-crm-bench-loans"),
            (audit, "loan-crm-bench-audit"),
        ]
        request = [
            {
                "Put": {
                    "TableName": table,
                    "Item": item.serialize(),
                    "ConditionExpression": "attribute_not_exists(#k)",
                    "ExpressionAttributeNames": {"#k": type(item)._hash_key_attribute().attr_name},
                }
            }
            for item, table in items
        ]
        started = time.perf_counter()
        client.transact_write_items(TransactItems=request)
        timings.append(time.perf_counter() - started)
    return timings


def _post(
    client: Any, headers: dict[str, str], loan_ids: list[str], tag: str, use_key: bool, count: int
) -> tuple[list[float], list[str]]:
    """``count`` payments through the handler: each one's wall time, and the payment ids."""
    timings: list[float] = []
    ids: list[str] = []
    for n in range(count):
        body = {
            "loan_id": loan_ids[n % len(loan_ids)],
            "utr": f"UTR{tag}{n:08d}",
            "amount_paise": 150_000,
            "payment_date": clock.today_ist().isoformat(),
            "mode": "UPI",
        }
        extra = {"Idempotency-Key": f"bench-{tag}-{n}"} if use_key else {}
        started = time.perf_counter()
        response = client.http.post("/api/v1/payments", headers={**headers, **extra}, body=json.dumps(body))
        timings.append(time.perf_counter() - started)
        assert response.status_code == 201, response.body
        ids.append(json.loads(response.body)["payment_id"])
    return timings, ids


def _reverse(client: Any, headers: dict[str, str], payment_ids: list[str]) -> list[float]:
    timings = []
    for payment_id in payment_ids:
        started = time.perf_counter()
        response = client.http.post(
            f"/api/v1/payments/{payment_id}/reverse",
            headers=headers,
            body=json.dumps({"reason": "bench: reversal cost"}),
        )
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.body
    return timings


CASES = (("POST /payments", False), ("POST /payments + Idempotency-Key", True))
WARMUP_LOANS = 25
REVERSAL = "POST /payments/{id}/reverse"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument(
        "--priced", type=int, default=50, help="payments and reversals per case priced from their items"
    )
    parser.add_argument("--warmup", type=int, default=100, help="untimed payments of each kind before the first case")
    args = parser.parse_args()
    meter = DynamoMeter()
    install_meter(meter)
    priced: dict[str, Priced] = {}
    with dynamodb_local() as server:
        endpoint = server.endpoint
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        wiring.reset()
        provision("bench", boto3.client("dynamodb"), ssm=NoSsm(), quiet=True)
        loan_ids = create_loans(max(1, args.payments // 4) + WARMUP_LOANS)
        # The warm-up posts to loans of its own, so the timed cases replay as many standing payments as
        # they did without it.
        warmup_ids, loan_ids = loan_ids[-WARMUP_LOANS:], loan_ids[:-WARMUP_LOANS]
        # The API refuses tokens of users it does not know: the bench's caller is a stored manager.
        wiring.services().auth.add_user("bench-manager", "bench-manager-password", Role.MANAGER)
        token = issue_token("bench-manager", "manager", os.environ["JWT_SECRET"], 3600).access_token
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        # Reversals are an admin's.
        wiring.services().auth.add_user("bench-admin", "bench-admin-password", Role.ADMIN)
        admin = issue_token("bench-admin", "admin", os.environ["JWT_SECRET"], 3600).access_token
        admin_headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
        posted: list[str] = []
        results: dict[str, tuple[list[float], Counter[str], float, float]] = {}
        # Metrics go to stdout as EMF lines; keep them out of the report.
        with (
            tempfile.TemporaryDirectory() as empty,
            Client(wiring_app(), project_dir=empty) as client,
            contextlib.redirect_stdout(io.StringIO()),
        ):
            # Untimed: a fresh DynamoDB Local answers its first few hundred requests slower (the JVM is
            # still compiling), which made whichever case ran first look cheaper against its own slower
            # requests (1.27x first, 1.35x second, the same code in either order).
            for _, use_key in CASES:
                _post(client, headers, warmup_ids, "WK" if use_key else "W", use_key, args.warmup)
            for label, use_key in CASES:
                meter.reset("")
                timings, ids = _post(client, headers, loan_ids, "K" if use_key else "P", use_key, args.payments)
                if not use_key:
                    posted = ids
                capacity = meter.read_units + meter.write_units
                results[label] = (timings, Counter(meter.requests), capacity, meter.total_seconds())
            # Each reversal replays its loan's standing payments (docs/rules.md): the loans here hold
            # about eight payments each by now, the later reversals fewer.
            meter.reset("")
            timings = _reverse(client, admin_headers, posted)
            results[REVERSAL] = (
                timings,
                Counter(meter.requests),
                meter.read_units + meter.write_units,
                meter.total_seconds(),
            )
            meter.reset("")
            bare = _bare_transactions(args.payments)
            results["bare TransactWriteItems (4 puts)"] = (
                bare,
                Counter(meter.requests),
                meter.read_units + meter.write_units,
                meter.total_seconds(),
            )
            # Write units priced from the items (bench.floor), after the timed cases: the pricer reads
            # every written item before and after, which would distort their times.
            pricer = WritePricer(unmetered_client(endpoint), "loan-crm-bench-")
            meter.pricer = pricer
            for label, use_key in CASES:
                with pricer.fresh() as priced[label]:
                    _, ids = _post(client, headers, loan_ids, "Q" if use_key else "R", use_key, args.priced)
                if not use_key:
                    to_reverse = ids
            with pricer.fresh() as priced[REVERSAL]:
                _reverse(client, admin_headers, to_reverse)
            meter.pricer = None
    bare_median = statistics.median(bare)
    print(f"payments per case: {args.payments}; DynamoDB Local; medians of per-request wall time")
    # "x own calls": the handler's total time over the time its own DynamoDB requests took on the wire
    # (sent to answered, botocore's before-call to after-call): the floor of those very items and
    # requests, whatever they are, so the ratio is what the code around the calls adds.
    print("x own calls: handler time / time inside its own DynamoDB requests (the floor for the same items)")
    header = f"{'case':<38}{'median ms':>10}{'p95 ms':>9}{'x bare':>8}{'x own calls':>12}{'req/pay':>9}{'CU/pay':>8}"
    print(header + "  requests by operation")
    for label, (timings, requests, capacity, in_calls) in results.items():
        ordered = sorted(timings)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        per = {op: round(n / args.payments, 2) for op, n in sorted(requests.items())}
        print(
            f"{label:<38}{statistics.median(timings) * 1000:>10.2f}{p95 * 1000:>9.2f}"
            f"{statistics.median(timings) / bare_median:>8.2f}{sum(timings) / in_calls:>12.2f}"
            f"{sum(requests.values()) / args.payments:>9.2f}{capacity / args.payments:>8.2f}  {per}"
        )
        if label in priced or label == REVERSAL:
            value = f"{statistics.median(timings) * 1000:.1f} ms, {sum(requests.values()) / args.payments:.2f} requests"
            summary.record(f"`{label}`", value, sum(timings) / in_calls, "the time inside its own DynamoDB requests")
    print(f"\nwrite units priced from the items (bench.floor), {args.priced} per case: priced / floor per request")
    for label, result in priced.items():
        total, floor = result.total("priced"), result.total("floor")
        parts = ", ".join(
            f"{target} {units / args.priced:.2f}"
            for target, units in sorted(result.priced.items(), key=lambda kv: -kv[1])
        )
        print(f"{label:<38}{total / args.priced:>8.2f} / {floor / args.priced:.2f} = {total / floor:.3f}   {parts}")
        per_request = f"{total / args.priced:.2f}"
        summary.record(f"`{label}`, write units", per_request, total / floor, "the floor for its items")


def wiring_app() -> Any:
    import app as app_module

    return app_module.app


if __name__ == "__main__":
    main()
