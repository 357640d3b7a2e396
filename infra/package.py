"""The deployable package: ``chalice package`` with the merge template, then the code zip compiled.

Lambda's code directory is read-only, so Python cannot keep the bytecode it compiles there: without
``.pyc`` files in the zip, every cold container compiles every module it imports (boto3, botocore,
pydantic, pynamodb, powertools, the app) from source before it can answer. ``chalice package`` ships
sources only (and whatever ``__pycache__`` the working tree happens to hold for the app's own code). This
step rewrites ``deployment.zip`` with stale bytecode dropped and every module compiled by this Python,
marked ``unchecked-hash`` so the runtime uses it without comparing timestamps (which the zip does not
keep exactly). Measured on the unzipped package, imported as Lambda would (no bytecode writes): ``import
app`` 837 ms without, 331 ms with (docs/architecture.md, "Cold start").

The bytecode is only valid for the Python minor version that wrote it, so the build refuses to run on a
Python other than the functions' runtime.

    python -m infra.package --stage dev build/dev
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MERGE_TEMPLATE = ROOT / "infra" / "template.json"
CODE_ZIP = "deployment.zip"


AWS_SERVICES = frozenset({"dynamodb", "lambda", "sns", "ssm", "stepfunctions", "sts"})
"""The AWS services the functions call: DynamoDB (PynamoDB), SSM (the flags and secrets), SNS (alerts and
reminders), Lambda (starting the jobs), Step Functions (fanning a run out) and STS (kept for the
credential chain). botocore ships a model for every AWS service, about 22 MB of the package; the build
keeps these only. A client for any other service fails with ``UnknownServiceError`` in the deployed
function, so ``tests/unit/test_package.py`` checks every client the code makes against this list."""


UNUSED_PACKAGES = (
    "aws_lambda_powertools/event_handler",
    "aws_lambda_powertools/utilities/auth_alpha",
    "aws_lambda_powertools/utilities/batch",
    "aws_lambda_powertools/utilities/circuit_breaker",
    "aws_lambda_powertools/utilities/data_classes",
    "aws_lambda_powertools/utilities/data_masking",
    "aws_lambda_powertools/utilities/feature_flags",
    "aws_lambda_powertools/utilities/idempotency",
    "aws_lambda_powertools/utilities/kafka",
    "aws_lambda_powertools/utilities/parser",
    "aws_lambda_powertools/utilities/streaming",
    "aws_lambda_powertools/utilities/validation",
)
"""Parts of powertools the functions never import, dropped from the package: its HTTP and GraphQL
resolvers (the app routes with Chalice), its event classes and parsers, and the utilities the app does
not use (its idempotency among them: the app keeps its own records). They were about a fifth of the
package. The app uses powertools' logger, metrics and parameters, and powertools imports its tracer
whenever it is imported, so those stay.

``tests/unit/test_package.py`` fails if the app, or any part of powertools the package keeps, imports
one of these anywhere, a function-level import included, except at :data:`UNREACHED_IMPORTS`."""

UNREACHED_IMPORTS = frozenset({("aws_lambda_powertools.shared.functions", "aws_lambda_powertools.event_handler")})
"""(importer, dropped package) pairs known never to run in these functions. ``shared.functions``
imports the event handler inside ``pydantic_to_dict``, which powertools calls only to log or store a
pydantic model handed to it (its Logger's ``log_event``, its JSON encoder when a secret is written):
the app hands it none."""


class PackageError(Exception):
    pass


def drop_unused_service_models(tree: Path) -> None:
    """Remove every botocore service model the functions never load (see :data:`AWS_SERVICES`): less to
    download and unzip into a cold container, and fewer directories for botocore to list when it makes
    its first client."""
    data = tree / "botocore" / "data"
    if not data.is_dir():
        return
    for service in data.iterdir():
        if service.is_dir() and service.name not in AWS_SERVICES:
            shutil.rmtree(service)
    trim_endpoints(data)


def drop_unused_packages(tree: Path) -> None:
    """Remove :data:`UNUSED_PACKAGES` from the unzipped package."""
    for package in UNUSED_PACKAGES:
        shutil.rmtree(tree / package, ignore_errors=True)


def trim_endpoints(data: Path) -> None:
    """Keep, in botocore's ``endpoints.json``, only the services the package keeps.

    botocore parses the whole file (about 1.2 MB of JSON, every service in every partition) when it
    makes the first client of a process, which is most of that client's cost and so most of a cold
    container's first request. The file is keyed by each service's endpoint prefix (``states`` for Step
    Functions), which its model names. Regions, partitions and the kept services' entries are left as
    they are, so a kept service resolves exactly as before; ``tests/unit/test_package.py`` checks it."""
    endpoints = data / "endpoints.json"
    if not endpoints.is_file():
        return
    prefixes = {_endpoint_prefix(service) for service in data.iterdir() if service.is_dir()}
    document = json.loads(endpoints.read_text(encoding="utf-8"))
    for partition in document.get("partitions", []):
        partition["services"] = {k: v for k, v in partition.get("services", {}).items() if k in prefixes}
    endpoints.write_text(json.dumps(document, separators=(",", ":")), encoding="utf-8")


def _endpoint_prefix(service: Path) -> str:
    """The endpoint prefix in the newest model of a botocore service directory (its name if none)."""
    for version in sorted((v for v in service.iterdir() if v.is_dir()), reverse=True):
        for name in ("service-2.json.gz", "service-2.json"):
            model = version / name
            if model.is_file():
                raw = model.read_bytes()
                text = gzip.decompress(raw) if name.endswith(".gz") else raw
                return str(json.loads(text).get("metadata", {}).get("endpointPrefix", service.name))
    return service.name


@dataclass(frozen=True)
class Sizes:
    zipped: int
    unzipped: int
    largest: tuple[tuple[str, int], ...]
    """Top-level entries of the zip by unzipped bytes, largest first."""

    def report(self) -> str:
        mb = 1024 * 1024
        lines = [f"{CODE_ZIP}: {self.zipped / mb:.1f} MB zipped, {self.unzipped / mb:.1f} MB unzipped; largest:"]
        lines += [f"  {name:<32}{size / mb:>7.1f} MB" for name, size in self.largest]
        return "\n".join(lines)


def runtimes(sam_template: Path) -> set[str]:
    """The Python runtimes the packaged functions declare (``python3.11``, ...)."""
    resources = json.loads(sam_template.read_text(encoding="utf-8")).get("Resources", {})
    declared = {r.get("Properties", {}).get("Runtime") for r in resources.values() if isinstance(r, dict)}
    return {str(r) for r in declared if str(r).startswith("python")}


def check_runtime(sam_template: Path, version: tuple[int, int] = sys.version_info[:2]) -> None:
    ours = f"python{version[0]}.{version[1]}"
    declared = runtimes(sam_template)
    if declared != {ours}:
        raise PackageError(f"the functions run on {sorted(declared)}, this build on {ours}: bytecode would not match")


def compile_zip(code_zip: Path) -> Sizes:
    """Rewrite ``code_zip`` in place: every ``__pycache__`` it holds dropped, the service models of
    botocore and the parts of powertools the functions do not use dropped, every ``.py`` compiled next
    to its source as unchecked-hash bytecode for this Python."""
    with tempfile.TemporaryDirectory() as work:
        tree = Path(work) / "tree"
        with zipfile.ZipFile(code_zip) as source:
            source.extractall(tree)
        for cache in sorted(tree.rglob("__pycache__"), reverse=True):
            shutil.rmtree(cache)
        drop_unused_service_models(tree)
        drop_unused_packages(tree)
        ok = compileall.compile_dir(
            tree,
            quiet=2,
            workers=os.cpu_count() or 1,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        if not ok:
            raise PackageError("some module of the package does not compile")
        rebuilt = Path(work) / CODE_ZIP
        per_entry: Counter[str] = Counter()
        with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as target:
            for path in sorted(p for p in tree.rglob("*") if p.is_file()):
                name = path.relative_to(tree).as_posix()
                target.write(path, name)
                per_entry[name.split("/", 1)[0]] += path.stat().st_size
        shutil.move(rebuilt, code_zip)
    return Sizes(code_zip.stat().st_size, sum(per_entry.values()), tuple(per_entry.most_common(8)))


def package(stage: str, out: Path) -> Sizes:
    if out.exists():
        shutil.rmtree(out)
    chalice = Path(sys.executable).with_name("chalice")
    subprocess.run(
        [str(chalice), "package", "--stage", stage, "--merge-template", str(MERGE_TEMPLATE), str(out)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "ap-south-1")},
    )
    check_runtime(out / "sam.json")
    return compile_zip(out / CODE_ZIP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True)
    parser.add_argument("out", type=Path, help="the directory to write sam.json and deployment.zip to")
    args = parser.parse_args(argv)
    try:
        sizes = package(args.stage, args.out)
    except PackageError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    print(sizes.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
