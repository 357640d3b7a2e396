"""Starting day-end invocations on AWS Lambda: the ``JobDispatcher`` of ``chalicelib.services.ports``
(docs/day-end.md, "Time budget and continuation").

Whether there is a Lambda to start is read from the environment at each call, not once: ``chalice
local`` and ``chalice.test.Client`` run the same code in one process, where there is none, and the
service then does the work itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from chalicelib.domain.runs import RunRequest

JOB_FUNCTION_ENV = "DPD_JOB_FUNCTION"
"""Set (by the merge template) on the API function to the job Lambda's name, for manual runs."""
LAMBDA_RUNTIME_ENV = "AWS_LAMBDA_FUNCTION_NAME"
"""Set by the AWS Lambda runtime in every function, to the function's own name, and by nothing else
this project runs under. Chalice sets ``AWS_EXECUTION_ENV`` even locally, so that one cannot tell."""


def _invoke_async(function_name: str, payload: dict[str, Any]) -> None:
    boto3.client("lambda").invoke(
        FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload).encode()
    )


def job_event(request: RunRequest) -> dict[str, Any]:
    """The event ``chalicelib/jobs/lambda_handlers.py`` reads back into the same request. Only a
    continuation says so: any other event starts a new attempt."""
    event: dict[str, Any] = {
        "business_date": request.business_date.isoformat(),
        "trigger": request.trigger,
        "full_scan": request.full_scan,
    }
    if request.continuation:
        event["continuation"] = True
    return event


@dataclass
class LambdaJobDispatcher:
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def on_aws_lambda(self) -> bool:
        return bool(self.environ.get(LAMBDA_RUNTIME_ENV))

    def start(self, request: RunRequest) -> bool:
        """Only from inside AWS Lambda: a stray ``DPD_JOB_FUNCTION`` in a developer's shell must not
        send a local run to a deployed stack."""
        function_name = self.environ.get(JOB_FUNCTION_ENV)
        if not (function_name and self.on_aws_lambda()):
            return False
        _invoke_async(function_name, job_event(request))
        return True

    def hand_on(self, request: RunRequest) -> bool:
        """To the function this code runs in: the job's own, which the continuation must reach."""
        own_name = self.environ.get(LAMBDA_RUNTIME_ENV)
        if not own_name:
            return False
        _invoke_async(own_name, job_event(request))
        return True


RECONCILIATION_FUNCTION_ENV = "RECONCILIATION_JOB_FUNCTION"
"""Set (by the merge template) on the API's and the day-end job's functions to the reconciliation
job's name: a manual run and the run after each day-end go there."""


@dataclass
class LambdaReconciliationDispatcher:
    """The ``RunDispatcher`` of the reconciliation (docs/reconciliation.md): the same rules as
    :class:`LambdaJobDispatcher`, with the run's id as the event."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def start(self, run_id: str) -> bool:
        function_name = self.environ.get(RECONCILIATION_FUNCTION_ENV)
        if not (function_name and self.environ.get(LAMBDA_RUNTIME_ENV)):
            return False
        _invoke_async(function_name, {"run_id": run_id})
        return True

    def hand_on(self, run_id: str) -> bool:
        own_name = self.environ.get(LAMBDA_RUNTIME_ENV)
        if not own_name:
            return False
        _invoke_async(own_name, {"run_id": run_id})
        return True
