"""The layout's rules (ARCHITECTURE.md), checked on the real import graph.

`lint-imports` (import-linter, configured in pyproject.toml) checks which layer may import
which; these tests add what its contracts cannot say: that the contracts cover every module,
that no file takes part in an import cycle, and that modules stay small.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import tomllib
from fixtures import ROOT

PACKAGES = ("llmnas_dist", "db", "workers", "cluster")
# Modules allowed past MAX_LINES, each with the reason it stays one module.
MAX_LINES = 600
LONG_MODULES: dict[str, str] = {}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False)


def contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_no_ray_contract_covers_every_module_outside_cli(graph: grimp.ImportGraph) -> None:
    """A new module of llmnas_dist is under the rule without anyone remembering to add it."""
    covered = set(contracts()[0]["source_modules"])
    top = {m.split(".")[1] for m in graph.modules if m.startswith("llmnas_dist.")}
    missing = {f"llmnas_dist.{m}" for m in top} - covered - {"llmnas_dist.cli"}
    assert missing == set()


def test_no_file_level_import_cycle(graph: grimp.ImportGraph) -> None:
    """Imports inside functions count: a lazy import is still a dependency."""
    sorter = graphlib.TopologicalSorter(
        {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    )
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_a_cycle_is_found_when_there_is_one() -> None:
    """The cycle check itself: two modules that import each other fail it."""
    sorter = graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}})
    with pytest.raises(graphlib.CycleError):
        sorter.prepare()


def test_modules_stay_small() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
        and str(path.relative_to(ROOT)) not in LONG_MODULES
    }
    assert long == {}


def imported_modules(source: str) -> list[str]:
    """Every module an import statement of `source` names (inside functions too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


def is_test_module(name: str) -> bool:
    return name.split(".")[-1].startswith(("test_", "conftest"))


def test_no_test_module_imports_another() -> None:
    """Shared programs and helpers live in tests/fixtures.py and per-stage helper modules."""
    assert is_test_module(imported_modules("def f():\n    from test_x import y\n")[0])
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "tests").rglob("*.py")
        for name in imported_modules(path.read_text())
        if is_test_module(name)
    ]
    assert offenders == []
