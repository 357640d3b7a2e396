"""Flags from SSM parameters ``/loan-crm/{stage}/flags/{NAME}`` through powertools parameters, cached
for ``FLAG_CACHE_SECONDS`` (default 60; 0 reads on every use) so a change takes effect within a
minute without a deploy. Jobs read with ``fresh=True`` at the start of each run."""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.config import Settings
from chalicelib.domain.flags import FlagName, FlagSource, FlagValue, interpret
from chalicelib.services.ports import Metrics

_FAST = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"})


class SsmFlags:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._prefix = f"{settings.parameter_prefix}flags/"
        self._region = settings.region
        self._metrics = metrics
        self._provider: Any = None

    @property
    def cache_seconds(self) -> int:
        raw = os.environ.get("FLAG_CACHE_SECONDS", "")
        return int(raw) if raw.strip().isdigit() else 60

    def _ssm(self) -> Any:
        if self._provider is None:
            # Imported on first use: the parameters utility is not needed to serve most requests.
            from aws_lambda_powertools.utilities.parameters import SSMProvider

            self._provider = SSMProvider(boto3_client=boto3.client("ssm", region_name=self._region, config=_FAST))
        return self._provider

    def read(self, name: FlagName, fresh: bool = False) -> FlagValue:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        try:
            raw = self._ssm().get(self._prefix + name.value, max_age=self.cache_seconds, force_fetch=fresh)
        except GetParameterError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return interpret(name, None)
            return self._unreadable(name)
        except Exception:
            return self._unreadable(name)
        value = interpret(name, str(raw))
        if value.source is FlagSource.UNREADABLE:
            self._metrics.count("FlagReadError", flag=name.value)
        return value

    def _unreadable(self, name: FlagName) -> FlagValue:
        self._metrics.count("FlagReadError", flag=name.value)
        return FlagValue(name, False, FlagSource.UNREADABLE)

    def all(self) -> list[FlagValue]:
        return [self.read(name) for name in FlagName]
