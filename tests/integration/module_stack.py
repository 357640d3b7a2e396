"""One moto stack shared by every test of a module, for matrices of many small cases: what the ``api``
fixture (api_helpers.py) gives each test — fresh tables, every role's user and token, the clock
frozen at ``FROZEN_AT`` — built once, because for a case of a few milliseconds a fresh stack would be
most of the cost. Cases sharing it must leave it as the next case expects (see each module)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

import app as app_module
from chalicelib import wiring
from chalicelib.clock import FixedClock, use_clock
from chalicelib.wiring import services
from infra.provision import provision
from tests.integration.api_helpers import FROZEN_AT, PASSWORD, USERS, Api


@contextmanager
def module_api(
    name: str, project_dir: Path, patches: Callable[[pytest.MonkeyPatch], None] | None = None
) -> Iterator[Api]:
    """The stack on a stage named after ``name`` and this process; ``patches`` may add its own
    monkeypatches, undone with the stage's environment when the block ends."""
    stage = f"{name}{os.getpid() % 10000}"
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        patch.setenv("STAGE", stage)
        patch.setenv("RECONCILE_AFTER_DAY_END", "false")
        patch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
        if patches is not None:
            patches(patch)
        wiring.reset()
        try:
            provision(stage, boto3.client("dynamodb"), boto3.client("ssm"), quiet=True, sns=boto3.client("sns"))
            with use_clock(FixedClock(FROZEN_AT)) as clock, Client(app_module.app, project_dir=str(project_dir)) as c:
                assert isinstance(clock, FixedClock)
                for username, role in USERS.values():
                    services().auth.add_user(username, PASSWORD, role)
                api = Api(c, stage, clock)
                api.mint_all()
                yield api
        finally:
            wiring.reset()
