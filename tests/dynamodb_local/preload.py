"""Imported by the fork server of :mod:`tests.dynamodb_local.processes` (and only there) before it forks
any worker: what every worker would otherwise import and parse for itself. Nothing here reads the
stage, the endpoint or the clock, and nothing connects anywhere: that is each worker's own business,
done after it has taken the test process's environment."""

from __future__ import annotations

import contextlib
import gc
import importlib
import pkgutil

import botocore.loaders
import botocore.session
import chalice.local
import chalice.test  # noqa: F401
import moto.backends
import pytest

import app  # noqa: F401
import tests.dynamodb_local
from chalicelib import wiring  # noqa: F401

# One loader for every botocore session of a worker, as tests/conftest.py does for the test process,
# and the service models the workers use parsed into it before the fork.
_SHARED_LOADER = botocore.loaders.create_loader()
botocore.session.create_loader = lambda *_args, **_kwargs: _SHARED_LOADER  # type: ignore[assignment]
_session = botocore.session.Session()
for _service in ("dynamodb", "ssm", "sns", "sts"):
    _session.create_client(
        _service,
        region_name="ap-south-1",
        aws_access_key_id="preload",
        aws_secret_access_key="preload",
    )
del _session

# A worker under mock_aws() reads the flags from moto's SSM, whose backend imports most of EC2 (almost
# a second of CPU each time).
for _backend in ("ssm", "sns", "sts", "dynamodb"):
    moto.backends.get_backend(_backend)  # type: ignore[call-overload]

# The workers' own functions live in the test modules, which a worker imports to find its target. A
# module that cannot be imported here is left to the worker that needs it, to fail there as it would.
for _module in pkgutil.iter_modules(tests.dynamodb_local.__path__):
    if _module.name.startswith("test_"):
        # pytest.skip at import is a BaseException: it would otherwise take the fork server down.
        with contextlib.suppress(Exception, pytest.skip.Exception):
            importlib.import_module(f"tests.dynamodb_local.{_module.name}")

# As in the test process (tests/conftest.py): fewer collections of a heap this size. And what the fork
# server has loaded stays for every worker's life, so no collection in a worker walks it (nor, by
# touching it, makes the worker copy the server's memory pages).
gc.set_threshold(10_000, 50, 100)
gc.freeze()
