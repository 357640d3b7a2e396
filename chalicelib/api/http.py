"""Route registration with one error boundary, and the strict reading of requests (docs/api.md).

Chalice turns any exception that is not its own into a bare 500 inside the view
(``_get_view_function_response``), so the mapping from domain errors to responses has to live
around each view function. :func:`endpoint` does that once for every route, together with
authentication, the role check, request ids and body parsing.

Chalice also answers a method a path does not serve (405) and a content type a route does not list
(415) itself, before any view runs and in its own error shape; on API Gateway a method that is not
defined on a resource never reaches the function at all. So each path is registered once, for every
method, with one dispatcher that answers 405 and 415 in the API's error shape and hands everything
else to the view registered for that method.

Every request the app answers is written as exactly one log line, ``request`` (:func:`log_request`,
docs/logging.md): who asked for which route, which loan it named, the status and how long it took.

A path no route matches never reaches a view either: Chalice's local gateway (the one
``chalice.test.Client`` uses) answers it with API Gateway's raw 403, quoting the request's
Authorization header back. :data:`unmatched` registers catch-all routes ``/{segment_1}`` ..
``/{segment_1}/.../{segment_16}`` for every method that answer 404 ``NOT_FOUND`` in the error shape
instead; :func:`served_paths` lists the real routes, without them.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chalice.app import Blueprint, CORSConfig, Request, Response
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from chalicelib.adapters.logging import app_logger, log_context
from chalicelib.api import idempotency, operations
from chalicelib.api.errors import (
    error_response,
    internal_error_response,
    json_response,
    status_for,
    unknown_path_response,
)
from chalicelib.api.operations import Answer, Operation, QueryParam
from chalicelib.api.schemas import FIRST_BUSINESS_DATE, LAST_BUSINESS_DATE
from chalicelib.config import settings
from chalicelib.domain.audit import Action, Actor
from chalicelib.domain.errors import (
    DomainError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from chalicelib.domain.loan import LOAN_ID_PATTERN
from chalicelib.domain.roles import Role
from chalicelib.domain.users import USERNAME_PATTERN
from chalicelib.services.context import RequestContext
from chalicelib.wiring import services

logger = app_logger()
M = TypeVar("M", bound=BaseModel)

HTTP_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
"""Every method a path is registered for: the ones it does not serve answer 405 from the app, the same
in tests, locally and on API Gateway. OPTIONS is left to CORS preflight (Chalice and API Gateway)."""
WRITE_METHODS = frozenset({"DELETE", "PATCH", "POST", "PUT"})
BODY_METHODS = frozenset({"PATCH", "POST", "PUT"})

MAX_JSON_DEPTH = 32
"""Levels of arrays and objects a body may nest; the top-level object or array is level 1."""
MAX_QUERY_VALUE_CHARS = 512
PATH_PARAMETER_PATTERNS: dict[str, re.Pattern[str]] = {"loan_id": LOAN_ID_PATTERN, "username": USERNAME_PATTERN}
"""Ids with a known shape. Any other URI parameter must match :data:`ANY_ID_PATTERN`."""
ANY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
ENTITY_TYPE_BY_PARAMETER = {"loan_id": "loan", "payment_id": "payment", "username": "user"}
"""Which audit entity a denied write names, by the route's URI parameter."""

# --- reading JSON -----------------------------------------------------------------------------------

Path = tuple[str | int, ...]


def field_name(path: Path) -> str:
    """A location as the 400 ``details`` name it, like pydantic does: ``schedule.0.due_date``."""
    return ".".join(str(p) for p in path) or "body"


@dataclass(frozen=True)
class _Unreadable:
    """A token json can read but the API does not accept; the walk reports it with its location."""

    shown: str
    message: str


def _constant(name: str) -> _Unreadable:
    return _Unreadable(name, "NaN and Infinity are not JSON numbers")


def _float(text: str) -> float | _Unreadable:
    value = float(text)
    return value if math.isfinite(value) else _Unreadable(text[:32], "number out of range")


def _int(text: str) -> int | _Unreadable:
    # int() refuses more than 4300 digits (sys.int_info.str_digits_check_threshold) with a ValueError;
    # that is a bad value at a known place, not a malformed body.
    try:
        return int(text)
    except ValueError:
        return _Unreadable(f"{len(text)}-digit integer", "integer out of range")


class _Pairs(list[tuple[str, Any]]):
    """An object as written, every key in order, repeats included (json's ``object_pairs_hook``)."""


@dataclass
class JsonDocument:
    """A request body read strictly. ``value`` is what the body says (objects as dicts);
    ``problems`` lists what makes it unacceptable although it could be read (repeated keys,
    NaN/Infinity, numbers out of range, lone surrogates), each with its field; ``key_paths`` holds
    the location of every key as written, repeats included, so a guard can look at all of them."""

    text: str
    value: Any = None
    problems: list[dict[str, str]] = field(default_factory=list)
    key_paths: list[Path] = field(default_factory=list)

    def require_clean(self) -> Any:
        if self.problems:
            raise ValidationFailed("request body is not acceptable JSON", self.problems)
        return self.value

    def attempted(self) -> Any:
        """What an audit entry records of this body: the value, or the text as sent when the value
        would not say it faithfully (a repeated key keeps only its last value)."""
        return self.text if self.problems else self.value

    def _walk(self, node: Any, path: Path, depth: int) -> Any:
        if isinstance(node, _Pairs | list) and depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(node, _Pairs):
            result: dict[str, Any] = {}
            for key, item in node:
                here = (*path, key)
                self.key_paths.append(here)
                self._check_text(key, here)
                if key in result:
                    self.problems.append({"field": field_name(here), "message": "key appears more than once"})
                result[key] = self._walk(item, here, depth + 1)
            return result
        if isinstance(node, list):
            return [self._walk(item, (*path, i), depth + 1) for i, item in enumerate(node)]
        if isinstance(node, _Unreadable):
            self.problems.append({"field": field_name(path), "message": node.message})
            return node.shown
        if isinstance(node, str):
            self._check_text(node, path)
        return node

    def _check_text(self, text: str, path: Path) -> None:
        # "\ud800" is valid JSON but not Unicode: it cannot be stored (UTF-8) or sent back.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.problems.append({"field": field_name(path), "message": "not valid Unicode (lone surrogate)"})


def _too_deep() -> ValidationFailed:
    return ValidationFailed(
        "request body is nested too deeply",
        [{"field": "body", "message": f"at most {MAX_JSON_DEPTH} levels of arrays and objects"}],
    )


def _malformed(message: str) -> ValidationFailed:
    return ValidationFailed("request body is not valid JSON", [{"field": "body", "message": message}])


def read_json(raw: bytes) -> JsonDocument:
    """Read a body as JSON: 400 when it is not UTF-8, not JSON or nested too deeply. Problems that
    leave it readable are collected on the document, not raised (see :meth:`JsonDocument.require_clean`)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("not UTF-8 text") from None
    try:
        tree = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except json.JSONDecodeError as exc:
        # exc.msg is json's own description ("Expecting value"); never the text around it.
        raise _malformed(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _too_deep() from None
    document = JsonDocument(text)
    document.value = document._walk(tree, (), 1)
    return document


# --- the request a view sees ------------------------------------------------------------------------


def pydantic_details(exc: PydanticValidationError) -> list[dict[str, str]]:
    details = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        details.append({"field": field_name(tuple(err["loc"])), "message": err["msg"], "type": err["type"]})
    return details


@dataclass
class Call:
    """What a view gets: the request, the caller, and strict parsers for body and query."""

    request: Request
    ctx: RequestContext
    request_id: str
    query_params: tuple[QueryParam, ...] = ()
    """The query parameters the operation declares: the only ones it accepts, each checked against its
    published schema."""
    fingerprint: str | None = None
    """Set when the client sent an Idempotency-Key: identifies this logical request across retries."""
    receipt: idempotency.TransactionReceipt | None = None
    """Set when the client sent an Idempotency-Key to a route whose service writes the key's record
    with its change (``endpoint(..., receipt_in_view=True)``)."""
    _document: JsonDocument | None = None

    def raw_body(self) -> bytes:
        return _raw_body(self.request)

    def receipt_for(self, render: Callable[[Any], Response]) -> idempotency.TransactionReceipt | None:
        """The request's receipt (None without an Idempotency-Key), answering with ``render(result)``."""
        if self.receipt is not None:
            self.receipt.render = render
        return self.receipt

    def loan_id_named(self) -> str | None:
        """The ``loan_id`` a body the view read names at its top level (a payment's), for the request's
        log line; None when the body was not read, names none, or names one that cannot exist."""
        value = self._document.value if self._document is not None else None
        loan_id = value.get("loan_id") if isinstance(value, dict) else None
        return loan_id if isinstance(loan_id, str) and LOAN_ID_PATTERN.fullmatch(loan_id) else None

    def document(self) -> JsonDocument:
        """The body read as JSON (413, 400 when unreadable), problems not yet judged."""
        if self._document is None:
            self._document = read_json(self.raw_body())
        return self._document

    def json_value(self) -> Any:
        """The body as any JSON value; empty, malformed, too deep, a repeated key or NaN is a 400."""
        return self.document().require_clean()

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; anything else (empty, malformed, an array, NaN) is a 400."""
        body = self.json_value()
        if not isinstance(body, dict):
            raise ValidationFailed(
                "request body must be a JSON object", [{"field": "body", "message": "not an object"}]
            )
        return body

    def parse(self, model: type[M]) -> M:
        """Validate the body strictly: JSON integers only for paise, no unknown fields, ISO dates."""
        raw = self.raw_body()
        self.json()
        try:
            return model.model_validate_json(raw, strict=True)
        except PydanticValidationError as exc:
            raise ValidationFailed("request body is invalid", pydantic_details(exc)) from None

    def query(self) -> dict[str, str]:
        """The query parameters; a name the operation does not declare, an overlong value or a control
        character is a 400."""
        params = dict(self.request.query_params or {})
        declared = {p.name: p for p in self.query_params}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise ValidationFailed(
                "unknown query parameters", [{"field": name, "message": "not supported"} for name in unknown]
            )
        bad = []
        for name, value in sorted(params.items()):
            if len(value) > MAX_QUERY_VALUE_CHARS or not value.isprintable():
                problem: str | None = f"at most {MAX_QUERY_VALUE_CHARS} printable characters"
            else:
                problem = declared[name].problem(value)
            if problem is not None:
                bad.append({"field": name, "message": problem})
        if bad:
            raise ValidationFailed("invalid query parameters", bad)
        return params


def query_date(params: dict[str, str], name: str) -> dt.date | None:
    """An optional ``YYYY-MM-DD`` query parameter within the business date range, else a 400."""
    value = params.get(name)
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        day = None
    # fromisoformat also reads "20260315"; only the form the API writes is accepted.
    if day is None or day.isoformat() != value:
        raise ValidationFailed(f"{name} must be a date", [{"field": name, "message": "YYYY-MM-DD (IST)"}])
    if not FIRST_BUSINESS_DATE <= day <= LAST_BUSINESS_DATE:
        raise ValidationFailed(
            f"{name} is out of range",
            [{"field": name, "message": f"between {FIRST_BUSINESS_DATE} and {LAST_BUSINESS_DATE}"}],
        )
    return day


def _raw_body(request: Request) -> bytes:
    raw = request.raw_body or b""
    if isinstance(raw, str):
        raw = raw.encode()
    limit = settings().max_body_bytes
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes", {"max_bytes": limit})
    return raw


def _request_id(request: Request) -> str:
    context = request.context or {}
    return str(context.get("requestId") or uuid.uuid4())


def _source_ip(request: Request) -> str | None:
    identity = (request.context or {}).get("identity") or {}
    ip = identity.get("sourceIp")
    return str(ip) if ip else None


def _authenticate(request: Request, request_id: str) -> RequestContext:
    headers: Any = request.headers or {}
    header = str(headers.get("authorization") or "")
    scheme, _, token = header.partition(" ")
    # Only spaces and tabs around the token are padding; str.strip() would also drop CR/LF, Unicode
    # spaces and control characters, accepting a header no client should send (docs/auth.md).
    token = token.strip(" \t")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing bearer token")
    # A good signature is not enough: the user must still exist, be active and not have ended the
    # token since (a password change, a deactivation). A storage failure there is a 503, never a pass.
    verified = services().auth.authenticate(token)
    return RequestContext(actor=verified.actor, source_ip=_source_ip(request), request_id=request_id)


REQUEST_BUDGET_MS = 25_000
"""The most one request works for: API Gateway gives up after 29 s whatever the Lambda's own timeout."""


def time_left_ms(lambda_context: Any) -> Callable[[], int] | None:
    """Milliseconds a long request (an offboarding) may still work: :data:`REQUEST_BUDGET_MS` from
    now, or less when the Lambda context has less left. None when there is no context to ask (no
    limit). Chalice passes one on Lambda, under ``chalice local`` and in ``chalice.test.Client`` (the
    idempotency wrapper reads it the same way); whoever does the work keeps its own margin to answer
    (``services.reassignment`` stops with 5 s left)."""
    remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    deadline = time.monotonic() + REQUEST_BUDGET_MS / 1000

    def left() -> int:
        return min(int((deadline - time.monotonic()) * 1000), int(remaining()))

    return left


def _check_path_parameters(params: dict[str, Any]) -> None:
    # An id that cannot exist is not looked up: a 10 000-character key is a DynamoDB error, not a miss.
    for name, value in params.items():
        pattern = PATH_PARAMETER_PATTERNS.get(name, ANY_ID_PATTERN)
        if not (isinstance(value, str) and pattern.fullmatch(value)):
            raise NotFound(f"{name.removesuffix('_id')} not found")


def _is_json(request: Request) -> bool:
    """A body is JSON when it says so (``application/json``, UTF-8 if a charset is named) or, as
    Chalice and API Gateway assume, when it names no type at all."""
    headers: Any = request.headers or {}
    header = headers.get("content-type")
    if header is None:
        return True
    media_type, *parameters = str(header).split(";")
    if media_type.strip().lower() != "application/json":
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _cors() -> CORSConfig | None:
    origin = settings().cors_origin
    if not origin:
        return None
    return CORSConfig(
        allow_origin=origin,
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        expose_headers=["X-Request-Id", "Idempotent-Replayed", "Retry-After"],
        max_age=600,
    )


ANONYMOUS = Actor(sub="anonymous", role=Role.AUDITOR.value)


def _record_denial(ctx: RequestContext, request: Request, path: str, params: dict[str, Any], exc: Forbidden) -> None:
    """A 403 on a write route goes on the audit trail; recording it never changes the answer."""
    if request.method not in WRITE_METHODS:
        return
    entity_type, entity_id = "route", f"{request.method} {path}"
    for name, kind in ENTITY_TYPE_BY_PARAMETER.items():
        if name in params:
            entity_type, entity_id = kind, str(params[name])
            break
    try:
        document = read_json(_raw_body(request))
        attempted = _without_secrets(document.value)
        if document.problems:
            # Its text is what the trail keeps (JsonDocument.attempted); a password inside stays out.
            attempted = REDACTED if "password" in document.text.lower() else document.text
    except DomainError:
        attempted = None
    try:
        services().denials.record(ctx, Action.ACCESS_DENIED, entity_type, entity_id, attempted, exc.message)
    except Exception:
        logger.exception("could not audit a denied write", extra={"request_id": ctx.request_id})


REDACTED = "[redacted]"


def _without_secrets(attempted: Any) -> Any:
    """An attempted body as the audit trail may keep it: the value of every key naming a password
    (``password``, ``new_password``, any letter case, at any depth) replaced."""
    if isinstance(attempted, dict):
        return {k: REDACTED if "password" in k.lower() else _without_secrets(v) for k, v in attempted.items()}
    if isinstance(attempted, list):
        return [_without_secrets(item) for item in attempted]
    return attempted


# --- registration -----------------------------------------------------------------------------------

_views_by_path: dict[str, dict[str, Callable[..., Response]]] = {}
"""Path template -> method -> view, for every route :func:`endpoint` registered."""
_LITERAL_FIRST_SEGMENT = re.compile(r"/[A-Za-z0-9_.-]+(/|$)")


def _path_views(bp: Blueprint, path: str) -> dict[str, Callable[..., Response]]:
    """The views of one path; the first time a path is seen it is registered with Chalice for every
    method, with a dispatcher that answers 405 and 415 in the API's error shape."""
    views = _views_by_path.get(path)
    if views is not None:
        return views
    if not _LITERAL_FIRST_SEGMENT.match(path):
        # A parameter (or a character sorting after "{") there would compete with the catch-alls.
        raise ValueError(f"{path}: a route's first segment must be a literal name (see CATCH_ALL_PATHS)")
    views = _views_by_path[path] = {}

    def dispatch(**params: Any) -> Response:
        request = bp.current_request
        view = views.get(request.method)
        if view is None:
            started, request_id, allowed = time.monotonic(), _request_id(request), sorted(views)
            refusal: DomainError = MethodNotAllowed(
                f"{request.method} is not served on this path", {"allowed": allowed}
            )
            response = error_response(refusal, request_id, headers={"Allow": ", ".join(allowed)})
            log_request(RequestLine(request.method, path, request_id, started), response)
            return response
        if request.method in BODY_METHODS and not _is_json(request):
            started, request_id = time.monotonic(), _request_id(request)
            refusal = UnsupportedMediaType("request bodies must be application/json", {"expected": "application/json"})
            response = error_response(refusal, request_id)
            log_request(RequestLine(request.method, path, request_id, started), response)
            return response
        return view(**params)

    dispatch.__name__ = "route_" + re.sub(r"\W+", "_", path).strip("_")
    bp.route(path, methods=list(HTTP_METHODS), cors=_cors() or False, content_types=["*/*"])(dispatch)
    return views


def served_paths() -> list[str]:
    """Every path template a view is registered for: the API's real routes, sorted. The catch-alls
    (:data:`CATCH_ALL_PATHS`) are not among them, though Chalice's ``app.routes`` holds both."""
    return sorted(_views_by_path)


def served_methods(path: str) -> list[str]:
    """The methods a registered path template has a view for, e.g. ``["GET", "POST"]``; none for a
    catch-all or a path nothing is registered at."""
    return sorted(_views_by_path.get(path, {}))


# --- paths nothing is served at ---------------------------------------------------------------------

NOT_FOUND_DEPTH = 16
"""Paths of up to this many segments that no route matches are answered by the app's catch-alls,
wherever it runs. Deeper ones never reach the app: API Gateway answers them through its
MISSING_AUTHENTICATION_TOKEN gateway response and the local server through
``local.api_server.UnmatchedRouteGateway`` (the same 404); only a bare ``chalice.test.Client`` still gives
Chalice's raw 403 there (quoting an Authorization header back). The longest real route has 5
segments. Each level costs one API Gateway resource with 7 methods in the packaged definition."""
CATCH_ALL_METHODS = (*HTTP_METHODS, "OPTIONS")
"""OPTIONS too: an unknown path has no CORS preflight to answer (catch-alls have no CORS)."""
CATCH_ALL_PATHS = tuple(
    "".join(f"/{{segment_{i}}}" for i in range(1, depth + 1)) for depth in range(1, NOT_FOUND_DEPTH + 1)
)
"""``/{segment_1}``, ``/{segment_1}/{segment_2}``, ... Chalice's local matcher tries routes in sorted
order and every real route starts with a literal segment, which sorts before ``{``, so a path that
matches a real route never reaches a catch-all (and a path parameter of a real route matches only
inside its own route). On API Gateway ``{segment_1}`` is the root's only parameter child and each
``{segment_n}`` its parent's only child, so no level has two parameter names."""

unmatched = Blueprint(__name__)
"""The catch-alls; app.py registers this blueprint after the real ones (the order does not matter to
the matching, see :data:`CATCH_ALL_PATHS`)."""


def is_catch_all(path: str) -> bool:
    """Whether a route template (a key of ``app.routes``) is one of the catch-alls, not a real route."""
    return path in CATCH_ALL_PATHS


UNMATCHED_ROUTE = "unmatched"
"""The route a request line names for a path no route matches (never the path: it could hold anything)."""


def _nothing_served(**_segments: str) -> Response:
    # Chalice's local matcher may also pass parameters of routes it tried before this one: all ignored.
    request = unmatched.current_request
    line = RequestLine(request.method, UNMATCHED_ROUTE, _request_id(request), time.monotonic())
    response = unknown_path_response(line.request_id)
    log_request(line, response)
    return response


for _catch_all in CATCH_ALL_PATHS:
    unmatched.route(_catch_all, methods=list(CATCH_ALL_METHODS), cors=False, content_types=["*/*"])(_nothing_served)


def endpoint(
    bp: Blueprint,
    path: str,
    methods: tuple[str, ...] = ("GET",),
    roles: frozenset[Role] | None = None,
    authenticated: bool = True,
    *,
    check_roles_in_view: bool = False,
    summary: str,
    answers: Mapping[int, Answer],
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    query: tuple[QueryParam, ...] = (),
    errors: tuple[type[DomainError], ...] = (),
    tag: str,
    media_type: str = "application/json",
    receipt_in_view: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """Register ``fn(call, **uri_params)`` as a route. ``roles`` None means any authenticated role. A
    view that must act before the role check (the financial guard) passes ``check_roles_in_view`` and
    checks ``roles`` itself; the contract still shows them. Authenticated POSTs honour
    ``Idempotency-Key``; with ``receipt_in_view`` the view hands ``call.receipt_for(...)`` to a
    service that reads and writes the key's record with its own change (POST /payments).

    The rest declares the operation for the published contract (``chalicelib.api.operations``): what
    it answers per success status, its body model, its query parameters (the only ones the view
    accepts) and the refusals particular to it. The view's docstring becomes its description."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Response]:
        idempotent = authenticated and "POST" in methods
        admits = None if check_roles_in_view else roles
        served = _Endpoint(bp, path, fn, admits, authenticated, idempotent, query, receipt_in_view)

        @functools.wraps(fn)
        def view(**params: Any) -> Response:
            return served.serve(params)

        _register(bp, path, methods, view)
        # Declared once the route is registered: a route refused above leaves nothing in the contract.
        for method in methods:
            operations.register(
                Operation(
                    path=path,
                    method=method,
                    name=fn.__name__,
                    summary=summary,
                    description=inspect.cleandoc(fn.__doc__ or ""),
                    roles=roles,
                    authenticated=authenticated,
                    idempotent=idempotent,
                    body=body,
                    body_required=body_required,
                    query=query,
                    answers=answers,
                    errors=errors,
                    tag=tag,
                    media_type=media_type,
                    roles_checked_in_view=check_roles_in_view,
                )
            )
        return view

    return decorate


def _register(bp: Blueprint, path: str, methods: tuple[str, ...], view: Callable[..., Response]) -> None:
    views = _path_views(bp, path)
    for method in methods:
        if method in views:
            raise ValueError(f"{method} {path} is registered twice")
        views[method] = view


@dataclass(frozen=True)
class _Endpoint:
    """One view and the way every request to it is served (:meth:`serve`)."""

    bp: Blueprint
    path: str
    fn: Callable[..., Any]
    roles: frozenset[Role] | None
    authenticated: bool
    idempotent: bool
    query_params: tuple[QueryParam, ...]
    receipt_in_view: bool = False

    def serve(self, params: dict[str, Any]) -> Response:
        """The error boundary around one request: admission (:meth:`_admit`), then the view's answer
        (:meth:`_answer`). Whatever is raised becomes a response in the API's error shape: a refusal
        its own status, an unreachable dependency 503 (counted for ops), anything else a logged 500.
        Every line written meanwhile carries the request id, and the request's own line comes last."""
        request = self.bp.current_request
        line = RequestLine(request.method, self.path, _request_id(request), time.monotonic(), params)
        with log_context(request_id=line.request_id):
            response = self._serve(request, line, params)
            log_request(line, response)
        return response

    def _serve(self, request: Request, line: RequestLine, params: dict[str, Any]) -> Response:
        request_id = line.request_id
        try:
            return self._answer(self._admit(request, line, params), params)
        except Unavailable as exc:
            services().metrics.count("DependencyUnavailable")
            logger.warning("dependency unavailable", extra={"request_id": request_id, "path": request.path})
            return error_response(exc, request_id)
        except DomainError as exc:
            return error_response(exc, request_id)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": request_id, "path": request.path})
            return internal_error_response(request_id)

    def _admit(self, request: Request, line: RequestLine, params: dict[str, Any]) -> Call:
        """Who is calling (401), whether the path's ids can exist at all (404), and whether the
        caller's role may use the route (403, audited on write routes). Notes the caller and the call
        on ``line`` as soon as they are known, so a refusal's line names them too."""
        request_id = line.request_id
        if self.authenticated:
            ctx = _authenticate(request, request_id)
        else:
            ctx = RequestContext(actor=ANONYMOUS, source_ip=_source_ip(request), request_id=request_id)
        line.actor = None if ctx.actor is ANONYMOUS else ctx.actor
        _check_path_parameters(params)
        if self.roles is not None:
            try:
                ctx.require(self.roles)
            except Forbidden as exc:
                _record_denial(ctx, request, self.path, params, exc)
                raise
        call = line.call = Call(request, ctx, request_id, self.query_params)
        # Every query parameter is checked before the view runs: one the operation does not declare is
        # a 400, never ignored (no write route declares any: one sent is a mistake).
        call.query()
        return call

    def _answer(self, call: Call, params: dict[str, Any]) -> Response:
        """The view's answer; once per key when the client sent an Idempotency-Key to a POST route."""
        headers: Any = call.request.headers or {}
        raw_key = headers.get(idempotency.HEADER) if self.idempotent else None
        if raw_key is None:
            return self._respond(call, params)
        return self._respond_once(call, params, str(raw_key))

    def _respond_once(self, call: Call, params: dict[str, Any], raw_key: str) -> Response:
        """The answer stored under the caller's key (docs/api.md, idempotency): a repeat of the same
        request gets the stored answer, the same key with another request a refusal."""
        key = idempotency.validate_key(raw_key)
        if call.raw_body():
            # A body that is not acceptable JSON is refused before the key is taken, so the client can
            # fix it and retry with the same key.
            call.document().require_clean()
        # request.path is the route template ("/api/v1/payments/{payment_id}/reverse"); without the URI
        # parameters one key would replay one payment's reversal for another payment.
        resource = call.request.path + json.dumps(params, sort_keys=True, separators=(",", ":"))
        caller = call.ctx.actor.sub
        call.fingerprint = idempotency.fingerprint(caller, key, call.request.method, resource, call.raw_body())
        if self.receipt_in_view:
            call.receipt = idempotency.TransactionReceipt(
                idempotency.record_id(caller, key), idempotency.validation(call.fingerprint), key
            )
            response = idempotency.keep_once(
                services().idempotency_store(), call.receipt, lambda: self._respond(call, params)
            )
            response.headers["X-Request-Id"] = call.request_id
            return response
        response = idempotency.run_once(
            services().idempotency_store(),
            caller,
            key,
            call.fingerprint,
            self.bp.lambda_context,
            lambda: self._respond(call, params),
        )
        response.headers["X-Request-Id"] = call.request_id
        return response

    def _respond(self, call: Call, params: dict[str, Any]) -> Response:
        """The view's answer, refusals included (a 403 from the view is audited like the route's own);
        only 5xx-worthy failures propagate, to :meth:`serve`."""
        try:
            result = self.fn(call, **params)
        except DomainError as exc:
            if status_for(exc) >= 500:
                raise
            if isinstance(exc, Forbidden):
                _record_denial(call.ctx, call.request, self.path, params, exc)
            return error_response(exc, call.request_id)
        if isinstance(result, Response):
            result.headers.setdefault("X-Request-Id", call.request_id)
            return result
        return json_response(200, result, {"X-Request-Id": call.request_id})


def created(body: Any) -> Response:
    return json_response(201, body)


# --- the request's log line (docs/logging.md) -------------------------------------------------------------


@dataclass
class RequestLine:
    """What a request's log line says, gathered as the request is served."""

    method: str
    route: str
    """The route template (``/api/v1/loans/{loan_id}``): the same for every loan, and no data in it."""
    request_id: str
    started: float
    """``time.monotonic()`` when serving began."""
    params: dict[str, Any] = field(default_factory=dict)
    actor: Actor | None = None
    """The authenticated caller; None: anonymous (an open route, or not authenticated)."""
    call: Call | None = None

    def loan_id(self) -> str | None:
        """The loan the path names, else the one the body the view read names."""
        named = self.params.get("loan_id")
        if isinstance(named, str) and LOAN_ID_PATTERN.fullmatch(named):
            return named
        return self.call.loan_id_named() if self.call is not None else None


def _outcome(response: Response) -> str:
    """``ok`` below 400, else the error code the body carries (the API's error shape, docs/api.md)."""
    if response.status_code < 400:
        return "ok"
    try:
        body = response.body
        code = json.loads(body)["error"]["code"] if isinstance(body, str | bytes) else body["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return str(code) if isinstance(code, str) else f"HTTP_{response.status_code}"


def log_request(line: RequestLine, response: Response) -> None:
    """The request's one line: never a body, a header or a query, only ids, the status and the time."""
    fields: dict[str, Any] = {
        "request_id": line.request_id,
        "method": line.method,
        "route": line.route,
        "actor": line.actor.sub if line.actor is not None else "anonymous",
        "role": line.actor.role if line.actor is not None else None,
        "loan_id": line.loan_id(),
        "status": response.status_code,
        "outcome": _outcome(response),
        "duration_ms": round((time.monotonic() - line.started) * 1000, 1),
    }
    if (response.headers or {}).get(idempotency.REPLAYED_HEADER):
        fields["replayed"] = True
    logger.info("request", extra={key: value for key, value in fields.items() if value is not None})
