"""What each route promises a client, declared where the route is registered (``http.endpoint``) and
collected here; ``chalicelib.api.openapi`` writes the published document from it (docs/api.md,
"The contract").

A declaration is used, not only shown: the query parameters an operation declares are the only ones
its view accepts (``Call.query``), so the document cannot name a parameter the view ignores or miss one
it reads.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from chalicelib.api.paging import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT
from chalicelib.domain.errors import DomainError
from chalicelib.domain.roles import Role


@dataclass(frozen=True)
class QueryParam:
    """One optional query parameter: its JSON Schema (the value as a string is checked against it) and
    what it means."""

    name: str
    schema: Mapping[str, Any]
    description: str

    def __post_init__(self) -> None:
        unchecked = set(self.schema) - _CHECKED_KEYWORDS
        if unchecked or self.schema.get("format", "date") != "date":
            raise ValueError(f"query parameter {self.name}: {sorted(unchecked)} would be published but not checked")

    def problem(self, value: str) -> str | None:
        """Why ``value`` breaks this parameter's schema, or None: the check the document promises, so a
        value the document calls invalid is a 400 however the view would have read it."""
        schema = self.schema
        if schema.get("type") == "integer":
            # isdigit() alone accepts "²" (int() then fails) and "٣" (int() reads 3): ASCII digits only.
            if not re.fullmatch(r"-?[0-9]{1,19}", value):
                return "a whole number"
            number = int(value)
            low, high = schema.get("minimum"), schema.get("maximum")
            if (low is not None and number < low) or (high is not None and number > high):
                return f"{low} to {high}"
            return None
        if "enum" in schema and value not in schema["enum"]:
            return "one of " + ", ".join(schema["enum"])
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            return f"{schema.get('minLength', 0)} to {schema.get('maxLength')} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"must match {schema['pattern']}"
        if schema.get("format") == "date" and not _is_iso_date(value):
            return "YYYY-MM-DD (IST)"
        return None


_CHECKED_KEYWORDS = frozenset(
    {"type", "minimum", "maximum", "default", "enum", "minLength", "maxLength", "pattern", "format"}
)
"""The JSON Schema keywords :meth:`QueryParam.problem` enforces; declaring any other is an error."""


def _is_iso_date(value: str) -> bool:
    try:
        # fromisoformat also reads "20260315"; only the form the API writes is a date here.
        return dt.date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


LIMIT = QueryParam(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    "Items per page.",
)
CURSOR = QueryParam(
    "cursor",
    {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_CHARS},
    "The `next_cursor` of the previous page, as given.",
)
PAGING = (LIMIT, CURSOR)


def date_param(name: str, description: str) -> QueryParam:
    return QueryParam(name, {"type": "string", "format": "date"}, description + " (YYYY-MM-DD, IST).")


def enum_param(name: str, values: Any, description: str) -> QueryParam:
    return QueryParam(name, {"type": "string", "enum": sorted(str(v) for v in values)}, description)


Answer = str | type[str]
"""What a success status answers: the name of a response model in ``chalicelib.api.responses``
(``"LoanOut"``, or an alias of a list of one, ``"RunList"``), several names joined by ``|`` for a
choice (``"UserOut | OffboardedUserOut"``), or ``str`` for text. Named rather than imported: only the
OpenAPI document reads the response models, and declaring them cost every cold container about 10 ms
(docs/architecture.md, "Cold start"). ``chalicelib.api.openapi`` looks the names up, and refuses one it
cannot find."""


@dataclass(frozen=True)
class Operation:
    """One method on one path, as registered by :func:`chalicelib.api.http.endpoint`."""

    path: str
    method: str
    name: str
    summary: str
    description: str
    roles: frozenset[Role] | None
    """None: any authenticated caller (or anyone, when not ``authenticated``)."""
    authenticated: bool
    idempotent: bool
    """Honours ``Idempotency-Key``: every authenticated POST."""
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: tuple[QueryParam, ...] = ()
    answers: Mapping[int, Answer] = field(default_factory=dict)
    """Success status -> what it answers."""
    errors: tuple[type[DomainError], ...] = ()
    """The refusals particular to this operation; the ones every operation of its kind can give (401,
    403, 404 for a path id, 400, 413, 415, 503, ...) are added by the document."""
    tag: str = "other"
    media_type: str = "application/json"
    """What the success answers are; every refusal is JSON whatever this says."""
    roles_checked_in_view: bool = False
    """The view reads the body and acts on it (the financial guard) before it checks ``roles``; every
    other operation refuses a caller before anything reads the body."""

    @property
    def query_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.query)


OPERATIONS: dict[tuple[str, str], Operation] = {}
"""(path template, method) -> its operation, in registration order."""


def register(operation: Operation) -> None:
    key = (operation.path, operation.method)
    if key in OPERATIONS:
        raise ValueError(f"{operation.method} {operation.path} is declared twice")
    OPERATIONS[key] = operation
