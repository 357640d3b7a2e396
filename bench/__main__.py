"""Every benchmark in one command, which writes bench/RESULTS.md:

    python -m bench            # the full set, about 20 minutes on two cores
    python -m bench --quick    # small books, a few minutes: to see that every bench still runs

Each bench runs in a fresh interpreter (the cold-start figures need one, and no bench inherits another's
clients or DynamoDB Local). Each hands its headline figures, with their ratio to the floor or baseline
measured in the same run, through ``bench.summary``; the file starts with those and keeps every bench's
whole output below them. Times are this machine's and noisy: read the ratios, which are measured side
by side and so cancel most of the noise. docs/performance.md says what moved and why.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.summary import SUMMARY_ENV
from chalicelib import clock

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


@dataclass(frozen=True)
class Bench:
    title: str
    module: str
    full: tuple[str, ...]
    quick: tuple[str, ...]


BENCHES = (
    Bench("Cold start", "bench.cold_start", ("--runs", "9"), ("--runs", "3")),
    Bench("Payments and reversals", "bench.payments", ("--payments", "200"), ("--payments", "40", "--priced", "10")),
    Bench(
        "Day-end run: books of 10,000, 50,000 and 100,000 loans with the same delinquent loans",
        "bench.dpd",
        ("--sizes", "10000,50000,100000", "--held", "10000", "--no-reminders"),
        ("--sizes", "1000,3000", "--held", "1000", "--no-reminders"),
    ),
    Bench(
        "Dashboard", "bench.dashboard", ("--loans", "10000", "--also", "100000"), ("--loans", "1000", "--also", "3000")
    ),
    Bench("Reconciliation", "bench.reconciliation", ("--loans", "10000"), ("--loans", "1000")),
    Bench("Reminders", "bench.reminders", ("--loans", "20000", "--also", "2000"), ("--loans", "2000", "--also", "0")),
    Bench("Bulk import", "bench.imports", ("--rows", "5000"), ("--rows", "500", "--priced", "50")),
    Bench("Bulk reassignment", "bench.reassignment", ("--loans", "3000"), ("--loans", "300", "--priced", "30")),
)


@dataclass
class Ran:
    bench: Bench
    args: tuple[str, ...]
    seconds: float
    returncode: int
    output: str
    headlines: list[dict[str, object]]


def run(bench: Bench, quick: bool) -> Ran:
    args = bench.quick if quick else bench.full
    print(f"\n=== {bench.title}: python -m {bench.module} {' '.join(args)}", flush=True)
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as headlines:
        env = {**os.environ, SUMMARY_ENV: headlines.name}
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", bench.module, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        returncode = process.wait()
        seconds = time.perf_counter() - started
        found = [json.loads(line) for line in headlines.read().splitlines() if line.strip()]
    return Ran(bench, args, seconds, returncode, "".join(lines), found)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gb() -> str:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GB"
    except OSError:
        pass
    return "unknown memory"


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _dynamodb_local() -> str:
    from local.dynamodb_local import jar

    try:
        return jar().parent.name
    except Exception:
        return "unknown"


def render(ran: list[Ran], quick: bool, load_before: float, load_after: float, seconds: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench{' --quick' if quick else ''}` (`make bench`) on "
        f"{clock.now_ist():%Y-%m-%d %H:%M} IST, commit {_commit()}, in {seconds / 60:.0f} minutes.",
        "",
        f"- Machine: {_cpu()}, {os.cpu_count()} CPUs, {_memory_gb()}; load average {load_before:.1f} before and "
        f"{load_after:.1f} after (other work shares this machine).",
        f"- Python {platform.python_version()}, DynamoDB Local `{_dynamodb_local()}` in memory.",
        "- Times are this machine's, on DynamoDB Local, not AWS. Each ratio is measured in the same run as what",
        "  it is compared with, so most of the noise cancels; docs/performance.md says what the figures mean,",
        "  what moved and why.",
        "",
        "## Headlines",
        "",
        "| bench | figure | value | ratio | against |",
        "|---|---|---|---|---|",
    ]
    for one in ran:
        for headline in one.headlines:
            ratio = headline.get("ratio")
            shown = "" if ratio is None else f"{float(str(ratio)):.2f}×"
            lines.append(
                f"| {one.bench.title.split(':')[0]} | {headline['figure']} | {headline['value']} | {shown} "
                f"| {headline.get('against') or ''} |"
            )
    failed = [one for one in ran if one.returncode != 0]
    if failed:
        lines += ["", "**Failed:** " + ", ".join(f"`{one.bench.module}` (exit {one.returncode})" for one in failed)]
    for one in ran:
        lines += [
            "",
            f"## {one.bench.title}",
            "",
            f"`python -m {one.bench.module} {' '.join(one.args)}`, {one.seconds:.0f} s:",
            "",
            "```text",
            one.output.rstrip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small books: checks that every bench runs")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: bench/RESULTS.md; nowhere with --quick)"
    )
    parser.add_argument("--only", default=None, help="comma-separated modules to run, e.g. bench.payments")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if args.only is None or b.module in args.only.split(",")]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    ran = [run(bench, args.quick) for bench in chosen]
    text = render(ran, args.quick, load_before, os.getloadavg()[0], time.perf_counter() - started)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        print(f"\nwrote {out}")
    if any(one.returncode != 0 for one in ran):
        sys.exit(1)


if __name__ == "__main__":
    main()
