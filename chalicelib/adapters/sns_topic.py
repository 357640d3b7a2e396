"""One of the stage's SNS topics, found once per container: deployed functions are handed its ARN by
the template (an environment variable); the local stack and the tests have no template to hand it over,
so the topic ``infra.provision`` made is looked up by its template name, ``loan-crm-<stage>-<name>``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.config import Settings


class StageTopic:
    def __init__(
        self,
        settings: Settings,
        name: str,
        given_arn: str | None,
        client_config: Config,
        missing: Callable[[str], Exception],
    ) -> None:
        self._settings = settings
        self._name = name
        self._arn = given_arn
        self._config = client_config
        self._missing = missing
        self._client: Any = None
        self._lock = threading.Lock()

    def ready(self) -> tuple[Any, str]:
        """The SNS client and the topic's ARN (made and found on first use, then reused)."""
        with self._lock:
            if self._client is None:
                self._client = boto3.client("sns", region_name=self._settings.region, config=self._config)
            if self._arn is None:
                self._arn = self._find(self._client)
            return self._client, self._arn

    def _find(self, client: Any) -> str:
        wanted = f":{self._settings.stage_prefix}{self._name}"
        for page in client.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                if topic["TopicArn"].endswith(wanted):
                    return str(topic["TopicArn"])
        raise self._missing(f"no {self._name} topic ({wanted.lstrip(':')}) in this account and region")
