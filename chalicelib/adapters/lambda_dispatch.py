"""Starting day-end invocations on AWS Lambda: the ``JobDispatcher`` of ``chalicelib.services.ports``
(docs/day-end.md, "Time budget and continuation" and "Fan-out"), and the events its invocations and the
day-end state machine's steps carry.

Whether there is a Lambda to start is read from the environment at each call, not once: ``chalice
local`` and ``chalice.test.Client`` run the same code in one process, where there is none, and the
service then does the work itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from chalicelib.domain.runs import FanOut, RunRequest, Segment, WorkItem, WorkOutcome

JOB_FUNCTION_ENV = "DPD_JOB_FUNCTION"
"""Set (by the merge template) on the API function to the job Lambda's name, for manual runs."""
STATE_MACHINE_ENV = "DAY_END_STATE_MACHINE"
"""Set (by the merge template) on the job's function to the day-end state machine's ARN: where a planned
run's segments go to be worked by parallel invocations."""
PHASE_KEYS = ("loans", "pending_escalation", "reminders")
"""The execution input's phases, in the order the state machine's Map states read them (infra/template.json)."""
WORK_STEP = "work"
SETTLE_STEP = "settle"
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


def execution_name(plan: FanOut) -> str:
    """One name per attempt at a date's run: Step Functions refuses a second execution of that name, so a
    repeated start of one attempt (a retried call, a retried coordinator) starts nothing more."""
    return f"day-end-{plan.business_date.isoformat()}-{plan.run_id}"


def execution_input(plan: FanOut) -> dict[str, Any]:
    """What the state machine is started with: the run's date and attempt, and per phase the workers'
    shares, each a list of segment ids."""
    return {
        "business_date": plan.business_date.isoformat(),
        "run_id": plan.run_id,
        "phases": {
            key: [[str(segment) for segment in share] for share in phase]
            for key, phase in zip(PHASE_KEYS, plan.phases, strict=True)
        },
    }


def work_item_from_event(event: dict[str, Any]) -> WorkItem:
    """A Map iteration's input (the Map's ItemSelector, or the worker's own previous answer)."""
    return WorkItem(
        business_date=dt.date.fromisoformat(str(event["business_date"])),
        run_id=str(event["run_id"]),
        segments=tuple(Segment.parse(str(segment)) for segment in event["segments"]),
        continuations=int(event.get("continuations") or 0),
    )


def work_answer(item: WorkItem, outcome: WorkOutcome) -> dict[str, Any]:
    """The worker's answer, which is also its next input when the state machine invokes it again."""
    return {
        "step": WORK_STEP,
        "business_date": item.business_date.isoformat(),
        "run_id": item.run_id,
        "segments": [str(segment) for segment in item.segments],
        "continuations": item.continuations + 1,
        "outcome": outcome.value,
    }


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

    def fan_out(self, plan: FanOut) -> bool:
        """Start the state machine's execution for this attempt; only from inside AWS Lambda, and only
        where the template configured one (as :meth:`start`)."""
        state_machine = self.environ.get(STATE_MACHINE_ENV)
        if not (state_machine and self.on_aws_lambda()):
            return False
        return _start_execution(state_machine, execution_name(plan), execution_input(plan))


RECONCILIATION_FUNCTION_ENV = "RECONCILIATION_JOB_FUNCTION"
"""Set (by the merge template) on the API's and the day-end job's functions to the reconciliation
job's name: a manual run and the run after each day-end go there."""
RECONCILIATION_STATE_MACHINE_ENV = "RECONCILIATION_STATE_MACHINE"
"""Set (by the merge template) on the reconciliation job's function to its state machine's ARN: where a
run's segments go to be worked by parallel invocations (docs/reconciliation.md, "Fan-out")."""


def _start_execution(state_machine: str, name: str, execution: dict[str, Any]) -> bool:
    """Start the execution ``name``; whether it is now running. Step Functions refuses a second execution
    of a name, so a retried start changes nothing. If the one of that name has already ended (stopped by
    hand, or its last step kept failing) while the run it was for is still running, False: the caller
    works the run in its own process rather than leave it running for good with no one working it."""
    client = boto3.client("stepfunctions")
    try:
        client.start_execution(
            stateMachineArn=state_machine, name=name, input=json.dumps(execution, separators=(",", ":"))
        )
    except client.exceptions.ExecutionAlreadyExists:
        arn = state_machine.replace(":stateMachine:", ":execution:", 1) + f":{name}"
        return bool(client.describe_execution(executionArn=arn)["status"] == "RUNNING")
    return True


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

    def fan_out(self, run_id: str, segments: list[str]) -> bool:
        """One execution per run (its id names it), each segment a Map iteration."""
        state_machine = self.environ.get(RECONCILIATION_STATE_MACHINE_ENV)
        if not (state_machine and self.environ.get(LAMBDA_RUNTIME_ENV)):
            return False
        return _start_execution(state_machine, f"reconciliation-{run_id}", {"run_id": run_id, "segments": segments})
