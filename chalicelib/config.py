"""Typed settings from the environment, read on first use (not at import) so tests and the local
stack can set variables before anything asks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


@dataclass(frozen=True)
class Settings:
    stage: str
    region: str
    app_version: str
    jwt_secret: str | None
    """Set in local runs and tests; in AWS it is None and the secret comes from SSM."""
    token_ttl_seconds: int
    cors_origin: str | None
    max_body_bytes: int
    login_max_failures: int
    login_window_seconds: int
    password_hash_iterations: int

    @property
    def table_prefix(self) -> str:
        return f"loan-crm-{self.stage}-"

    def table_name(self, short: str) -> str:
        """Physical table name; the same convention as ``TableName`` in infra/template.json."""
        return f"{self.table_prefix}{short}"

    @property
    def parameter_prefix(self) -> str:
        return f"/loan-crm/{self.stage}/"


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings(
        stage=os.environ.get("STAGE", "dev"),
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "ap-south-1",
        app_version=os.environ.get("APP_VERSION", "0.1.0"),
        jwt_secret=os.environ.get("JWT_SECRET") or None,
        # One collector shift; the mobile app logs in again at the start of the next.
        token_ttl_seconds=_int("TOKEN_TTL_SECONDS", 8 * 3600),
        cors_origin=os.environ.get("CORS_ORIGIN") or None,
        # The contract's limit (docs/api.md): an imported 600-instalment schedule is about 50 KiB.
        max_body_bytes=_int("MAX_BODY_BYTES", 64 * 1024),
        login_max_failures=_int("LOGIN_MAX_FAILURES", 5),
        login_window_seconds=_int("LOGIN_WINDOW_SECONDS", 15 * 60),
        password_hash_iterations=_int("PASSWORD_HASH_ITERATIONS", 600_000),
    )


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between cases)."""
    settings.cache_clear()
