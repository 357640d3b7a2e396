"""Run the whole stack on this machine until Ctrl-C: DynamoDB Local, a moto server for SSM, SNS,
CloudWatch and Scheduler, the tables and flags from infra/template.json, the demo book, and
``chalice local`` serving the API.

    make run                  (installs the venv and DynamoDB Local first, then runs this)
    python -m local

The API is Chalice's local server, started as ``python -m local serve-api`` (``local.api_server``) so
that paths deeper than the app's catch-all routes also get the API's own 404.

Ports: ``DYNAMODB_PORT`` (8000), ``MOTO_PORT`` (5001), ``API_PORT`` (8080);
``DEMO_LOANS`` (300) sizes the demo book.

State lives in ``.local/``: DynamoDB data in ``dynamodb/`` (kept across restarts; delete it to start
from scratch), the JWT secret in ``jwt-secret`` (generated once, so tokens survive restarts) and the
children's logs in ``logs/``. moto keeps its state in memory, so flags start at their template
defaults on every run. Everything here is for the local stage only: the credentials are fake and the
demo passwords are published.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import boto3
from botocore.config import Config

from chalicelib.clock import last_completed_business_date, now_ist
from chalicelib.config import settings
from chalicelib.domain.audit import Actor
from chalicelib.domain.roles import Role
from chalicelib.services.auth import MIN_SECRET_BYTES, issue_token
from chalicelib.services.context import RequestContext
from chalicelib.wiring import services
from infra.provision import provision
from local import demo, dynamodb_local
from local.api_server import serve_api
from local.environment import HOST, ROOT, STAGE, STATE_DIR, Ports, StartupError, stack_environment, url
from local.metrics import MetricsTee
from local.processes import LOG_DIR, STOP_SIGNALS, Child, Stack, StopRequested, wait_until

DB_DIR = STATE_DIR / "dynamodb"
SECRET_FILE = STATE_DIR / "jwt-secret"
PROVISION_LOG = LOG_DIR / "provision.log"
JOB_LOG = LOG_DIR / "jobs.log"
DEMO_LOANS_VARIABLE = "DEMO_LOANS"


def load_jwt_secret() -> str:
    """The local stage's signing secret, created on first use and kept so tokens survive restarts."""
    if SECRET_FILE.exists():
        secret = SECRET_FILE.read_text(encoding="utf-8").strip()
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise StartupError(
                f"{SECRET_FILE.relative_to(ROOT)} holds a secret shorter than {MIN_SECRET_BYTES} bytes; "
                "delete it and a new one is generated (tokens issued before then stop working)"
            )
        return secret
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
    return secret


def check_ports_free(ports: Ports) -> None:
    """Fail before starting anything, rather than half-way with a child's bind error in a log."""
    for name, port in ports.named().items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Without SO_REUSEADDR a socket of a just-stopped run in TIME_WAIT would look like a user.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                # The wildcard address conflicts with a listener on any interface (DynamoDB Local binds all).
                sock.bind(("", port))
            except OSError:
                raise StartupError(
                    f"port {port} is already in use (is another `make run` still up?); "
                    f"stop whatever holds it or choose another with {name}=..."
                ) from None


def venv_script(name: str) -> str:
    script = Path(sysconfig.get_path("scripts")) / name
    if not script.exists():
        raise StartupError(f"{name} is not installed in this Python environment; run `make venv`")
    return str(script)


def _aws_answers(service: str, call: str, **kwargs: Any) -> Callable[[], bool]:
    # One quick attempt per probe: the retry loop is wait_until's.
    client = boto3.client(service, config=Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}))

    def probe() -> bool:
        try:
            getattr(client, call)(**kwargs)
        except Exception:
            return False
        return True

    return probe


def http_get(target: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(target)  # noqa: S310 - always our own http://127.0.0.1 URL
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def _api_healthy(ports: Ports) -> Callable[[], bool]:
    return lambda: http_get(url(ports.api) + "/health")[0] == 200


def start_dynamodb(stack: Stack, ports: Ports) -> Child:
    DB_DIR.mkdir(parents=True, exist_ok=True)
    argv, cwd = dynamodb_local.command(ports.dynamodb, db_path=DB_DIR)
    return stack.start("dynamodb", argv, cwd=cwd)


def start_moto(stack: Stack, ports: Ports) -> Child:
    return stack.start("moto", [venv_script("moto_server"), "-H", HOST, "-p", str(ports.moto)], cwd=STATE_DIR)


def start_api(stack: Stack, ports: Ports) -> Child:
    argv = [sys.executable, "-m", "local", "serve-api", "--host", HOST, "--port", str(ports.api)]
    return stack.start("api", argv, cwd=ROOT)


def demo_loans() -> int:
    raw = os.environ.get(DEMO_LOANS_VARIABLE) or str(demo.DEFAULT_LOANS)
    if not raw.isdigit():
        raise StartupError(f"{DEMO_LOANS_VARIABLE}={raw!r} is not a whole number")
    return int(raw)


def provision_tables() -> None:
    # Its notes (no point-in-time recovery in DynamoDB Local, ...) are expected here: log, don't show.
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    try:
        with PROVISION_LOG.open("w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            provision(STAGE)
    except RuntimeError as exc:
        raise StartupError(
            f"{exc}\nThe local tables were made from an older infra/template.json; to start over, delete "
            f"{DB_DIR.relative_to(ROOT)}/ (the demo book is seeded again)"
        ) from None


def seed_demo_book(loans: int) -> str:
    started = time.monotonic()
    report = demo.seed(loans)
    summary = report.summary()
    if report.loans_existing:
        summary += "\n" + counters_brought_up_to_date()
    took = time.monotonic() - started
    return f"{summary}\n  ({took:.1f}s)"


def counters_brought_up_to_date() -> str:
    """A book kept from an earlier start may predate the dashboard's counters (or have been edited by
    hand): set them to a recount, as ops would after a repair (docs/reconciliation.md). On a book whose
    counters are right this changes and audits nothing."""
    ctx = RequestContext(actor=Actor(sub="system:local-start", role=Role.ADMIN.value))
    with JOB_LOG.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        rebuilt = services().reconciliation.rebuild(ctx)
    if not rebuilt.corrected:
        return "Dashboard counters: up to date"
    return f"Dashboard counters: rebuilt from a recount ({len(rebuilt.corrected)} sets corrected, audited)"


def day_end_run() -> str:
    """Bring the demo book to yesterday (IST) the way the 00:30 schedule would in AWS; on a restart
    the date is usually done already and this is a no-op."""
    business_date = last_completed_business_date()
    # Its metrics are EMF lines on stdout: into the log with the rest, not over the banner.
    with JOB_LOG.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(MetricsTee(log)):
        result = services().dpd_job.run(business_date, trigger="local-start")
        # What the watchdog schedule does in AWS, once: `python -m ops --local alarms` then shows the
        # missed-run rule fed (for an hour), as on a stage whose watchdog reports.
        services().dpd_job.check_completed(business_date, now_ist())
    run = result.record
    counts = f", {run.loans_updated} loans updated, {run.escalated} escalated" if run else ""
    return f"Day-end DPD run for {business_date}: {result.outcome.value}{counts}"


def admin_token(secret: str) -> tuple[str, int]:
    ttl = settings().token_ttl_seconds
    return issue_token("admin", "admin", secret, ttl).access_token, ttl


def check_token(ports: Ports, token: str) -> None:
    status, body = http_get(url(ports.api) + "/api/v1/loans?limit=1", token)
    if status != 200:
        raise StartupError(f"the API refused the admin token it was given ({status}): {body}")


def onboarding(api: str, json_header: str, successor: str) -> str:
    """The banner's users example: onboard a collector, give her a loan, offboard her again."""
    auth = '-H "Authorization: Bearer $TOKEN"'
    new_user = json.dumps(demo.ONBOARDING_EXAMPLE)
    offboard = json.dumps({"active": False, "reassign_to": successor})
    assign = json.dumps({"collector_id": demo.ONBOARDING_EXAMPLE["username"]})
    user_path = f"{api}/api/v1/users"
    return f"""Onboard a collector, give her a loan, and offboard her again (her loans go to {successor}):
  curl -s -X POST {auth} {json_header} -d '{new_user}' \\
       {user_path}
  curl -s -X POST {auth} {json_header} -d '{assign}' \\
       {api}/api/v1/loans/{demo.demo_loan_id(2)}/assign
  curl -s -X PATCH {auth} {json_header} -d '{offboard}' \\
       {user_path}/{demo.ONBOARDING_EXAMPLE["username"]}
"""


def banner(ports: Ports, token: str, ttl: int, seed_summary: str, started: float, logs: list[Path]) -> str:
    api = url(ports.api)
    users = "\n".join(f"  {name:<12} {role.value:<10} {demo.DEMO_PASSWORDS[role]}" for name, role in demo.DEMO_USERS)
    json_header = "-H 'Content-Type: application/json'"
    collector = next(iter(demo.COLLECTOR_BRANCHES))
    collector_password = demo.DEMO_PASSWORDS[Role.COLLECTOR]
    return f"""
Loan CRM local stack is up ({time.monotonic() - started:.1f}s)
  API             {api}   (chalice local, stage {STAGE})
  DynamoDB Local  {url(ports.dynamodb)}   data in {DB_DIR.relative_to(ROOT)}/, kept across restarts
  moto server     {url(ports.moto)}   SSM, SNS, CloudWatch, Scheduler (in memory)
  logs            {", ".join(str(p.relative_to(ROOT)) for p in logs)}

{seed_summary}

Demo users (local stage only: these passwords are published)
{users}

Admin token, valid {ttl / 3600:g} h:
  export TOKEN={token}

Try:
  curl -s {api}/health
  curl -s -H "Authorization: Bearer $TOKEN" '{api}/api/v1/loans?bucket=90%2B&limit=2'
  curl -s -H "Authorization: Bearer $TOKEN" {api}/api/v1/dashboard/summary
  curl -s -H "Authorization: Bearer $TOKEN" {api}/api/v1/reconciliation/latest
  curl -s -X PATCH -H "Authorization: Bearer $TOKEN" {json_header} -d '{{"dpd": 0}}' \\
       {api}/api/v1/loans/{demo.demo_loan_id(1)}
  curl -s -X POST {json_header} -d '{{"username": "{collector}", "password": "{collector_password}"}}' \\
       {api}/api/v1/auth/token

{onboarding(api, json_header, collector)}
Ctrl-C stops everything.
"""


def run(stack: Stack, ports: Ports, secret: str, loans: int) -> NoReturn:
    started = time.monotonic()

    def step(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {message}", flush=True)

    step("starting DynamoDB Local and moto")
    dynamodb, moto = start_dynamodb(stack, ports), start_moto(stack, ports)
    wait_until("DynamoDB Local", dynamodb, _aws_answers("dynamodb", "list_tables", Limit=1))
    wait_until("moto server", moto, _aws_answers("ssm", "describe_parameters", MaxResults=1))
    step("provisioning tables and flags")
    provision_tables()
    # The API imports its code while the book is seeded; it needs the tables only once asked.
    step("starting the API; seeding the demo book (the first run hashes passwords and books loans)")
    api = start_api(stack, ports)
    seed_summary = seed_demo_book(loans)
    step("running the day-end DPD job for yesterday (IST)")
    seed_summary += "\n" + day_end_run()
    step("waiting for the API")
    wait_until("the API (GET /health)", api, _api_healthy(ports))
    token, ttl = admin_token(secret)
    check_token(ports, token)
    logs = [c.log_path for c in stack.children] + [PROVISION_LOG, JOB_LOG]
    print(banner(ports, token, ttl, seed_summary, started, logs), flush=True)
    while True:
        dead = stack.first_dead()
        if dead is not None:
            raise dead.died()
        time.sleep(1)


def _request_stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


def main() -> int:
    if sys.argv[1:2] == ["serve-api"]:
        return serve_api(sys.argv[2:])
    for sig in STOP_SIGNALS:
        signal.signal(sig, _request_stop)
    stack: Stack | None = None
    try:
        ports = Ports.from_env()
        loans = demo_loans()
        check_ports_free(ports)
        secret = load_jwt_secret()
        env = stack_environment(ports, secret)
        # Provisioning and seeding run in this process, so it needs the same environment as its children.
        for name in set(os.environ) - set(env):
            del os.environ[name]
        os.environ.update(env)
        stack = Stack(env)
        return run(stack, ports, secret, loans)
    except StopRequested as stop:
        print(f"\n{stop} received, stopping ...", flush=True)
        return 0
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave children behind.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if stack is not None:
            stack.stop()
            print("stopped.", flush=True)
