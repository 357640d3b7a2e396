"""Authenticated calls to a stage's API from an operator's terminal: ``login``, ``logout``, ``api``.

The password is read with ``getpass`` (no echo) or, with ``--password-stdin``, from standard input,
and never taken as an argument: arguments land in shell history and in ``ps`` output. The token
(8 hours, one shift) is kept so that one login serves a whole procedure, in the user's cache directory
(``$XDG_CACHE_HOME/loan-crm/``, else ``~/.cache/loan-crm/``), one file per stage, readable by its owner
only, and only for the API URL it was issued by; it is used until a minute before it expires.
``logout`` deletes it. That is the exposure the old pasted ``export TOKEN=...`` had, minus the
shell history and the environment every child process inherits.

A failed login counts towards the ``repeated-failed-auth`` alarm and the login throttle (5 failures
for one username from one address in 15 minutes refuse it for the rest of the window, docs/auth.md).

The HTTP client is the standard library's: nothing to install, and moto's request mocking (which
patches ``requests``) never sees these calls in tests.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from chalicelib import clock
from ops import stack
from ops.console import err, fail
from ops.target import target

LOGIN_PATH = "/api/v1/auth/token"
EXPIRY_MARGIN_SECONDS = 60
"""A cached token this close to expiry is not used: a long ``--all`` listing must not die halfway."""
TIMEOUT_SECONDS = 60
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def error_text(self) -> str:
        """The API's own ``error.code: message`` when the body is in its error shape, else the status."""
        try:
            error = self.json()["error"]
            return f"{error['code']}: {error['message']}"
        except (ValueError, TypeError, KeyError):
            return f"HTTP {self.status}"


Transport = Callable[[str, str, dict[str, str], bytes | None], Reply]
"""(method, url, headers, body) -> Reply."""


def http_transport(method: str, url: str, headers: dict[str, str], body: bytes | None) -> Reply:
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310
            return Reply(answer.status, answer.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read())


class ApiError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.error_text())
        self.reply = reply


@dataclass(frozen=True)
class Session:
    """A logged-in caller of one API."""

    url: str
    username: str
    role: str
    token: str
    expires_at: int
    """Epoch seconds."""

    def usable(self, url: str, now: int) -> bool:
        return self.url == url and self.expires_at - EXPIRY_MARGIN_SECONDS > now


def cache_path(stage: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loan-crm" / f"token-{stage}.json"


def load_session(path: Path) -> Session | None:
    try:
        return Session(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def save_session(path: Path, session: Session) -> None:
    """Owner-only from the moment the file exists (never created readable, then narrowed)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as fh:
        json.dump(asdict(session), fh)
    partial.replace(path)


def login(transport: Transport, url: str, username: str, password: str) -> Session:
    body = json.dumps({"username": username, "password": password}).encode()
    reply = transport("POST", url + LOGIN_PATH, {"Content-Type": "application/json"}, body)
    if reply.status != 200:
        raise ApiError(reply)
    issued = reply.json()
    return Session(
        url=url,
        username=issued["sub"],
        role=issued["role"],
        token=issued["access_token"],
        expires_at=clock.now_epoch() + int(issued["expires_in"]),
    )


def request(
    transport: Transport, url: str, token: str | None, method: str, path: str, data: str | None = None
) -> Reply:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if data is not None:
        headers["Content-Type"] = "application/json"
    return transport(method, url + path, headers, data.encode() if data is not None else None)


def with_cursor(path: str, cursor: str | None) -> str:
    if cursor is None:
        return path
    return f"{path}{'&' if '?' in path else '?'}cursor={urllib.parse.quote(cursor, safe='')}"


def pages(fetch: Callable[[str], Reply], path: str) -> Iterator[dict[str, Any]]:
    """Every item of a listing, following ``next_cursor`` until the API gives none."""
    cursor: str | None = None
    while True:
        reply = fetch(with_cursor(path, cursor))
        if reply.status != 200:
            raise ApiError(reply)
        page = reply.json()
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise ValueError(f"{path} is not a listing (no items): --all is for listings")
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


# ---- commands --------------------------------------------------------------------------------------

UserOption = Annotated[str | None, typer.Option("--user", help="Username (default: $OPS_USER, else asked).")]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input (first line).")
]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="API base URL (default: the stack's EndpointURL; --local: make run's).")
]


@dataclass
class Caller:
    """Where to call and who logs in, should the kept token not do."""

    stage: str
    url: str
    user: str | None
    password_stdin: bool
    transport: Transport = http_transport

    def fresh_session(self, previous: str | None = None) -> Session:
        """Log in (asking for what is missing), keep the token, say until when."""
        username = self.user or os.environ.get("OPS_USER") or previous or typer.prompt("username", err=True)
        if self.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"password for {username}: ")
        try:
            session = login(self.transport, self.url, username, password)
        except ApiError as exc:
            raise fail(f"login as {username} refused: {exc}") from None
        path = cache_path(self.stage)
        save_session(path, session)
        until = dt_ist(session.expires_at)
        err.print(
            f"logged in as {session.username} ({session.role}) on {self.url} until {until} IST; "
            f"token kept in {path} (owner-only; `python -m ops logout` removes it)",
            highlight=False,
        )
        return session

    def session(self) -> Session:
        cached = load_session(cache_path(self.stage))
        wanted = (self.user or os.environ.get("OPS_USER") or "").strip().lower()
        if cached and cached.usable(self.url, clock.now_epoch()) and wanted in ("", cached.username):
            return cached
        return self.fresh_session()


def dt_ist(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, clock.IST).strftime("%Y-%m-%d %H:%M")


def _caller(ctx: typer.Context, url: str | None, user: str | None, password_stdin: bool) -> Caller:
    base = (url or stack.api_url(ctx)).rstrip("/")
    return Caller(target(ctx).stage, base, user, password_stdin)


def login_command(
    ctx: typer.Context, user: UserOption = None, password_stdin: PasswordStdinOption = False, url: UrlOption = None
) -> None:
    """Log in to the stage's API (password never echoed) and keep the token for later commands."""
    _caller(ctx, url, user, password_stdin).fresh_session()


def logout_command(ctx: typer.Context) -> None:
    """Forget the stage's kept token (it stays valid at the API until it expires, as any token does)."""
    path = cache_path(target(ctx).stage)
    existed = path.exists()
    path.unlink(missing_ok=True)
    err.print(f"{'removed' if existed else 'no token kept at'} {path}", highlight=False)


def _emit(reply: Reply) -> None:
    """The body on stdout (so ``| jq`` works on errors too), pretty when it is JSON."""
    try:
        typer.echo(json.dumps(reply.json(), indent=2, ensure_ascii=False))
    except ValueError:
        typer.echo(reply.body.decode("utf-8", errors="replace"))


def api_command(
    ctx: typer.Context,
    method: Annotated[str, typer.Argument(help="GET, POST, PATCH, PUT or DELETE.")],
    path: Annotated[str, typer.Argument(help="Starting with /, query included: '/api/v1/loans?limit=5'.")],
    data: Annotated[str | None, typer.Option("--data", help="JSON request body.")] = None,
    all_pages: Annotated[
        bool, typer.Option("--all", help="Follow next_cursor; print every item, one JSON object per line.")
    ] = False,
    anonymous: Annotated[bool, typer.Option("--anonymous", help="No token (GET /health).")] = False,
    user: UserOption = None,
    password_stdin: PasswordStdinOption = False,
    url: UrlOption = None,
) -> None:
    """One authenticated API call against the stage's endpoint; the answer's JSON on stdout, exit 1 on 4xx/5xx."""
    method = _checked_request(method, path, data, all_pages)
    caller = _caller(ctx, url, user, password_stdin)
    session = None if anonymous else caller.session()

    def fetch(p: str) -> Reply:
        nonlocal session
        reply = request(caller.transport, caller.url, session.token if session else None, method, p, data)
        if reply.status == 401 and session is not None:
            # Expired early, or the JWT secret was rotated: log in again once and repeat the call.
            err.print(f"token refused ({reply.error_text()}); logging in again", highlight=False)
            session = caller.fresh_session(previous=session.username)
            reply = request(caller.transport, caller.url, session.token, method, p, data)
        return reply

    if all_pages:
        _print_every_item(fetch, path)
        return
    reply = fetch(path)
    _emit(reply)
    if reply.status >= 400:
        raise fail(f"{method} {path}: {reply.error_text()}")


def _checked_request(method: str, path: str, data: str | None, all_pages: bool) -> str:
    """Refuse a malformed call before logging in (exit 2); the method upper-cased."""
    method = method.upper()
    if method not in METHODS:
        raise fail(f"method must be one of {', '.join(METHODS)}, not {method!r}", 2)
    if not path.startswith("/"):
        raise fail(f"the path starts with /: {path!r}", 2)
    if data is not None:
        try:
            json.loads(data)
        except ValueError as exc:
            raise fail(f"--data is not JSON: {exc}", 2) from None
    if all_pages and (method != "GET" or data is not None):
        raise fail("--all follows the pages of a GET listing", 2)
    return method


def _print_every_item(fetch: Callable[[str], Reply], path: str) -> None:
    """One compact JSON object per line, so ``jq -s`` or ``wc -l`` can take the whole listing."""
    try:
        for item in pages(fetch, path):
            typer.echo(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
    except ApiError as exc:
        _emit(exc.reply)
        raise fail(f"GET {path}: {exc}") from None
    except ValueError as exc:
        raise fail(str(exc), 2) from None
