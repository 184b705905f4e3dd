"""The Python that pyproject.toml (and the README) promise is one the lock installs on: every locked
package installed here declares a Requires-Python that admits the promised minimum. (The lock once
held numpy 2.4 and pandas 3, which need 3.11, while the project said 3.10: a fresh 3.10 machine could
not run the README's install command.)"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _floor() -> str:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
    assert m, f"requires-python {spec!r}: expected '>=X.Y'"
    return f"{m.group(1)}.{m.group(2)}"


def test_readme_states_the_same_floor():
    assert f"Python >= {_floor()}" in (ROOT / "README.md").read_text()


def test_every_locked_package_installed_here_admits_the_floor():
    locked = {_norm(m.group(1)) for line in (ROOT / "constraints.txt").read_text().splitlines()
              if (m := re.match(r"([A-Za-z0-9_.\-]+)==", line))}
    seen, refused = 0, []
    for dist in distributions():
        name, needs = _norm(dist.metadata["Name"] or ""), dist.metadata.get("Requires-Python")
        if name not in locked or not needs:
            continue
        seen += 1
        if not SpecifierSet(needs).contains(f"{_floor()}.0"):
            refused.append(f"{name} {dist.version} needs Python {needs}")
    if seen == 0:
        pytest.skip("no locked package is installed here (not the README's environment)")
    assert not refused, f"pyproject promises Python >= {_floor()}, but: " + "; ".join(sorted(refused))
