"""The packaging step that compiles the code zip (infra/package.py): stale bytecode goes, every module
gets bytecode the runtime uses without checking timestamps, and a build on another Python than the
functions' runtime is refused. ``make test`` runs the whole step on the real package (``cfn-lint``)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infra.package import AWS_SERVICES, PackageError, check_runtime, compile_zip

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


def test_only_the_service_models_the_functions_use_are_kept(tmp_path: Path) -> None:
    code = tmp_path / "deployment.zip"
    _zip(
        code,
        {
            "botocore/data/endpoints.json": "{}",
            "botocore/data/dynamodb/2012-08-10/service-2.json": "{}",
            "botocore/data/ec2/2016-11-15/service-2.json": "{}",
            "app.py": "",
        },
    )
    compile_zip(code)
    with zipfile.ZipFile(code) as z:
        names = set(z.namelist())
    assert "botocore/data/endpoints.json" in names
    assert "botocore/data/dynamodb/2012-08-10/service-2.json" in names
    assert not any(name.startswith("botocore/data/ec2/") for name in names)


def test_every_client_the_code_makes_is_for_a_service_the_package_keeps() -> None:
    # A client for a service whose model the build dropped works in tests and fails only when deployed.
    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"""\bclient\(\s*["']([a-z0-9-]+)["']""")
    sources = [root / "app.py", *(root / "chalicelib").rglob("*.py")]
    used = {name for path in sources for name in pattern.findall(path.read_text(encoding="utf-8"))}
    assert used, "the pattern no longer finds the code's clients"
    assert used | {"dynamodb"} <= AWS_SERVICES, sorted(used - AWS_SERVICES)
