"""Cost of posting one payment, on DynamoDB Local (SPEC §5; issue "Prove it: benchmark").

Measures, per accepted payment through the real handler (``chalice.test.Client``, in-process):
DynamoDB requests by operation, consumed capacity units (each request is sent with
``ReturnConsumedCapacity=TOTAL`` by a botocore hook, so the figures are DynamoDB's own), and handler
wall time — against a bare ``TransactWriteItems`` of the same four items, timed in the same run.
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
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_REGION": "ap-south-1",
        "STAGE": "bench",
        "JWT_SECRET": "bench-secret-that-is-long-enough-for-hs256-000",
    }
)

import boto3
from botocore.session import Session
from chalice.test import Client

from chalicelib import clock, wiring
from chalicelib.adapters.dynamodb.mapping import audit_to_item, loan_to_item, payment_to_item
from chalicelib.adapters.dynamodb.models import UtrClaimModel
from chalicelib.domain.audit import Actor
from chalicelib.domain.loan import Borrower
from chalicelib.services.auth import issue_token
from chalicelib.services.context import RequestContext
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.services.ports import AuditFilter
from infra.local import dynamodb_local_jar, java_executable
from infra.provision import provision


class DynamoMeter:
    """Counts every DynamoDB request any botocore client in this process makes, and its capacity."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.capacity = 0.0

    def before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.input_shape is not None and "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def after(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests[model.name] += 1
        consumed = parsed.get("ConsumedCapacity")
        for entry in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
            self.capacity += float(entry.get("CapacityUnits", 0))

    def reset(self) -> None:
        self.requests.clear()
        self.capacity = 0.0


def _install(meter: DynamoMeter) -> None:
    original = Session.create_client

    def create_client(self: Session, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = original(self, service_name, *args, **kwargs)
        if service_name == "dynamodb":
            client.meta.events.register("provide-client-params.dynamodb.*", meter.before)
            client.meta.events.register("after-call.dynamodb.*", meter.after)
        return client

    Session.create_client = create_client  # type: ignore[method-assign]


@contextmanager
def dynamodb_local() -> Iterator[str]:
    jar = dynamodb_local_jar()
    port = 8766
    proc = subprocess.Popen(
        [
            java_executable(),
            f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
            "-jar",
            str(jar),
            "-inMemory",
            "-port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=jar.parent,
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("dynamodb", endpoint_url=endpoint)
    for _ in range(150):
        try:
            client.list_tables()
            break
        except Exception:
            time.sleep(0.2)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def _create_loans(count: int) -> list[str]:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=200)
    args = parser.parse_args()
    meter = DynamoMeter()
    _install(meter)
    with dynamodb_local() as endpoint:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        wiring.reset()
        provision("bench", boto3.client("dynamodb"), ssm=_NoSsm(), quiet=True)
        loan_ids = _create_loans(max(1, args.payments // 4))
        token = issue_token("bench-manager", "manager", os.environ["JWT_SECRET"], 3600).access_token
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        results: dict[str, tuple[list[float], Counter[str], float]] = {}
        # Metrics go to stdout as EMF lines; keep them out of the report.
        with (
            tempfile.TemporaryDirectory() as empty,
            Client(wiring_app(), project_dir=empty) as client,
            contextlib.redirect_stdout(io.StringIO()),
        ):
            for label, use_key in (("POST /payments", False), ("POST /payments + Idempotency-Key", True)):
                timings: list[float] = []
                meter.reset()
                for n in range(args.payments):
                    body = {
                        "loan_id": loan_ids[n % len(loan_ids)],
                        "utr": f"UTR{label[-3:].upper().replace(' ', '')}{n:08d}",
                        "amount_paise": 150_000,
                        "payment_date": clock.today_ist().isoformat(),
                        "mode": "UPI",
                    }
                    extra = {"Idempotency-Key": f"bench-{n}"} if use_key else {}
                    started = time.perf_counter()
                    response = client.http.post("/api/v1/payments", headers={**headers, **extra}, body=json.dumps(body))
                    timings.append(time.perf_counter() - started)
                    assert response.status_code == 201, response.body
                results[label] = (timings, Counter(meter.requests), meter.capacity)
            meter.reset()
            bare = _bare_transactions(args.payments)
            results["bare TransactWriteItems (4 puts)"] = (bare, Counter(meter.requests), meter.capacity)
    bare_median = statistics.median(bare)
    print(f"payments per case: {args.payments}; DynamoDB Local; medians of per-request wall time")
    print(f"{'case':<38}{'median ms':>10}{'p95 ms':>9}{'x bare':>8}{'req/pay':>9}{'CU/pay':>8}  requests by operation")
    for label, (timings, requests, capacity) in results.items():
        ordered = sorted(timings)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        per = {op: round(n / args.payments, 2) for op, n in sorted(requests.items())}
        print(
            f"{label:<38}{statistics.median(timings) * 1000:>10.2f}{p95 * 1000:>9.2f}"
            f"{statistics.median(timings) / bare_median:>8.2f}{sum(requests.values()) / args.payments:>9.2f}"
            f"{capacity / args.payments:>8.2f}  {per}"
        )


class _NoSsm:
    """The benchmark needs no flags; provisioning's parameter step is skipped."""

    def put_parameter(self, **_: Any) -> None:
        return None


def wiring_app() -> Any:
    import app as app_module

    return app_module.app


if __name__ == "__main__":
    main()
