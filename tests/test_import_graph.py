"""The project's modules import one another without cycles, lazy imports included, and the
light entry points stay light.

The graph is read from the source with `ast`: an edge for every import that can run, at module
level or inside a function (an import moved into a function to dodge a cycle still counts), plus
the package `__init__`s it runs on the way (`import a.b.c` from outside `a.b` runs `a.b`'s
`__init__` first). Left out: imports under `if TYPE_CHECKING:` and `if __name__ == "__main__":`,
which never run when a module is imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("altosim", "altoruntime", "altokernels", "experiments")


def project_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    mods = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = f
    return mods


def _never_runs_on_import(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:` / `if __name__ == "__main__":`."""
    if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
        return True
    if isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING":
        return True
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names each import statement that can run asks for (`from a import b` -> `a.b`,
    resolved against the modules later)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _never_runs_on_import(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            names.extend(f"{src}.{a.name}" for a in node.names)
            names.append(src)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules importing it runs (see the module docstring)."""
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps: set[str] = set()
        own = {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 2)}  # itself and its packages
        for name in _imported_names(ast.parse(path.read_text(), str(path)), mod, path.name == "__init__.py"):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in mods and prefix not in own:
                    deps.add(prefix)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as e:
        return list(e.args[1])
    return None


def test_no_import_cycles():
    graph = import_graph(project_modules())
    assert len(graph) > 50 and "altosim.policy.controller" in graph["altosim.sim.engine"]  # it reads the imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_lazy_and_package_imports(tmp_path):
    """The check can fail: a cycle closed only by an import inside a function, or only through a
    package's __init__, is found; TYPE_CHECKING and __main__ imports are not edges."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.b import B\n")
    (pkg / "sub" / "b.py").write_text("B = 1\n")
    (pkg / "a.py").write_text("from pkg.sub.b import B\n")
    (pkg / "c.py").write_text("def f():\n    import pkg.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.e\n"
                              "if __name__ == '__main__':\n    import pkg.e\n")
    (pkg / "e.py").write_text("import pkg.d\n")
    mods = project_modules(tmp_path, ("pkg",))
    graph = import_graph(mods)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == set() and find_cycle(graph) is None
    (pkg / "sub" / "b.py").write_text("def g():\n    from pkg.c import f\n")  # b -> c -> a -> sub -> b
    cycle = find_cycle(import_graph(mods))
    assert cycle is not None and {"pkg.a", "pkg.c", "pkg.sub.b"} <= set(cycle)


@pytest.mark.parametrize("module, heavy", [
    ("altosim.build", ("simpy", "pandas", "matplotlib", "torch")),  # alto run builds its Controller with it
    ("altosim.cost", ("simpy", "pandas", "matplotlib", "torch")),
    ("altosim.policy.controller", ("simpy", "pandas", "matplotlib", "torch", "yaml", "altosim.schemas")),
    ("altosim.policy.task_group", ("simpy", "pandas", "matplotlib", "torch", "yaml", "altosim.schemas", "ortools")),
])
def test_light_modules_stay_light(module, heavy):
    code = (f"import sys, {module}; loaded = [m for m in {heavy!r} if m in sys.modules]; "
            "assert not loaded, f'{loaded} loaded'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
