"""Feature flags and kill switches (docs/rules.md).

A missing flag means enabled (the default); a flag that cannot be read means that automation is off
for this run: when ops cannot tell whether a kill switch was thrown, the safe assumption is that it
was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FlagName(StrEnum):
    CRON_ENABLED = "CRON_ENABLED"
    ESCALATION_ENABLED = "ESCALATION_ENABLED"
    SCORING_ENABLED = "SCORING_ENABLED"
    REMINDERS_ENABLED = "REMINDERS_ENABLED"


class FlagSource(StrEnum):
    PARAMETER = "ssm"
    DEFAULT = "default"
    """The parameter does not exist: enabled."""
    UNREADABLE = "unreadable"
    """SSM did not answer or the value is not true/false: off for this use."""


@dataclass(frozen=True, slots=True)
class FlagValue:
    name: FlagName
    enabled: bool
    source: FlagSource
    raw: str | None = None


def interpret(name: FlagName, raw: str | None) -> FlagValue:
    """``true``/``false`` (any case, surrounding spaces ignored); anything else is unreadable."""
    if raw is None:
        return FlagValue(name, True, FlagSource.DEFAULT)
    value = raw.strip().lower()
    if value in ("true", "false"):
        return FlagValue(name, value == "true", FlagSource.PARAMETER, raw)
    return FlagValue(name, False, FlagSource.UNREADABLE, raw)
