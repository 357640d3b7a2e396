"""IST dates for the runbook's commands, from the product's own clock (``chalicelib.clock``), so they
agree with what the API and the day-end job call today and yesterday whatever the shell's ``TZ``,
and nobody needs GNU ``date``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from chalicelib import clock
from ops.console import fail, out


def named_dates() -> dict[str, tuple[dt.date, str]]:
    today = clock.today_ist()
    return {
        "today": (today, "today in IST: payments made now are dated today"),
        "yesterday": (
            clock.last_completed_business_date(),
            "the last completed business date: the one the 00:30 IST run closes, that loans are shown as of",
        ),
        "week-ago": (today - dt.timedelta(days=7), "today - 7 days: the weekly review's start"),
        "oldest-payment-date": (
            today - dt.timedelta(days=7),
            "the oldest payment_date a payment may still carry (backdating limit)",
        ),
    }


def dates_command(
    name: Annotated[str | None, typer.Argument(help="Print only this one: today, yesterday, week-ago, ...")] = None,
) -> None:
    """IST dates: today, yesterday (the last completed business date), a week ago."""
    dates = named_dates()
    if name is not None:
        if name not in dates:
            raise fail(f"unknown date {name!r}; names are {', '.join(dates)}", 2)
        typer.echo(dates[name][0].isoformat())
        return
    table = Table("name", "date", "meaning", title=f"IST dates at {clock.now_ist():%Y-%m-%d %H:%M} IST")
    for key, (date, meaning) in dates.items():
        table.add_row(key, date.isoformat(), meaning)
    out.print(table)
