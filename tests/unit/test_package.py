"""The packaging step that compiles the code zip (infra/package.py): stale bytecode goes, every module
gets bytecode the runtime uses without checking timestamps, and a build on another Python than the
functions' runtime is refused. ``make test`` runs the whole step on the real package (``cfn-lint``)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import aws_lambda_powertools
import botocore
import botocore.session
import pytest
from botocore.loaders import Loader

from infra.package import (
    AWS_SERVICES,
    UNREACHED_IMPORTS,
    UNUSED_PACKAGES,
    PackageError,
    check_runtime,
    compile_zip,
    trim_endpoints,
)

FLAGS_UNCHECKED_HASH = 0b01  # PEP 552: hash-based, check_source off


def _zip(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


def test_the_zip_is_rewritten_with_fresh_unchecked_bytecode_and_no_stale_caches(tmp_path: Path) -> None:
    code = tmp_path / "deployment.zip"
    stale = f"pkg/__pycache__/old.{sys.implementation.cache_tag}-pytest-9.2.0.pyc"
    _zip(
        code,
        {
            "app.py": "import pkg.mod\nVALUE = pkg.mod.VALUE\n",
            "pkg/__init__.py": "",
            "pkg/mod.py": "VALUE = 7\n",
            stale: "junk",
        },
    )

    sizes = compile_zip(code)

    with zipfile.ZipFile(code) as z:
        names = set(z.namelist())
        tag = sys.implementation.cache_tag
        for module in ("app", "pkg/__init__", "pkg/mod"):
            folder, _, stem = module.rpartition("/")
            pyc = f"{folder + '/' if folder else ''}__pycache__/{stem}.{tag}.pyc"
            assert pyc in names
            flags = int.from_bytes(z.read(pyc)[4:8], "little")
            assert flags == FLAGS_UNCHECKED_HASH, pyc
            assert z.read(pyc)[:4] == importlib.util.MAGIC_NUMBER
        assert stale not in names
        z.extractall(tmp_path / "tree")
    assert sizes.zipped == code.stat().st_size and sizes.unzipped > 0
    # Imported as Lambda would: from the code alone, writing no bytecode, and the compiled files are used.
    probe = "import sys; sys.path.insert(0, '.'); import app; print(app.VALUE, app.__cached__ is not None)"
    out = subprocess.run(
        [sys.executable, "-S", "-B", "-c", probe], cwd=tmp_path / "tree", capture_output=True, text=True
    )
    assert out.stdout.split() == ["7", "True"], out.stderr


def test_a_module_that_does_not_compile_fails_the_build(tmp_path: Path) -> None:
    code = tmp_path / "deployment.zip"
    _zip(code, {"app.py": "def broken(:\n"})
    with pytest.raises(PackageError, match="does not compile"):
        compile_zip(code)


def test_the_build_python_must_be_the_runtime(tmp_path: Path) -> None:
    sam = tmp_path / "sam.json"
    functions = {
        f"F{n}": {"Type": "AWS::Serverless::Function", "Properties": {"Runtime": "python3.11"}} for n in range(2)
    }
    sam.write_text(json.dumps({"Resources": {**functions, "T": {"Type": "AWS::DynamoDB::Table"}}}))
    check_runtime(sam, (3, 11))
    with pytest.raises(PackageError, match=r"python3\.12"):
        check_runtime(sam, (3, 12))


def _built(tmp_path: Path, files: list[str]) -> set[str]:
    """The names left in a code zip of these (empty) files once the build has rewritten it."""
    code = tmp_path / "deployment.zip"
    _zip(code, {name: "{}" if name.endswith(".json") else "" for name in [*files, "app.py"]})
    compile_zip(code)
    with zipfile.ZipFile(code) as z:
        return set(z.namelist())


def test_only_the_service_models_the_functions_use_are_kept(tmp_path: Path) -> None:
    kept = ["botocore/data/endpoints.json", "botocore/data/dynamodb/2012-08-10/service-2.json"]
    names = _built(tmp_path, [*kept, "botocore/data/ec2/2016-11-15/service-2.json"])
    assert set(kept) <= names
    assert not any(name.startswith("botocore/data/ec2/") for name in names)


def test_the_unused_parts_of_powertools_are_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    kept = ["aws_lambda_powertools/__init__.py", "aws_lambda_powertools/utilities/parameters/__init__.py"]
    dropped = ["aws_lambda_powertools/utilities/idempotency/__init__.py", "aws_lambda_powertools/event_handler/api.py"]
    names = _built(tmp_path, kept + dropped)
    assert set(kept) <= names
    assert not any(n.startswith(tuple(d.rpartition("/")[0] for d in dropped)) for n in names)


def test_every_part_of_powertools_the_build_drops_exists() -> None:
    # A misspelt or renamed entry would drop nothing, silently.
    installed = Path(aws_lambda_powertools.__file__).parent.parent
    assert [p for p in UNUSED_PACKAGES if not (installed / p / "__init__.py").is_file()] == []


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` names in an import statement, at any depth (function-level ones too),
    relative imports resolved against ``module``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_nothing_the_package_keeps_imports_a_part_of_powertools_it_drops() -> None:
    # A dropped module the deployed code imports would fail only in AWS, and only on the path that
    # imports it; so every import statement of the app and of the kept powertools counts, reached or not.
    dropped = [p.replace("/", ".") for p in UNUSED_PACKAGES]

    def dropped_package(name: str) -> str | None:
        return next((d for d in dropped if name == d or name.startswith(d + ".")), None)

    def module_of(path: Path, top: Path) -> str:
        return ".".join(path.relative_to(top).with_suffix("").parts).removesuffix(".__init__")

    root = Path(__file__).resolve().parents[2]
    powertools = Path(aws_lambda_powertools.__file__).parent
    sources = [(p, module_of(p, root)) for p in [root / "app.py", *(root / "chalicelib").rglob("*.py")]]
    kept = [(p, module_of(p, powertools.parent)) for p in powertools.rglob("*.py")]
    sources += [(p, m) for p, m in kept if dropped_package(m) is None]
    assert len(sources) > 150, "the walk no longer finds powertools' modules"
    found = {
        (module, package)
        for path, module in sources
        for name in _imports(path, module)
        if (package := dropped_package(name)) is not None
    }
    assert found == UNREACHED_IMPORTS


def test_every_client_the_code_makes_is_for_a_service_the_package_keeps() -> None:
    # A client for a service whose model the build dropped works in tests and fails only when deployed.
    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"""\bclient\(\s*["']([a-z0-9-]+)["']""")
    sources = [root / "app.py", *(root / "chalicelib").rglob("*.py")]
    used = {name for path in sources for name in pattern.findall(path.read_text(encoding="utf-8"))}
    assert used, "the pattern no longer finds the code's clients"
    assert used | {"dynamodb"} <= AWS_SERVICES, sorted(used - AWS_SERVICES)


def test_endpoints_keep_only_the_kept_services_and_resolve_as_before(tmp_path: Path) -> None:
    """The trimmed ``endpoints.json`` is a fraction of the file; every kept service is offered in the same
    regions, and its client gets the endpoint and region it gets from botocore's own data, in every kind
    of partition."""
    shipped = Path(botocore.__file__).parent / "data"
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(shipped / "endpoints.json", data / "endpoints.json")
    for name in ("partitions.json", "sdk-default-configuration.json", "_retry.json"):
        shutil.copy(shipped / name, data / name)
    for service in AWS_SERVICES:
        shutil.copytree(shipped / service, data / service)

    trim_endpoints(data)

    trimmed = json.loads((data / "endpoints.json").read_text(encoding="utf-8"))
    assert (data / "endpoints.json").stat().st_size < (shipped / "endpoints.json").stat().st_size / 10
    kept = {name for partition in trimmed["partitions"] for name in partition["services"]}
    assert kept == {"dynamodb", "lambda", "sns", "ssm", "states", "sts"}

    def client_facts(session: botocore.session.Session, service: str, region: str) -> tuple[str, str]:
        client = session.create_client(service, region_name=region, aws_access_key_id="x", aws_secret_access_key="y")
        return client.meta.endpoint_url, client.meta.region_name

    ours = botocore.session.Session()
    ours.register_component("data_loader", Loader(extra_search_paths=[str(data)], include_default_search_paths=False))
    theirs = botocore.session.Session()
    for service in sorted(AWS_SERVICES):
        # What botocore reads from this file itself: the regions a service is offered in.
        for partition in ("aws", "aws-cn", "aws-us-gov"):
            regions = ours.get_available_regions(service, partition)
            assert regions == theirs.get_available_regions(service, partition), (service, partition)
            assert regions or partition != "aws", service
        for region in ("ap-south-1", "ap-south-2", "us-east-1", "cn-north-1", "us-gov-west-1", "eu-isoe-west-1"):
            assert client_facts(ours, service, region) == client_facts(theirs, service, region), (service, region)
