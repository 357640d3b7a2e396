"""Run one API call from several processes at once against DynamoDB Local.

Each worker is its own process (``tests.dynamodb_local.processes``) that drives the API in-process
through ``chalice.test.Client``; all are released together by a barrier so the calls really overlap.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from tests.dynamodb_local import processes

Result = tuple[int, dict[str, Any], dict[str, str]]


def _worker(
    env: dict[str, str],
    sub: str,
    role: str,
    calls: list[tuple[str, str, dict[str, Any], dict[str, str]]],
    barrier: Any,
    out: Any,
) -> None:
    os.environ.update(env)
    from chalice.test import Client

    import app as app_module
    from chalicelib.services.auth import issue_token

    token = issue_token(sub, role, env["JWT_SECRET"], 600).access_token
    base = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as empty, Client(app_module.app, project_dir=empty) as client:
        for method, path, body, headers in calls:
            # Every worker's n-th call starts together: each round is a real race, not just the first.
            barrier.wait(timeout=120)
            response = getattr(client.http, method)(path, headers={**base, **headers}, body=json.dumps(body))
            results.append((response.status_code, json.loads(response.body), dict(response.headers)))
    out.put(results)


def race(
    stage: str,
    per_worker_calls: list[list[tuple[str, str, dict[str, Any], dict[str, str]]]],
    sub: str = "manager1",
    role: str = "manager",
) -> list[list[Result]]:
    """Start one process per call list; release the n-th call of every worker together; return each
    worker's results in order. Every worker must make the same number of calls."""
    _ensure_user(sub, role)
    ctx = processes.context()
    barrier = ctx.Barrier(len(per_worker_calls))
    out = ctx.Queue()
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
    env["STAGE"] = stage
    procs = [ctx.Process(target=_worker, args=(env, sub, role, calls, barrier, out)) for calls in per_worker_calls]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"
    return results


def _ensure_user(sub: str, role: str) -> None:
    """The workers' tokens name a stored, active user (tokens of unknown users are refused); created
    once, here, before any token exists, so no worker's token predates it."""
    from chalicelib.domain.roles import Role
    from chalicelib.wiring import services

    if services().auth.users.get(sub) is None:
        services().auth.add_user(sub, "racing-worker-password", Role(role))
