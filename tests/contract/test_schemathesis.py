"""The published contract, probed from outside: schemathesis generates requests from the OpenAPI
document the app serves and sends them to the local API server (what ``make run`` serves), backed by
DynamoDB Local, as anonymous and as each role.

Checks on every answer: no 5xx; the status is one the operation documents; the content type and the
body match what the document says for that status; the documented headers are there; data the
document calls invalid is refused with a 4xx; undocumented methods get 405 with ``Allow``; and an
operation that needs a token refuses the request without one. Not checked: that every schema-valid
request is accepted (``positive_data_acceptance``): business rules the schema cannot say (a payment
date within the last 7 days, either a schedule or EMI terms, opaque cursors) rightly refuse some.

Sizes: per operation, :data:`EXAMPLES` generated cases as admin (every operation is open to admin, so
these reach the views) and :data:`OTHER_CALLER_EXAMPLES` as each other role and as anonymous (most of
those stop at the role check or at authentication, which the first few cases already cover).
``CONTRACT_EXAMPLES`` sets both: the longer profile, ``make contract-long``, runs 1,000 per operation
for every caller.

On top of those, schemathesis's coverage phase sends a fixed set of boundary cases per operation (every
missing field, every limit and one past it, every wrong type: 201 for a loan create). As admin they reach
validation and the views. As another caller they mostly say again what the generated cases already
show: the API refuses a caller the operation is not open to before anything reads the body, and a
caller it is open to meets the same validation admin's cases went through. So the test command runs
them for other callers only on the operations whose view reads the body before it checks the role
(the financial guard of a loan edit, ``Operation.roles_checked_in_view``), where a refused caller's
boundary cases do take another path; the longer profile runs them for every caller everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as checks_module
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode

import app as app_module  # noqa: F401  (registers every route before the document is written)
from chalicelib import wiring
from chalicelib.api.openapi import document
from chalicelib.api.operations import OPERATIONS
from chalicelib.domain.roles import Role
from chalicelib.services.auth import issue_token
from chalicelib.wiring import services
from infra.provision import provision
from tests.integration.api_helpers import loan_body, local_server
from tests.moto_speedups import mock_aws_beside

EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "100"))
OTHER_CALLER_EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "25"))
LONG_PROFILE = "CONTRACT_EXAMPLES" in os.environ
CHECKS = [
    checks_module.not_a_server_error,
    checks_module.status_code_conformance,
    checks_module.content_type_conformance,
    checks_module.response_schema_conformance,
    checks_module.response_headers_conformance,
    checks_module.negative_data_rejection,
    checks_module.missing_required_header,
    checks_module.unsupported_method,
    checks_module.allow_header_conformance,
    checks_module.ignored_auth,
]
PASSWORD = "contract-test-password-1"
USERS = {role: f"contract-{role.value}" for role in Role}


def _schema(coverage_phase: bool) -> Any:
    loaded = schemathesis.openapi.from_dict(document("contract-test"))
    # A body over the size limit is refused with 413 before anything reads it, invalid or not: a refusal
    # like the others, which schemathesis's default list of refusing statuses leaves out.
    refusing = loaded.config.checks.negative_data_rejection
    refusing.expected_statuses = [*refusing.expected_statuses, "413"]
    loaded.config.phases.coverage.enabled = coverage_phase
    return loaded


def _roles_checked_in_view(ctx: Any) -> bool:
    return (ctx.operation.path, ctx.operation.method.upper()) in BODY_BEFORE_ROLE


BODY_BEFORE_ROLE = {key for key, operation in OPERATIONS.items() if operation.roles_checked_in_view}
schema = _schema(coverage_phase=True)
other_caller_schema = _schema(coverage_phase=LONG_PROFILE).exclude(func=_roles_checked_in_view)
"""The document for the callers other than admin, without the operations that read the body before
the role check: boundary cases only in the longer profile (the module docstring says why)."""
body_before_role_schema = _schema(coverage_phase=True).include(func=_roles_checked_in_view)
"""Those operations, with their boundary cases, for the callers other than admin."""


@pytest.fixture(scope="module")
def server(dynamodb_local: str) -> Iterator[dict[str, Any]]:
    """The local API server on a stage of its own in DynamoDB Local, with a user per role and a few
    loans (so listings answer with real items, checked against their schemas too)."""
    with pytest.MonkeyPatch.context() as mp, mock_aws_beside(dynamodb_local):
        stage = f"ct{os.getpid() % 10000}"
        mp.setenv("STAGE", stage)
        mp.setenv("RECONCILE_AFTER_DAY_END", "false")
        mp.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local)
        wiring.reset()
        ddb = boto3.client("dynamodb", endpoint_url=dynamodb_local)
        provision(stage, ddb, boto3.client("ssm"), quiet=True, sns=boto3.client("sns"))
        headers: dict[str, dict[str, str]] = {"anonymous": {}}
        for role, username in USERS.items():
            services().auth.add_user(username, PASSWORD, role)
            token = issue_token(username, role.value, services().jwt_secret(), 4 * 3600).access_token
            headers[role.value] = {"Authorization": f"Bearer {token}"}
        with local_server() as url:
            import requests

            for i in range(3):
                body = loan_body(loan_id=f"CT-{i}", collector_id=USERS[Role.COLLECTOR])
                reply = requests.post(f"{url}/api/v1/loans", json=body, headers=headers["admin"], timeout=10)
                assert reply.status_code == 201, reply.text
            yield {"url": url, "headers": headers}
        wiring.reset()


def _negated_headers(case: Any) -> tuple[bool, str | None]:
    """Whether this case breaks its headers on purpose, and which header (when schemathesis says)."""
    meta = case.meta
    if meta is None:
        return False, None
    header = meta.components.get(ParameterLocation.HEADER)
    negated = header is not None and header.mode == GenerationMode.NEGATIVE
    data = meta.phase.data
    parameter = data.parameter if data.parameter_location == ParameterLocation.HEADER else None
    return negated, parameter


def _probe(case: Any, server: dict[str, Any], caller: str) -> None:
    """Send ``case`` as ``caller``.

    schemathesis generates the Authorization header itself, from the document's bearer scheme: a
    generated value stands for "the caller's token" and is replaced by the real one — unless this case
    breaks the headers on purpose, where the broken value is the point (it must be refused); a case
    that leaves the header out is sent without one.
    """
    generated = dict(case.headers or {})
    has_token = any(k.lower() == "authorization" for k in generated)
    negated, parameter = _negated_headers(case)
    keep_generated_token = negated and (parameter is None or parameter.lower() == "authorization")
    if has_token and not keep_generated_token:
        # In the case itself, not as extra headers: schemathesis judges the case by what it holds, and
        # a case without its Authorization would count as one missing a required header.
        headers = {k: v for k, v in generated.items() if k.lower() != "authorization"}
        case.headers = {**headers, **server["headers"][caller]}
    case.call_and_validate(base_url=server["url"], checks=CHECKS)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


@schema.parametrize()
@_settings(EXAMPLES)
def test_contract_as_admin(case: Any, server: dict[str, Any]) -> None:
    _probe(case, server, "admin")


@other_caller_schema.parametrize()
@_settings(OTHER_CALLER_EXAMPLES)
def test_contract_as_manager(case: Any, server: dict[str, Any]) -> None:
    _probe(case, server, "manager")


@other_caller_schema.parametrize()
@_settings(OTHER_CALLER_EXAMPLES)
def test_contract_as_collector(case: Any, server: dict[str, Any]) -> None:
    _probe(case, server, "collector")


@other_caller_schema.parametrize()
@_settings(OTHER_CALLER_EXAMPLES)
def test_contract_as_auditor(case: Any, server: dict[str, Any]) -> None:
    _probe(case, server, "auditor")


@other_caller_schema.parametrize()
@_settings(OTHER_CALLER_EXAMPLES)
def test_contract_anonymous(case: Any, server: dict[str, Any]) -> None:
    _probe(case, server, "anonymous")


@body_before_role_schema.parametrize()
@pytest.mark.parametrize("caller", ["manager", "collector", "auditor", "anonymous"])
@_settings(OTHER_CALLER_EXAMPLES)
def test_contract_where_the_body_is_read_before_the_role_check(case: Any, server: dict[str, Any], caller: str) -> None:
    _probe(case, server, caller)


def test_some_operation_reads_the_body_before_the_role_check() -> None:
    """The split above selects something (a renamed flag would otherwise leave it empty, silently)."""
    assert {("/api/v1/loans/{loan_id}", "PATCH")} == BODY_BEFORE_ROLE
