"""`alto run`'s results a person reads: configs.csv per task, the best config named by its
hyperparameters, labelled loss curves, survivors' adapters."""

from __future__ import annotations

import json

import pandas as pd

from altosim.cli import main
from altosim.policy.types import JobFinished, JobSpec, StepReport, Stop, TaskSpec
from altosim.results import config_table, label


def _config(tmp_path) -> str:
    wl = {"name": "tiny-run", "synthetic": True, "tasks": [{
        "id": "t1", "arrival": 0, "model": "tiny", "dataset": "list_ops", "gpus": 1,
        "search_space": {"lr": {"distribution": "log_uniform", "low": 1e-3, "high": 3e-2}, "rank": [2, 4],
                         "batch_size": [2], "n_configs": 4, "seed": 1},
        "samples_per_job": 12, "eval_every_samples": 4, "seq_len": 160}]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    cfg = {"workload": "wl.json", "cluster": {"gpus": 1},
           "policy": {"early_exit": {"name": "asha"}, "inter_task": {"name": "fifo"}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return str(tmp_path / "cfg.json")


def test_run_writes_configs_csv_plot_and_survivors(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["run", _config(tmp_path), "--backbone", "tiny", "--out", str(out), "--n-train", "12", "--n-val", "4",
               "--n-eval", "0", "--quiet", "--save-adapters", "survivors"])
    assert rc == 0, capsys.readouterr().err
    table = pd.read_csv(out / "tasks" / "t1" / "configs.csv")
    assert len(table) == 4 and list(table["rank_by_objective"]) == [1, 2, 3, 4]
    assert table["best_val_loss"].is_monotonic_increasing
    assert set(table["stop_reason"]) <= {"ran to the end", "pruned"} and "pruned" in set(table["stop_reason"])
    assert (table["lr"].between(1e-3, 3e-2)).all() and set(table["lora_rank"]) <= {2, 4}
    stopped = table[table["stop_reason"] == "pruned"]
    assert (stopped["stopped_at_samples"] < 12).all() and (table["samples_trained"] <= 12).all()
    assert (out / "tasks" / "t1" / "losses.png").stat().st_size > 1000
    top = table.iloc[0]
    printed = capsys.readouterr().out
    assert f"t1: best lr={top['lr']:.4g} r={top['lora_rank']}" in printed and top["config"] in printed
    survivors = sorted(c.rsplit("/", 1)[1] for c in table[table["stop_reason"] == "ran to the end"]["config"])
    assert sorted(p.name for p in (out / "tasks" / "t1" / "adapters").iterdir()) == survivors
    assert all((out / "tasks" / "t1" / "adapters" / s / "adapter_model.safetensors").is_file() for s in survivors)


def test_config_table_ranks_by_objective_and_names_stops():
    jobs = tuple(JobSpec(f"t/j{i}", "t", lr=1e-3 * (i + 1), rank=4, batch_size=2) for i in range(3))
    task = TaskSpec("t", 0.0, "m", "d", 1, jobs, samples_per_job=8)
    trace = [StepReport(0, "t", "t/j0", 1, 4, 2.0, 1.5), StepReport(0, "t", "t/j1", 1, 4, 2.0, 1.2),
             StepReport(0, "t", "t/j2", 1, 4, 2.0, 1.9), Stop("t", "t/j2", "pruned"),
             StepReport(1, "t", "t/j0", 2, 8, 1.0, 1.0), JobFinished(1, "t", "t/j0"),
             StepReport(1, "t", "t/j1", 2, 8, 1.0, 1.3), JobFinished(1, "t", "t/j1")]
    df = config_table(task, trace)
    assert list(df["config"]) == ["t/j0", "t/j1", "t/j2"] and list(df["best_val_loss"]) == [1.0, 1.2, 1.9]
    assert list(df["stop_reason"]) == ["ran to the end", "ran to the end", "pruned"]
    assert list(df["stopped_at_samples"]) == [8, 8, 4]
    by_metric = config_table(task, trace, {"t/j0": 0.2, "t/j1": 0.7}, minimize=False)
    assert list(by_metric["config"][:2]) == ["t/j1", "t/j0"] and pd.isna(by_metric["rank_by_objective"][2])
    assert label(jobs[1]) == "lr=0.002 r=4 a=8 b=2"


def _objective_config(tmp_path, objective: dict) -> str:
    path = _config(tmp_path)
    wl = json.loads((tmp_path / "wl.json").read_text())
    rows = [{"prompt": f"Reverse {w}:", "completion": f" {w[::-1]}"} for w in (f"w{i:03d}" for i in range(120))]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # short answers: short generations
    wl["tasks"][0].update(objective=objective, samples_per_job=8, dataset="data.jsonl")
    wl["tasks"][0]["search_space"]["n_configs"] = 3
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    return path


def test_objective_metric_scores_every_config_and_picks_the_best(tmp_path, capsys):
    out = tmp_path / "out"
    # an import path to a per-example function: the same scorer exact_match uses for list_ops
    cfg = _objective_config(tmp_path, {"metric": "altoruntime.data.metrics:text_exact_match", "direction": "maximize"})
    rc = main(["run", cfg, "--backbone", "tiny", "--out", str(out), "--n-train", "8", "--n-val", "4", "--n-eval", "1",
               "--quiet"])
    assert rc == 0, capsys.readouterr().err
    table = pd.read_csv(out / "tasks" / "t1" / "configs.csv")
    scored = table.dropna(subset=["metric"])
    assert len(scored) == 3 and scored["metric"].between(0, 1).all()  # every config that trained
    assert list(table["metric"]) == sorted(table["metric"], reverse=True)  # ranked by it, best first
    row = next(iter(pd.read_csv(out / "tasks.csv").itertuples()))
    assert row.best_job == table["config"][0] and row.objective == "altoruntime.data.metrics:text_exact_match"
    assert "altoruntime.data.metrics:text_exact_match" in capsys.readouterr().out


def test_bad_objective_is_one_line_exit_2(tmp_path, capsys):
    for objective, n_eval, problem in [({"metric": "no_such_module_x:f"}, "2", "cannot import"),
                                       ({"metric": "exact_match"}, "0", "--n-eval"),
                                       ({"metric": "bleu"}, "2", "import path"),
                                       ({"metric": "val_loss", "direction": "up"}, "2", "minimize")]:
        tmp = tmp_path / str(len(list(tmp_path.iterdir())))
        tmp.mkdir()
        rc = main(["run", _objective_config(tmp, objective), "--backbone", "tiny", "--out", str(tmp / "out"),
                   "--n-train", "8", "--n-val", "4", "--n-eval", n_eval, "--quiet"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "tasks[0].objective" in err and problem in err, err
        assert not (tmp / "out" / "tasks").exists()
