"""Simulator fidelity on one GPU: a real multi-task `alto run` replayed in the simulator.

With --backbone, first runs the real workload (3 tasks: arithmetic, list_ops, python_docs, a
12-config grid each, ALTO early exit, FIFO, one GPU) with `alto run`'s own code, into
<out>/fidelity_run/ (with its config.json and workload.json); then, or with --run on an existing
run folder, does what `alto check-fidelity` does: the run replayed in the simulator driven by its
own StepReports, with step costs measured from the run and from the cost model (profile-backed
with a profile: by default the committed traces/profiles/*.csv that covers the backbone and GPU;
its held-out rows also score the step-time predictions).

Writes <out>/fidelity_<gpu>.csv (metric, value, goal, pass, note), fidelity_<gpu>_timeline.csv and
fidelity_<gpu>.png (a bar per job: real on top, simulated below, one time axis).

    PYTHONPATH=. python experiments/fidelity.py --backbone /root/model/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out $OUT --run-dir /tmp/fidelity_run --archive
    python experiments/fidelity.py --run runs/run --out results            # an existing run folder

Size: every config sees --samples samples (default 32), evaluated --evals times (8) on --n-val
validation examples (32). Estimated on an H100 with SmolLM2-135M (a fused step of the full group,
12 configs = 45 rows of <= 256 tokens, ~0.3-0.9 s): ~40 s start-up and backbone load, ~40-100 s
warm-up (kernel compile and autotune), ~35-100 s for the 3 tasks: 2-4 min in all. Without the
warm-up (the default since 2026-12-03 session 6: the profile-backed replay charges a fresh
process's compiles from the profile's first steps, so the run must pay them too): 78 s of run on
an H200, ~33 s of it compiles in the first task.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from altosim.argparser import OneLineParser, count, share  # noqa: E402
from altosim.cost import read_profile, write_cost_profile  # noqa: E402
from altosim.fidelity import check_fidelity, run_config_for  # noqa: E402
from altosim.schemas import load_config  # noqa: E402

MODEL = "SmolLM2-135M"


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def write_inputs(args: argparse.Namespace, folder: Path, gpu_type: str) -> Path:
    """workload.json + config.json in the run folder (the check reads the config back from there)."""
    space = {"lr": _floats(args.lrs), "rank": _ints(args.ranks), "batch_size": _ints(args.batches)}
    tasks = [{"id": d, "arrival": 0.0, "model": MODEL, "dataset": d, "gpus": 1, "search_space": space,
              "samples_per_job": args.samples, "eval_every_samples": max(1, args.samples // args.evals),
              "seq_len": args.seq_len} for d in args.tasks.split(",")]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.ckpt").unlink(missing_ok=True)  # a stale checkpoint would make run_config resume
    (folder / "workload.json").write_text(json.dumps(
        {"name": "fidelity", "synthetic": False, "source": "experiments/fidelity.py", "tasks": tasks}, indent=1))
    params = {"warmup_ratio": args.warmup} if args.early_exit == "alto" else {}
    cfg = {"workload": "workload.json", "cluster": {"gpus": 1, "gpu_type": gpu_type},
           "policy": {"early_exit": {"name": args.early_exit, "params": params}, "inter_task": {"name": "fifo"}}}
    if args.profile:  # a copy travels with the run (and its archive)
        write_cost_profile(read_profile(args.profile), folder / "profile.csv")
        cfg["cost_profile"] = "profile.csv"
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    (folder / "run_args.json").write_text(json.dumps({"backbone": args.backbone, "n_train": args.n_train,
                                                      "n_val": args.n_val, "n_eval": 0}, indent=1))
    return folder / "config.json"


def warm_up(args: argparse.Namespace, folder: Path, gpu_type: str) -> None:
    """A throwaway short run of the first task, no early exit: loads the backbone (cached for the
    real run) and compiles/autotunes the kernels for the group sizes the real run starts with,
    so the measured run's times are steady-state steps, as the cost model and profile assume."""
    from altoruntime.run import run_config

    short = argparse.Namespace(**{**vars(args), "tasks": args.tasks.split(",")[0], "early_exit": "none",
                                  "samples": max(_ints(args.batches)), "evals": 1, "profile": None})
    t0 = time.perf_counter()
    run_config(load_config(write_inputs(short, folder, gpu_type)), folder, backbone=args.backbone,
               n_train=args.n_train, n_val=args.n_val, n_eval=0, checkpoint_every=10**9)
    print(f"warm-up (backbone load, kernel compile): {time.perf_counter() - t0:.1f} s", flush=True)


def local_device() -> tuple[str, str]:
    """(device name, cost-model GPU type) of the local accelerator."""
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return name, "H200" if "H200" in name else "A100" if "A100" in name else "H100"


def find_profile(gpu_type: str, folder: Path = ROOT / "traces" / "profiles") -> Path | None:
    """The first committed profile (traces/profiles/*.csv) with rows for this backbone and GPU type."""
    from altosim.errors import InputError

    for p in sorted(folder.glob("*.csv")):
        try:
            rows = read_profile(p).rows
        except InputError:
            continue
        if any(r.model.lower() == MODEL.lower() and r.gpu_type.lower() == gpu_type.lower() for r in rows):
            return p
    return None


def real_run(args: argparse.Namespace, folder: Path) -> float:
    import functools

    import altoruntime.run
    from altoruntime.run import run_config

    name, gpu_type = local_device()
    # one backbone load for the warm-up and the run (a GGUF de-quantizes for a while); run_config
    # copies it per task; the module is restored afterwards
    plain = altoruntime.run.open_backbone
    altoruntime.run.open_backbone = functools.lru_cache(maxsize=None)(plain)
    try:
        if args.warm_up:
            warm_up(args, folder.with_name(folder.name + "_warmup"), gpu_type)
        cfg = load_config(write_inputs(args, folder, gpu_type))
        t0 = time.perf_counter()
        log = run_config(cfg, folder, backbone=args.backbone, n_train=args.n_train, n_val=args.n_val, n_eval=0,
                         checkpoint_every=10**9)
        wall = time.perf_counter() - t0
    finally:
        altoruntime.run.open_backbone = plain
    for task_id, fin in sorted(log.results.items()):
        print(f"{task_id}: best {fin.best_job} (val loss {fin.best_val_loss:.4f})", flush=True)
    print(f"real run on {name}: {wall:.1f} s", flush=True)
    return wall


def archive(folder: Path, path: Path) -> None:
    """The run folder's small files in one tar.gz (`alto check-fidelity --run` reads it unpacked)."""
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name in ("events.jsonl", "config.json", "workload.json", "run_args.json", "summary.csv", "tasks.csv",
                     "profile.csv", "profile.meta.json"):
            if (folder / name).is_file():
                tar.add(folder / name, arcname=f"fidelity_run/{name}")


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", help="run the real workload first on this backbone (path, 'smollm2' or 'tiny')")
    ap.add_argument("--run", help="an existing run folder to check instead (written by `alto run`)")
    ap.add_argument("--out", default="results")
    ap.add_argument("--run-dir", help="where the real run writes its folder (default: <out>/fidelity_run)")
    ap.add_argument("--archive", action="store_true",
                    help="also write <out>/fidelity_run.tar.gz: the run's log, config and tables (no adapters)")
    ap.add_argument("--profile", default="auto", help="cost profile for the model replay and the held-out "
                    "step-time check; 'auto': the first traces/profiles/*.csv covering the backbone and GPU type; "
                    "'none': the analytic cost model")
    ap.add_argument("--tasks", default="arithmetic,list_ops,python_docs")
    ap.add_argument("--lrs", default="1e-5,2e-4,5e-4")
    ap.add_argument("--ranks", default="16")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--samples", type=count(1, 10**9), default=32, help="training samples per config (the run's length)")
    ap.add_argument("--evals", type=count(1, 100_000), default=8, help="evaluations per config")
    ap.add_argument("--seq-len", type=count(1, 1 << 20), default=256)
    ap.add_argument("--n-train", type=count(1, 10**9), default=256)
    ap.add_argument("--n-val", type=count(1, 10**9), default=32)
    ap.add_argument("--early-exit", default="alto")
    ap.add_argument("--warmup", type=share, default=0.25, help="ALTO warm-up ratio (0.25 of 8 evals: cut at the 2nd)")
    ap.add_argument("--costs", default="measured,model")
    ap.add_argument("--profile-method", default="auto", choices=("auto", "interp", "hostgpu"),
                    help="how the model replay reads the profile (see alto check-fidelity)")
    ap.add_argument("--warm-up-run", dest="warm_up", action="store_true",
                    help="first a short throwaway run that compiles the kernels (the measured run then skips "
                         "compiles the profile-backed replay charges; off by default since session 6)")
    ap.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                    help="a fresh process, as a user's run (the default)")
    args = ap.parse_args(argv)
    if bool(args.backbone) == bool(args.run):
        ap.error("give exactly one of --backbone (run, then check) or --run (check an existing run)")
    out = Path(args.out)
    folder = Path(args.run or args.run_dir or out / "fidelity_run")
    if args.profile == "auto":
        cfg = None if args.backbone else run_config_for(folder)
        gpu_type = local_device()[1] if args.backbone else cfg.cluster.gpu_type if cfg else "H100"
        found = find_profile(gpu_type)
        args.profile = str(found) if found else None
        print(f"cost profile: {found or 'none for ' + MODEL + ' on ' + gpu_type + ' (analytic cost model)'}")
    elif args.profile == "none":
        args.profile = None
    if args.backbone:
        real_run(args, folder)
    if args.archive:
        archive(folder, out / "fidelity_run.tar.gz")
    profile = read_profile(args.profile) if args.profile else None
    rep = check_fidelity(out, run_dir=folder, profile=profile, modes=args.costs.split(","), method=args.profile_method)
    for r in rep.rows:
        print(f"{r['metric']:45s} {r['value']!s:>24s}  {r['goal']!s:>14s}  {r['pass']!s:5s} {r['note']}"[:250])
    print("wrote " + ", ".join(str(f) for f in rep.files))
    return 0


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
