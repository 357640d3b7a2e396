"""The morning digest end to end on moto: a business day made through the API (loans, payments, a
refused duplicate, a reversal, the night's run, a reconciliation), the digest Lambda invoked as the
09:00 IST schedule invokes it, and the message read back from an SQS queue subscribed to the alerts
topic, as an e-mail or pager subscription would receive it.

The day is 14 March 2026 (``api_helpers.YESTERDAY``); the digest is made at 09:00 IST on the 15th.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from chalicelib import wiring
from chalicelib.adapters.alerts_topic import AlertTopicMissing
from chalicelib.clock import IST
from chalicelib.config import reset_settings
from chalicelib.domain.reminders import Reminder, ReminderKind, ReminderStatus
from chalicelib.jobs.digest import digest_job
from chalicelib.wiring import services
from tests.integration.api_helpers import (
    YESTERDAY,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    emitted_metrics,
    imported_body,
)

DAY = dt.date.fromisoformat(YESTERDAY)
SCHEDULED = {"scheduled_time": "2026-03-15T03:30:00Z"}
"""What EventBridge Scheduler passes at 09:00 IST on 15 March."""
ROWS = [
    ("2026-01-05", 1_000_000, 100_000),
    ("2026-02-05", 1_000_000, 90_000),
    ("2026-03-05", 1_000_000, 80_000),
    ("2026-04-05", 1_000_000, 70_000),
]
"""Three instalments overdue on the 14th: the night's run moves the loan's dpd."""
LONG_OVERDUE = [("2025-11-05", 2_000_000, 150_000), ("2026-06-05", 2_000_000, 100_000)]
"""Over 90 days past due on the 14th: the night's run escalates the loan to legal."""

Inbox = Callable[[], list[dict[str, Any]]]


def at(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=IST)


def subscribe(api: Api, topic_arn: str, name: str) -> Inbox:
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{api.stage}-{name}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)

    def received() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for m in batch:
                messages.append(json.loads(m["Body"]))  # the SNS envelope: Subject and Message
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        return messages

    return received


def alerts_topic(api: Api) -> str:
    topics = boto3.client("sns").list_topics()["Topics"]
    return next(t["TopicArn"] for t in topics if t["TopicArn"].endswith(f":loan-crm-{api.stage}-alerts"))


@pytest.fixture
def inbox(api: Api) -> Iterator[Inbox]:
    """An SQS queue subscribed to the stage's alerts topic: what the on-call subscription receives."""
    yield subscribe(api, alerts_topic(api), "alerts")


def pay(api: Api, loan_id: str, utr: str, paise: int, when: dt.datetime) -> Any:
    with api.at(when):
        body = {
            "loan_id": loan_id,
            "utr": utr,
            "amount_paise": paise,
            "payment_date": when.date().isoformat(),
            "mode": "UPI",
        }
        return api.post("/api/v1/payments", body)


def plant_reminder(loan_id: str, status: ReminderStatus, kind: ReminderKind) -> None:
    """A reminder due on the digest's day, as the sender left it."""
    services().reminders.store.queue(
        [
            Reminder(
                loan_id=loan_id,
                kind=kind,
                seq=1,
                due_date=dt.date(2026, 3, 5),
                business_date=DAY - dt.timedelta(days=1),
                send_after=at(YESTERDAY, "08:00"),
                status=status,
                attempts=1,
                queued_at=at("2026-03-14", "00:30").isoformat(),
            )
        ]
    )


def business_day(api: Api) -> None:
    """Two loans from the 13th; on the 14th two postings, a refused duplicate UTR and a reversal; payments
    on the 13th and on the 15th that are not the 14th's; the night's run and a reconciliation after it."""
    with api.at(at("2026-03-13", "10:00")):
        api.create_loan(imported_body(ROWS, loan_id="LN-DIG-1", collector_id="collector1"))
        api.create_loan(imported_body(LONG_OVERDUE, loan_id="LN-DIG-2", collector_id="collector1"))
    assert pay(api, "LN-DIG-1", "UTRDIG0000", 100_000, at("2026-03-13", "15:00")).status == 201
    assert pay(api, "LN-DIG-1", "UTRDIG0001", 500_000, at(YESTERDAY, "11:00")).status == 201
    bounced = pay(api, "LN-DIG-2", "UTRDIG0002", 250_000, at(YESTERDAY, "12:00"))
    assert bounced.status == 201
    assert pay(api, "LN-DIG-2", "UTRDIG0001", 500_000, at(YESTERDAY, "13:00")).status == 409
    with api.at(at(YESTERDAY, "17:00")):
        reversal = api.post(f"/api/v1/payments/{bounced.json['payment_id']}/reverse", {"reason": "cheque bounced"})
        assert reversal.status == 200
    with api.at(at("2026-03-15", "00:30")):
        run = api.post("/api/v1/jobs/dpd/runs", {"business_date": YESTERDAY})
        assert run.status == 200 and run.json["outcome"] == "COMPLETED", run.body[:500]
    with api.at(at("2026-03-15", "01:00")):
        report = api.post("/api/v1/reconciliation/runs", {})
        assert report.status == 200 and report.json["status"] == "COMPLETED", report.body[:500]
    assert pay(api, "LN-DIG-1", "UTRDIG0009", 100_000, at("2026-03-15", "08:30")).status == 201
    plant_reminder("LN-DIG-1", ReminderStatus.SENT, ReminderKind.OVERDUE_7)
    plant_reminder("LN-DIG-2", ReminderStatus.FAILED, ReminderKind.OVERDUE_30)


def test_the_digest_answers_the_daily_checklist_for_yesterday(
    api: Api, inbox: Inbox, capsys: pytest.CaptureFixture[str]
) -> None:
    business_day(api)
    record = services().runs.get(DAY)
    assert record is not None and record.loans_updated >= 1 and record.escalated == 1
    capsys.readouterr()

    with api.at(at("2026-03-15", "09:00")):
        answer = digest_job(SCHEDULED, None)

    assert answer["business_date"] == YESTERDAY
    assert "DigestSent" in emitted_metrics(capsys.readouterr().out)
    (message,) = inbox()
    assert message["Subject"] == f"loan-crm {api.stage} digest {YESTERDAY}: 1 to look at" == answer["subject"]
    text = message["Message"]
    assert text.startswith(
        f"loan-crm {api.stage}: morning digest for business date {YESTERDAY} (Sat), made 2026-03-15 09:00 IST\n"
    )
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index("Needs a look:") + 1
    problems = lines[start : lines.index("", start)]
    assert problems == [f"- FAILED reminders: 1 (python -m ops reminders list --date {YESTERDAY} --status FAILED)"]
    for expected in (
        f"COMPLETED, business date {YESTERDAY}, started 00:30 IST, finished 00:30 IST (0 min 0 s)",
        f"loans scanned {record.loans_scanned:,}, updated {record.loans_updated:,}, errors 0",
        "escalated to legal 1, pending escalation 0",
        "posted 2 (₹7,500.00)",  # 5,000 + 2,500: not the 13th's nor the 15th's
        "reversed 1 (₹2,500.00)",
        "refused, as audited: DUPLICATE_UTR 1",
        "sent 1, failed 1, cancelled 0, never sent 0",
        "COMPLETED as of 2026-03-14 (manual:admin1), finished 01:00 IST",
        "loans checked 2, payments 3, mismatches 0, unverified counters 0",  # before the 15th's posting
    ):
        assert expected in lines, (expected, text)


def test_a_day_with_nothing_done_says_what_is_missing(api: Api, inbox: Inbox) -> None:
    with api.at(at("2026-03-15", "09:00")):
        answer = digest_job({}, None)  # ops, by hand: yesterday's

    (message,) = inbox()
    assert answer["business_date"] == YESTERDAY
    assert message["Subject"] == f"loan-crm {api.stage} digest {YESTERDAY}: 2 to look at"
    text = message["Message"]
    assert f"  - no day-end run for {YESTERDAY}: python -m ops dpd runs\n" in text
    assert "  - no reconciliation has finished yet\n" in text
    assert "posted 0 (₹0.00)" in text and "refused, as audited: none" in text

    with api.at(at("2026-03-15", "09:05")):
        again = digest_job({"business_date": "2026-03-10"}, None)
    assert again["business_date"] == "2026-03-10"
    assert inbox()[0]["Subject"].startswith(f"loan-crm {api.stage} digest 2026-03-10: ")


def test_the_topic_named_by_the_environment_wins_and_a_missing_topic_fails_loudly(
    api: Api, inbox: Inbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sns = boto3.client("sns")
    elsewhere = sns.create_topic(Name=f"{api.stage}-elsewhere")["TopicArn"]
    other_inbox = subscribe(api, elsewhere, "elsewhere")
    monkeypatch.setenv("ALERTS_TOPIC_ARN", elsewhere)
    reset_settings()
    wiring.reset()  # a container started with the variable set
    with api.at(at("2026-03-15", "09:00")):
        digest_job(SCHEDULED, None)
    assert len(other_inbox()) == 1 and inbox() == []

    monkeypatch.delenv("ALERTS_TOPIC_ARN")
    reset_settings()
    sns.delete_topic(TopicArn=alerts_topic(api))
    wiring.reset()  # a fresh container, which has not found the topic yet
    capsys.readouterr()
    with api.at(at("2026-03-15", "09:00")), pytest.raises(AlertTopicMissing):
        digest_job(SCHEDULED, None)
    metrics = emitted_metrics(capsys.readouterr().out)
    assert "DigestFailed" in metrics and "DigestSent" not in metrics
