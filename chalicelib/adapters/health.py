"""Dependency checks for ``GET /health``: can we reach the loans table and SSM right now?"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamodb.models import LoanModel
from chalicelib.config import Settings

_FAST = Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 1})


class HealthProbe:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ssm: Any = None

    def dynamodb(self) -> bool:
        try:
            LoanModel._get_connection().describe_table()
        except Exception:
            return False
        return True

    def ssm(self) -> bool:
        if self._ssm is None:
            self._ssm = boto3.client("ssm", region_name=self._settings.region, config=_FAST)
        try:
            self._ssm.get_parameter(Name=f"{self._settings.parameter_prefix}flags/CRON_ENABLED")
        except ClientError as exc:
            # A missing flag means "enabled" (docs/rules.md): SSM answered, so it is healthy.
            return bool(exc.response.get("Error", {}).get("Code") == "ParameterNotFound")
        except BotoCoreError:
            return False
        return True
