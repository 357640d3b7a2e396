"""``python -m ops login | api | logout`` over real HTTP: the local API server (what ``make run`` serves)
on a free port, in this process, against moto.

What matters to an operator: the password is never an argument and never echoed, the token is kept
owner-only and reused until it nears expiry, ``--all`` walks every page, errors keep the API's own
body on stdout (for ``jq``) and exit 1."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chalicelib.domain.roles import Role
from chalicelib.wiring import services
from local.demo import seed
from ops import api_client
from ops.cli import app
from tests.integration.api_helpers import local_server

PASSWORD = "a-long-operator-password"
BOOK = 12


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin, env={"COLUMNS": "400"})


@pytest.fixture
def served(moto_stack: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API on 127.0.0.1:<free port>, an admin and an auditor; yields the base URL."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OPS_USER", raising=False)
    services().auth.add_user("ops-admin", PASSWORD, Role.ADMIN)
    services().auth.add_user("ops-auditor", PASSWORD, Role.AUDITOR)
    with local_server() as url:
        yield url


def test_login_keeps_an_owner_only_token_that_api_reuses(served: str, moto_stack: str) -> None:
    logged_in = run("login", "--url", served, "--user", "ops-admin", "--password-stdin", stdin=PASSWORD + "\n")

    assert logged_in.exit_code == 0, logged_in.output
    assert "logged in as ops-admin (admin)" in logged_in.stderr
    assert PASSWORD not in logged_in.output
    kept = api_client.cache_path(moto_stack)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert json.loads(kept.read_text())["url"] == served

    flags = run("api", "GET", "/api/v1/flags", "--url", served)  # no password: the kept token

    assert flags.exit_code == 0, flags.output
    assert "logged in" not in flags.stderr
    assert {f["name"] for f in json.loads(flags.stdout)["items"]} >= {"CRON_ENABLED", "ESCALATION_ENABLED"}

    logged_out = run("logout")
    assert logged_out.exit_code == 0 and not kept.exists()
    assert "removed" in logged_out.stderr


def test_api_logs_in_when_it_has_no_token_and_pages_with_all(served: str) -> None:
    seed(BOOK)

    listed = run(
        "api", "GET", "/api/v1/loans?limit=5", "--all", "--url", served, "--user", "ops-auditor", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip

    assert listed.exit_code == 0, listed.output
    assert "logged in as ops-auditor (auditor)" in listed.stderr
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(items) == BOOK and len({i["loan_id"] for i in items}) == BOOK
    one_page = json.loads(run("api", "GET", "/api/v1/loans?limit=5", "--url", served).stdout)
    assert len(one_page["items"]) == 5 and one_page["next_cursor"]

    health = run("api", "GET", "/health", "--anonymous", "--url", served)
    assert health.exit_code == 0 and json.loads(health.stdout)["status"] == "ok"


def test_api_posts_json_and_a_refusal_keeps_its_body_and_exits_1(served: str) -> None:
    run("login", "--url", served, "--user", "ops-auditor", "--password-stdin", stdin=PASSWORD + "\n")

    refused = run("api", "POST", "/api/v1/jobs/dpd/runs", "--data", "{}", "--url", served)

    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["error"]["code"] == "FORBIDDEN"  # auditors read, never run the job
    assert "POST /api/v1/jobs/dpd/runs: FORBIDDEN" in refused.stderr
    missing = run("api", "GET", "/api/v1/loans/LN-NOPE", "--url", served)
    assert missing.exit_code == 1 and json.loads(missing.stdout)["error"]["code"] == "NOT_FOUND"

    assert run("api", "GET", "loans", "--url", served).exit_code == 2
    assert run("api", "FETCH", "/health", "--url", served).exit_code == 2
    assert run("api", "POST", "/api/v1/loans", "--data", "{not json", "--url", served).exit_code == 2
    assert run("api", "POST", "/api/v1/loans", "--all", "--url", served).exit_code == 2
    not_a_listing = run("api", "GET", "/health", "--all", "--url", served)
    assert not_a_listing.exit_code == 2 and "not a listing" in not_a_listing.stderr


def test_a_refused_kept_token_is_replaced_by_one_fresh_login(served: str, moto_stack: str) -> None:
    path = api_client.cache_path(moto_stack)
    api_client.save_session(
        path, api_client.Session(served, "ops-admin", "admin", "not-a-token", expires_at=4_000_000_000)
    )

    answered = run("api", "GET", "/api/v1/flags", "--url", served, "--password-stdin", stdin=PASSWORD + "\n")

    assert answered.exit_code == 0, answered.output
    assert "token refused (UNAUTHENTICATED" in answered.stderr and "logged in as ops-admin" in answered.stderr
    assert json.loads(path.read_text())["token"] != "not-a-token"


def test_a_wrong_password_is_one_line_and_keeps_nothing(served: str, moto_stack: str) -> None:
    refused = run("login", "--url", served, "--user", "ops-admin", "--password-stdin", stdin="wrong-password\n")

    assert refused.exit_code == 1
    assert "login as ops-admin refused: UNAUTHENTICATED" in refused.stderr
    assert "wrong-password" not in refused.output
    assert not api_client.cache_path(moto_stack).exists()
    no_argument = run("login", "--url", served, "--password", PASSWORD)
    assert no_argument.exit_code == 2, "a password is never taken as an argument"


def test_a_token_for_another_url_or_near_expiry_is_not_used(tmp_path: Path) -> None:
    session = api_client.Session("https://a.example", "u", "admin", "t", expires_at=10_000)

    assert session.usable("https://a.example", now=10_000 - 61)
    assert not session.usable("https://a.example", now=10_000 - 59)
    assert not session.usable("https://b.example", now=0)
    path = tmp_path / "cache" / "token.json"
    api_client.save_session(path, session)
    assert api_client.load_session(path) == session
    path.write_text("{broken")
    assert api_client.load_session(path) is None
    assert os.access(path, os.R_OK)
