"""``POST /api/v1/auth/token``: exchange a stored user's password for a bearer token."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.http import Call, endpoint
from chalicelib.api.schemas import TokenIn
from chalicelib.domain.errors import RateLimited, Unauthenticated
from chalicelib.wiring import services

bp = Blueprint(__name__)


@endpoint(
    bp,
    "/api/v1/auth/token",
    methods=("POST",),
    authenticated=False,
    summary="Exchange a username and password for a bearer token",
    body=TokenIn,
    answers={200: "TokenOut"},
    errors=(Unauthenticated, RateLimited),
    tag="auth",
)
def issue_token(call: Call) -> dict[str, Any]:
    """Repeated failures for one username from one address are throttled: 429 with `Retry-After`."""
    body = call.parse(TokenIn)
    # The caller's address as API Gateway saw it, never a client-supplied header such as X-Forwarded-For.
    token = services().auth.login(body.username, body.password, call.ctx.source_ip)
    return {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
        "sub": token.sub,
        "role": token.role,
    }
