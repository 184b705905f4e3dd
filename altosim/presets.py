"""Named policy combinations: the paper's component study and the baselines users compare.

A preset overrides the `policy` block of a RunConfig; `alto sweep` and the ablation use them.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # the paper's ablation (batching B, scheduler S, early exit EE)
    "sequential": {"batching": False, "early_exit": "none", "inter_task": "fifo"},
    "batching_only": {"batching": True, "early_exit": "none", "inter_task": "fifo"},
    "scheduler_only": {"batching": False, "early_exit": "none", "inter_task": "cpsat"},
    "early_exit_only": {"batching": False, "early_exit": "alto", "inter_task": "fifo"},
    "batching+scheduler": {"batching": True, "early_exit": "none", "inter_task": "cpsat"},
    "batching+early_exit": {"batching": True, "early_exit": "alto", "inter_task": "fifo"},
    "full": {"batching": True, "early_exit": "alto", "inter_task": "cpsat"},
    # other pruners in the same fused system
    "asha": {"batching": True, "early_exit": "asha", "inter_task": "cpsat"},
    "median": {"batching": True, "early_exit": "median", "inter_task": "cpsat"},
    "sjf": {"batching": True, "early_exit": "alto", "inter_task": "sjf"},
}

ABLATION = ["batching_only", "scheduler_only", "early_exit_only", "batching+scheduler",
            "batching+early_exit", "full"]
PAPER_ABLATION = dict(zip(ABLATION, [1.00, 1.46, 1.80, 1.50, 3.48, 5.22]))


def preset_policy(name: str) -> dict[str, Any]:
    """The `policy` mapping of a preset (a RunConfig.policy update)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return {"batching": p["batching"], "early_exit": {"name": p["early_exit"], "params": {}},
            "inter_task": {"name": p["inter_task"], "params": {}}}
