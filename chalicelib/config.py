"""Typed settings from the environment, read on first use (not at import) so tests and the local
stack can set variables before anything asks."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

_PREFIX_CHARS = re.compile(r"[a-z0-9-]+")
MAX_TABLE_PREFIX = 200
"""DynamoDB allows 255 characters in a table name; the longest short name (``reconciliations``) and
some headroom for names the template may add fit behind a prefix this long."""


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _bounded_int(name: str, default: int, low: int, high: int) -> int:
    """An integer setting within ``low..high``; anything else stops the service from starting with a
    message naming the variable, rather than running with a surprising value."""
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of seconds from {low} to {high}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number of seconds from {low} to {high}")
    return value


def stage_prefix(stage: str) -> str:
    """``loan-crm-<stage>-``: the start of every name the stage owns in AWS (tables, topics, alarms)."""
    return f"loan-crm-{stage}-"


def check_table_prefix(prefix: str, stage: str, name: str = "TABLE_PREFIX") -> str:
    """``prefix`` if tables of ``stage`` may be named with it, else ValueError naming ``name``.

    It must start with the stage's own prefix because that is what the functions' IAM policy grants
    (``table/loan-crm-<stage>-*``) and what keeps the audit table's deny rule matching; a prefix of
    another stage would point this stage at that stage's data. Lower case, digits and ``-`` only, so
    the name is a valid table name everywhere, and a trailing ``-`` so the short name stays readable."""
    base = stage_prefix(stage)
    if (
        not prefix.startswith(base)
        or not prefix.endswith("-")
        or not _PREFIX_CHARS.fullmatch(prefix)
        or len(prefix) > MAX_TABLE_PREFIX
    ):
        raise ValueError(
            f"{name} must start with {base}, use only a-z, 0-9 and -, end with - and be at most "
            f"{MAX_TABLE_PREFIX} characters (got {prefix!r})"
        )
    return prefix


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
    user_cache_seconds: int = 60
    """How long one container may reuse a user's state (active, token cut-off) when checking tokens."""
    reconcile_after_day_end: bool = True
    """Start a reconciliation when a day-end run completes (docs/reconciliation.md). Only the test suite
    turns it off, for the tests that are not about it: a reconciliation reads the whole book, and the
    day-end tests run the day-end thousands of times."""
    reminders_topic_arn: str | None = None
    alerts_topic_arn: str | None = None
    """The alerts topic the morning digest publishes to; given to deployed functions like the reminders
    topic, found by its name elsewhere (``adapters.sns_topic``)."""
    """The SNS FIFO topic reminders are published to; deployed functions get it from the template, the
    local stack and the tests find the topic by its name (``adapters.reminder_topic``)."""

    table_prefix_override: str | None = None
    """``TABLE_PREFIX``: the stage's tables live under another prefix. A data rollback restores every
    table into new ones (DynamoDB restores never overwrite), and this is how the stage is pointed at
    them without renaming anything (docs/runbook/rollback.md). Checked by :func:`check_table_prefix`."""

    @property
    def stage_prefix(self) -> str:
        """The prefix of the stage's other resources (topics, alarms), which a table rollback leaves alone."""
        return stage_prefix(self.stage)

    @property
    def table_prefix(self) -> str:
        return self.table_prefix_override or self.stage_prefix

    def table_name(self, short: str) -> str:
        """Physical table name: ``TableName`` in infra/template.json, unless ``TABLE_PREFIX`` moved the
        stage to restored tables."""
        return f"{self.table_prefix}{short}"

    @property
    def parameter_prefix(self) -> str:
        return f"/loan-crm/{self.stage}/"


def _table_prefix(stage: str) -> str | None:
    raw = os.environ.get("TABLE_PREFIX")
    return check_table_prefix(raw, stage) if raw else None


@lru_cache(maxsize=1)
def settings() -> Settings:
    stage = os.environ.get("STAGE", "dev")
    return Settings(
        stage=stage,
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
        # A deactivation or password change reaches every container within this long; 0 reads the
        # user on every request (docs/auth.md, "Ending tokens").
        user_cache_seconds=_bounded_int("USER_CACHE_SECONDS", 60, 0, 3600),
        reconcile_after_day_end=os.environ.get("RECONCILE_AFTER_DAY_END", "true").lower() != "false",
        reminders_topic_arn=os.environ.get("REMINDERS_TOPIC_ARN") or None,
        alerts_topic_arn=os.environ.get("ALERTS_TOPIC_ARN") or None,
        table_prefix_override=_table_prefix(stage),
    )


def reset_settings() -> None:
    """Forget cached settings (tests change the environment between cases)."""
    settings.cache_clear()
