"""What every command prints through: results on stdout (so they pipe into jq, wc, a file), messages
and errors on stderr, and one way to stop with an error."""

from __future__ import annotations

import datetime as dt
import getpass
import re

import typer
from rich.console import Console
from rich.markup import escape

out = Console()
err = Console(stderr=True)


def operator() -> str:
    """Who is at the keyboard: the name ops actions are audited under (``ops:<name>``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error and return the Exit to raise: ``raise fail(...)``."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


_DURATION = re.compile(r"(?P<n>[1-9][0-9]*)(?P<unit>[smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> dt.timedelta:
    """``30s``, ``10m``, ``6h``, ``7d``: the spans the runbook asks for, as ``aws logs tail --since`` writes
    them, so nobody needs GNU ``date -d`` arithmetic to say "the last hour"."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 10m, 6h or 7d")
    return dt.timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
