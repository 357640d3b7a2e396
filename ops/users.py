"""Users of a stage: ``users add``, ``users deactivate``, ``users list``, ``users failed-logins``.

There is no sign-up endpoint and no user API, so the first admin (and every other user) is created
here, with the product's own ``AuthService.add_user`` (its hashing and its rules) and the operator's
AWS credentials. ``add_user`` replaces a user of the same name, so ``add`` refuses a name that exists:
a typo must not reset someone's password and role. User changes are not written to the audit trail;
record them in the change ticket.

Deactivating stops new logins at once; a token already issued stays valid until it expires (8 h),
because tokens are not looked up per request. For an immediate cut-off, rotate the JWT secret
(docs/runbook/monitoring.md, monthly).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import sys
from typing import Annotated

import boto3
import typer
from rich.table import Table

from chalicelib import clock
from chalicelib.config import settings
from chalicelib.domain.roles import Role
from chalicelib.wiring import services
from ops.console import duration, fail, out

MIN_PASSWORD = 16
"""Stricter than the API's 8: these are the accounts that run the book (the runbook always asked for 16+)."""

app = typer.Typer(help="Users of the stage (there is no sign-up endpoint).", no_args_is_help=True)


def _new_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password ({MIN_PASSWORD}+ characters): ")
    if getpass.getpass("again: ") != first:
        raise fail("the two passwords differ; nothing was created", 2)
    return first


@app.command("add")
def add_user(
    username: Annotated[str, typer.Argument(help="Login name (stored lower-case).")],
    role: Annotated[Role, typer.Option(help="admin, manager, auditor or collector.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Create a user; refuses a username that already exists. The password is never an argument."""
    auth = services().auth
    name = username.strip().lower()
    if auth.users.get(name) is not None:
        raise fail(f"user {name} already exists on stage {settings().stage}: not replacing it", 2)
    password = _new_password(password_stdin)
    if len(password) < MIN_PASSWORD:
        raise fail(f"the password must be at least {MIN_PASSWORD} characters; nothing was created", 2)
    user = auth.add_user(name, password, role)
    out.print(f"created {user.username} ({user.role}) on stage {settings().stage}", highlight=False)
    out.print("not in the audit trail: record it in the change ticket", highlight=False)


@app.command("deactivate")
def deactivate_user(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Refuse the user's logins from now on (their current token lasts until it expires)."""
    users = services().auth.users
    name = username.strip().lower()
    user = users.get(name)
    if user is None:
        raise fail(f"no user {name} on stage {settings().stage}", 2)
    users.put(dataclasses.replace(user, active=False))
    out.print(f"{name} ({user.role}) deactivated on stage {settings().stage}", highlight=False)
    out.print(
        "A token already issued stays valid until it expires (8 h): rotate the JWT secret to cut it off now.",
        highlight=False,
    )


@app.command("list")
def list_users() -> None:
    """Every user with role and whether they may log in (never the password hashes)."""
    config = settings()
    ddb = boto3.client("dynamodb", region_name=config.region)
    rows = [
        (item["username"]["S"], item.get("role", {}).get("S", "?"), item.get("active", {}).get("BOOL", True))
        for page in ddb.get_paginator("scan").paginate(
            TableName=config.table_name("users"),
            ProjectionExpression="username, #r, active",
            ExpressionAttributeNames={"#r": "role"},
        )
        for item in page["Items"]
    ]
    table = Table("username", "role", "active", title=f"users of stage {config.stage}")
    for name, role, active in sorted(rows, key=lambda r: (r[1], r[0])):
        table.add_row(name, role, "yes" if active else "[red]no[/]")
    out.print(table)


@app.command("failed-logins")
def failed_logins(since: Annotated[str, typer.Option(help="Windows opened in this span: 1h, 15m.")] = "1h") -> None:
    """Login attempts counted per username and source address (IPv4, or IPv6 /64), most first.

    The rows are the login throttle's own (docs/auth.md): one per username and source, opened by the
    first failure, cleared by a success, removed by TTL after the window. They are the only record of
    who failed to log in from where: refusals are not logged."""
    config = settings()
    ddb = boto3.client("dynamodb", region_name=config.region)
    cutoff = int((clock.now_ist() - duration(since)).timestamp())
    rows = []
    for page in ddb.get_paginator("scan").paginate(TableName=config.table_name("login-attempts")):
        for item in page["Items"]:
            started = int(item["window_started_at"]["N"])
            if started >= cutoff:
                username, _, source = item["username"]["S"].rpartition("#")  # a source never holds "#"
                rows.append((username, source or "-", int(item["attempts"]["N"]), started))
    if not rows:
        out.print(f"no failed logins counted in the last {since}", highlight=False)
        return
    table = Table("username", "source", "attempts", "window opened (IST)", title=f"login attempts, last {since}")
    for username, source, attempts, started in sorted(rows, key=lambda r: (-r[2], r[0])):
        opened = dt.datetime.fromtimestamp(started, clock.IST).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(username, source, str(attempts), opened)
    out.print(table)
