"""CI must run exactly the README's set-up commands (so a green CI means the README works)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_has_two_setup_commands_and_ci_runs_them():
    cmds = readme_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("alto simulate") and "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, run = cmds[0].partition(" && ")
    assert install.replace("pip install", "python -m pip install -q") in ci
    assert run in ci
    install2, _, tests = cmds[1].partition(" && ")
    assert f"{install2.replace('pip install', 'python -m pip install -q')} && {tests}" in ci
