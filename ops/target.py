"""Which deployment a command works on: a stage in AWS (``STAGE`` or ``--stage``, credentials and region
as boto3 finds them) or the local stack ``make run`` starts (``--local``). The CLI's callback decides
once and hands the answer to every command through the typer context."""

from __future__ import annotations

from dataclasses import dataclass

import typer

from chalicelib.config import settings
from local.environment import Ports


@dataclass(frozen=True)
class Target:
    local_ports: Ports | None = None
    """The ports of the ``make run`` stack with ``--local``; None for a stage in AWS."""

    @property
    def stage(self) -> str:
        return settings().stage

    @property
    def region(self) -> str:
        return settings().region


def target(ctx: typer.Context) -> Target:
    """The target the callback chose (a bare ``Target()`` when a test calls a command directly)."""
    found = ctx.find_object(Target)
    return found if found is not None else Target()
