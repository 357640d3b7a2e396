"""Publishing reminders to the stage's SNS FIFO topic (``RemindersTopic`` in infra/template.json), which
an SMS gateway subscribes to. FIFO for its deduplication: a publish repeated with the same
``MessageDeduplicationId`` within five minutes is accepted and dropped, which is what makes a retried
publish safe (docs/reminders.md, "Never twice")."""

from __future__ import annotations

import json
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.sns_topic import StageTopic
from chalicelib.config import Settings
from chalicelib.domain.reminders import PublishOutcomeUnknown, PublishRejected, Reminder
from chalicelib.retry import REMINDER_PUBLISH, retry

# Our own retry decides what is sent again (REMINDER_PUBLISH), so botocore must not add its own.
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"})


class SnsReminderPublisher:
    def __init__(self, settings: Settings) -> None:
        self._topic = StageTopic(
            settings, "reminders.fifo", settings.reminders_topic_arn, _CLIENT_CONFIG, PublishRejected
        )

    def publish(self, reminder: Reminder, message: dict[str, Any]) -> str:
        client, topic_arn = self._topic.ready()

        def once() -> str:
            try:
                answer = client.publish(
                    TopicArn=topic_arn,
                    Message=json.dumps(message, ensure_ascii=False),
                    MessageGroupId=reminder.loan_id,
                    MessageDeduplicationId=reminder.reminder_id,
                    MessageAttributes={"kind": {"DataType": "String", "StringValue": reminder.kind.value}},
                )
            except ClientError as exc:  # the topic answered: nothing was taken
                raise PublishRejected(exc.response.get("Error", {}).get("Code", "error")) from exc
            except BotoCoreError as exc:  # no answer: it may have been taken
                raise PublishOutcomeUnknown(type(exc).__name__) from exc
            return str(answer.get("MessageId", ""))

        return retry(
            REMINDER_PUBLISH,
            once,
            retry_on=PublishOutcomeUnknown,
            exhausted=lambda: PublishOutcomeUnknown("no answer from the topic after retries"),
        )
