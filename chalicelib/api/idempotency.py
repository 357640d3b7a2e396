"""``Idempotency-Key`` on POST (docs/api.md): records the app keeps itself (``adapters.dynamodb.idempotency``).

Not powertools' idempotency utility: it claims and completes a key with writes of its own around the
handler, and cannot put the answer inside the payment's transaction, which is what brings a keyed
payment from five DynamoDB requests to two. The records keep powertools' layout and ids, so a key in
flight across the deploy that replaced it still replays.

Same caller + key + same request within 24 h replays the first response (status and body, with
``Idempotent-Replayed: true``); the same key with another request is 422 IDEMPOTENCY_KEY_REUSED; a key
whose first request is still running is 409 REQUEST_IN_PROGRESS.

Responses to refusals (4xx) are stored and replayed like successes: the client asked the same
question and gets the same answer. Two answers are not stored, because repeating the request is
exactly what the client is asked to do: failures (5xx), and 202 (work stopped part-way, e.g. a bulk
reassignment out of time: the same request carries on). The in-progress record is deleted then,
and when the handler raises.

This is a retry convenience, not a uniqueness guarantee: records expire, and are deleted on errors.
UTR uniqueness is the UTR claim inside the payment transaction.

Most POSTs go through :func:`run_once`: a conditional PutItem claims the key (a refused claim returns
the record it met), one PutItem stores the answer. POST /payments goes through :func:`keep_once` and a
:class:`TransactionReceipt`: the service reads the key's record with the loan (one BatchGetItem) and
replays a stored answer before any check; otherwise the payment's own transaction writes the answer,
so a retry whose first attempt committed but never answered finds it. A refusal is kept by its own
conditional PutItem. Nothing is claimed before a payment runs: a duplicate in flight is not 409, the
first to commit wins and the other replays its answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalice.app import Response

from chalicelib.domain.errors import IdempotencyKeyReused, RequestInProgress, Unavailable, ValidationFailed
from chalicelib.services.ports import Answered, ReceiptRecord

if TYPE_CHECKING:
    from chalicelib.adapters.dynamodb.idempotency import IdempotencyRecords, StoredRecord

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


PREFIX = "loan-crm-api"
"""Record ids start with this, not with the Lambda function's name (the layout powertools used)."""


def _md5_json(value: Any) -> str:
    return hashlib.md5(json.dumps(value, sort_keys=True).encode(), usedforsecurity=False).hexdigest()


def record_id(sub: str, key: str) -> str:
    """The record of one caller's key: one per (caller, key), whatever the endpoint."""
    return f"{PREFIX}#{_md5_json({'sub': sub, 'key': key})}"


def validation(request_fingerprint: str) -> str:
    """What a record keeps of the request's fingerprint, to tell a repeat from another request."""
    return _md5_json(request_fingerprint)


def expires_at(now: float | None = None) -> int:
    return int((time.time() if now is None else now) + EXPIRES_AFTER_SECONDS)


def in_progress_until_ms(lambda_context: Any) -> int:
    """An in-progress record outlives the request at most by nothing: it expires when the Lambda would."""
    remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
    left = int(remaining()) if callable(remaining) else FALLBACK_REMAINING_MS
    return int(time.time() * 1000) + left


def stored_answer(response: Response) -> dict[str, Any] | None:
    """What a record keeps of an answer; None for one that is not kept (5xx, 202)."""
    if response.status_code >= 500 or response.status_code == ACCEPTED:
        return None
    return {"status": response.status_code, "body": response.body, "headers": dict(response.headers)}


def replay(answer: dict[str, Any]) -> Response:
    headers = dict(answer["headers"])
    headers[REPLAYED_HEADER] = "true"
    return Response(body=answer["body"], status_code=answer["status"], headers=headers)


def key_reused(key: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        "this Idempotency-Key was already used with a different request", {"idempotency_key": key}
    )


def in_progress(key: str) -> RequestInProgress:
    return RequestInProgress(
        "a request with this Idempotency-Key is still being processed; retry shortly", {"idempotency_key": key}
    )


def answer_of(found: StoredRecord, key: str, request_validation: str) -> Response:
    """The answer a live record gives a request with its key: a replay, or why there is none."""
    if found.validation != request_validation:
        raise key_reused(key)
    if not found.completed or found.answer is None:
        raise in_progress(key)
    return replay(found.answer)


def run_once(
    store: IdempotencyRecords,
    sub: str,
    key: str,
    request_fingerprint: str,
    lambda_context: Any,
    respond: Callable[[], Response],
) -> Response:
    """Run ``respond`` at most once per (caller, key), replaying its stored answer afterwards: a
    conditional PutItem claims the key (or meets the record holding it), one PutItem stores the answer."""
    rid = record_id(sub, key)
    check = validation(request_fingerprint)
    found = store.claim(rid, check, expires_at(), in_progress_until_ms(lambda_context))
    if found is not None:
        return answer_of(found, key, check)
    try:
        response = respond()
    except BaseException:
        _release_quietly(store, rid)
        raise
    answer = stored_answer(response)
    if answer is None:
        store.release(rid)
        return response
    store.complete(rid, check, answer, expires_at())
    return response


def _release_quietly(store: IdempotencyRecords, rid: str) -> None:
    """Release after a failure, never hiding it: a record left behind expires with the Lambda's time."""
    with contextlib.suppress(Unavailable):
        store.release(rid)


# --- the record a change writes with itself (POST /payments) ------------------------------------------


class RecordAnswers(Answered):
    """The key's live record answers the request: a replay, or 422 / 409 (:func:`answer_of`)."""

    def __init__(self, found: StoredRecord, key: str, request_validation: str) -> None:
        super().__init__(key)
        self.found = found
        self.key = key
        self.request_validation = request_validation

    def response(self) -> Response:
        return answer_of(self.found, self.key, self.request_validation)


@dataclass
class TransactionReceipt:
    """A :class:`chalicelib.services.ports.Receipt`: the key's record, read by the service with what it
    changes and written by the change's own transaction, the answer rendered by ``render`` before the
    commit. One read and one transaction for a first request, one read for a replay."""

    record_id: str
    validation: str
    key: str
    render: Callable[[Any], Response] | None = None
    written: bool = False
    """The answer went into a transaction (which committed if the request answers 2xx)."""

    def met(self, found: object | None) -> None:
        if found is not None:
            raise RecordAnswers(found, self.key, self.validation)  # type: ignore[arg-type]

    def record(self, result: Any) -> ReceiptRecord:
        if self.render is None:
            raise RuntimeError("a receipt's view gives no way to render its answer")
        answer = stored_answer(self.render(result))
        if answer is None:
            raise RuntimeError("an answer written with its change must be one that is kept")
        self.written = True
        return ReceiptRecord(self.record_id, self.validation, answer, expires_at())


def keep_once(store: IdempotencyRecords, receipt: TransactionReceipt, respond: Callable[[], Response]) -> Response:
    """Serve a route whose service writes the key's record with its change (``receipt``). A record
    met by the service answers instead; a refusal (4xx) is kept by a PutItem of its own, unless a
    record appeared meanwhile (a duplicate that committed first), which then answers; 5xx and 202 are
    not kept, and nothing was claimed, so there is nothing to release."""
    try:
        response = respond()
    except RecordAnswers as answered:
        return answered.response()
    answer = stored_answer(response)
    if answer is None or (receipt.written and response.status_code < 300):
        return response
    found = store.keep(receipt.record_id, receipt.validation, answer, expires_at())
    if found is not None:
        return answer_of(found, receipt.key, receipt.validation)
    return response
