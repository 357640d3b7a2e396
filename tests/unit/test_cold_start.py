"""What a cold container imports and builds before its first request (docs/architecture.md, "Cold
start"): powertools' idempotency package is never imported (the app keeps its own records), the
response models are declared only when the OpenAPI document is first asked for, and the request models
build their validators on first use. Each check is a fresh interpreter,
as a new Lambda container is; ``bench/cold_start.py`` measures what this saves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import app
responses_declared = "chalicelib.api.responses" in sys.modules
from chalicelib.api import responses, schemas
from pydantic import BaseModel

def built(module):
    return sorted(
        name for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__
        and obj.__pydantic_complete__
    )

print(json.dumps({
    "idempotency": "aws_lambda_powertools.utilities.idempotency" in sys.modules,
    "responses_declared": responses_declared,
    "schemas_built": built(schemas),
    "responses_built": built(responses),
}))
"""


def _after_import(code: str) -> dict[str, object]:
    env = {**os.environ, "STAGE": "coldstart"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    answer: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return answer


def test_import_app_leaves_the_idempotency_package_and_the_models_for_later() -> None:
    found = _after_import(PROBE)
    assert found == {"idempotency": False, "responses_declared": False, "schemas_built": [], "responses_built": []}


def test_the_first_request_for_the_contract_declares_the_response_models() -> None:
    request = (
        "import app, tempfile\n"
        "from chalice.test import Client\n"
        "with tempfile.TemporaryDirectory() as empty, Client(app.app, project_dir=empty) as client:\n"
        "    assert client.http.get('/api/v1/openapi.json').status_code == 200\n"
    )
    found = _after_import(PROBE.replace("import app\n", request, 1))
    assert found["responses_declared"] is True


def test_a_model_is_built_by_its_first_use_and_validates_as_before() -> None:
    code = PROBE.replace(
        "print(json.dumps({",
        'schemas.AssignIn.model_validate_json(\'{"collector_id": "col-1"}\', strict=True)\nprint(json.dumps({',
    )
    found = _after_import(code)
    assert found["schemas_built"] == ["AssignIn"]


def test_pynamodb_takes_its_sessions_from_the_shared_loader() -> None:
    # PynamoDB reads the module-level name at each new connection; a PynamoDB that stops doing so
    # would silently bring back one service-model parse per table and thread.
    import threading

    import pynamodb.connection.base

    from chalicelib.adapters.dynamodb import models

    assert pynamodb.connection.base.get_session is models._session
    loaders: list[object] = []

    def open_session() -> None:
        loaders.append(models._session().get_component("data_loader"))

    threads = [threading.Thread(target=open_session) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loaders[0] is loaders[1] is models._SERVICE_MODELS


def test_every_table_connection_shares_one_client_per_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # A client per table cost a cold container's first request about 55 ms of CPU per table it read.
    import os

    from pynamodb.connection.base import Connection

    from chalicelib.adapters.dynamodb import models

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    a = Connection(region="ap-south-1", host="http://127.0.0.1:1")
    b = Connection(region="ap-south-1", host="http://127.0.0.1:1")
    other = Connection(region="ap-south-1", host="http://127.0.0.1:2")
    assert a.client is b.client
    assert other.client is not a.client
    # A forked child must not write to its parent's sockets: it makes its own.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(
            write,
            b"1" if models._clients == {} and Connection(host="http://127.0.0.1:1").client is not a.client else b"0",
        )
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
