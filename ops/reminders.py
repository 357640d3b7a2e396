"""``python -m ops reminders``: a day's borrower reminders, sending what is due now, and sending a FAILED
one again after a person has checked it did not reach the borrower (docs/reminders.md,
docs/runbook/alerts/reminders-failed.md)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.table import Column, Table

from chalicelib import clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import DomainError
from chalicelib.domain.privacy import mask_phone
from chalicelib.domain.roles import Role
from chalicelib.services.context import RequestContext
from chalicelib.wiring import services
from ops.console import fail, operator, out

app = typer.Typer(
    help="Borrower reminders: list a day's, send what is due, send a FAILED one again.", no_args_is_help=True
)


@app.command("list")
def list_reminders(
    date: Annotated[str | None, typer.Option("--date", help="IST day to list, YYYY-MM-DD (default: today).")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status (SENT, FAILED, ...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The reminders due to go out on a day (today by default), with their state and why."""
    try:
        day = dt.date.fromisoformat(date) if date else clock.today_ist()
    except ValueError:
        raise fail(f"--date must be YYYY-MM-DD, not {date!r}", 2) from None
    svc = services()
    reminders = [r for r in svc.reminders.on_day(day) if status is None or r.status.value == status.upper()]
    if as_json:
        for r in reminders:
            out.print(
                json.dumps({"reminder_id": r.reminder_id, "status": r.status.value, "reason": r.reason}),
                highlight=False,
            )
        return
    table = Table(
        Column("reminder", no_wrap=True, min_width=len("DEMO-00001#OVERDUE_15#001")),
        "send after (IST)",
        "status",
        "attempts",
        "reason",
        "borrower phone",
        title=f"reminders for {day}",
    )
    # The id is what `reminders resend` takes: never cut short, whatever the terminal's width.
    for r in reminders:
        loan = svc.loans.loans.get(r.loan_id)
        phone = mask_phone(loan.borrower.phone) if loan else "-"
        send_after = r.send_after.astimezone(clock.IST).strftime("%H:%M")
        table.add_row(r.reminder_id, send_after, r.status.value, str(r.attempts), r.reason or "", phone)
    out.print(table)
    counts: dict[str, int] = {}
    for r in reminders:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    out.print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none", highlight=False)


@app.command("send")
def send_now() -> None:
    """Send what is due now (what the sender's schedule does every 10 minutes inside the window)."""
    report = services().reminders.send_due()
    out.print(json.dumps(report.as_dict()), highlight=False)


@app.command("resend")
def resend(
    reminder_id: Annotated[str, typer.Argument(help="<loan_id>#<KIND>#<seq>, as `reminders list` shows it.")],
) -> None:
    """Queue a FAILED reminder again for the next instant inside the contact window (audited)."""
    ctx = RequestContext(actor=Actor(sub=f"ops:{operator()}", role=Role.ADMIN.value))
    try:
        again = services().reminders.resend(ctx, reminder_id)
    except DomainError as exc:
        raise fail(f"{exc.code}: {exc.message}", 1) from None
    out.print(
        f"{again.reminder_id}: QUEUED again, to go out from {again.send_after.isoformat(timespec='minutes')}",
        highlight=False,
    )
