"""The published OpenAPI document: generated from the routes, complete, valid, served without auth.

A route registered without an operation in the document, or an operation the app does not serve,
fails here; so does an operation that forgets a refusal its kind can give.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from chalice.test import Client
from schemathesis.specs.openapi.definitions import OPENAPI_31

import app as app_module
from chalicelib.api import openapi
from chalicelib.api.http import is_catch_all, served_methods, served_paths
from chalicelib.api.openapi import document
from chalicelib.api.operations import OPERATIONS
from chalicelib.domain.errors import Unauthenticated
from chalicelib.domain.roles import ALL_ROLES

DOC = document("test")
OPS = [(path, method.upper(), op) for path, methods in DOC["paths"].items() for method, op in methods.items()]


def _op_id(item: tuple[str, str, Any]) -> str:
    return f"{item[1]} {item[0]}"


def test_the_document_is_valid_openapi_3_1() -> None:
    jsonschema_rs.validator_for(OPENAPI_31).validate(DOC)
    assert DOC["openapi"] == "3.1.0"
    # Every reference resolves inside the document.
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(DOC)))
    assert refs <= set(DOC["components"]["schemas"]), refs - set(DOC["components"]["schemas"])


def test_every_served_route_is_documented_and_nothing_else_is() -> None:
    served = {(path, method) for path in served_paths() for method in served_methods(path)}
    documented = {(path, method) for path, method, _ in OPS}
    assert served == documented
    # And Chalice's own route table agrees, the catch-alls aside.
    chalice_paths = {path for path in app_module.app.routes if not is_catch_all(path)}
    assert chalice_paths == {path for path, _ in documented}
    assert set(OPERATIONS) == documented


@pytest.mark.parametrize("item", OPS, ids=_op_id)
def test_each_operation_says_who_may_call_it_and_every_refusal_of_its_kind(item: tuple[str, str, Any]) -> None:
    path, method, op = item
    declared = OPERATIONS[(path, method)]
    statuses = set(op["responses"])
    assert op["summary"] and op["operationId"]
    assert op["description"].startswith(("Roles:", "No authentication."))
    assert any(s.startswith("2") for s in statuses), statuses
    assert "400" in statuses  # any unknown query parameter, at least
    if declared.authenticated:
        assert {"401", "503"} <= statuses
        assert op["security"] == [{"bearerAuth": []}]
        assert set(op["x-roles"]) == {r.value for r in (declared.roles or ALL_ROLES)}
    else:
        assert op["security"] == []
    if declared.roles is not None and declared.roles != ALL_ROLES:
        assert "403" in statuses
        assert "Roles: " + ", ".join(sorted(r.value for r in declared.roles)) in op["description"]
    if "{" in path:
        assert "404" in statuses
    if method in ("POST", "PATCH"):
        assert {"413", "415"} <= statuses
    names = {p["name"] for p in op["parameters"]}
    if method == "POST" and declared.authenticated:
        assert "Idempotency-Key" in names
        assert {"409", "422"} <= statuses
    assert {p["name"] for p in op["parameters"] if p["in"] == "query"} == declared.query_names
    for status, answer in op["responses"].items():
        assert "X-Request-Id" in answer["headers"]
        (media,) = answer["content"]
        if int(status) not in declared.answers:
            assert answer["content"][media]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
    # Each refusal particular to the operation is named under its status.
    described = " ".join(answer["description"] for answer in op["responses"].values())
    for kind in declared.errors:
        assert f"`{kind.code}`" in described, kind


def test_request_and_response_models_forbid_undeclared_fields() -> None:
    """A field a view adds without adding it to the model breaks the contract loudly (schemathesis
    checks every answer), never silently."""
    for name, schema in DOC["components"]["schemas"].items():
        if schema.get("type") == "object" and "properties" in schema and name != "OpenApiOut":
            assert schema.get("additionalProperties") is False, name


@pytest.fixture
def client(moto_stack: str, tmp_path: Path) -> Any:
    with Client(app_module.app, project_dir=str(tmp_path)) as c:
        yield c


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids |= {v for k, v in attrs if k == "id" and v}


def test_the_document_and_the_docs_page_are_served_without_a_token(client: Any) -> None:
    reply = client.http.get("/api/v1/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    served = json.loads(reply.body)
    assert served["paths"] == DOC["paths"] and served["components"] == DOC["components"]

    page = client.http.get("/api/v1/docs")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    text = page.body.decode()
    parser = _Ids()
    parser.feed(text)
    # Every operation has its own anchor, every schema its entry; nothing is fetched from elsewhere.
    assert {op["operationId"] for _, _, op in OPS} <= parser.ids
    assert {f"schema-{name}" for name in DOC["components"]["schemas"]} <= parser.ids
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_a_token_is_not_needed_but_a_bad_one_is_still_refused_elsewhere(client: Any) -> None:
    """The contract routes are open like /health; the rest still needs a valid token."""
    assert client.http.get("/api/v1/openapi.json", headers={"Authorization": "Bearer junk"}).status_code == 200
    refused = client.http.get("/api/v1/loans", headers={"Authorization": "Bearer junk"})
    assert refused.status_code == 401
    assert json.loads(refused.body)["error"]["code"] == Unauthenticated.code


def test_answers_named_by_the_routes_resolve_to_their_models() -> None:
    # Routes name their response models rather than import them (chalicelib.api.operations.Answer):
    # a choice, a list alias and text each come out as the document describes them.
    users = DOC["paths"]["/api/v1/users/{username}"]["patch"]["responses"]
    assert users["200"]["content"]["application/json"]["schema"] == {
        "anyOf": [{"$ref": "#/components/schemas/UserOut"}, {"$ref": "#/components/schemas/OffboardedUserOut"}]
    }
    runs = DOC["paths"]["/api/v1/jobs/dpd/runs"]["get"]["responses"]["200"]["content"]["application/json"]
    assert runs["schema"] == {"type": "array", "items": {"$ref": "#/components/schemas/RunOut"}}
    page = DOC["paths"]["/api/v1/docs"]["get"]["responses"]["200"]["content"]
    assert page == {"text/html": {"schema": {"type": "string"}}}


@pytest.mark.parametrize("name", ["NoSuchOut", "Paise", "LoanOut | NoSuchOut", "BaseModel", "Out", "LoanOut | str"])
def test_an_answer_naming_no_response_model_is_refused(name: str) -> None:
    op = next(iter(OPERATIONS.values()))
    with pytest.raises(TypeError, match="names no response model"):
        openapi._resolved(op, name)
