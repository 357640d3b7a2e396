"""Publishing to the stage's alerts topic (``AlertsTopic`` in infra/template.json, ``loan-crm-<stage>-alerts``),
the standard SNS topic every alarm notifies and the on-call people subscribe to. The morning digest is
the one message the application itself sends there.

Unlike the reminders topic, a message published twice here does no harm (a second copy of the same
digest), so botocore's own retries are left on.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.config import Settings

TOPIC_ARN_VARIABLE = "ALERTS_TOPIC_ARN"
"""Set on deployed functions by the template; absent in the local stack and the tests."""
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})


class AlertTopicMissing(Exception):
    """No alerts topic of this stage in the account and region (not provisioned, or the wrong stage)."""


class SnsAlertPublisher:
    """Implements ``services.ports.AlertPublisher``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self._topic_arn: str | None = None
        self._lock = threading.Lock()

    def _ready(self) -> tuple[Any, str]:
        with self._lock:
            if self._client is None:
                self._client = boto3.client("sns", region_name=self._settings.region, config=_CLIENT_CONFIG)
            if self._topic_arn is None:
                self._topic_arn = os.environ.get(TOPIC_ARN_VARIABLE) or self._find_topic(self._client)
            return self._client, self._topic_arn

    def _find_topic(self, client: Any) -> str:
        """The local stack and the tests have no template to hand the ARN over: ``infra.provision`` made
        the topic under the template's name, so look it up by that."""
        wanted = f":{self._settings.stage_prefix}alerts"
        for page in client.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                if topic["TopicArn"].endswith(wanted):
                    return str(topic["TopicArn"])
        raise AlertTopicMissing(f"no alerts topic ({wanted.lstrip(':')}) in this account and region")

    def publish(self, subject: str, message: str) -> str:
        client, topic_arn = self._ready()
        answer = client.publish(TopicArn=topic_arn, Subject=subject, Message=message)
        return str(answer.get("MessageId", ""))
