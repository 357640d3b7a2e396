"""The day-end run fanned out (docs/day-end.md, "Fan-out") through the job's Lambda entry point, on moto:
the coordinator starts the state machine's execution (moto's Step Functions) only on AWS Lambda with the
machine configured; the template's own definition, run by a small interpreter (tests/asl.py), drives the
job's function through ``chalice.test.Client`` (3 s of Lambda time an invocation) to a completed run with
the figures of a run in one process. Anywhere else the same entry point works the run in-process."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from chalicelib.adapters.lambda_dispatch import STATE_MACHINE_ENV
from chalicelib.domain.delinquency import bucket_for, dpd_on, overdue_paise
from chalicelib.domain.loan import ESCALATION_DPD
from chalicelib.domain.runs import RunStatus
from chalicelib.jobs.lambda_handlers import dpd_job
from chalicelib.wiring import services
from infra.provision import load_template
from tests.asl import Interpreter, state_machine_on_aws
from tests.integration.api_helpers import (
    YESTERDAY,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
)
from tests.integration.test_dpd_api import LambdaContext, one_segment_at_a_time, seed_book

RUN_DATE = dt.date.fromisoformat(YESTERDAY)
FUNCTION_ARN = "arn:aws:lambda:ap-south-1:123456789012:function:loan-crm-test-DpdJob-1"


def _definition() -> dict[str, Any]:
    """The template's definition with the job's function put in, as CloudFormation does."""
    machine = load_template()["Resources"]["DayEndStateMachine"]["Properties"]
    text = json.dumps(machine["Definition"]).replace("${DayEndFunction}", FUNCTION_ARN)
    definition: dict[str, Any] = json.loads(text)
    return definition


def _expected(count: int) -> tuple[int, int, int]:
    """Scanned, updated and escalated by a first run (a full scan), from the domain rules alone."""
    book = seed_book(count)
    dpd = {loan.loan_id: dpd_on(loan.schedule, RUN_DATE) for loan in book}
    escalated = {k for k, v in dpd.items() if v >= ESCALATION_DPD}
    moved = {loan.loan_id for loan in book if bucket_for(dpd[loan.loan_id]) is not loan.delinquency.bucket}
    moved |= {loan.loan_id for loan in book if overdue_paise(loan.schedule, RUN_DATE) != loan.delinquency.overdue_paise}
    return len(book), len(moved | escalated), len(escalated)


def test_under_the_test_client_the_run_is_worked_here_even_with_a_state_machine_named(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chalice local`` and the test client are not AWS Lambda: a state machine ARN in the environment
    changes nothing, the one call answers with the completed run."""
    expected = _expected(40)
    one_segment_at_a_time(monkeypatch)
    monkeypatch.setenv(STATE_MACHINE_ENV, "arn:aws:states:ap-south-1:123456789012:stateMachine:loan-crm-test-day-end")
    answer = api.client.lambda_.invoke("dpd_job", {"business_date": YESTERDAY}).payload
    assert answer["outcome"] == "COMPLETED", answer
    run = answer["run"]
    assert (run["loans_scanned"], run["loans_updated"], run["escalated"]) == expected


def _on_aws(api: Api, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    name = f"loan-crm-{api.stage}-day-end"
    return state_machine_on_aws(monkeypatch, name, _definition(), STATE_MACHINE_ENV, "loan-crm-test-DpdJob-1")


def test_on_aws_the_template_s_state_machine_drives_the_job_function_to_a_completed_run(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _expected(40)
    one_segment_at_a_time(monkeypatch)
    sfn, machine = _on_aws(api, monkeypatch)

    # The coordinator: the scheduler's event, on AWS Lambda.
    first = dpd_job({"scheduled_time": "2026-03-14T19:00:00Z"}, LambdaContext())
    assert first["outcome"] == "FANNED_OUT", first
    assert first["run"]["status"] == RunStatus.RUNNING.value and first["run"]["loans_scanned"] == 0
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    record = services().runs.get(RUN_DATE)
    assert record is not None
    assert execution["name"] == f"day-end-{YESTERDAY}-{record.run_id}"
    execution_input = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert len(execution_input["phases"]["loans"]) == len(record.segments) == 16  # a first run: a full scan
    # A repeated delivery of the schedule while the execution runs is refused by the run's lease.
    assert dpd_job({"scheduled_time": "2026-03-14T19:00:00Z"}, LambdaContext())["outcome"] == "IN_PROGRESS"

    # Step Functions' part: the template's definition, each task an invocation through the test client.
    answers: list[dict[str, Any]] = []

    def invoke(resource: str, payload: Any) -> Any:
        assert resource == FUNCTION_ARN
        answer = api.client.lambda_.invoke("dpd_job", payload).payload
        answers.append(answer)
        return answer

    finished = Interpreter(invoke).execute(_definition(), execution_input)
    assert finished.status == "SUCCEEDED", finished
    assert finished.output["outcome"] == "COMPLETED"
    run = finished.output["run"]
    assert run["status"] == "COMPLETED" and run["trigger"] == "scheduler"
    assert (run["loans_scanned"], run["loans_updated"], run["escalated"]) == expected
    worked = [a for a in answers if a.get("step") == "work"]
    assert len(worked) >= 16 and {a["outcome"] for a in worked} <= {"DONE", "MORE"}
    record = services().runs.get(RUN_DATE)
    assert record is not None and record.status is RunStatus.COMPLETED and record.continuations == 0


def test_a_worker_that_keeps_failing_fails_the_execution_and_records_why(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_book(20)
    one_segment_at_a_time(monkeypatch)
    sfn, machine = _on_aws(api, monkeypatch)
    assert dpd_job({"business_date": YESTERDAY}, LambdaContext())["outcome"] == "FANNED_OUT"
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    execution_input = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])

    job = services().dpd_job
    fetch = job._fetch

    def broken(segment: Any, cursor: Any) -> Any:
        if segment.index == 3:
            raise RuntimeError("arn:aws:dynamodb:ap-south-1:123456789012:table/secret went away")
        return fetch(segment, cursor)

    monkeypatch.setattr(job, "_fetch", broken)

    def invoke(_resource: str, payload: Any) -> Any:
        return api.client.lambda_.invoke("dpd_job", payload).payload

    finished = Interpreter(invoke).execute(_definition(), execution_input)
    assert finished.status == "FAILED" and finished.error == "DayEndRunFailed"
    record = services().runs.get(RUN_DATE)
    assert record is not None and record.status is RunStatus.FAILED
    # The worker's error in safe words: its class, the run; never the exception's text.
    assert record.last_error == f"internal error (RuntimeError); see the job's logs for run {record.run_id}"
    # Fixed, run again: a new attempt, a new execution, the run completes from its checkpoints.
    monkeypatch.setattr(job, "_fetch", fetch)
    assert dpd_job({"business_date": YESTERDAY}, LambdaContext())["outcome"] == "FANNED_OUT"
    second = [e for e in sfn.list_executions(stateMachineArn=machine)["executions"] if e["name"] != execution["name"]]
    assert len(second) == 1
    execution_input = json.loads(sfn.describe_execution(executionArn=second[0]["executionArn"])["input"])
    assert sum(len(phase) for phase in execution_input["phases"].values()) < 16  # only what was left
    finished = Interpreter(invoke).execute(_definition(), execution_input)
    assert finished.status == "SUCCEEDED" and finished.output["outcome"] == "COMPLETED"
    record = services().runs.get(RUN_DATE)
    assert record is not None and record.status is RunStatus.COMPLETED
    assert record.loans_scanned == 20 and record.errors == 1
