"""Every third-party package the product imports is declared in pyproject.toml.

Walks the imports of every module of the product packages and the simulator (with `ast`: also
imports inside functions and under ``if TYPE_CHECKING``), keeps the top-level names that are
neither the standard library nor this project, maps each to the distributions that provide it
(`importlib.metadata.packages_distributions`) and checks one of them is a declared dependency.
A package that happens to be installed because another one needs it (aiohttp comes with web3)
is not enough: an upgrade of that other package may drop it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["mrv_core", "gateway", "drivers", "cleaning", "ledger_client", "control", "config", "simulator",
            "contracts"]
FIRST_PARTY = {*PACKAGES, "benchmarks", "tests"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extra: str | None = None) -> set[str]:
    """The declared runtime dependencies (``extra``: the names of that optional group)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    names = set()
    for spec in specs:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        assert m, spec
        names.add(_norm(m.group(1)))
    return names


def _optional_imports(tree: ast.AST) -> set[int]:
    """The imports in a ``try`` whose handler catches ImportError: the code runs without them
    (ledger_client/_deps.py imports py_ecc, if web3 brought it, only to undo a side effect)."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for h in node.handlers:
            for t in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]):
                if isinstance(t, ast.Name):
                    caught.add(t.id)
        if caught & {"ImportError", "ModuleNotFoundError"}:
            for stmt in node.body:
                optional.update(id(n) for n in ast.walk(stmt)
                                if isinstance(n, ast.Import | ast.ImportFrom))
    return optional


def imported_top_level_names(packages: list[str]) -> dict[str, list[str]]:
    """Top-level third-party import name -> where it is imported (``path:line``)."""
    found: dict[str, list[str]] = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), rel)
            optional = _optional_imports(tree)
            for node in ast.walk(tree):
                if id(node) in optional:
                    continue
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top in sys.stdlib_module_names or top in FIRST_PARTY:
                        continue
                    found.setdefault(top, []).append(f"{rel}:{node.lineno}")
    return found


def _undeclared(packages: list[str], deps: set[str]) -> dict[str, object]:
    dists = packages_distributions()
    undeclared: dict[str, object] = {}
    for name, where in sorted(imported_top_level_names(packages).items()):
        providers = {_norm(d) for d in dists.get(name, [])}
        if not providers & deps:
            undeclared[name] = (sorted(providers) or ["<not installed>"], where[:3])
    return undeclared


def test_every_package_the_product_imports_is_a_declared_runtime_dependency() -> None:
    product = [p for p in PACKAGES if p != "simulator"]
    undeclared = _undeclared(product, declared())
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_package_the_simulator_imports_is_declared() -> None:
    """The simulator serves the tests and the demo, so the dev extra counts too (trustme,
    which makes the throwaway TLS certificates, is a dev dependency)."""
    undeclared = _undeclared(["simulator"], declared() | declared("dev"))
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_scan_sees_imports_inside_functions_and_maps_them() -> None:
    """The walk is not vacuous: it finds the known dependencies, including ones imported only
    inside a function (pint, in cleaning), and the mapping resolves import names that differ
    from distribution names."""
    names = imported_top_level_names(PACKAGES)
    for expected in ("pymodbus", "aiomqtt", "web3", "numpy", "pydantic", "yaml", "nacl", "pint"):
        assert expected in names, expected
    dists = packages_distributions()
    assert "pyyaml" in {_norm(d) for d in dists["yaml"]}
    assert "pynacl" in {_norm(d) for d in dists["nacl"]}
    assert "pyyaml" in declared()
    assert "py_ecc" not in names  # optional: imported in a try that catches ImportError
    assert "trustme" in imported_top_level_names(["simulator"])
