"""alto's Python API: tune LoRA hyperparameters on your model and data, or simulate a cluster.

    import alto

    result = alto.tune(
        model="tiny",                                   # or a local HF model directory / .gguf
        dataset="traces/datasets/date_iso.jsonl",       # prompt / completion rows
        search_space={"lr": {"distribution": "log_uniform", "low": 1e-4, "high": 1e-2},
                      "rank": [4, 8], "batch_size": [2], "n_configs": 8},
        early_exit="alto",                              # or {"name": "asha", "params": {...}}
        gpus=1,
        out="runs/tune",
    )
    result.table        # every config: hyperparameters, samples, stop reason, best val loss, rank
    result.best         # the best config's hyperparameters
    result.best_adapter # its PEFT adapter folder

`alto run` and `alto simulate` call the same functions (`altoruntime.run.run_config`,
`altosim.simulate.simulate_to_folder`).
"""

from alto.api import SimulateResult, TuneResult, simulate, tune

__all__ = ["SimulateResult", "TuneResult", "simulate", "tune"]
