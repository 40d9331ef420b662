"""The one-way layers (docs/architecture.md), checked by import-linter (``[tool.importlinter]`` in
pyproject.toml; ``lint-imports`` in scripts/test.sh) and by an `ast` walk over every import:

* the layers hold: gateway > config > control > drivers > cleaning | ledger_client > mrv_core
  (simulator and benchmarks above them all), and the check fails on an import that breaks them;
* no package imports another package's private module (``_name``);
* each package's ``__init__`` declares its public names (``__all__``), and every import of
  another package names one of them.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ["mrv_core", "cleaning", "ledger_client", "drivers", "control", "config", "gateway",
            "simulator", "benchmarks"]


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_layer_contracts_are_kept() -> None:
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


@pytest.fixture(scope="module")
def copy_of_the_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    for p in PACKAGES:
        shutil.copytree(ROOT / p, dst / p, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _with_line(tree: Path, module: str, line: str) -> str:
    """Append ``line`` to ``module`` of the copy; the original text, to put back."""
    f = tree / module
    before = f.read_text()
    f.write_text(before + "\n" + line + "\n")
    return before


@pytest.mark.parametrize(("module", "line", "contract", "expected"), [
    # an upward import: the bottom layer importing the composition root
    ("mrv_core/_records.py", "import gateway._daemon  # noqa", "One-way layers",
     "mrv_core._records -> gateway._daemon"),
    # a driver importing the config package (its models are the driver's own now)
    ("drivers/modbus/_io.py", "from config import Config  # noqa", "One-way layers",
     "drivers.modbus._io -> config"),
    # two independent siblings: cleaning must not import ledger_client
    ("cleaning/_stream.py", "import ledger_client  # noqa", "One-way layers",
     "cleaning._stream -> ledger_client"),
    # another package's private module
    ("control/_codec.py", "from ledger_client._format import keccak256  # noqa",
     "A private module", "control._codec -> ledger_client._format"),
])
def test_the_layer_check_fails_on_a_bad_import(copy_of_the_tree: Path, module: str, line: str,
                                               contract: str, expected: str) -> None:
    before = _with_line(copy_of_the_tree, module, line)
    try:
        out = _lint_imports(copy_of_the_tree)
    finally:
        (copy_of_the_tree / module).write_text(before)
    assert out.returncode != 0, out.stdout[-4000:]
    broken = out.stdout.split("Broken contracts", 1)[1]
    assert contract in broken and expected in broken, broken[-4000:]
    assert _lint_imports(copy_of_the_tree).returncode == 0  # and the copy is whole again


# -- the public names ---------------------------------------------------------------------------


def _public_names(package: str) -> set[str] | None:
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                for t in node.targets):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return None


def _cross_package_imports(root: Path = ROOT) -> list[tuple[str, int, str, list[str]]]:
    """(file, line, imported module, names) of every import of another package of ours."""
    out = []
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    mods = [(node.module, [a.name for a in node.names])]
                elif isinstance(node, ast.Import):
                    mods = [(a.name, []) for a in node.names]
                else:
                    continue
                for mod, names in mods:
                    top = mod.split(".")[0]
                    if top in PACKAGES and top != pkg:
                        out.append((str(f.relative_to(root)), node.lineno, mod, names))
    return out


def test_every_package_declares_its_public_names() -> None:
    missing = [p for p in PACKAGES if p != "benchmarks" and _public_names(p) is None]
    assert missing == []


def test_imports_of_another_package_name_its_public_names_only() -> None:
    imports = _cross_package_imports()
    assert len(imports) > 50  # the walk sees the imports (inside functions too)
    bad = []
    for where, line, mod, names in imports:
        parts = mod.split(".")
        if any(p.startswith("_") for p in parts[1:]):
            bad.append(f"{where}:{line}: {mod} is private")
            continue
        package = "/".join(parts)
        public = _public_names(package) if (ROOT / package / "__init__.py").exists() else None
        if public is None:
            continue  # a plain module (e.g. benchmarks.run), not a package with an __all__
        bad += [f"{where}:{line}: {mod}.{n} is not in its __all__" for n in names
                if n not in public and not (ROOT / package / f"{n}.py").exists()
                and not (ROOT / package / n / "__init__.py").exists()]
    assert bad == []


def test_the_ast_check_sees_a_private_import(tmp_path: Path) -> None:
    """The walk above is not vacuous: a synthetic import of a private module is reported."""
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "_probe.py").write_text(
        "import os\nfrom gateway._cli import main\n\n\ndef f() -> None:\n"
        "    from ledger_client._format import keccak256  # noqa: F401\n")
    found = _cross_package_imports(tmp_path)
    assert found == [("gateway/_probe.py", 6, "ledger_client._format", ["keccak256"])]
