"""The embedded default workload: the paper's scheduling study (11 tasks, 8 GPUs, 4 model sizes).

Models and GPU demands: Llama-3.2-1B (1), Llama-3.2-3B (1), Llama-3.1-8B (2), Qwen2.5-14B (4).
Every task tunes the paper's one-GPU grid (60 configs: lr {1e-5, 5e-5, 2e-4, 3e-4, 5e-4} x rank
{16, 32, 64} x per-adapter batch {1, 2, 4, 8}, alpha = 2 rank) and all arrive at t = 0, as in
the paper's one batch of 11 tasks. Sample budgets are sized so the full sweep of a task takes
`TARGET_HOURS` with batching under a crude estimate (6 * params * tokens FLOPs per sample at 40%
of an H100's 989 TFLOP/s bf16 peak per GPU); the simulator's cost model decides the real times.
Loss curves: a task replays the REAL trace measured by alto's runtime (SmolLM2-135M on one H100,
`traces/real/`) of the runtime dataset that stands in for its dataset (`REAL_STANDIN`: gsm8k ->
arithmetic word problems, openthoughts3 -> list operations, tulu3 / ultrafeedback -> Python
documentation) when that trace is committed; otherwise a SYNTHETIC set (`altosim.synthetic`). Curves
are indexed by progress fraction, so a 384-sample real curve serves a task of any budget; the
cost model, not the trace, decides times.

Regenerate the committed files under traces/ with `python -m altosim.workloads`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from pathlib import Path

from altosim.argparser import OneLineParser
from altosim.schemas import LossTraceSet, SearchSpace, TaskRecord, WorkloadTrace
from altosim.synthetic import SyntheticSpec, generate_loss_set, model_size_b
from altosim.errors import InputError
from altosim.traces_io import load_trace_dir, write_loss_traces, write_workload

CREATED = "2026-11-23"  # date of this generator version (kept fixed so regeneration is byte-equal)
WORKLOAD_FILE = "default_workload.json"
LOSS_DIR = "loss"
REAL_DIR = "real"  # measured LossTrace sets (not generated; see traces/real/README.md)
REAL_MODEL = "SmolLM2-135M"
# the runtime dataset (altoruntime/data) whose real trace stands in for a paper task's dataset
REAL_STANDIN = {"gsm8k": "arithmetic", "openthoughts3": "list_ops", "tulu3": "python_docs",
                "ultrafeedback": "python_docs"}
GPUS = {"Llama-3.2-1B": 1, "Llama-3.2-3B": 1, "Llama-3.1-8B": 2, "Qwen2.5-14B": 4}
LRS = (1e-5, 5e-5, 2e-4, 3e-4, 5e-4)
RANKS = (16, 32, 64)
BATCHES = (1, 2, 4, 8)
# (task id, model, dataset, sequence length, target hours of the full 60-config sweep)
PAPER_TASKS = [
    ("t01", "Llama-3.2-1B", "gsm8k", 512, 0.75),
    ("t02", "Llama-3.2-1B", "tulu3", 1024, 1.5),
    ("t03", "Llama-3.2-1B", "openthoughts3", 2048, 2.0),
    ("t04", "Llama-3.2-3B", "gsm8k", 512, 1.25),
    ("t05", "Llama-3.2-3B", "tulu3", 1024, 2.5),
    ("t06", "Llama-3.2-3B", "openthoughts3", 2048, 3.0),
    ("t07", "Llama-3.1-8B", "gsm8k", 512, 1.5),
    ("t08", "Llama-3.1-8B", "tulu3", 1024, 2.75),
    ("t09", "Llama-3.1-8B", "ultrafeedback", 1024, 2.5),
    ("t10", "Qwen2.5-14B", "gsm8k", 512, 2.0),
    ("t11", "Qwen2.5-14B", "tulu3", 1024, 3.0),
]


def samples_per_job(model: str, seq_len: int, gpus: int, hours: float, configs: int = 60) -> int:
    """Samples per job so that `configs` jobs take `hours` (crude estimate, see module doc)."""
    samples_per_s = gpus * 0.4 * 989e12 / (6 * model_size_b(model) * 1e9 * seq_len)
    per_job = hours * 3600 * samples_per_s / configs
    return int(math.ceil(per_job / 24) * 24)  # 3 epochs of a multiple of 8


def paper_specs() -> list[SyntheticSpec]:
    return [SyntheticSpec(model=m, dataset=d, samples_per_job=samples_per_job(m, L, GPUS[m], h),
                          lrs=LRS, ranks=RANKS, batch_sizes=BATCHES, seed=i)
            for i, (_, m, d, L, h) in enumerate(PAPER_TASKS)]


def real_set_name(dataset: str) -> str:
    return f"{REAL_MODEL}__{REAL_STANDIN[dataset]}"


def paper_workload(real: Collection[str] = ()) -> WorkloadTrace:
    """The 11 tasks; a task whose stand-in real trace is in `real` replays it, else its synthetic set."""
    space = SearchSpace(lr=list(LRS), rank=list(RANKS), batch_size=list(BATCHES))
    tasks = [
        TaskRecord(id=tid, arrival=0.0, model=m, dataset=d, gpus=GPUS[m], search_space=space,
                   samples_per_job=spec.samples_per_job, seq_len=L,
                   loss_trace=real_set_name(d) if real_set_name(d) in real else spec.set_name)
        for (tid, m, d, L, _), spec in zip(PAPER_TASKS, paper_specs())
    ]
    used = sorted({t.loss_trace for t in tasks if t.loss_trace in real})
    curves = (f"loss curves: real ({', '.join(used)}) where measured, synthetic elsewhere" if used
              else "loss curves are synthetic")
    return WorkloadTrace(
        name="paper-11-tasks", synthetic=True,
        description="11 heterogeneous LoRA tuning tasks on an 8-GPU cluster (4 model sizes needing "
        "1/1/2/4 GPUs, 60-config grids, all arriving at t=0), modeled on the ALTO paper's "
        f"scheduling study; {curves}",
        source="altosim.workloads.paper_workload", tasks=tasks,
        meta={"created": CREATED, "target_hours": {t[0]: t[4] for t in PAPER_TASKS},
              "sizing": "6*params*tokens FLOPs/sample at 40% of 989 TFLOP/s per GPU",
              "real_loss_traces": used},
    )


def paper_loss_sets() -> dict[str, LossTraceSet]:
    sets = [generate_loss_set(spec, created=CREATED) for spec in paper_specs()]
    return {s.name: s for s in sets}


def real_sets_in(root: str | Path) -> set[str]:
    """Names of the measured LossTrace sets under `root`/real (empty when there is none)."""
    d = Path(root) / REAL_DIR
    return {p.name.removesuffix(".gz").removesuffix(".csv") for p in d.glob("*.csv*")} if d.is_dir() else set()


def write_default_traces(root: str | Path) -> None:
    """Write the workload and its synthetic loss sets under `root` (what traces/ holds); tasks
    replay the real sets already under `root`/real."""
    root = Path(root)
    for name, ts in paper_loss_sets().items():
        write_loss_traces(ts, root / LOSS_DIR / f"{name}.csv.gz")
    write_workload(paper_workload(real_sets_in(root)), root / WORKLOAD_FILE)  # last: marks completion


def repo_traces_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "traces"


def _cache_dir() -> Path:
    base = os.environ.get("ALTO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "alto")
    return Path(base) / f"traces-{CREATED}"


def _default_root() -> Path:
    """traces/ of the repo when present, else a cache folder generated on first use."""
    repo = repo_traces_dir()
    if (repo / WORKLOAD_FILE).exists() and (repo / LOSS_DIR).is_dir():
        return repo
    cache = _cache_dir()
    if not (cache / WORKLOAD_FILE).exists():
        write_default_traces(cache)
    return cache


def default_workload_path() -> Path:
    return _default_root() / WORKLOAD_FILE


def default_loss_dir() -> Path:
    return _default_root() / LOSS_DIR


def default_loss_dirs() -> list[Path]:
    """The synthetic sets' folder, and the real sets' folder where there is one."""
    root = _default_root()
    return [root / LOSS_DIR] + ([root / REAL_DIR] if (root / REAL_DIR).is_dir() else [])


def load_default_loss_sets() -> dict[str, LossTraceSet]:
    """Every default LossTrace set, synthetic and real, by name (a name defined twice is an error)."""
    sets: dict[str, LossTraceSet] = {}
    for d in default_loss_dirs():
        for name, ts in load_trace_dir(d).items():
            if name in sets:
                raise InputError(str(d), "name", f"loss-trace set {name!r} defined twice in the default traces")
            sets[name] = ts
    return sets


def main(argv: list[str] | None = None) -> None:
    ap = OneLineParser(prog="python -m altosim.workloads",
                       description="Regenerate the embedded default workload and its synthetic traces.")
    ap.add_argument("--out", default=str(repo_traces_dir()), help="folder to write (default: traces/)")
    args = ap.parse_args(argv)
    write_default_traces(args.out)
    print(f"wrote {args.out}/{WORKLOAD_FILE} and {len(PAPER_TASKS)} loss-trace sets under {args.out}/{LOSS_DIR}")


if __name__ == "__main__":
    main()
