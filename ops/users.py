"""Users of a stage: ``users add``, ``users list``, ``users deactivate``, ``users reset-password``,
``users failed-logins``.

On a new stage there is nobody to log in to the users API yet, so the first admin is created here
(docs/runbook/first-time-setup.md). Every command goes through the same ``UserService`` as
``/api/v1/users``: the same username and password rules, the same audit entries (``USER_CREATED``,
``USER_UPDATED``), the same offboarding that first moves a collector's loans. The actor recorded is
``system:ops:<your OS user>`` with the admin role, so the trail says a person ran the CLI and who.
Passwords come from a prompt or from stdin (``--password-stdin``), never from an argument, which would
land in the shell's history and the process list.
"""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from typing import Annotated

import boto3
import typer
from rich.table import Table

from chalicelib import clock
from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import DomainError
from chalicelib.domain.roles import Role
from chalicelib.domain.users import MIN_PASSWORD_CHARS
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import User, UserFilter
from chalicelib.services.users import NewUser, UserChanges
from chalicelib.wiring import services
from ops.console import duration, fail, out

app = typer.Typer(help="Users of the stage: the first admin, onboarding and offboarding.", no_args_is_help=True)


def _operator() -> RequestContext:
    return RequestContext(actor=Actor(sub=f"system:ops:{getpass.getuser()}", role=Role.ADMIN.value))


def _new_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password ({MIN_PASSWORD_CHARS}+ characters): ")
    if getpass.getpass("again: ") != first:
        raise fail("the two passwords differ; nothing was changed", 2)
    return first


def _refused(exc: DomainError) -> typer.Exit:
    details = "; ".join(
        f"{d.get('field', '?')}: {d.get('message', '')}" for d in exc.details or [] if isinstance(d, dict)
    )
    return fail(f"{exc.code}: {exc.message}" + (f" ({details})" if details else "") + "; nothing was changed", 2)


def _describe(user: User) -> str:
    state = "active" if user.active else "inactive"
    return f"{user.username} ({user.role}, {state}) on stage {settings().stage}"


@app.command("add")
def add_user(
    username: Annotated[str, typer.Argument(help="Login name: lower-case letters, digits, . _ - (3-64).")],
    role: Annotated[Role, typer.Option(help="admin, manager, auditor or collector.")],
    display_name: Annotated[str | None, typer.Option(help="The person's name, as colleagues know it.")] = None,
    branch: Annotated[str | None, typer.Option(help="The branch the user works from.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Create a user (the first admin of a new stage, or anyone), audited as USER_CREATED.
    An existing username is refused: a typo must not reset someone's password and role."""
    password = _new_password(password_stdin)
    cmd = NewUser(username=username, password=password, role=role.value, display_name=display_name, branch=branch)
    try:
        user = services().users.create(_operator(), cmd)
    except DomainError as exc:
        raise _refused(exc) from None
    out.print(f"created {_describe(user)}", highlight=False)


@app.command("list")
def list_users(
    role: Annotated[Role | None, typer.Option(help="Only this role.")] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", help="Only active or inactive users.")] = None,
) -> None:
    """Every user with role, branch and whether they may log in (never a password hash)."""
    users: list[User] = []
    cursor = None
    while True:
        page = services().users.list(
            _operator(), UserFilter(role=role.value if role else None, active=active), 200, cursor
        )
        users.extend(page.items)
        if (cursor := page.next_cursor) is None:
            break
    table = Table("username", "role", "name", "branch", "active", "updated", title=f"users of stage {settings().stage}")
    for user in sorted(users, key=lambda u: (u.role, u.username)):
        table.add_row(
            user.username,
            user.role,
            user.display_name or "-",
            user.branch or "-",
            "yes" if user.active else "[red]no[/]",
            user.updated_at or "-",
        )
    out.print(table)


@app.command("deactivate")
def deactivate_user(
    username: Annotated[str, typer.Argument(help="Login name.")],
    reassign_to: Annotated[
        str | None, typer.Option(help="Active collector who receives a departing collector's loans.")
    ] = None,
) -> None:
    """Stop a user: no login from now on, and their tokens are refused within USER_CACHE_SECONDS.
    A collector who holds active loans needs --reassign-to; every loan moves (audited) before the
    user is deactivated, and a run that is interrupted can simply be repeated."""
    changes = UserChanges(active=False, reassign_to=reassign_to)
    moved = already = 0
    try:
        while True:
            update = services().users.update(_operator(), username, changes)
            if update.reassignment is not None:
                moved += update.reassignment.moved
                already += update.reassignment.already
            if update.complete:
                break
    except DomainError as exc:
        raise _refused(exc) from None
    out.print(f"deactivated {_describe(update.user)}", highlight=False)
    if reassign_to is not None:
        out.print(f"  loans moved to {reassign_to}: {moved} (already there: {already})", highlight=False)


@app.command("reset-password")
def reset_password(
    username: Annotated[str, typer.Argument(help="Login name.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Set a new password (audited, without the password); every token issued before now is refused."""
    password = _new_password(password_stdin)
    try:
        update = services().users.update(_operator(), username, UserChanges(password=password))
    except DomainError as exc:
        raise _refused(exc) from None
    out.print(f"new password set for {_describe(update.user)}; earlier tokens no longer work", highlight=False)


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
