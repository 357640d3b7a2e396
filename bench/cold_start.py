"""Cold-start import cost: ``import app`` against a bare import of the same dependency stack.

Each sample is a fresh interpreter (as a new Lambda container is), timing only the import itself.
Prints medians and the ratio; there is no pass/fail here, the numbers go into release notes.

    python -m bench.cold_start [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STACK = (
    "import boto3, botocore, jwt, pydantic, chalice.app, pynamodb.models, pynamodb.attributes, "
    "pynamodb.transactions, aws_lambda_powertools.logging, aws_lambda_powertools.metrics"
)
CASES = {
    "python (nothing)": "pass",
    "dependency stack": STACK,
    "import app": "import app",
    "import app + first request wiring": ("import app; from chalicelib.wiring import services; services()"),
}
PROBE = "import sys, time; t = time.perf_counter(); exec({code!r}); print(time.perf_counter() - t, len(sys.modules))"
ENV = {
    "STAGE": "bench",
    "AWS_DEFAULT_REGION": "ap-south-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "JWT_SECRET": "bench-secret-that-is-long-enough-for-hs256-000",
}


def sample(code: str) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code)],
        cwd=ROOT,
        env={**ENV, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, tuple[float, int]] = {}
    for name, code in CASES.items():
        sample(code)  # warm the OS page cache so every case is measured alike
        times, modules = zip(*(sample(code) for _ in range(args.runs)), strict=True)
        results[name] = (statistics.median(times), modules[0])
    stack = results["dependency stack"][0]
    print(f"{'case':<36}{'median ms':>10}{'modules':>9}{'x stack':>9}")
    for name, (median, modules) in results.items():
        print(f"{name:<36}{median * 1000:>10.1f}{modules:>9}{median / stack:>9.2f}")


if __name__ == "__main__":
    main()
