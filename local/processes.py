"""The local stack's child processes: started in their own process groups, logged to files, stopped
in full (with anything they spawned) on Ctrl-C, SIGTERM, or even when the runner itself is killed."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from local.environment import ROOT, StartupError

LOG_DIR = ROOT / ".local" / "logs"
START_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 15
TAIL_LINES = 30
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(BaseException):
    """A signal asked the runner to stop. Not an Exception, like KeyboardInterrupt, so that no
    ``except Exception`` on the way (botocore, our probes) can swallow it."""


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
