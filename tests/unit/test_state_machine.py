"""The day-end state machine as infra/template.json defines it (docs/day-end.md, "Fan-out"): its phases
in the order the run needs them, each worker looped on the answers the job's function gives, one last
step settling the run, and the wiring that lets the job start it and only it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.adapters import lambda_dispatch
from chalicelib.domain.runs import MAX_CONTINUATIONS, FanOut, RunOutcome, Segment, WorkItem, WorkOutcome
from chalicelib.services.day_end import LEASE_SECONDS
from infra.alarms import load_config
from infra.provision import load_template

ROOT = Path(__file__).resolve().parents[2]
WORKER = "${DayEndFunction}"


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_template()["Resources"]
    return resources


@pytest.fixture(scope="module")
def definition(resources: dict[str, Any]) -> dict[str, Any]:
    machine = resources["DayEndStateMachine"]
    assert machine["Type"] == "AWS::StepFunctions::StateMachine"
    found: dict[str, Any] = json.loads(json.dumps(machine["Properties"]["Definition"]))  # plain JSON
    return found


def _main_path(definition: dict[str, Any]) -> list[str]:
    """The top-level states from StartAt, following Next."""
    names, name = [], definition["StartAt"]
    while name is not None:
        names.append(name)
        name = definition["States"][name].get("Next")
    return names


def test_the_phases_run_in_order_then_one_step_settles_the_run(definition: dict[str, Any]) -> None:
    path = _main_path(definition)
    assert path == ["Loans", "PendingEscalation", "Reminders", "Settle", "RunOutcome"]
    maps = [definition["States"][name] for name in path[:3]]
    assert [m["Type"] for m in maps] == ["Map"] * 3
    # The execution input's phases, in the order the run needs them: dates (or scan), pending, reminders.
    assert [m["ItemsPath"] for m in maps] == [f"$.phases.{key}" for key in lambda_dispatch.PHASE_KEYS]
    for state in maps:
        assert state["ResultPath"] is None, "the next phase gets the execution input, not the workers' answers"
        assert 1 <= state["MaxConcurrency"] <= 40
        # A phase that fails goes straight to the settle step with its error: no later phase runs.
        assert state["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Settle"}]


def test_each_share_s_worker_is_invoked_until_its_answer_says_otherwise(definition: dict[str, Any]) -> None:
    for name in ("Loans", "PendingEscalation", "Reminders"):
        state = definition["States"][name]
        assert state["ItemSelector"] == {
            "step": lambda_dispatch.WORK_STEP,
            "business_date.$": "$.business_date",
            "run_id.$": "$.run_id",
            "segments.$": "$$.Map.Item.Value",
            "continuations": 0,
        }
        processor = state["ItemProcessor"]
        assert processor["ProcessorConfig"] == {"Mode": "INLINE"}
        states = processor["States"]
        work = states[processor["StartAt"]]
        assert work["Type"] == "Task" and work["Resource"] == WORKER and "Parameters" not in work
        choice = states[work["Next"]]
        loops = {c["StringEquals"]: c["Next"] for c in choice["Choices"]}
        assert set(loops) == {WorkOutcome.MORE.value, WorkOutcome.BUSY.value}
        assert loops[WorkOutcome.MORE.value] == processor["StartAt"]
        wait = states[loops[WorkOutcome.BUSY.value]]
        assert wait["Type"] == "Wait" and wait["Next"] == processor["StartAt"]
        assert states[choice["Default"]]["Type"] == "Succeed"  # DONE and STOPPED end the iteration
        # A share held by a live worker: the waits the bound allows outlast that worker's whole life (its
        # timeout) and its claim's lease, so a live first attempt never fails the run by the bound.
        timeout = load_config()["stages"]["prod"]["lambda_functions"]["dpd_job"]["lambda_timeout"]
        assert wait["Seconds"] * MAX_CONTINUATIONS > timeout + LEASE_SECONDS
        [retry] = work["Retry"]
        assert retry["ErrorEquals"] == ["States.ALL"] and retry["MaxAttempts"] == 2


def test_the_settle_step_gets_the_execution_and_fails_it_when_the_run_failed(definition: dict[str, Any]) -> None:
    settle = definition["States"]["Settle"]
    assert settle["Type"] == "Task" and settle["Resource"] == WORKER
    assert settle["Parameters"] == {"step": lambda_dispatch.SETTLE_STEP, "execution.$": "$"}
    outcome = definition["States"][settle["Next"]]
    [failed] = outcome["Choices"]
    assert failed == {"Variable": "$.outcome", "StringEquals": RunOutcome.FAILED.value, "Next": "RunFailed"}
    assert definition["States"]["RunFailed"]["Type"] == "Fail"
    assert definition["States"][outcome["Default"]]["Type"] == "Succeed"


def test_the_machine_invokes_only_the_job_and_the_job_may_start_only_the_machine(resources: dict[str, Any]) -> None:
    machine = resources["DayEndStateMachine"]["Properties"]
    assert machine["StateMachineType"] == "STANDARD"  # exactly-once steps and a name refused when reused
    assert machine["DefinitionSubstitutions"] == {"DayEndFunction": {"Fn::GetAtt": ["DpdJob", "Arn"]}}
    assert machine["StateMachineName"] == {"Fn::Sub": "loan-crm-${Stage}-day-end"}
    role = resources["DayEndStateMachineRole"]["Properties"]
    invoke = [
        s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"] if "lambda:InvokeFunction" in s["Action"]
    ]
    assert invoke == [
        {
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": [{"Fn::GetAtt": ["DpdJob", "Arn"]}, {"Fn::Sub": "${DpdJob.Arn}:*"}],
        }
    ]
    arn = resources["DpdJob"]["Properties"]["Environment"]["Variables"][lambda_dispatch.STATE_MACHINE_ENV]
    assert arn["Fn::Sub"].endswith(":stateMachine:loan-crm-${Stage}-day-end")
    for stage in ("dev", "prod"):
        policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text(encoding="utf-8"))
        [start] = [s for s in policy["Statement"] if "states:StartExecution" in s["Action"]]
        assert start["Resource"] == [
            f"arn:aws:states:*:*:stateMachine:loan-crm-{stage}-day-end",
            f"arn:aws:states:*:*:stateMachine:loan-crm-{stage}-reconciliation",
        ]


def test_the_execution_input_is_what_the_maps_read_and_its_name_is_one_per_attempt() -> None:
    day = dt.date(2026, 11, 5)
    plan = FanOut(
        day,
        "01RUN",
        (
            ((Segment.watch(day, 0),), (Segment.watch(day, 1),)),
            ((Segment.pending(0),),),
            (),
        ),
    )
    assert lambda_dispatch.execution_input(plan) == {
        "business_date": "2026-11-05",
        "run_id": "01RUN",
        "phases": {
            "loans": [["w:2026-11-05:00"], ["w:2026-11-05:01"]],
            "pending_escalation": [["p:00"]],
            "reminders": [],
        },
    }
    name = lambda_dispatch.execution_name(plan)
    assert name == "day-end-2026-11-05-01RUN" and len(name) <= 80
    # A Map iteration's input is read back into the share, and the answer is the next iteration's input.
    item = lambda_dispatch.work_item_from_event(
        {"step": "work", "business_date": "2026-11-05", "run_id": "01RUN", "segments": ["p:00"], "continuations": 0}
    )
    assert item == WorkItem(day, "01RUN", (Segment.pending(0),), 0)
    answer = lambda_dispatch.work_answer(item, WorkOutcome.MORE)
    assert lambda_dispatch.work_item_from_event(answer) == WorkItem(day, "01RUN", (Segment.pending(0),), 1)
    assert answer["outcome"] == "MORE"


def test_the_reconciliation_machine_works_every_segment_in_parallel_then_settles(resources: dict[str, Any]) -> None:
    from chalicelib.domain.reconciliation import ReconciliationStatus

    machine = resources["ReconciliationStateMachine"]["Properties"]
    definition = json.loads(json.dumps(machine["Definition"]))
    assert _main_path(definition) == ["Segments", "Settle", "RunOutcome"]
    segments = definition["States"]["Segments"]
    assert segments["Type"] == "Map" and segments["ItemsPath"] == "$.segments" and segments["ResultPath"] is None
    assert segments["ItemSelector"] == {
        "step": lambda_dispatch.WORK_STEP,
        "run_id.$": "$.run_id",
        "segment.$": "$$.Map.Item.Value",
        "continuations": 0,
    }
    assert segments["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Settle"}]
    states = segments["ItemProcessor"]["States"]
    choice = states[states["Work"]["Next"]]
    # No claim, so no BUSY: a worker behind on its segment stops (its checkpoint is refused).
    assert {c["StringEquals"]: c["Next"] for c in choice["Choices"]} == {WorkOutcome.MORE.value: "Work"}
    settle = definition["States"]["Settle"]
    assert settle["Parameters"] == {"step": lambda_dispatch.SETTLE_STEP, "execution.$": "$"}
    [failed] = definition["States"]["RunOutcome"]["Choices"]
    assert failed["Variable"] == "$.status" and failed["StringEquals"] == ReconciliationStatus.FAILED.value
    worker = {"Fn::GetAtt": ["ReconciliationJob", "Arn"]}
    assert machine["DefinitionSubstitutions"] == {"ReconciliationFunction": worker}
    role = resources["ReconciliationStateMachineRole"]["Properties"]
    invoke = [
        s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"] if "lambda:InvokeFunction" in s["Action"]
    ]
    assert [s["Resource"] for s in invoke] == [[worker, {"Fn::Sub": "${ReconciliationJob.Arn}:*"}]]
    arn = resources["ReconciliationJob"]["Properties"]["Environment"]["Variables"]["RECONCILIATION_STATE_MACHINE"]
    assert arn["Fn::Sub"].endswith(":stateMachine:loan-crm-${Stage}-reconciliation")
    for stage in ("dev", "prod"):
        policy = json.loads((ROOT / ".chalice" / f"policy-{stage}.json").read_text(encoding="utf-8"))
        [start] = [s for s in policy["Statement"] if "states:StartExecution" in s["Action"]]
        assert f"arn:aws:states:*:*:stateMachine:loan-crm-{stage}-reconciliation" in start["Resource"]
