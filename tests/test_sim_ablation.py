"""experiments/sim_ablation.py: the spread workload is seeded and spreads sizes and arrivals; bad flags exit 2."""

from __future__ import annotations

import sys

import pytest

from altosim.schemas import load_config
from altosim.simulate import load_inputs
from experiments import sim_ablation


def test_spread_workload_is_seeded_and_spread() -> None:
    base = load_inputs(load_config(None)).workload
    a, b = sim_ablation.spread_workload(base), sim_ablation.spread_workload(base)
    assert a.model_dump() == b.model_dump()
    assert len(a.tasks) == 3 * len(base.tasks) and len({t.id for t in a.tasks}) == len(a.tasks)
    arrivals = [t.arrival for t in a.tasks]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0 and arrivals[-1] > 0
    orig = {t.id: t.samples_per_job for t in base.tasks}
    scales = [t.samples_per_job / orig[t.id.rsplit("-", 1)[0]] for t in a.tasks]
    assert all(1 / 3 - 0.01 <= s <= 3 + 0.01 for s in scales) and max(scales) / min(scales) > 3


def test_bad_workload_name_exits_2(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(sys, "argv", ["sim_ablation.py", "--out", str(tmp_path), "--workloads", "nope"])
    with pytest.raises(SystemExit) as e:
        sim_ablation.main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workloads" in err[0]
    assert not any(tmp_path.iterdir())
