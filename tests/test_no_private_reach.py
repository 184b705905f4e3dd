"""No module reaches into another module's underscore names: an attribute `_name` (not a dunder)
that the project defines (a method, a `self._x` field, a class or module-level name) is read or
written only through `self`, `cls` or `super()`, or inside a module that defines it. A class
that needs another's state asks through a public method, so internals can change freely."""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("altoruntime", "altokernels", "altosim", "experiments")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def definitions(tree: ast.Module) -> set[str]:
    """Underscore names this module defines: module and class level names, `self._x` fields."""
    out: set[str] = set()
    scopes = [tree.body] + [n.body for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for body in scopes:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(node.name)
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
            out |= {t.id for t in targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_own(node.value):
            out.add(node.attr)
    return {n for n in out if _private(n)}


def _is_own(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def reaches(sources: dict[str, str]) -> list[str]:
    """'module:line: expr' for every access to a project-defined underscore name that is neither
    through self/cls/super() nor in a module defining that name."""
    trees = {m: ast.parse(src) for m, src in sources.items()}
    defined: dict[str, set[str]] = defaultdict(set)
    for m, tree in trees.items():
        for name in definitions(tree):
            defined[name].add(m)
    out = []
    for m, tree in trees.items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in defined
                    and m not in defined[node.attr] and not _is_own(node.value)):
                out.append(f"{m}:{node.lineno}: {ast.unparse(node)}")
    return sorted(out)


def test_the_check_catches_a_reach_and_allows_own_access():
    trainer = "class T:\n    def _job(self, j):\n        return self._jobs[j]\n    def __init__(self):\n        self._jobs = {}\n"
    fused = "def losses(t):\n    return t._job('a')\n"
    same = "class R:\n    _inside = 0.0\n\ndef reset(r):\n    r._inside = 0.0\n"
    other = "import torch\n\ndef f(x, r):\n    torch._foreach_zero_(x)\n    r._inside = 1.0\n    super()._job(1)\n"
    got = reaches({"trainer": trainer, "fused": fused, "same": same, "other": other})
    assert got == ["fused:2: t._job", "other:5: r._inside"]


@functools.cache
def _project_reaches() -> tuple[str, ...]:
    files = sorted(f for p in PACKAGES for f in (ROOT / p).rglob("*.py"))
    return tuple(reaches({str(f.relative_to(ROOT)): f.read_text() for f in files}))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_reaches_into_another_modules_underscore_names(package):
    found = [r for r in _project_reaches() if r.startswith(f"{package}/")]
    assert not found, "reaches into another module's underscore names:\n" + "\n".join(found)
