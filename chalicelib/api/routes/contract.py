"""The published contract (docs/api.md, "The contract"): the OpenAPI document and a page to read it.
Both are open, like ``/health``: a client team reads the contract before it has any credentials."""

from __future__ import annotations

import functools

from chalice.app import Blueprint, Response

from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, endpoint
from chalicelib.wiring import services

bp = Blueprint(__name__)


@endpoint(
    bp,
    "/api/v1/openapi.json",
    authenticated=False,
    summary="This API's OpenAPI 3.1 document",
    answers={200: "OpenApiOut"},
    tag="contract",
)
def openapi_document(call: Call) -> Response:
    """Generated from the routes and their models; every route is in it and nothing else is."""
    return Response(
        body=_serialised(services().settings.app_version), status_code=200, headers={"Content-Type": "application/json"}
    )


@endpoint(
    bp,
    "/api/v1/docs",
    authenticated=False,
    summary="The contract as a page to read",
    answers={200: str},
    media_type="text/html",
    tag="contract",
)
def docs(call: Call) -> Response:
    page = _page(services().settings.app_version)
    return Response(body=page, status_code=200, headers={"Content-Type": "text/html; charset=utf-8"})


# Written once per process, like the document: neither can change while it runs, and serialising
# 70 schemas on every request would cost more than answering it. The generator is imported here, on
# the first request for it, not when the Lambda starts: no other route needs it.
@functools.cache
def _serialised(version: str) -> str:
    from chalicelib.api import openapi

    body = json_response(200, openapi.document(version)).body
    return body if isinstance(body, str) else body.decode()


@functools.cache
def _page(version: str) -> str:
    from chalicelib.api import docs_page, openapi

    return docs_page.render(openapi.document(version))
