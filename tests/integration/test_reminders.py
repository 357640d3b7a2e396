"""Borrower reminders end to end on moto (docs/reminders.md): queued by day-end runs made at frozen IST
instants, listed by the API, sent by the sender to the SNS FIFO topic, received by an SQS queue
subscribed to it, exactly once each.

The loan is the generated one of ``api_helpers.loan_body``: instalment 1 due 5 Apr 2026, 2 due 5 May.
Each run for date D is made at 00:30 IST on D+1, as the schedule makes it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError

from chalicelib.adapters.dynamodb.reminders import DynamoReminderStore
from chalicelib.clock import IST
from chalicelib.domain.privacy import mask_phone
from chalicelib.domain.reminders import ReminderKind, ReminderStatus, claimed, send_after_for
from chalicelib.jobs.lambda_handlers import reminders_job
from chalicelib.wiring import services
from tests.integration.api_helpers import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    emitted_metrics,
)

RUNS = "/api/v1/jobs/dpd/runs"


class LambdaContext:
    function_name = "loan-crm-test-reminders_job"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def set_flag(api: Api, name: str, value: str) -> None:
    boto3.client("ssm").put_parameter(
        Name=f"/loan-crm/{api.stage}/flags/{name}", Value=value, Type="String", Overwrite=True
    )


def run_for(api: Api, date: str, at: dt.time = dt.time(0, 30)) -> dict[str, Any]:
    """The day-end run for ``date``, made at ``at`` IST on the next day (or later, for a catch-up)."""
    day = dt.date.fromisoformat(date) + dt.timedelta(days=1)
    with api.at(dt.datetime.combine(day, at, tzinfo=IST)):
        reply = api.post(RUNS, {"business_date": date})
    assert reply.status == 200, reply.body[:500]
    result: dict[str, Any] = reply.json
    return result


def reminders(api: Api, loan_id: str, as_: str = "admin") -> list[dict[str, Any]]:
    reply = api.get(f"/api/v1/loans/{loan_id}/reminders", as_=as_)
    assert reply.status == 200, reply.body[:500]
    items: list[dict[str, Any]] = reply.json["items"]
    return items


def kinds(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return sorted((i["kind"], i["seq"]) for i in items)


@pytest.fixture
def inbox(api: Api) -> Iterator[Any]:
    """An SQS FIFO queue subscribed to the reminders topic: what an SMS gateway would receive."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith("-reminders.fifo"))
    queue_url = sqs.create_queue(QueueName=f"{api.stage}-sms.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})

    def received() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return messages
            for m in batch:
                messages.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])

    yield received


def send_at(api: Api, when: dt.datetime) -> dict[str, Any]:
    with api.at(when):
        result: dict[str, Any] = reminders_job({}, LambdaContext())
    return result


# --- the contact window -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-04-03T00:30", "2026-04-03T08:00"),
        ("2026-04-03T07:59", "2026-04-03T08:00"),
        ("2026-04-03T08:00", "2026-04-03T08:00"),
        ("2026-04-03T18:55", "2026-04-03T18:55"),
        ("2026-04-03T18:59", "2026-04-03T18:59"),
        ("2026-04-03T19:00", "2026-04-04T08:00"),
        ("2026-04-03T19:05", "2026-04-04T08:00"),
        ("2026-04-03T23:59", "2026-04-04T08:00"),
    ],
)
def test_send_after_is_the_next_instant_inside_0800_to_1900_ist(at: str, expected: str) -> None:
    when = dt.datetime.fromisoformat(at).replace(tzinfo=IST)
    assert send_after_for(when) == dt.datetime.fromisoformat(expected).replace(tzinfo=IST)
    assert send_after_for(when.astimezone(dt.UTC)) == send_after_for(when)


# --- queueing ------------------------------------------------------------------------------------------


def test_a_loan_walking_through_its_due_dates_gets_each_reminder_once(api: Api) -> None:
    loan_id = api.create_loan(collector_id="collector1")["loan_id"]
    expected_by_date = {
        "2026-04-01": [],
        "2026-04-02": [("PRE_DUE_3", 1)],
        "2026-04-03": [],
        "2026-04-04": [("PRE_DUE_1", 1)],
        "2026-04-05": [("OVERDUE_1", 1)],
        "2026-04-06": [],
        "2026-04-11": [("OVERDUE_7", 1)],
        "2026-04-19": [("OVERDUE_15", 1)],
        "2026-05-02": [("PRE_DUE_3", 2)],
        "2026-05-04": [("OVERDUE_30", 1), ("PRE_DUE_1", 2)],
        "2026-05-05": [],  # instalment 2 unpaid, but dpd counts from instalment 1 (31): no reminder kind
    }
    seen: list[tuple[str, int]] = []
    for date, new in expected_by_date.items():
        result = run_for(api, date)
        assert result["outcome"] == "COMPLETED", result
        items = reminders(api, loan_id)
        assert kinds(items) == sorted(seen + new), date
        for item in items:
            if (item["kind"], item["seq"]) in new:
                assert item["business_date"] == date
                queued_on = dt.date.fromisoformat(date) + dt.timedelta(days=1)
                assert item["send_after"] == f"{queued_on.isoformat()}T08:00:00+05:30"
                assert item["status"] == "QUEUED"
        seen += new
    # Running a completed date again adds nothing.
    assert run_for(api, "2026-05-04", dt.time(9, 0))["outcome"] == "ALREADY_COMPLETED"
    assert kinds(reminders(api, loan_id)) == sorted(seen)
    due = {i["kind"]: i["due_date"] for i in reminders(api, loan_id) if i["seq"] == 1}
    assert set(due.values()) == {"2026-04-05"}


def test_a_catch_up_run_at_1855_sends_today_and_at_1905_tomorrow_at_0800(api: Api) -> None:
    loan_id = api.create_loan()["loan_id"]
    run_for(api, "2026-04-01")
    run_for(api, "2026-04-02", dt.time(18, 55))  # made late on 3 Apr
    run_for(api, "2026-04-04", dt.time(19, 5))  # made late on 5 Apr
    by_kind = {i["kind"]: i["send_after"] for i in reminders(api, loan_id)}
    assert by_kind == {"PRE_DUE_3": "2026-04-03T18:55:00+05:30", "PRE_DUE_1": "2026-04-06T08:00:00+05:30"}


def test_a_loans_reminders_are_counted_in_one_data_point(api: Api, capfd: pytest.CaptureFixture[str]) -> None:
    """On 4 May instalment 1 (due 5 Apr) is 30 days overdue and instalment 2 falls due the next day: two
    reminders for one loan, one RemindersQueued data point of value 2 (not a line each)."""
    loan_id = api.create_loan()["loan_id"]
    capfd.readouterr()
    run_for(api, "2026-05-04")  # the first run: a full scan, so the loan is read and queued inline
    assert kinds(reminders(api, loan_id)) == [("OVERDUE_30", 1), ("PRE_DUE_1", 2)]
    points = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"RemindersQueued"' in line]
    # EMF carries a data point's value as a number or a list of them (powertools writes a list).
    values = [
        p["RemindersQueued"] if isinstance(p["RemindersQueued"], list) else [p["RemindersQueued"]] for p in points
    ]
    assert values == [[2]]


def test_with_the_switch_off_a_run_queues_none_and_turning_it_on_does_not_back_fill(api: Api) -> None:
    loan_id = api.create_loan()["loan_id"]
    run_for(api, "2026-04-01")
    set_flag(api, "REMINDERS_ENABLED", "false")
    run_for(api, "2026-04-02")
    run_for(api, "2026-04-04")
    assert reminders(api, loan_id) == []
    set_flag(api, "REMINDERS_ENABLED", "true")
    run_for(api, "2026-04-05")
    assert kinds(reminders(api, loan_id)) == [("OVERDUE_1", 1)]


def test_an_unreadable_switch_counts_as_off(api: Api) -> None:
    loan_id = api.create_loan()["loan_id"]
    run_for(api, "2026-04-01")
    set_flag(api, "REMINDERS_ENABLED", "maybe")
    run_for(api, "2026-04-02")
    assert reminders(api, loan_id) == []


def test_a_run_that_fails_while_queueing_is_resumed_and_adds_each_reminder_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    loans = [api.create_loan(first_due_date=f"2026-04-0{n}")["loan_id"] for n in (4, 5, 6)]
    run_for(api, "2026-04-01")
    real = DynamoReminderStore.queue
    calls = {"n": 0}

    def flaky(self: DynamoReminderStore, owed: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("reminders table unavailable")
        return real(self, owed)

    monkeypatch.setattr(DynamoReminderStore, "queue", flaky)
    failed = run_for(api, "2026-04-03")
    assert failed["outcome"] == "FAILED", failed
    monkeypatch.setattr(DynamoReminderStore, "queue", real)
    assert run_for(api, "2026-04-03", dt.time(1, 0))["outcome"] == "COMPLETED"
    assert run_for(api, "2026-04-03", dt.time(2, 0))["outcome"] == "ALREADY_COMPLETED"
    got = {loan_id: kinds(reminders(api, loan_id)) for loan_id in loans}
    # On 3 Apr: due 4 Apr is 1 day ahead, due 5 Apr 2 (no kind), due 6 Apr 3.
    # The run for 1 Apr had queued PRE_DUE_3 for the loan due 4 Apr.
    assert got == {loans[0]: [("PRE_DUE_1", 1), ("PRE_DUE_3", 1)], loans[1]: [], loans[2]: [("PRE_DUE_3", 1)]}


# --- the API ---------------------------------------------------------------------------------------------


def test_who_may_read_a_loans_reminders(api: Api) -> None:
    mine = api.create_loan(collector_id="collector1")["loan_id"]
    run_for(api, "2026-04-02")
    for role in ("admin", "manager", "auditor", "collector"):
        assert kinds(reminders(api, mine, as_=role)) == [("PRE_DUE_3", 1)]
    assert_error(api.get(f"/api/v1/loans/{mine}/reminders", as_="collector2"), 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/loans/NO-SUCH-LOAN/reminders"), 404, "NOT_FOUND")
    assert_error(api.get(f"/api/v1/loans/{mine}/reminders", as_=None), 401, "UNAUTHENTICATED")
    assert_error(api.get(f"/api/v1/loans/{mine}/reminders?status=SENT"), 400, "VALIDATION_ERROR")


# --- sending ---------------------------------------------------------------------------------------------


def test_the_sender_publishes_each_reminder_once_inside_the_window(
    api: Api, inbox: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    loan_id = api.create_loan()["loan_id"]
    run_for(api, "2026-04-02")
    capfd.readouterr()
    # 07:59: outside the window, nothing goes out.
    assert send_at(api, dt.datetime(2026, 4, 3, 7, 59, tzinfo=IST))["skipped"]
    assert inbox() == []
    sent = send_at(api, dt.datetime(2026, 4, 3, 8, 0, tzinfo=IST))
    assert sent["sent"] == 1
    assert send_at(api, dt.datetime(2026, 4, 3, 8, 10, tzinfo=IST))["sent"] == 0
    messages = inbox()
    assert len(messages) == 1
    message = messages[0]
    assert message["reminder_id"] == f"{loan_id}#PRE_DUE_3#001"
    assert message["borrower"]["phone"] == "9876543210"
    assert "05 Apr 2026" in message["texts"]["en"] and "05 Apr 2026" in message["texts"]["hi"]
    assert "देय" in message["texts"]["hi"]
    [item] = reminders(api, loan_id)
    assert item["status"] == "SENT" and item["attempts"] == 1 and item["sent_at"]
    logs = capfd.readouterr().out
    assert "RemindersSent" in emitted_metrics(logs)
    assert "9876543210" not in logs
    assert mask_phone("+91 98765 43210") == "********3210"


def test_at_1900_the_sender_stops(api: Api, inbox: Any) -> None:
    api.create_loan()
    run_for(api, "2026-04-02")
    assert send_at(api, dt.datetime(2026, 4, 3, 19, 0, tzinfo=IST))["skipped"]
    assert inbox() == []


def test_a_loan_paid_up_before_send_after_gets_no_overdue_reminder(api: Api, inbox: Any) -> None:
    loan = api.create_loan()
    run_for(api, "2026-04-05")  # dpd 1: OVERDUE_1 queued for 08:00 on 6 Apr
    emi = loan["schedule"][0]["principal_paise"] + loan["schedule"][0]["interest_paise"]
    with api.at(dt.datetime(2026, 4, 6, 7, 0, tzinfo=IST)):
        paid = api.post(
            "/api/v1/payments",
            {
                "loan_id": loan["loan_id"],
                "amount_paise": emi,
                "utr": "UTR000000000001",
                "mode": "UPI",
                "payment_date": "2026-04-06",
            },
        )
    assert paid.status == 201, paid.body[:300]
    assert send_at(api, dt.datetime(2026, 4, 6, 8, 0, tzinfo=IST))["cancelled"] == 1
    [item] = reminders(api, loan["loan_id"])
    assert (item["kind"], item["status"], item["reason"]) == ("OVERDUE_1", "CANCELLED", "PAID_UP")
    assert inbox() == []


def test_a_publish_that_times_out_and_is_retried_reaches_the_topic_once(
    api: Api, inbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.create_loan()
    run_for(api, "2026-04-02")
    publisher = services().reminders.publisher
    client, _ = publisher._topic.ready()  # type: ignore[attr-defined]
    real = client.publish
    calls: list[str] = []

    def delivered_then_timed_out(**kwargs: Any) -> Any:
        calls.append(kwargs["MessageDeduplicationId"])
        answer = real(**kwargs)
        if len(calls) == 1:
            raise ReadTimeoutError(endpoint_url="https://sns")  # the message went out; the answer did not
        return answer

    monkeypatch.setattr(client, "publish", delivered_then_timed_out)
    assert send_at(api, dt.datetime(2026, 4, 3, 9, 0, tzinfo=IST))["sent"] == 1
    assert len(calls) == 2 and calls[0] == calls[1]
    assert len(inbox()) == 1


def test_a_refused_publish_is_retried_with_backoff_then_fails_and_ops_can_send_it_again(
    api: Api, inbox: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loan_id = api.create_loan()["loan_id"]
    run_for(api, "2026-04-02")
    client, _ = services().reminders.publisher._topic.ready()  # type: ignore[attr-defined]
    real = client.publish

    def refused(**_kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "Throttled", "Message": "slow down"}}, "Publish")

    monkeypatch.setattr(client, "publish", refused)
    at = dt.datetime(2026, 4, 3, 9, 0, tzinfo=IST)
    for attempt in range(1, 6):
        report = send_at(api, at)
        [item] = reminders(api, loan_id)
        assert item["attempts"] == attempt
        if attempt < 5:
            assert report["retrying"] == 1 and item["status"] == "QUEUED"
            assert send_at(api, at + dt.timedelta(seconds=30))["retrying"] == 0  # not before its pause
        at += dt.timedelta(minutes=20)
    assert item["status"] == "FAILED" and "Throttled" in item["reason"]
    assert "RemindersFailed" in emitted_metrics(capsys.readouterr().out)
    monkeypatch.setattr(client, "publish", real)
    with api.at(at):
        again = services().reminders.resend(_ops(), f"{loan_id}#PRE_DUE_3#1")
    assert again.status is ReminderStatus.QUEUED
    assert send_at(api, at + dt.timedelta(minutes=1))["sent"] == 1
    assert len(inbox()) == 1
    [entry] = api.audit(action="REMINDER_RESENT")
    assert entry["entity_id"] == f"{loan_id}#PRE_DUE_3#001" and entry["before"]["status"] == "FAILED"


def test_an_attempt_whose_sender_died_is_published_again_only_inside_the_deduplication_window(
    api: Api, inbox: Any
) -> None:
    loan_ids = [api.create_loan()["loan_id"] for _ in range(2)]
    run_for(api, "2026-04-02")
    store = DynamoReminderStore()
    at = dt.datetime(2026, 4, 3, 9, 0, tzinfo=IST)
    # Both were claimed (SENDING) by a sender that died before publishing: one 2 minutes ago, one 6.
    for loan_id, minutes in zip(loan_ids, (2, 6), strict=True):
        [r] = store.for_loan(loan_id)
        started = at - dt.timedelta(minutes=minutes)
        assert store.replace(r, claimed(r, started))
    send_at(api, at)
    fresh, stale = (store.for_loan(i)[0] for i in loan_ids)
    assert fresh.status is ReminderStatus.SENT
    assert (stale.status, stale.reason) == (ReminderStatus.FAILED, "OUTCOME_UNKNOWN")
    assert [m["reminder_id"] for m in inbox()] == [fresh.reminder_id]


def test_a_reminder_left_waiting_past_its_days_expires(api: Api, inbox: Any) -> None:
    loan_id = api.create_loan()["loan_id"]
    run_for(api, "2026-04-05")  # OVERDUE_1, to go out from 6 Apr 08:00
    assert send_at(api, dt.datetime(2026, 4, 9, 10, 0, tzinfo=IST))["cancelled"] == 1
    [item] = reminders(api, loan_id)
    assert (item["status"], item["reason"]) == ("CANCELLED", "EXPIRED")
    assert inbox() == []


def test_with_the_switch_off_nothing_is_sent(api: Api, inbox: Any) -> None:
    api.create_loan()
    run_for(api, "2026-04-02")
    set_flag(api, "REMINDERS_ENABLED", "false")
    assert send_at(api, dt.datetime(2026, 4, 3, 9, 0, tzinfo=IST))["skipped"] == "REMINDERS_ENABLED is off"
    assert inbox() == []


def _ops() -> Any:
    from chalicelib.domain.audit import Actor
    from chalicelib.services.context import RequestContext

    return RequestContext(actor=Actor(sub="ops:tester", role="admin"))


def test_every_kind_is_named_by_the_walk() -> None:
    """The walk above covers each kind; a new kind must be added to it."""
    assert {k.value for k in ReminderKind} == {
        "PRE_DUE_3",
        "PRE_DUE_1",
        "OVERDUE_1",
        "OVERDUE_7",
        "OVERDUE_15",
        "OVERDUE_30",
    }
