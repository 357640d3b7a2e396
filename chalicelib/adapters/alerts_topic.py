"""Publishing to the stage's alerts topic (``AlertsTopic`` in infra/template.json, ``loan-crm-<stage>-alerts``),
the standard SNS topic every alarm notifies and the on-call people subscribe to. The morning digest is
the one message the application itself sends there.

Unlike the reminders topic, a message published twice here does no harm (a second copy of the same
digest), so botocore's own retries are left on.
"""

from __future__ import annotations

from botocore.config import Config

from chalicelib.adapters.sns_topic import StageTopic
from chalicelib.config import Settings

_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})


class AlertTopicMissing(Exception):
    """No alerts topic of this stage in the account and region (not provisioned, or the wrong stage)."""


class SnsAlertPublisher:
    """Implements ``services.ports.AlertPublisher``."""

    def __init__(self, settings: Settings) -> None:
        self._topic = StageTopic(settings, "alerts", settings.alerts_topic_arn, _CLIENT_CONFIG, AlertTopicMissing)

    def publish(self, subject: str, message: str) -> str:
        client, topic_arn = self._topic.ready()
        answer = client.publish(TopicArn=topic_arn, Subject=subject, Message=message)
        return str(answer.get("MessageId", ""))
