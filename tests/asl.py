"""A small interpreter for the part of the Amazon States Language the day-end state machine uses (Task,
Map with an inline ItemProcessor, Choice on StringEquals, Wait, Succeed, Fail; Parameters/ItemSelector
with ``.$`` paths; ResultPath null or a path; Retry and Catch), so tests can run the template's own
definition against the job's handler: the state machine and the function's answers must fit together.

Map iterations run one after another (the tests that need workers in parallel fork processes instead);
a Task's ``Resource`` is handed to ``invoke``, which raises to fail the task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Invoke = Callable[[str, Any], Any]


def state_machine_on_aws(
    monkeypatch: Any, name: str, definition: Any, env_name: str, function_name: str
) -> tuple[Any, str]:
    """The state machine created in moto and named to the job's function, which runs as on AWS Lambda:
    the Step Functions client and the machine's ARN."""
    import boto3

    sfn = boto3.client("stepfunctions")
    machine: str = sfn.create_state_machine(
        name=name, definition=json.dumps(definition), roleArn=f"arn:aws:iam::123456789012:role/{name}"
    )["stateMachineArn"]
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", function_name)
    monkeypatch.setenv(env_name, machine)
    return sfn, machine


@dataclass
class Execution:
    status: str
    """SUCCEEDED or FAILED."""
    output: Any
    error: str | None = None
    tasks: int = 0
    """Task invocations, retries included."""
    waits: int = 0


class _Failed(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(error)
        self.error, self.cause = error, cause


def _path(data: Any, path: str, context: dict[str, Any]) -> Any:
    root, *keys = path.split(".")
    value = context if root == "$$" else data
    for key in keys:
        value = value[key]
    return value


def _fill(template: Any, data: Any, context: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        return {
            (k[:-2] if k.endswith(".$") else k): (
                _path(data, v, context) if k.endswith(".$") else _fill(v, data, context)
            )
            for k, v in template.items()
        }
    if isinstance(template, list):
        return [_fill(v, data, context) for v in template]
    return template


def _put(data: Any, result_path: str | None, result: Any) -> Any:
    if result_path is None:
        return data
    if result_path == "$":
        return result
    keys = result_path.split(".")[1:]
    merged = json.loads(json.dumps(data))
    target = merged
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = result
    return merged


class Interpreter:
    def __init__(self, invoke: Invoke, on_wait: Callable[[int], None] = lambda _s: None) -> None:
        self.invoke = invoke
        self.on_wait = on_wait
        self.tasks = 0
        self.waits = 0

    def execute(self, definition: dict[str, Any], execution_input: Any) -> Execution:
        try:
            output = self._run(definition, execution_input)
        except _Failed as failed:
            return Execution("FAILED", None, failed.error, self.tasks, self.waits)
        return Execution("SUCCEEDED", output, None, self.tasks, self.waits)

    def _run(self, machine: dict[str, Any], data: Any, context: dict[str, Any] | None = None) -> Any:
        context = context or {}
        name = machine["StartAt"]
        for _step in range(100_000):
            state = machine["States"][name]
            kind = state["Type"]
            if kind == "Succeed":
                return data
            if kind == "Fail":
                raise _Failed(state.get("Error", "States.Fail"), state.get("Cause", ""))
            if kind == "Wait":
                self.waits += 1
                self.on_wait(int(state["Seconds"]))
            elif kind == "Choice":
                chosen = [
                    c["Next"] for c in state["Choices"] if _path(data, c["Variable"], context) == c["StringEquals"]
                ]
                name = chosen[0] if chosen else state["Default"]
                continue
            elif kind in ("Task", "Map"):
                try:
                    result = self._task(state, data, context) if kind == "Task" else self._map(state, data)
                except _Failed as failed:
                    catcher = next(
                        (c for c in state.get("Catch", []) if _matches(c["ErrorEquals"], failed.error)), None
                    )
                    if catcher is None:
                        raise
                    data = _put(data, catcher.get("ResultPath", "$"), {"Error": failed.error, "Cause": failed.cause})
                    name = catcher["Next"]
                    continue
                data = _put(data, state.get("ResultPath", "$"), result)
            else:
                raise AssertionError(f"state type {kind} is not interpreted here")
            if state.get("End"):
                return data
            name = state["Next"]
        raise AssertionError("the execution did not end")

    def _task(self, state: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        payload = _fill(state["Parameters"], data, context) if "Parameters" in state else data
        retries = {attempt: 0 for attempt in range(len(state.get("Retry", [])))}
        while True:
            self.tasks += 1
            try:
                return self.invoke(state["Resource"], payload)
            except Exception as exc:  # the function's error, as Step Functions reports it
                error = type(exc).__name__
                cause = json.dumps({"errorMessage": str(exc), "errorType": error})
            rule = next(
                (i for i, r in enumerate(state.get("Retry", [])) if _matches(r["ErrorEquals"], error)),
                None,
            )
            if rule is None or retries[rule] >= state["Retry"][rule].get("MaxAttempts", 3):
                raise _Failed(error, cause)
            retries[rule] += 1
            self.waits += 1
            self.on_wait(int(state["Retry"][rule].get("IntervalSeconds", 1)))

    def _map(self, state: dict[str, Any], data: Any) -> list[Any]:
        items = _path(data, state["ItemsPath"], {})
        results = []
        for index, item in enumerate(items):
            context = {"Map": {"Item": {"Index": index, "Value": item}}}
            selected = _fill(state["ItemSelector"], data, context) if "ItemSelector" in state else item
            results.append(self._run(state["ItemProcessor"], selected, context))
        return results


def _matches(errors: list[str], error: str) -> bool:
    return "States.ALL" in errors or error in errors
