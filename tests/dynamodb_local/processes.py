"""Worker processes for the DynamoDB Local tests: each a process of its own, forked from a warm server.

The races, crashes and kills need real processes (Chalice keeps the current request on the shared app
object; a SIGKILL must kill a whole interpreter). A spawned interpreter spends about a second of CPU
importing the app, chalice, boto3 and moto and parsing botocore's service models before its first
request, and the suite starts well over a hundred of them. ``multiprocessing``'s fork server does that
once per test process (it imports :mod:`tests.dynamodb_local.preload`, never running any test code) and
forks every worker from it, so a worker still shares nothing with the test process or with the other
workers: its own app object, clients, connections, clock and moto.

A worker starts with the environment the test process has at ``start()``, as a spawned one would. What
the preload computed at import time (the logger's settings, a test module's constants read from the
environment) is as the environment was when the fork server started: the first test to start a worker.
No test varies those variables per test; one that does must start its workers with ``spawn``. A
worker's output goes where the fork server's goes (the capture of that first test): workers report
their results and failures through their queues, not their output.
"""

from __future__ import annotations

import multiprocessing.context
import multiprocessing.forkserver
import os
from pathlib import Path

PRELOAD = ["tests.dynamodb_local.preload"]
ROOT = Path(__file__).resolve().parents[2]


def _ensure_server() -> None:
    """Python 3.11's fork server does not take the test process's ``sys.path`` for its preload (its
    workers do get it); the repository root on ``PYTHONPATH`` lets it import the preload wherever pytest
    was started from. Without it the preload would be skipped silently and every worker import alone."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


class WorkerProcess(multiprocessing.context.ForkServerProcess):
    def start(self) -> None:
        self._environ = dict(os.environ)
        _ensure_server()
        super().start()

    def run(self) -> None:
        os.environ.clear()
        os.environ.update(self._environ)
        # The preload builds no services and reads no settings; should that change, the worker still
        # starts from none, as a fresh interpreter would.
        from chalicelib import wiring

        wiring.reset()
        super().run()


class _Context(multiprocessing.context.ForkServerContext):
    Process = WorkerProcess  # type: ignore[assignment]


_CONTEXT = _Context()


def context() -> multiprocessing.context.BaseContext:
    """Where the tests get ``Process``, ``Barrier``, ``Queue``, ``Event`` and ``Value`` from (in place of
    ``multiprocessing.get_context("spawn")``)."""
    multiprocessing.forkserver.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def stop() -> None:
    """Stop the fork server (its CPU, and its workers', then counts as the test process's children's)."""
    multiprocessing.forkserver._forkserver._stop()
