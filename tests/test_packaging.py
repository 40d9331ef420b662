"""The wheel a plant engineer installs on an edge box holds everything the daemon reads at run
time: the contract artifacts (ABI and bytecode), the emission factors and the example config.

Builds the wheel from a copy of the tree (pip, as a user would), installs it into a directory
of its own, and uses it from outside the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SKIP_DIRS = {".venv", "node_modules", ".git", "build", "dist", ".pytest_cache", ".mypy_cache",
              ".ruff_cache", ".hypothesis", "__pycache__", "benchmarks", "tests", "docs",
              "demo-run"}


def _copy_tree(dst: Path) -> None:
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [
        n for n in names if n in _SKIP_DIRS or n.endswith(".egg-info")])


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and everything the build printed (verbose, so setuptools' warnings show)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    _copy_tree(src)
    out = work / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps",
                        "--disable-pip-version-check", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("*.whl")
    return whl, r.stdout + r.stderr


@pytest.fixture(scope="module")
def wheel(build: tuple[Path, str]) -> Path:
    return build[0]


def test_the_build_prints_no_setuptools_warnings(build: tuple[Path, str]) -> None:
    """The packaging config is complete: setuptools has nothing to warn about (a data folder
    missing from ``packages``, a deprecated key, ...). pip's own notes ("byte-compiling is
    disabled") are not setuptools warnings."""
    log = build[1]
    assert "BuildBackendWarning" not in log, log
    assert "SetuptoolsDeprecationWarning" not in log, log
    assert "absent from the `packages` configuration" not in log, log


def test_wheel_carries_every_contract_artifact_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(p.stem for p in (ROOT / "contracts" / "src").glob("*.sol"))
    artifacts = sorted(p.stem for p in (ROOT / "contracts" / "artifacts").glob("*.json"))
    assert "EmissionsLedger" in artifacts
    for name in artifacts:
        assert f"contracts/artifacts/{name}.json" in names
    for name in sources:
        assert f"contracts/src/{name}.sol" in names
    assert "cleaning/data/factors.json" in names
    assert "config/examples/plant-a.yaml" in names
    # the web view's templates and static files (the vendored chart library too): an
    # installed portal serves its pages with no checkout and no Node
    web = [p for d in ("templates", "static") for p in (ROOT / "portal" / d).rglob("*")
           if p.is_file() and "__pycache__" not in p.parts]
    assert len(web) >= 8
    for p in web:
        assert str(p.relative_to(ROOT)) in names, f"{p.relative_to(ROOT)} is not in the wheel"
    # the shipped artifact is the committed one, byte for byte
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("contracts/artifacts/EmissionsLedger.json")
    assert shipped == (ROOT / "contracts" / "artifacts" / "EmissionsLedger.json").read_bytes()


def test_installed_wheel_works_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--disable-pip-version-check", "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    probe = (
        "import json, sys\n"
        "import contracts, ledger_client._chain as c, ledger_client._admin as a\n"
        "from config import load_config\n"
        "import importlib.resources as ir\n"
        "ex = ir.files('config') / 'examples' / 'plant-a.yaml'\n"
        "cfg = load_config(str(ex))\n"
        "print(json.dumps({'contracts': contracts.__file__, 'chain': c.__file__,\n"
        "  'ledger_abi': len(c.load_artifact('EmissionsLedger')['abi']),\n"
        "  'bytecode': len(c.load_artifact('EmissionsLedger')['bytecode']),\n"
        "  'errors': len(c.all_errors_abi()), 'gateway_id': cfg.gateway.id,\n"
        "  'web': (ir.files('portal') / 'templates' / 'base.html').is_file()\n"
        "         and (ir.files('portal') / 'static' / 'vendor' / 'uPlot.iife.min.js').is_file()}))\n"
    )
    # run from an empty directory with the installed copy first on the path: the checkout
    # (an editable install in this venv) must not be what answers
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["contracts"].startswith(str(target)), got
    assert got["chain"].startswith(str(target)), got
    assert got["ledger_abi"] > 10
    assert got["bytecode"] > 1000
    assert got["errors"] > 0
    assert got["gateway_id"]
    assert got["web"] is True


def test_missing_artifacts_give_a_clear_error(tmp_path: Path) -> None:
    """A broken install (artifacts deleted) says what is missing and how to get it back."""
    target = tmp_path / "site"
    _copy_tree(target)
    shutil.rmtree(target / "contracts" / "artifacts")
    probe = ("import ledger_client._chain as c\n"
             "try:\n    c.load_artifact('EmissionsLedger')\n"
             "except FileNotFoundError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "contract artifact 'EmissionsLedger' not found" in r.stdout
    assert "contracts/build.mjs" in r.stdout
