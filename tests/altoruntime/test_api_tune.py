"""`alto.tune`: the Python API over `alto run` returns the table, the best config and its adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

import alto
from altosim.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
DATA = str(ROOT / "traces" / "datasets" / "date_iso.jsonl")
SPACE = {"lr": {"distribution": "log_uniform", "low": 1e-3, "high": 3e-2}, "rank": [2, 4], "batch_size": [2],
         "n_configs": 3, "sampler": "quasi-random"}


def test_tune_returns_table_best_and_adapter(tmp_path):
    r = alto.tune(model="tiny", dataset=DATA, search_space=SPACE, early_exit="none", out=tmp_path / "out",
                  samples_per_job=4, eval_every_samples=2, seq_len=128, n_train=8, n_val=4)
    assert len(r.table) == 3 and list(r.table["rank_by_objective"]) == [1, 2, 3]
    assert r.best["config"] == r.table["config"][0] and 1e-3 <= r.best["lr"] <= 3e-2 and r.best["lora_rank"] in (2, 4)
    assert r.best_adapter is not None and (r.best_adapter / "adapter_config.json").is_file()
    assert r.summary.startswith(f"task: best lr={r.best['lr']:.4g}")
    assert (tmp_path / "out" / "tasks" / "task" / "configs.csv").is_file()


@pytest.mark.parametrize("kw,field", [
    ({"search_space": {**SPACE, "n_configs": 0}}, "tasks[0].search_space.n_configs"),
    ({"search_space": {**SPACE, "lr": {"distribution": "log_uniform", "low": -1, "high": 1}}},
     "tasks[0].search_space.lr.low"),
    ({"objective": {"metric": "bleu"}}, "tasks[0].objective.metric"),
    ({"early_exit": "no-such-policy"}, "policy.early_exit"),
])
def test_tune_bad_input_raises_input_error_naming_the_field(tmp_path, kw, field):
    args = dict(model="tiny", dataset=DATA, search_space=SPACE, out=tmp_path / "out")
    with pytest.raises(InputError) as ei:
        alto.tune(**{**args, **kw})
    assert field in str(ei.value) and "\n" not in str(ei.value)
    assert not (tmp_path / "out").exists()
