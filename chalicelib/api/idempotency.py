"""``Idempotency-Key`` on POST (docs/api.md), built on powertools idempotency.

Same caller + key + same request within 24 h replays the first response (status and body, with
``Idempotent-Replayed: true``); the same key with another request is 422 IDEMPOTENCY_KEY_REUSED; a key
whose first request is still running is 409 REQUEST_IN_PROGRESS.

Responses to refusals (4xx) are stored and replayed like successes: the client asked the same
question and gets the same answer. Two answers are not stored, because repeating the request is
exactly what the client is asked to do: failures (5xx), and 202 (work stopped part-way, e.g. a bulk
reassignment out of time: the same request carries on). powertools deletes the in-progress record
when the handler raises.

This is a retry convenience, not a uniqueness guarantee: records expire, and are deleted on errors.
UTR uniqueness is the UTR claim inside the payment transaction; a retry whose first attempt committed
but never answered is recognised there through the request fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice.app import Response

from chalicelib.domain.errors import IdempotencyKeyReused, RequestInProgress, Unavailable, ValidationFailed

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
EXPIRES_AFTER_SECONDS = 24 * 3600
FALLBACK_REMAINING_MS = 30_000
"""Outside Lambda (chalice local, tests) there is no context to say how long a request may run; an
in-progress record then expires after the Lambda timeout, so a crashed request does not block its
key for 24 hours."""


ACCEPTED = 202
"""Work left to do, to be carried on by repeating the request: never replayed from the store."""


def validate_key(raw: str) -> str:
    key = raw.strip()
    if not KEY_PATTERN.fullmatch(key):
        raise ValidationFailed(
            "invalid Idempotency-Key", [{"field": "Idempotency-Key", "message": "1-128 of A-Z a-z 0-9 _ . : -"}]
        )
    return key


def fingerprint(sub: str, key: str, method: str, path: str, body: bytes) -> str:
    """Identifies one logical request: who, which key, which endpoint, which body (JSON compared
    after parsing, so whitespace or key order do not make it "another body")."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # not JSON, or nested past json's recursion limit
        canonical = body
    digest = hashlib.sha256()
    for part in (sub.encode(), key.encode(), method.encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class _Context:
    def __init__(self, remaining_ms: int) -> None:
        self._remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_ms


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    return {**response, "replayed": True}


def run_once(
    store: BasePersistenceLayer,
    sub: str,
    key: str,
    request_fingerprint: str,
    lambda_context: Any,
    respond: Callable[[], Response],
) -> Response:
    """Run ``respond`` at most once per (caller, key), replaying its stored answer afterwards."""
    # powertools' idempotency package is imported by the first request that carries a key, not at
    # import: it is the biggest single import of the app (docs/architecture.md, "Cold start").
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    config = IdempotencyConfig(
        event_key_jmespath="scope",
        payload_validation_jmespath="fingerprint",
        expires_after_seconds=EXPIRES_AFTER_SECONDS,
        raise_on_no_idempotency_key=True,
        response_hook=_mark_replayed,
    )
    has_remaining = callable(getattr(lambda_context, "get_remaining_time_in_millis", None))
    context: Any = lambda_context if has_remaining else _Context(FALLBACK_REMAINING_MS)
    config.register_lambda_context(context)

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        response = respond()
        if response.status_code >= 500 or response.status_code == ACCEPTED:
            raise _NotStored(response)
        return {"status": response.status_code, "body": response.body, "headers": dict(response.headers)}

    guarded = idempotent_function(
        handle, data_keyword_argument="request", persistence_store=store, config=config, key_prefix="loan-crm-api"
    )
    try:
        stored = guarded(request={"scope": {"sub": sub, "key": key}, "fingerprint": request_fingerprint})
    except _NotStored as failure:
        return failure.response
    except IdempotencyValidationError:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request", {"idempotency_key": key}
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise RequestInProgress(
            "a request with this Idempotency-Key is still being processed; retry shortly", {"idempotency_key": key}
        ) from None
    except IdempotencyPersistenceLayerError as exc:
        raise Unavailable("could not record the idempotency key; nothing was changed, try again") from exc
    headers = dict(stored["headers"])
    if stored.get("replayed"):
        headers[REPLAYED_HEADER] = "true"
    return Response(body=stored["body"], status_code=stored["status"], headers=headers)


class _NotStored(Exception):
    """Carries a 5xx or 202 answer out of the idempotent function so its record is deleted, not stored."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response
