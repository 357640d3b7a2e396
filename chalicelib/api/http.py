"""Route registration with one error boundary.

Chalice turns any exception that is not its own into a bare 500 inside the view
(``_get_view_function_response``), so the mapping from domain errors to SPEC §2 responses has to
live around each view function. :func:`endpoint` does that once for every route, together with
authentication, the role check, request ids and body parsing.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from chalice.app import Blueprint, CORSConfig, Request, Response
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from chalicelib.api import idempotency
from chalicelib.api.errors import error_response, internal_error_response, json_response, status_for
from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import DomainError, PayloadTooLarge, Unauthenticated, Unavailable, ValidationFailed
from chalicelib.domain.roles import Role
from chalicelib.services.auth import decode_token
from chalicelib.services.context import RequestContext
from chalicelib.wiring import services

logger = Logger(service="loan-crm")
M = TypeVar("M", bound=BaseModel)


def pydantic_details(exc: PydanticValidationError) -> list[dict[str, str]]:
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "body"
        details.append({"field": field, "message": err["msg"], "type": err["type"]})
    return details


@dataclass
class Call:
    """What a view gets: the request, the caller, and strict parsers for body and query."""

    request: Request
    ctx: RequestContext
    request_id: str
    fingerprint: str | None = None
    """Set when the client sent an Idempotency-Key: identifies this logical request across retries."""

    def raw_body(self) -> bytes:
        raw = self.request.raw_body or b""
        if isinstance(raw, str):
            raw = raw.encode()
        limit = settings().max_body_bytes
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes", {"max_bytes": limit})
        return raw

    def json_value(self) -> Any:
        """The body as any JSON value; empty, malformed or NaN is a 400."""
        raw = self.raw_body()
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationFailed("request body is not valid JSON", [{"field": "body", "message": str(exc)}]) from None

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

    def query(self, allowed: set[str]) -> dict[str, str]:
        params = dict(self.request.query_params or {})
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValidationFailed(
                "unknown query parameters", [{"field": name, "message": "not supported"} for name in unknown]
            )
        return params


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing bearer token")
    actor = decode_token(token.strip(), services().jwt_secret())
    return RequestContext(actor=actor, source_ip=_source_ip(request), request_id=request_id)


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


def endpoint(
    bp: Blueprint,
    path: str,
    methods: tuple[str, ...] = ("GET",),
    roles: frozenset[Role] | None = None,
    authenticated: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """Register ``fn(call, **uri_params)`` as a route. ``roles`` None means any authenticated role;
    views that must act before the role check (the financial guard) check roles themselves.
    Authenticated POSTs honour ``Idempotency-Key``."""
    idempotent = authenticated and "POST" in methods

    def decorate(fn: Callable[..., Any]) -> Callable[..., Response]:
        def respond(call: Call, params: dict[str, Any]) -> Response:
            """The view's answer, refusals included; only 5xx-worthy failures propagate."""
            try:
                result = fn(call, **params)
            except DomainError as exc:
                if status_for(exc) >= 500:
                    raise
                return error_response(exc, call.request_id)
            if isinstance(result, Response):
                result.headers.setdefault("X-Request-Id", call.request_id)
                return result
            return json_response(200, result, {"X-Request-Id": call.request_id})

        @functools.wraps(fn)
        def view(**params: Any) -> Response:
            request = bp.current_request
            request_id = _request_id(request)
            try:
                if authenticated:
                    ctx = _authenticate(request, request_id)
                    if roles is not None:
                        ctx.require(roles)
                else:
                    ctx = RequestContext(actor=ANONYMOUS, source_ip=_source_ip(request), request_id=request_id)
                headers: Any = request.headers or {}
                raw_key = headers.get(idempotency.HEADER) if idempotent else None
                if raw_key is None:
                    return respond(Call(request, ctx, request_id), params)
                key = idempotency.validate_key(str(raw_key))
                call = Call(request, ctx, request_id)
                # request.path is the route template ("/api/v1/payments/{payment_id}/reverse"); without
                # the URI parameters one key would replay one payment's reversal for another payment.
                resource = request.path + json.dumps(params, sort_keys=True, separators=(",", ":"))
                call.fingerprint = idempotency.fingerprint(
                    ctx.actor.sub, key, request.method, resource, call.raw_body()
                )
                response = idempotency.run_once(
                    services().idempotency_store(),
                    ctx.actor.sub,
                    key,
                    call.fingerprint,
                    bp.lambda_context,
                    lambda: respond(call, params),
                )
                response.headers["X-Request-Id"] = request_id
                return response
            except Unavailable as exc:
                services().metrics.count("DependencyUnavailable")
                logger.warning("dependency unavailable", extra={"request_id": request_id, "path": request.path})
                return error_response(exc, request_id)
            except DomainError as exc:
                return error_response(exc, request_id)
            except Exception:
                logger.exception("unhandled error", extra={"request_id": request_id, "path": request.path})
                return internal_error_response(request_id)

        bp.route(path, methods=list(methods), cors=_cors() or False)(view)
        return view

    return decorate


def created(body: Any) -> Response:
    return json_response(201, body)
