"""How a day-end run is handed on (docs/day-end.md, "Time budget and continuation"): the ``JobDispatcher``
port, its Lambda adapter (``chalicelib/adapters/lambda_dispatch.py``), and what the service does with
its answer: hand a run that stopped for time to a fresh invocation, or carry it on in this process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.adapters import lambda_dispatch
from chalicelib.adapters.lambda_dispatch import LambdaJobDispatcher, job_event
from chalicelib.clock import FixedClock, use_clock
from chalicelib.domain.runs import FanOut, RunOutcome, RunRequest, RunStatus
from chalicelib.jobs.lambda_handlers import business_date_from_event, run_request_from_event
from chalicelib.services.day_end import Dispatched, RunResult
from tests.unit.test_dpd_job import TODAY, YESTERDAY, World, at, counts, small_book, twin_books


@dataclass
class FakeDispatcher:
    """Says yes or no, and remembers what it was asked."""

    starts: bool = False
    hands_on: bool = False
    started: list[RunRequest] = field(default_factory=list)
    handed_on: list[RunRequest] = field(default_factory=list)

    def start(self, request: RunRequest) -> bool:
        self.started.append(request)
        return self.starts

    def hand_on(self, request: RunRequest) -> bool:
        self.handed_on.append(request)
        return self.hands_on

    def fan_out(self, plan: FanOut) -> bool:
        return False


@pytest.fixture
def clk() -> Iterator[FixedClock]:
    with use_clock(FixedClock(at(TODAY))) as clock:
        assert isinstance(clock, FixedClock)
        yield clock


def no_time_left() -> int:
    return 0


# --- the service: hand on, or carry on here -------------------------------------------------------------


def test_with_no_one_to_hand_on_to_the_run_is_continued_here_until_it_completes(clk: FixedClock) -> None:
    world, clean = twin_books(small_book, clk)
    dispatcher = FakeDispatcher(hands_on=False)
    world.job.dispatcher = dispatcher
    result = world.job.run_invocation(RunRequest(YESTERDAY, "scheduler", full_scan=True), no_time_left)
    assert result.outcome is RunOutcome.COMPLETED
    assert result.record is not None and result.record.trigger == "scheduler"
    # Every hand-over was offered to the dispatcher first, as a continuation of the same run.
    assert result.record.continuations == len(dispatcher.handed_on) >= 2
    assert set(dispatcher.handed_on) == {RunRequest(YESTERDAY, "scheduler", full_scan=False, continuation=True)}
    assert counts(result.record) == counts(clean.run(YESTERDAY).record)


def test_when_the_dispatcher_hands_on_this_invocation_stops_and_the_handed_request_carries_on(
    clk: FixedClock,
) -> None:
    world = World(clk)
    small_book(world)
    dispatcher = FakeDispatcher(hands_on=True)
    world.job.dispatcher = dispatcher
    first = world.job.run_invocation(RunRequest(YESTERDAY, "manual:admin1", full_scan=True), no_time_left)
    assert first.outcome is RunOutcome.CONTINUING
    assert dispatcher.handed_on == [RunRequest(YESTERDAY, "manual:admin1", full_scan=False, continuation=True)]
    assert first.record is not None and first.record.continuations == 1 and first.record.lease_until == 0
    # What the fresh invocation is given, it runs; each one hands on again until the run is done.
    result: RunResult = first
    while dispatcher.handed_on:
        result = world.job.run_invocation(dispatcher.handed_on.pop(), no_time_left)
    assert result.outcome is RunOutcome.COMPLETED
    assert result.record is not None and result.record.trigger == "manual:admin1"


def test_a_run_that_finishes_in_its_budget_asks_no_one(clk: FixedClock) -> None:
    world = World(clk)
    small_book(world)
    dispatcher = FakeDispatcher(hands_on=True)
    world.job.dispatcher = dispatcher
    result = world.job.run_invocation(RunRequest(YESTERDAY, "scheduler"), lambda: 900_000)
    assert result.outcome is RunOutcome.COMPLETED and dispatcher.handed_on == []


def test_a_manual_run_goes_to_the_job_function_when_there_is_one(clk: FixedClock) -> None:
    world = World(clk)
    small_book(world)
    world.job.dispatcher = FakeDispatcher(starts=True)
    request = RunRequest(YESTERDAY, "manual:admin1", full_scan=True)
    assert world.job.request_run(request) == Dispatched(None)
    assert world.runs.records == {}


def test_a_manual_run_runs_here_when_there_is_no_job_function(clk: FixedClock) -> None:
    world = World(clk)
    small_book(world)
    dispatcher = FakeDispatcher(starts=False)
    world.job.dispatcher = dispatcher
    result = world.job.request_run(RunRequest(YESTERDAY, "manual:admin1", full_scan=True))
    assert isinstance(result, RunResult) and result.outcome is RunOutcome.COMPLETED
    assert result.record is not None and result.record.mode == "scan" and result.record.status is RunStatus.COMPLETED
    assert dispatcher.started == [RunRequest(YESTERDAY, "manual:admin1", full_scan=True)]


# --- the Lambda adapter: only inside AWS Lambda is there anything to invoke ------------------------------

API_ON_LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "loan-crm-prod-APIHandler-x", "DPD_JOB_FUNCTION": "loan-crm-prod-DpdJob-y"}
JOB_ON_LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "loan-crm-prod-DpdJob-y"}
MANUAL = RunRequest(YESTERDAY, "manual:admin1", full_scan=True)
CONTINUATION = RunRequest(YESTERDAY, "scheduler", full_scan=False, continuation=True)


@pytest.fixture
def invoked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(lambda_dispatch, "_invoke_async", lambda name, payload: calls.append((name, payload)))
    return calls


@pytest.mark.parametrize(
    "environ",
    [{}, {"DPD_JOB_FUNCTION": "loan-crm-local-dpd_job"}, {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.11"}],
    ids=["nothing", "a stray job function name", "chalice's execution env"],
)
def test_off_lambda_nothing_is_invoked_and_the_caller_runs_it_here(
    environ: dict[str, str], invoked: list[tuple[str, dict[str, Any]]]
) -> None:
    dispatcher = LambdaJobDispatcher(environ)
    assert not dispatcher.on_aws_lambda()
    assert dispatcher.start(MANUAL) is False
    assert dispatcher.hand_on(CONTINUATION) is False
    assert invoked == []


def test_on_lambda_a_manual_run_is_sent_to_the_job_function(invoked: list[tuple[str, dict[str, Any]]]) -> None:
    assert LambdaJobDispatcher(API_ON_LAMBDA).start(MANUAL) is True
    assert invoked == [
        (
            "loan-crm-prod-DpdJob-y",
            {"business_date": YESTERDAY.isoformat(), "trigger": "manual:admin1", "full_scan": True},
        )
    ]


def test_on_lambda_without_a_job_function_a_manual_run_runs_here(invoked: list[tuple[str, dict[str, Any]]]) -> None:
    assert LambdaJobDispatcher(JOB_ON_LAMBDA).start(MANUAL) is False
    assert invoked == []


def test_on_lambda_a_continuation_goes_to_the_function_itself(invoked: list[tuple[str, dict[str, Any]]]) -> None:
    assert LambdaJobDispatcher(JOB_ON_LAMBDA).hand_on(CONTINUATION) is True
    assert invoked == [
        (
            "loan-crm-prod-DpdJob-y",
            {"business_date": YESTERDAY.isoformat(), "trigger": "scheduler", "full_scan": False, "continuation": True},
        )
    ]


def test_the_invocation_is_asynchronous_with_the_event_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class FakeLambda:
        def invoke(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    monkeypatch.setattr(lambda_dispatch.boto3, "client", lambda service: FakeLambda())
    assert LambdaJobDispatcher(JOB_ON_LAMBDA).hand_on(CONTINUATION) is True
    assert calls == [
        {
            "FunctionName": "loan-crm-prod-DpdJob-y",
            "InvocationType": "Event",
            "Payload": json.dumps(job_event(CONTINUATION)).encode(),
        }
    ]


@pytest.mark.parametrize("request_", [MANUAL, CONTINUATION, RunRequest(YESTERDAY, "cli:ops")], ids=str)
def test_the_handler_reads_back_the_request_the_adapter_sent(request_: RunRequest) -> None:
    event = job_event(request_)
    assert run_request_from_event(event, business_date_from_event(event)) == request_


# --- fan-out: the day-end state machine ------------------------------------------------------------------


class FakeStepFunctions:
    """The Step Functions client as far as fan-out uses it: a name starts one execution, once."""

    class exceptions:
        class ExecutionAlreadyExists(Exception):
            pass

    def __init__(self) -> None:
        self.executions: dict[str, tuple[str, dict[str, Any]]] = {}

    def start_execution(self, stateMachineArn: str, name: str, input: str) -> dict[str, Any]:
        if name in self.executions:
            raise self.exceptions.ExecutionAlreadyExists(name)
        self.executions[name] = (stateMachineArn, json.loads(input))
        return {"executionArn": f"{stateMachineArn}:{name}"}

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        return {"status": "RUNNING"}


MACHINE = "arn:aws:states:ap-south-1:123456789012:stateMachine:loan-crm-test-day-end"


def _plan() -> FanOut:
    from chalicelib.domain.runs import Segment

    return FanOut(YESTERDAY, "01RUN", (((Segment.scan(0, 1),),), (), ()))


@pytest.mark.parametrize(
    "environ",
    [
        {},  # chalice local, the test client, a script
        {"DAY_END_STATE_MACHINE": MACHINE},  # a stray ARN in a developer's shell
        {"AWS_LAMBDA_FUNCTION_NAME": "loan-crm-test-DpdJob-1"},  # on AWS, no state machine configured
    ],
)
def test_without_a_state_machine_on_aws_lambda_the_run_is_not_fanned_out(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeStepFunctions()
    monkeypatch.setattr(lambda_dispatch.boto3, "client", lambda _name: client)
    assert LambdaJobDispatcher(environ).fan_out(_plan()) is False
    assert client.executions == {}


def test_on_aws_lambda_the_run_starts_one_execution_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeStepFunctions()
    monkeypatch.setattr(lambda_dispatch.boto3, "client", lambda name: client if name == "stepfunctions" else None)
    dispatcher = LambdaJobDispatcher(
        {"AWS_LAMBDA_FUNCTION_NAME": "loan-crm-test-DpdJob-1", "DAY_END_STATE_MACHINE": MACHINE}
    )
    assert dispatcher.fan_out(_plan()) is True
    # The same attempt started again (a retried call): Step Functions refuses the name, nothing more runs.
    assert dispatcher.fan_out(_plan()) is True
    assert client.executions == {
        f"day-end-{YESTERDAY.isoformat()}-01RUN": (
            MACHINE,
            {
                "business_date": YESTERDAY.isoformat(),
                "run_id": "01RUN",
                "phases": {"loans": [["s:000:1"]], "pending_escalation": [], "reminders": []},
            },
        )
    }


def test_a_worker_failure_reaches_the_history_in_safe_words() -> None:
    from chalicelib.jobs.lambda_handlers import SegmentFailedError, worker_failure

    assert worker_failure(None, "r1") is None
    ours = {"Error": SegmentFailedError.__name__, "Cause": json.dumps({"errorMessage": "UNAVAILABLE: try again"})}
    assert worker_failure(ours, "r1") == "UNAVAILABLE: try again"
    # Step Functions' own errors carry no detail worth showing (and a cause may name ARNs): their kind only.
    timeout = {"Error": "States.Timeout", "Cause": "arn:aws:lambda:ap-south-1:123:function:x timed out"}
    assert worker_failure(timeout, "r1") == (
        "internal error (a segment worker failed: States.Timeout); see the job's logs for run r1"
    )


def test_a_reconciliation_fans_out_only_on_aws_lambda_with_its_state_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.adapters.lambda_dispatch import LambdaReconciliationDispatcher

    client = FakeStepFunctions()
    monkeypatch.setattr(lambda_dispatch.boto3, "client", lambda _name: client)
    machine = MACHINE.replace("day-end", "reconciliation")
    assert (
        LambdaReconciliationDispatcher({"RECONCILIATION_STATE_MACHINE": machine}).fan_out("01R", ["loans:0:8"]) is False
    )
    on_lambda = {
        "AWS_LAMBDA_FUNCTION_NAME": "loan-crm-test-ReconciliationJob-1",
        "RECONCILIATION_STATE_MACHINE": machine,
    }
    dispatcher = LambdaReconciliationDispatcher(on_lambda)
    assert dispatcher.fan_out("01R", ["loans:0:8"]) is True
    assert dispatcher.fan_out("01R", ["loans:0:8"]) is True  # the same run again: refused by its name
    assert client.executions == {"reconciliation-01R": (machine, {"run_id": "01R", "segments": ["loans:0:8"]})}


def test_a_run_whose_execution_has_ended_is_worked_here_rather_than_left_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On moto's Step Functions: the execution of the attempt was stopped by hand while the run is RUNNING.
    # Starting it again is refused by its name; the dispatcher must say so, and the caller works the run.
    import boto3
    from moto import mock_aws

    from chalicelib.adapters.lambda_dispatch import LambdaReconciliationDispatcher

    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name="ap-south-1")
        machine = sfn.create_state_machine(
            name="loan-crm-test-reconciliation",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/loan-crm-test-reconciliation",
        )["stateMachineArn"]
        monkeypatch.setattr(lambda_dispatch.boto3, "client", lambda name: sfn)
        on_lambda = {
            "AWS_LAMBDA_FUNCTION_NAME": "loan-crm-test-ReconciliationJob-1",
            "RECONCILIATION_STATE_MACHINE": machine,
        }
        dispatcher = LambdaReconciliationDispatcher(on_lambda)
        assert dispatcher.fan_out("01R", ["loans:0:8"]) is True
        assert dispatcher.fan_out("01R", ["loans:0:8"]) is True  # running: the same run again starts nothing
        [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
        sfn.stop_execution(executionArn=execution["executionArn"])
        assert dispatcher.fan_out("01R", ["loans:0:8"]) is False
        assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1
