"""A collector's thousands of loans moved on the real engine, interrupted twice and resumed
(docs/rules.md, "Bulk reassignment"): once because the call ran out of time (it stops and says what
remains), once because the process moving them was killed mid-way (SIGKILL, between any two requests).
The same request sent again finishes the job: every loan ends with the target, none is left with the
leaving collector, each moved loan is written once with exactly one LOAN_ASSIGNED entry, and the counts
the calls answered add up to the loans moved.

The book is written directly (BatchWriteItem of items made by ``mapping.loan_to_item``, as
``bench/dpd.py`` builds its books), so the test spends its time moving loans, not creating them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from chalicelib.adapters.dynamodb.mapping import loan_to_item
from chalicelib.adapters.dynamodb.sharding import stored_values
from chalicelib.domain.audit import Actor
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, initial_delinquency
from chalicelib.domain.roles import Role
from chalicelib.domain.schedule import generate_schedule
from chalicelib.services.budget import fresh_budget
from chalicelib.services.context import RequestContext
from chalicelib.services.reassignment import ReassignmentProgress
from chalicelib.wiring import services
from tests.dynamodb_local import processes

pytestmark = pytest.mark.dynamodb_local

ACTIVE_LOANS = 3000
CLOSED_LOANS = 40
OTHER_LOANS = 20
FROM, TO, OTHER = "leaving1", "taking1", "bystander1"
KILL_AFTER = 300
"""Loans the second process moves before it is killed."""
MANAGER = RequestContext(Actor("manager1", "manager"), source_ip="10.0.0.2", request_id="offboarding")


def _book() -> dict[str, Loan]:
    schedule = tuple(generate_schedule(1_20_000_00, 1800, 12, dt.date(2026, 2, 1), dt.date(2026, 3, 5)))
    template = Loan(
        loan_id="template",
        borrower=Borrower("Reassigned Borrower", "9876543210"),
        status=LoanStatus.ACTIVE,
        principal_paise=1_20_000_00,
        disbursement_date=dt.date(2026, 2, 1),
        schedule=schedule,
        delinquency=initial_delinquency(schedule, dt.date(2026, 2, 28)),
        annual_rate_bps=1800,
        collector_id=FROM,
        branch="PUNE",
        created_at="2026-02-01T10:00:00.000+05:30",
        updated_at="2026-02-01T10:00:00.000+05:30",
        version=1,
    )
    loans = {}
    for n in range(ACTIVE_LOANS):
        loans[f"RA{n:05d}"] = dataclasses.replace(template, loan_id=f"RA{n:05d}")
    for n in range(CLOSED_LOANS):
        loans[f"RC{n:05d}"] = dataclasses.replace(template, loan_id=f"RC{n:05d}", status=LoanStatus.CLOSED)
    for n in range(OTHER_LOANS):
        loans[f"RO{n:05d}"] = dataclasses.replace(template, loan_id=f"RO{n:05d}", collector_id=OTHER)
    return loans


def _write(stage: str, loans: list[Loan]) -> None:
    client = boto3.client("dynamodb")
    table = f"loan-crm-{stage}-loans"
    items = [loan_to_item(loan).serialize() for loan in loans]

    def put(start: int) -> None:
        request: Any = {table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(put, range(0, len(items), 25)))


def _with_collector(stage: str, collector_id: str) -> int:
    """Loans (any status) in the collector's partition of the collector index."""
    client = boto3.client("dynamodb")
    count, start = 0, None
    while True:
        extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        page = client.query(
            TableName=f"loan-crm-{stage}-loans",
            IndexName="collector-list-index",
            KeyConditionExpression="collector_id = :c",
            ExpressionAttributeValues={":c": {"S": collector_id}},
            Select="COUNT",
            **extra,
        )
        count += int(page["Count"])
        start = page.get("LastEvaluatedKey")
        if not start:
            return count


def _stored(stage: str) -> dict[str, tuple[str, str, int]]:
    """loan id -> (collector, status, version), read from the table itself."""
    client = boto3.client("dynamodb")
    found = {}
    for page in client.get_paginator("scan").paginate(
        TableName=f"loan-crm-{stage}-loans",
        ProjectionExpression="loan_id, collector_id, #s, version",
        ExpressionAttributeNames={"#s": "status"},
        ConsistentRead=True,
    ):
        for item in page["Items"]:
            found[item["loan_id"]["S"]] = (item["collector_id"]["S"], item["status"]["S"], int(item["version"]["N"]))
    return found


def _assigned(stage: str) -> list[dict[str, Any]]:
    client = boto3.client("dynamodb")
    entries = []
    for action in stored_values("LOAN_ASSIGNED"):
        for page in client.get_paginator("query").paginate(
            TableName=f"loan-crm-{stage}-audit",
            IndexName="action-index",
            KeyConditionExpression="#a = :a",
            ExpressionAttributeNames={"#a": "action"},
            ExpressionAttributeValues={":a": {"S": action}},
        ):
            entries += page["Items"]
    return entries


def _move_without_limit(env: dict[str, str]) -> None:
    """The killed process: a process of its own moving the same collector's loans with no time limit."""
    os.environ.update(env)
    from chalicelib.wiring import services

    services().reassignment.move_collector_loans(MANAGER, FROM, TO, None)


def _killed_mid_way(stage: str, already_moved: int) -> int:
    """Start the move in another process and SIGKILL it once it has moved :data:`KILL_AFTER` more loans;
    returns how many loans are with the target afterwards."""
    ctx = processes.context()
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
    env["STAGE"] = stage
    process = ctx.Process(target=_move_without_limit, args=(env,))
    process.start()
    deadline = time.monotonic() + 90
    try:
        while _with_collector(stage, TO) < already_moved + KILL_AFTER:
            assert process.is_alive(), f"the mover exited ({process.exitcode}) before it could be killed"
            assert time.monotonic() < deadline, "the mover made no progress"
            time.sleep(0.2)
    finally:
        process.kill()
        process.join(30)
    assert process.exitcode == -9
    # A transaction the engine had already received when the process died still lands (or not) whole.
    time.sleep(0.5)
    return _with_collector(stage, TO)


@pytest.mark.long
def test_thousands_of_loans_interrupted_by_time_and_by_a_kill_end_moved_exactly_once(local_stack: str) -> None:
    started = time.monotonic()
    for username in (FROM, TO, OTHER):
        services().auth.add_user(username, "correct-horse-battery", Role.COLLECTOR)
    book = _book()
    _write(local_stack, list(book.values()))
    active = sorted(i for i, loan in book.items() if loan.status is LoanStatus.ACTIVE and loan.collector_id == FROM)
    assert len(active) == ACTIVE_LOANS
    reassignment = services().reassignment

    # 1. Out of time: a budget of 1.5 s stops the first call part-way; it says exactly what remains.
    first = reassignment.move_collector_loans(MANAGER, FROM, TO, fresh_budget(1_500))
    assert 0 < first.moved < ACTIVE_LOANS, first
    assert first == ReassignmentProgress(first.moved, 0, ACTIVE_LOANS - first.moved)
    assert reassignment.has_active_loans(FROM)

    # 2. Killed: another process carries on and dies mid-way.
    with_target = _killed_mid_way(local_stack, first.moved)
    killed_moved = with_target - first.moved
    assert KILL_AFTER <= killed_moved < ACTIVE_LOANS - first.moved, (first, with_target)

    # 3. Resumed: the same request, sent again until it is done, each call with 15 s.
    resumed: list[ReassignmentProgress] = []
    while not (resumed and resumed[-1].done):
        resumed.append(reassignment.move_collector_loans(MANAGER, FROM, TO, fresh_budget(15_000)))
        assert resumed[-1].moved > 0 or resumed[-1].done
        assert len(resumed) < 30
    left = ACTIVE_LOANS - with_target
    for progress in resumed:
        left -= progress.moved
        assert progress.remaining == left, resumed

    # Nothing lost: every active loan is with the target, none with the leaving collector.
    stored = _stored(local_stack)
    assert {i for i, (c, _, _) in stored.items() if c == TO} == set(active)
    assert sorted(i for i, (c, s, _) in stored.items() if c == FROM) == sorted(
        f"RC{n:05d}" for n in range(CLOSED_LOANS)
    )
    assert sum(1 for c, _, _ in stored.values() if c == OTHER) == OTHER_LOANS
    assert not reassignment.has_active_loans(FROM)
    # Written once each: one version more, one LOAN_ASSIGNED entry, from the leaving collector to the target.
    assert {stored[i][2] for i in active} == {2}
    entries = _assigned(local_stack)
    assert Counter(e["entity_id"]["S"] for e in entries) == Counter(active)
    assert {
        (json.loads(e["before"]["S"])["collector_id"], json.loads(e["after"]["S"])["collector_id"]) for e in entries
    } == {(FROM, TO)}
    # The counts add up: what each call moved, and what the killed process moved before it died.
    assert first.moved + killed_moved + sum(r.moved for r in resumed) == ACTIVE_LOANS
    assert sum(r.already for r in resumed) == 0
    assert time.monotonic() - started < 120, "meant to take under a minute on two cores"
