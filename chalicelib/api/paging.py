"""``limit`` and ``cursor`` query parameters, the same on every listing."""

from __future__ import annotations

from chalicelib.domain.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_CHARS = 1024
"""Far above any cursor a listing hands out (a few short keys, base64-encoded), and short enough that
no key inside one can exceed DynamoDB's key size, which would be a ValidationException, not a 400."""


def page_params(params: dict[str, str]) -> tuple[int, str | None]:
    raw = params.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        # isdigit() alone accepts "²" (int() then raises: a 500) and "٣" (int() reads it as 3).
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
            raise ValidationFailed("limit must be a whole number", [{"field": "limit", "message": f"1 to {MAX_LIMIT}"}])
        limit = int(raw)
    cursor = params.get("cursor") or None
    if cursor is not None and len(cursor) > MAX_CURSOR_CHARS:
        raise ValidationFailed("invalid cursor", [{"field": "cursor", "message": "not a cursor from this listing"}])
    return limit, cursor
