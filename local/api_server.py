"""The API served locally: Chalice's own local server (what ``chalice local --no-autoreload`` runs),
with one change, :class:`UnmatchedRouteGateway`, so that every unknown path gets the API's 404.

    python -m local serve-api [--host H] [--port P] [--stage S]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from chalice.app import Chalice
from chalice.cli.factory import CLIFactory
from chalice.config import Config as ChaliceConfig
from chalice.deploy.validate import validate_routes
from chalice.local import ChaliceRequestHandler, CustomLocalChalice, LocalChalice, LocalDevServer, LocalGateway

from chalicelib.api.errors import error_response, unknown_path_response
from chalicelib.api.http import HTTP_METHODS
from chalicelib.domain.errors import MethodNotAllowed
from local.environment import DEFAULT_PORTS, HOST, ROOT, STAGE
from local.metrics import MetricsTee


class UnmatchedRouteGateway(LocalGateway):
    """Chalice's local stand-in for API Gateway, except for paths no route matches: those get the API's
    404 ``NOT_FOUND`` in its error shape, as API Gateway gives them through the gateway response in
    infra/template.json.

    The app's catch-all routes (``chalicelib.api.http.CATCH_ALL_PATHS``) match every path of up to
    ``NOT_FOUND_DEPTH`` segments, so what is left here is deeper paths (and ``//x``, which Chalice's
    matcher reads as a host name). Chalice's own answer to those is API Gateway's raw 403 "Missing
    Authentication Token", which even quotes the request's Authorization header back; a greedy
    ``{proxy+}`` route cannot catch them instead, because Chalice's local matcher does not treat it
    as greedy (aws/chalice#2072)."""

    def handle_request(self, method: str, path: str, headers: dict[str, Any], body: bytes | None) -> dict[str, Any]:
        try:
            self.event_converter.create_lambda_event(method=method, path=path, headers=headers, body=body)
        except ValueError:
            answer: dict[str, Any] = unknown_path_response(str(uuid.uuid4())).to_dict()
            return answer
        served: dict[str, Any] = super().handle_request(method, path, headers, body)
        return served


class _RequestHandler(ChaliceRequestHandler):
    """Chalice's request handler with :class:`UnmatchedRouteGateway` in place of its own gateway."""

    def __init__(
        self,
        request: Any,  # a socket (Chalice annotates it as bytes)
        client_address: tuple[str, int],
        server: HTTPServer,
        app_object: Chalice,
        config: ChaliceConfig,
    ) -> None:
        self.local_gateway = UnmatchedRouteGateway(app_object, config)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """A method the server has no handler for (TRACE, CONNECT, anything invented) is a 405 in the
        API's error shape, as every other method a path does not serve; http.server's own answer is
        an HTML 501, which no client of this API can read. Other protocol errors keep its answer."""
        if code != HTTPStatus.NOT_IMPLEMENTED:
            super().send_error(code, message, explain)
            return
        refusal = MethodNotAllowed(f"{self.command} is not served", {"allowed": list(HTTP_METHODS)})
        response = error_response(refusal, str(uuid.uuid4()), headers={"Allow": ", ".join(HTTP_METHODS)})
        body = response.body if isinstance(response.body, bytes) else str(response.body).encode()
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def local_api_server(app: Chalice, config: ChaliceConfig, host: str, port: int) -> LocalDevServer:
    """Chalice's local development server for ``app`` (as ``chalice local`` builds it), answering
    through :class:`UnmatchedRouteGateway`. Port 0 picks a free port (``server.server.server_address``)."""
    validate_routes(app.routes)
    if not isinstance(app, LocalChalice):
        # As chalice.local.create_local_server does: the current request becomes per thread.
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
    return LocalDevServer(app, config, host, port, handler_cls=_RequestHandler)


def serve_api(argv: list[str]) -> int:
    """``python -m local serve-api [--host H] [--port P] [--stage S]``: the API alone, in the
    foreground, with the environment this process has (``make run`` passes the local stack's)."""
    parser = argparse.ArgumentParser(prog="python -m local serve-api")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS["API_PORT"])
    parser.add_argument("--stage", default=STAGE)
    args = parser.parse_args(argv)
    # Like `chalice local`: the Lambda-style logs of the app go to stdout; its metric lines also go to the
    # local CloudWatch, as Lambda's would (local.metrics).
    sys.stdout = MetricsTee(sys.stdout)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    factory = CLIFactory(str(ROOT), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=args.stage)
    local_api_server(config.chalice_app, config, args.host, args.port).serve_forever()
    return 0
