"""The app's one log output: powertools JSON lines on stdout (CloudWatch Logs on Lambda), each passed
through the privacy safety net first (docs/logging.md).

The service name and the formatter are set here and nowhere else. The HTTP and job handlers log
through :func:`app_logger`; the services cannot import an adapter (the layers in pyproject.toml), so
they log through the standard library under their module name (``logging.getLogger(__name__)``),
and :func:`app_logger` hangs the same handler on the ``chalicelib`` package logger: every line of the
package comes out in one shape, masked the same way. The handlers import this module, so the handler
is in place before a request or a job runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from chalicelib.domain.privacy import scrub

SERVICE = "loan-crm"
PACKAGE = "chalicelib"
"""The package logger the services' module loggers (``chalicelib.services.day_end``...) report to."""

_context: ContextVar[dict[str, Any]] = ContextVar("log_context")
"""Keys every line of the current request or job invocation carries (:func:`log_context`)."""


@contextmanager
def log_context(**keys: Any) -> Iterator[None]:
    """Every line written inside the block, by any logger of the package, carries ``keys`` (a line's
    own key of the same name wins): the request id of a request, the Lambda request id of a job. Per
    thread and per task, so concurrent requests of the local server never mix; threads a service
    starts do not inherit them (their lines name the run they work for)."""
    token = _context.set({**_context.get({}), **keys})
    try:
        yield
    finally:
        _context.reset(token)


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, with every line scrubbed (``domain.privacy.scrub``) just before it
    is written: whatever a call site passed (an ``extra``, an exception's message, a traceback),
    tokens and secrets are withheld and phone numbers, e-mail addresses and borrower fields masked."""

    def __init__(self, **kwargs: Any) -> None:
        # "name": which logger wrote the line (``chalicelib.services.day_end``, or the service's own).
        super().__init__(name="%(name)s", **kwargs)

    def serialize(self, log: Any) -> str:
        context = _context.get({})
        if context:
            log = {**log, **{key: value for key, value in context.items() if key not in log and value is not None}}
        return super().serialize(scrub(log))


@functools.cache
def app_logger() -> Logger:
    """The service's powertools Logger, made once per process, with :class:`RedactingFormatter`; its
    handler also serves the ``chalicelib`` package logger (see the module's docstring)."""
    logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
    handler = logger.registered_handler
    if not isinstance(handler.formatter, RedactingFormatter):
        # Something made a plain Logger for this service first; its handler is shared, so fix it there.
        handler.setFormatter(RedactingFormatter())
        logger.append_keys(service=SERVICE)
    package = logging.getLogger(PACKAGE)
    if handler not in package.handlers:
        package.addHandler(handler)
    package.setLevel(logger.log_level)
    # Lambda's own root handler would print each line a second time, as plain text.
    package.propagate = False
    return logger
