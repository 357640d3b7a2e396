"""Cold start: what a new Lambda container pays before and during its first request.

1. ``import app`` against a bare import of the same dependency stack. Each sample is a fresh
   interpreter (as a new container is), timing only the import. The stack names the pieces the app
   really loads: ``import pydantic`` alone loads almost nothing in pydantic 2 (its names are imported
   on first access), so the stack imports ``BaseModel`` and the field helpers the models use.
2. The package as a Lambda container imports it: ``infra.package`` builds it, and ``import app`` runs
   from the unzipped code alone (no site-packages, no bytecode written, as in Lambda's read-only code
   directory), once with the sources only and once with the bytecode the build adds.
3. The first request of a fresh interpreter against its tenth, on DynamoDB Local:
   ``GET /api/v1/loans?limit=20`` with a manager's token, through ``chalice.test.Client``. The first
   one builds the services (clients, connections), reads the caller, and builds the validators and
   serialisers it needs.

Prints medians and ratios; there is no pass/fail here (docs/architecture.md, "Cold start").

    python -m bench.cold_start [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench import summary

ROOT = Path(__file__).resolve().parents[1]

STACK = (
    "import boto3, botocore, jwt, chalice.app, pynamodb.models, pynamodb.attributes, "
    "pynamodb.transactions, aws_lambda_powertools.logging, aws_lambda_powertools.metrics; "
    "from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator"
)
CASES = {
    "python (nothing)": "pass",
    "dependency stack": STACK,
    "import app": "import app",
}
PROBE = "import sys, time; t = time.perf_counter(); exec({code!r}); print(time.perf_counter() - t, len(sys.modules))"

FIRST_REQUEST = """
import json, tempfile, time
started = time.perf_counter()
import app
from chalice.test import Client
imported = time.perf_counter()
headers = {"Authorization": "Bearer " + TOKEN}
times = []
with tempfile.TemporaryDirectory() as empty, Client(app.app, project_dir=empty) as client:
    for _ in range(10):
        t = time.perf_counter()
        reply = client.http.get("/api/v1/loans?limit=20", headers=headers)
        times.append(time.perf_counter() - t)
        assert reply.status_code == 200, reply.body
print(json.dumps({"import": imported - started, "first": times[0], "tenth": times[-1]}))
"""


PACKAGED_REQUEST = """
import json, sys, time
sys.path.insert(0, TREE)
started = time.perf_counter()
import app
imported = time.perf_counter()

class Context:
    aws_request_id = "bench"
    function_name = "api_handler"
    def get_remaining_time_in_millis(self):
        return 30_000

def event():
    return {
        "resource": "/api/v1/loans", "path": "/api/v1/loans", "httpMethod": "GET",
        "headers": {"Authorization": "Bearer " + TOKEN, "Host": "bench"},
        "multiValueHeaders": {"Authorization": ["Bearer " + TOKEN], "Host": ["bench"]},
        "queryStringParameters": {"limit": "20"}, "multiValueQueryStringParameters": {"limit": ["20"]},
        "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
        "requestContext": {"resourcePath": "/api/v1/loans", "httpMethod": "GET", "requestId": "bench",
                           "stage": "api", "identity": {"sourceIp": "127.0.0.1"}},
    }

times = []
for _ in range(10):
    t = time.perf_counter()
    reply = app.app(event(), Context())
    times.append(time.perf_counter() - t)
    assert reply["statusCode"] == 200, reply
print(json.dumps({"import": imported - started, "first": times[0], "tenth": times[-1]}))
"""


def _env() -> dict[str, str]:
    keep = ("AWS_", "STAGE", "JWT_", "POWERTOOLS_", "RECONCILE_")
    return {"PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items() if k.startswith(keep)}}


def sample(code: str) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


def imports(runs: int) -> None:
    results: dict[str, tuple[float, int]] = {}
    for name, code in CASES.items():
        sample(code)  # warm the OS page cache so every case is measured alike
        times, modules = zip(*(sample(code) for _ in range(runs)), strict=True)
        results[name] = (statistics.median(times), modules[0])
    stack = results["dependency stack"][0]
    print(f"{'import':<36}{'median ms':>10}{'modules':>9}{'x stack':>9}")
    for name, (median, modules) in results.items():
        print(f"{name:<36}{median * 1000:>10.1f}{modules:>9}{median / stack:>9.2f}")
    app_import = results["import app"][0]
    summary.record("`import app`", f"{app_import * 1000:.0f} ms", app_import / stack, "its dependency stack")


def _import_from(code_dir: Path) -> float:
    probe = f"import sys, time; sys.path.insert(0, {str(code_dir)!r}); t = time.perf_counter(); import app; "
    probe += "print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-S", "-B", "-c", probe], cwd=code_dir, env=_env(), capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


def packaged(runs: int, work: Path) -> Path:
    """Build the package into ``work`` and time ``import app`` from it as Lambda does; the compiled tree."""
    import shutil
    import zipfile

    from infra.package import package

    sizes = package("dev", work / "build")
    compiled, sources = work / "compiled", work / "sources"
    with zipfile.ZipFile(work / "build" / "deployment.zip") as code:
        code.extractall(compiled)
    shutil.copytree(compiled, sources)
    for cache in list(sources.rglob("__pycache__")):
        shutil.rmtree(cache)
    medians = {}
    for label, tree in (("sources only", sources), ("with bytecode (infra.package)", compiled)):
        _import_from(tree)
        medians[label] = statistics.median(_import_from(tree) for _ in range(runs))
    print()
    print(sizes.report())
    print(f"{'import app from the package':<36}{'median ms':>10}{'x bytecode':>11}")
    for label, median in medians.items():
        ratio = median / medians["with bytecode (infra.package)"]
        print(f"{label:<36}{median * 1000:>10.1f}{ratio:>11.2f}")
    compiled_ms = medians["with bytecode (infra.package)"] * 1000
    summary.record("`import app` from the package, as Lambda runs it", f"{compiled_ms:.0f} ms")
    summary.record("package", f"{sizes.zipped / 2**20:.1f} MB zipped, {sizes.unzipped / 2**20:.1f} MB unzipped")
    return compiled


def first_requests(runs: int, tree: Path) -> None:
    """A fresh interpreter's first ``GET /api/v1/loans`` against its tenth: through ``chalice.test`` in the
    development environment, and as Lambda runs the package (``python -S -B``, the handler called with
    an API Gateway event)."""
    import boto3

    from bench.dynamo import NoSsm, dynamodb_local
    from bench.payments import create_loans
    from chalicelib import wiring
    from chalicelib.domain.roles import Role
    from chalicelib.services.auth import issue_token
    from infra.provision import provision

    with dynamodb_local() as server:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint
        wiring.reset()
        provision("bench", boto3.client("dynamodb"), ssm=NoSsm(), quiet=True)
        wiring.services().auth.add_user("bench-manager", "bench-manager-password", Role.MANAGER)
        create_loans(50)
        token = issue_token("bench-manager", "manager", os.environ["JWT_SECRET"], 3600).access_token
        probes = {
            "development environment": ([sys.executable, "-c", f"TOKEN = {token!r}\n" + FIRST_REQUEST], ROOT),
            "the package, as Lambda": (
                [sys.executable, "-S", "-B", "-c", f"TOKEN = {token!r}\nTREE = {str(tree)!r}\n" + PACKAGED_REQUEST],
                tree,
            ),
        }
        medians: dict[str, dict[str, float]] = {}
        for label, (command, cwd) in probes.items():
            found = []
            for _ in range(runs + 1):
                out = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, check=True)
                found.append(json.loads(out.stdout.strip().splitlines()[-1]))
            found = found[1:]  # the first warms the OS page cache
            medians[label] = {k: statistics.median(f[k] for f in found) for k in ("import", "first", "tenth")}
    print()
    print(f"{'fresh interpreter, DynamoDB Local':<44}{'median ms':>10}{'x tenth':>9}")
    for label, median in medians.items():
        print(f"{label}:")
        print(f"{'  import app':<44}{median['import'] * 1000:>10.1f}")
        for key in ("first", "tenth"):
            name = f"  {key} GET /api/v1/loans?limit=20"
            print(f"{name:<44}{median[key] * 1000:>10.1f}{median[key] / median['tenth']:>9.2f}")
        first = median["first"] / median["tenth"]
        summary.record(f"first request, {label}", f"{median['first'] * 1000:.0f} ms", first, "its tenth")
        total = (median["import"] + median["first"]) * 1000
        summary.record(f"import and first request, {label}", f"{total:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    imports(args.runs)
    with tempfile.TemporaryDirectory() as work:
        tree = packaged(args.runs, Path(work))
        first_requests(args.runs, tree)


if __name__ == "__main__":
    main()
