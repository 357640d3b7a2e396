"""The published contract: an OpenAPI 3.1 document written from the registered operations
(``chalicelib.api.operations``), the request models (``chalicelib.api.schemas``) and the response
models (``chalicelib.api.responses``); never by hand (docs/api.md, "The contract").

Every operation lists its parameters, its body, what each success status answers, and every refusal
it can give: the ones particular to it (declared with the route) and the ones that follow from its
kind, added here once — 400 for any operation (an unknown query parameter is refused everywhere), 401
and 503 when it needs a token (the caller is looked up), 403 when its roles are restricted, 404 when
its path names an id, 413 and 415 when it takes a body, and the idempotency refusals on POSTs.
"""

from __future__ import annotations

import functools
import operator
import re
import typing
from collections.abc import Iterable
from types import UnionType
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from chalicelib.api import responses
from chalicelib.api.errors import status_for_kind
from chalicelib.api.http import ANY_ID_PATTERN, BODY_METHODS, PATH_PARAMETER_PATTERNS
from chalicelib.api.idempotency import KEY_PATTERN
from chalicelib.api.operations import OPERATIONS, Answer, Operation
from chalicelib.domain.errors import (
    DomainError,
    Forbidden,
    IdempotencyKeyReused,
    NotFound,
    PayloadTooLarge,
    RequestInProgress,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from chalicelib.domain.roles import ALL_ROLES

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearerAuth"
TITLE = "Loan CRM API"
TAG_ORDER = (
    "auth",
    "loans",
    "payments",
    "users",
    "dashboard",
    "reconciliation",
    "scores",
    "jobs",
    "audit",
    "health",
    "contract",
)

REQUEST_ID_HEADER = {
    "description": "The request's id: quote it to support; every log line of the request carries it.",
    "schema": {"type": "string"},
}
REFUSAL_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": 'Always `Bearer realm="loan-crm"`.', "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}},
}
GENERIC_MEANING: dict[int, str] = {
    400: "The request is malformed: bad JSON, a wrong type, an unknown field or query parameter, a value "
    "out of range; `details` lists the fields.",
    401: "No valid bearer token (missing, malformed, expired, or its user deactivated since).",
    403: "The caller's role may not do this.",
    404: "Nothing with this id (for a collector: also a loan not assigned to them).",
    409: "Conflicts with the stored state.",
    413: "The body is over 64 KiB.",
    415: "The body is not `application/json`.",
    422: "Well-formed, but breaks a business rule.",
    429: "Too many attempts; see `Retry-After`.",
    503: "A dependency (DynamoDB, SSM) is unavailable; nothing was changed.",
}


def refusals(op: Operation) -> dict[int, list[type[DomainError]]]:
    """Every refusal ``op`` can give, by status: its own and those of its kind (module docstring)."""
    kinds: list[type[DomainError]] = [ValidationFailed]
    if op.authenticated:
        kinds += [Unauthenticated, Unavailable]
    if op.roles is not None and op.roles != ALL_ROLES:
        kinds.append(Forbidden)
    if "{" in op.path:
        kinds.append(NotFound)
    if op.method in BODY_METHODS:
        kinds += [PayloadTooLarge, UnsupportedMediaType]
    if op.idempotent:
        kinds += [RequestInProgress, IdempotencyKeyReused]
    by_status: dict[int, list[type[DomainError]]] = {}
    for kind in (*kinds, *op.errors):
        listed = by_status.setdefault(status_for_kind(kind), [])
        if kind not in listed:
            listed.append(kind)
    return dict(sorted(by_status.items()))


def _models_of(answer: Any) -> list[type[BaseModel]]:
    if isinstance(answer, type) and issubclass(answer, BaseModel):
        return [answer]
    return [m for arg in typing.get_args(answer) for m in _models_of(arg)]


def _resolved(op: Operation, answer: Answer) -> Any:
    """The type an operation's answer names (a response model or an alias such as ``RunList``, a choice
    of several), or ``str``."""
    if not isinstance(answer, str):
        return answer
    models: list[Any] = []
    for name in (part.strip() for part in answer.split("|")):
        model = getattr(responses, name, None)
        named = _models_of(model) if model is not None else []
        if not named or not all(m.__module__ == responses.__name__ and m is not responses.Out for m in named):
            raise TypeError(
                f"{op.method} {op.path} answers {name!r}, which names no response model"
                " (text is answered as the type str, on its own)"
            )
        models.append(model)
    return functools.reduce(operator.or_, models)


def _schema_of(answer: Any) -> dict[str, Any]:
    """A reference to a model, an array of one, a choice between several, or text."""
    if answer is str:
        return {"type": "string"}
    if isinstance(answer, type) and issubclass(answer, BaseModel):
        return {"$ref": REF.format(model=answer.__name__)}
    origin = typing.get_origin(answer)
    if origin is list:
        (item,) = typing.get_args(answer)
        return {"type": "array", "items": _schema_of(item)}
    if origin in (typing.Union, UnionType):
        return {"anyOf": [_schema_of(arg) for arg in typing.get_args(answer)]}
    raise TypeError(f"cannot describe {answer!r} in the contract")


def _components(ops: Iterable[Operation]) -> dict[str, Any]:
    inputs = {op.body for op in ops if op.body is not None}
    outputs = {m for op in ops for answer in op.answers.values() for m in _models_of(_resolved(op, answer))}
    outputs.add(responses.ErrorOut)
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation") for m in sorted(inputs, key=lambda m: m.__name__)
    ]
    pairs += [(m, "serialization") for m in sorted(outputs, key=lambda m: m.__name__)]
    names, definitions = models_json_schema(pairs, ref_template=REF)
    schemas: dict[str, Any] = definitions.get("$defs", {})
    for (model, _mode), ref in names.items():
        # A model used only at the top level is named by its class; models_json_schema may have
        # suffixed it when the same model is an input and an output, which none of ours is.
        assert ref["$ref"] == REF.format(model=model.__name__), ref
    return schemas


def _path_parameters(path: str) -> list[dict[str, Any]]:
    parameters = []
    for name in re.findall(r"{(\w+)}", path):
        pattern = PATH_PARAMETER_PATTERNS.get(name, ANY_ID_PATTERN)
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": pattern.pattern},
                "description": "An id that cannot exist (wrong shape) is 404, like one that does not.",
            }
        )
    return parameters


def _roles_text(op: Operation) -> str:
    if not op.authenticated:
        return "No authentication."
    if op.roles is None or op.roles == ALL_ROLES:
        return "Roles: any authenticated role."
    return "Roles: " + ", ".join(sorted(r.value for r in op.roles)) + "."


def _operation(op: Operation) -> dict[str, Any]:
    parameters = _path_parameters(op.path)
    parameters += [
        {"name": p.name, "in": "query", "required": False, "schema": dict(p.schema), "description": p.description}
        for p in op.query
    ]
    if op.idempotent:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": KEY_PATTERN.pattern},
                "description": "The same key and body within 24 h replays the first answer (header "
                "`Idempotent-Replayed: true`); the same key with another body is 422 "
                "IDEMPOTENCY_KEY_REUSED; while the first is still in flight, 409 REQUEST_IN_PROGRESS.",
            }
        )
    answers: dict[str, Any] = {}
    for status, answer in sorted(op.answers.items()):
        headers: dict[str, Any] = {"X-Request-Id": REQUEST_ID_HEADER}
        if op.idempotent:
            headers["Idempotent-Replayed"] = {
                "description": "`true` when this is a stored answer replayed for a repeated Idempotency-Key.",
                "schema": {"type": "string", "enum": ["true"]},
            }
        answers[str(status)] = {
            "description": "OK" if status < 300 else "See the description",
            "headers": headers,
            "content": {op.media_type: {"schema": _schema_of(_resolved(op, answer))}},
        }
    for status, kinds in refusals(op).items():
        codes = ", ".join(f"`{kind.code}`" for kind in kinds)
        answers.setdefault(
            str(status),
            {
                "description": f"{GENERIC_MEANING.get(status, 'Refused')} Codes: {codes}.",
                "headers": {"X-Request-Id": REQUEST_ID_HEADER, **REFUSAL_HEADERS.get(status, {})},
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}},
            },
        )
    document: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "description": "\n\n".join(part for part in (_roles_text(op), op.description) if part),
        "tags": [op.tag],
        "parameters": parameters,
        "responses": answers,
        "x-roles": sorted(r.value for r in (op.roles or ALL_ROLES)) if op.authenticated else [],
    }
    if op.body is not None:
        document["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}},
        }
    document["security"] = [{SECURITY_SCHEME: []}] if op.authenticated else []
    return document


@functools.cache
def document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered operation. Built once per process: the routes and
    models cannot change while it runs."""
    ops = list(OPERATIONS.values())
    paths: dict[str, dict[str, Any]] = {}
    for op in sorted(ops, key=lambda o: (o.path, o.method)):
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": version,
            "description": (
                "Loan collections for an Indian lender: loans and EMI schedules, payments, day-end DPD "
                "classification (RBI IRACP), escalation, audit. Money is integer paise; business dates "
                'are IST `YYYY-MM-DD`. Every refusal has the body `{"error": {"code", "message", '
                '"details"}}`. A method a path does not serve is 405 `METHOD_NOT_ALLOWED` (with `Allow`); '
                "a path nothing is served at is 404 `NOT_FOUND`."
            ),
        },
        # Relative to this document (…/api/v1/openapi.json): the API's root wherever it is served,
        # behind API Gateway's stage prefix or locally.
        "servers": [{"url": "../..", "description": "The API this document was served by."}],
        "tags": [{"name": tag} for tag in TAG_ORDER if any(op.tag == tag for op in ops)],
        "paths": paths,
        "components": {
            "schemas": _components(ops),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`POST /api/v1/auth/token` issues one (HS256).",
                }
            },
        },
    }
