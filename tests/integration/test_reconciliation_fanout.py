"""A reconciliation run fanned out (docs/reconciliation.md, "Fan-out") through its Lambda entry point, on
moto: on AWS Lambda with its state machine configured the run goes to moto's Step Functions, and the
template's own definition, run by a small interpreter (tests/asl.py), drives the reconciliation function
through ``chalice.test.Client`` to the report a run in one process gives. Two workers on one segment:
the one behind stops, and the segment is counted once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.adapters.lambda_dispatch import RECONCILIATION_STATE_MACHINE_ENV
from chalicelib.domain.runs import WorkOutcome
from chalicelib.jobs.lambda_handlers import reconciliation_job
from chalicelib.services.budget import Budget
from chalicelib.services.views import reconciliation_dict
from chalicelib.wiring import services
from infra.provision import load_template
from tests.asl import Interpreter, state_machine_on_aws
from tests.integration.api_helpers import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
)
from tests.integration.test_reconciliation import PAID_EVERY, NoTimeLeft, counts, seed_book

FUNCTION_ARN = "arn:aws:lambda:ap-south-1:123456789012:function:loan-crm-test-ReconciliationJob-1"
BOOK = 40


def _definition() -> dict[str, Any]:
    machine = load_template()["Resources"]["ReconciliationStateMachine"]["Properties"]
    definition: dict[str, Any] = json.loads(
        json.dumps(machine["Definition"]).replace("${ReconciliationFunction}", FUNCTION_ARN)
    )
    return definition


def _on_aws(api: Api, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    name = f"loan-crm-{api.stage}-reconciliation"
    function = "loan-crm-test-ReconciliationJob-1"
    return state_machine_on_aws(monkeypatch, name, _definition(), RECONCILIATION_STATE_MACHINE_ENV, function)


def test_on_aws_the_template_s_state_machine_finishes_the_run_as_one_process_would(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_book(BOOK)
    direct = services().reconciliation.start("direct")  # in this process: the reference
    sfn, machine = _on_aws(api, monkeypatch)

    started = reconciliation_job({"trigger": "ops"}, NoTimeLeft())
    assert started["status"] == "RUNNING" and started["loans_checked"] == 0
    [execution] = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert execution["name"] == f"reconciliation-{started['run_id']}"
    execution_input = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert execution_input["run_id"] == started["run_id"] and len(execution_input["segments"]) == 3 * 8
    # The same run's event again (a retried delivery): Step Functions refuses a second execution.
    assert reconciliation_job({"run_id": started["run_id"]}, NoTimeLeft())["status"] == "RUNNING"
    assert len(sfn.list_executions(stateMachineArn=machine)["executions"]) == 1

    def invoke(resource: str, payload: Any) -> Any:
        assert resource == FUNCTION_ARN
        return api.client.lambda_.invoke("reconciliation_job", payload).payload

    finished = Interpreter(invoke).execute(_definition(), execution_input)
    assert finished.status == "SUCCEEDED", finished
    assert finished.output == {"run_id": started["run_id"], "status": "COMPLETED"}  # only what the machine reads
    settled = services().reconciliation.runs.get(started["run_id"])
    assert settled is not None
    report = reconciliation_dict(settled)
    reference = {
        "status": direct.status.value,
        "loans_checked": direct.loans_checked,
        "payments_checked": direct.payments_checked,
        "claims_checked": direct.claims_checked,
        "mismatch_count": direct.mismatch_count,
        "mismatches": [m.as_dict() for m in direct.mismatches or []],
    }
    assert counts(report) == counts(reference) == ("COMPLETED", BOOK, BOOK // PAID_EVERY, BOOK // PAID_EVERY, 0, [])


def test_a_second_worker_on_a_segment_stops_and_the_segment_counts_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state machine retrying a worker whose first attempt still runs: both read the same page, the
    one that checkpoints second is refused (a segment's pages only grow) and stops."""
    seed_book(BOOK)
    _on_aws(api, monkeypatch)
    started = reconciliation_job({"trigger": "ops"}, NoTimeLeft())
    run_id = started["run_id"]
    reconciliation = services().reconciliation
    segment = reconciliation.runs.segments(run_id)[0]
    stale = reconciliation.runs.segments(run_id)[0]  # the retry's copy, read before the first one's page
    assert reconciliation.work(run_id, segment.name, 0, lambda: 900_000) is WorkOutcome.DONE
    # The retry works from the same start: its checkpoint is refused, it stops.
    assert not reconciliation._segment(reconciliation.runs.get(run_id), stale, Budget.start(None), {})
    assert reconciliation.work(run_id, segment.name, 1, lambda: 0) is WorkOutcome.DONE
    stored = next(s for s in reconciliation.runs.segments(run_id) if s.name == segment.name)
    assert stored.checked == segment_size(reconciliation, run_id, segment.name)


def segment_size(reconciliation: Any, run_id: str, name: str) -> int:
    """What one clean pass over the segment checks."""
    source, index, total = name.split(":")
    ledger = reconciliation.ledger
    reader = {"loans": ledger.loans_segment, "payments": ledger.payments_segment, "claims": ledger.claims_segment}
    count, cursor = 0, None
    while True:
        items, cursor = reader[source](int(index), int(total), cursor)
        count += len(items)
        if cursor is None:
            return count


def test_a_retry_refused_by_a_live_first_attempt_asks_to_be_invoked_again(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt's answer reaches nobody once Step Functions has retried it: the retry, refused
    because the first one checkpointed first, must keep the segment's iteration going (MORE), not end it
    with the segment unfinished (the run would then be recorded FAILED for nothing)."""
    from chalicelib.adapters.dynamodb import reconciliation as stored_pages

    monkeypatch.setattr(stored_pages, "PAGE_SIZE", 2)  # several pages a segment
    seed_book(BOOK)
    _on_aws(api, monkeypatch)
    run_id = reconciliation_job({"trigger": "ops"}, NoTimeLeft())["run_id"]
    reconciliation = services().reconciliation
    name = max(
        (s.name for s in reconciliation.runs.segments(run_id)),
        key=lambda n: segment_size(reconciliation, run_id, n),
    )
    stale = reconciliation.runs.segments(run_id)  # what the retry read before the first attempt's page
    assert reconciliation.work(run_id, name, 0, lambda: 0) is WorkOutcome.MORE  # the first: one page
    fresh = reconciliation.runs.segments
    reads = iter([stale])
    monkeypatch.setattr(reconciliation.runs, "segments", lambda rid: next(reads, None) or fresh(rid))
    assert reconciliation.work(run_id, name, 1, lambda: 0) is WorkOutcome.MORE  # refused, not done: again
    invocations = 2
    while reconciliation.work(run_id, name, invocations, lambda: 900_000) is not WorkOutcome.DONE:
        invocations += 1
        assert invocations < 10
    stored = next(s for s in reconciliation.runs.segments(run_id) if s.name == name)
    assert stored.checked == segment_size(reconciliation, run_id, name)
