"""The `alto` command: simulate, sweep, replay, import-trace, check-fidelity, profile-from-run (and run/profile
on a GPU machine).

Bad input ends with one line `alto: error: <file>: <field>: <problem>` and exit code 2, before
any output file is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from altosim.argparser import OneLineParser, count, share
from altosim.errors import InputError, one_line
from altosim.interrupts import signals_as_interrupt
from altosim.outdir import check_out, check_out_file, input_files, output_dir
from altosim.schemas.limits import MAX_GPUS, MAX_ROWS, MAX_SEED


def _progress(total: int, desc: str, quiet: bool):
    """A tqdm bar over finished tasks (to stderr), or nothing."""
    if quiet:
        return None, lambda n: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="task", leave=False, file=sys.stderr, dynamic_ncols=True)
    return bar, lambda n: bar.update(n - bar.n)


def _with_policy(cfg: Any, args: argparse.Namespace) -> Any:
    """Apply --preset / --early-exit / --inter-task / --no-batching / --gpus on top of a config."""
    from altosim.presets import preset_policy
    from altosim.schemas import config_from_dict

    data = cfg.model_dump()
    if getattr(args, "preset", None) is not None:  # --preset "" is an unknown preset, not "no preset"
        try:
            data["policy"].update(preset_policy(args.preset))
        except ValueError as e:
            raise InputError("<args>", "--preset", str(e)) from None
    if getattr(args, "early_exit", None) is not None:
        data["policy"]["early_exit"] = {"name": args.early_exit, "params": {}}
    if getattr(args, "inter_task", None) is not None:
        data["policy"]["inter_task"] = {"name": args.inter_task, "params": {}}
    if getattr(args, "no_batching", False):
        data["policy"]["batching"] = False
    if getattr(args, "planner_sees_arrivals", False):
        data["policy"]["planner_sees_arrivals"] = True
    if getattr(args, "gpus", None) is not None:  # argparse checked the range (0 is an error, not "unset")
        data["cluster"]["gpus"] = args.gpus
    new = config_from_dict(data, cfg.file)
    return new


def _print_table(rows: list[dict[str, Any]], cols: Sequence[str]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)[list(cols)]
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.3f}".format):
        print(df.to_string(index=False))


SUMMARY_COLS = ["policy", "tasks", "gpus", "makespan_h", "mean_jct_h", "gpu_busy_share", "samples_saved",
                "mean_regret", "found_true_best", "wall_s"]


def cmd_simulate(args: argparse.Namespace) -> int:
    from altosim.schemas import load_config
    from altosim.simulate import simulate_to_folder

    cfg = _with_policy(load_config(args.config), args)
    out = args.out if args.out is not None else cfg.out or "runs/simulate"  # --out "" is an error, not the default
    run, files, failed = simulate_to_folder(cfg, out, lambda n: _progress(n, "simulate", args.quiet))
    for problem in failed:
        print(f"alto: warning: {problem} (the tables it is drawn from were written)", file=sys.stderr)
    _print_table([run.summary], SUMMARY_COLS)
    n_extra = run.meta["cost"]["extrapolations"]
    if n_extra:
        print(f"\ncost profile: {n_extra} step-time queries fell outside the measured range (extrapolated)")
    print(f"\n{len(files)} files under {out}/ (summary.csv, tasks.csv, events.jsonl, gantt.png, losses_*.png)")
    return 0


def cmd_replay_curves(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from altosim.build import check_policy
    from altosim.errors import from_validation_error
    from altosim.files import loads_json
    from altosim.policy.registry import EARLY_EXIT
    from altosim.replay_curves import read_curves, replay, summary_lines
    from altosim.report import write_csv
    from altosim.schemas import PolicyRef
    from altosim.tuning import study_config

    params = loads_json(args.params, "<args>", "--params")  # syntax, nesting, a key given twice
    if not isinstance(params, dict):
        raise InputError("<args>", "--params", "expected a JSON object of the policy's parameters")
    try:
        ref = PolicyRef(name=args.early_exit, params=params)
    except ValidationError as e:
        raise from_validation_error(e, "<args>", prefix="--early-exit") from None
    try:  # an unknown policy or parameter: one line, before reading the curves
        check_policy(study_config(ref))
    except InputError as e:  # a known policy's error is about its parameters
        raise InputError("<args>", "--params" if args.early_exit in EARLY_EXIT.names() else "--early-exit",
                         e.problem) from None
    out = check_out(args.out) if args.out is not None else None  # --out "" is an error, not "no table"
    res = replay(read_curves(args.curves), ref)
    if out is not None:
        with output_dir(out, keep=input_files(args.curves)) as stage:
            write_csv(res["table"], stage / "replay.csv")
    for line in summary_lines(res):
        print(line)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from altosim.presets import PRESETS, preset_policy
    from altosim.report import try_plot, write_csv
    from altosim.schemas import config_from_dict, load_config
    from altosim.simulate import config_inputs, load_inputs, simulate
    from altosim.sweep import plot_sweep

    out = check_out(args.out)
    presets = args.policies.split(",")
    if len(set(presets)) != len(presets):
        raise InputError("<args>", "--policies", f"a preset listed twice: {args.policies!r}")
    for p in presets:
        if p not in PRESETS:
            raise InputError("<args>", "--policies", f"unknown preset {p!r}; known: {', '.join(PRESETS)}")
    configs = args.configs or [None]
    loaded = []
    for c in configs:  # every input is read and checked before the first simulation
        base = load_config(c)
        loaded.append((c, base, load_inputs(base)))
    rows = []
    bar, _ = _progress(len(presets) * len(configs), "sweep", args.quiet)
    for c, base, inputs in loaded:
        for p in presets:
            data = base.model_dump()
            data["policy"].update(preset_policy(p))
            cfg = config_from_dict(data, base.file)
            run = simulate(cfg, inputs, label=p, record_log=False)
            rows.append({"workload": c or "default", **run.summary})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    df = pd.DataFrame(rows)
    with output_dir(out, keep=[f for _, base, _ in loaded for f in config_inputs(base)]) as stage:
        write_csv(df, stage / "sweep.csv")
        problem = try_plot(lambda: plot_sweep(df), stage / "sweep.png")
    if problem:
        print(f"alto: warning: {problem} (sweep.csv was written)", file=sys.stderr)
    _print_table(rows, ["workload"] + SUMMARY_COLS)
    print(f"\nwrote {out}/sweep.csv" + ("" if problem else f" and {out}/sweep.png"))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from altosim.replay import replay_file

    t0 = time.perf_counter()
    res = replay_file(args.events)
    dt = time.perf_counter() - t0
    if res.identical:
        print(f"replay: {res.events} events -> {res.actions} actions, identical decisions ({dt:.2f} s)")
        return 0
    line, logged, got = res.mismatches[0]
    k = next((i for i, (a, b) in enumerate(zip(logged, got)) if a != b), min(len(logged), len(got)))
    print(f"alto replay: {args.events}: line {line}: logged {_action_text(logged, k)} but replayed "
          f"{_action_text(got, k)} ({len(res.mismatches)} of {res.events} events differ)", file=sys.stderr)
    return 1


def _action_text(actions: list[dict[str, Any]], k: int, width: int = 120) -> str:
    """The k-th action of a decision as compact JSON cut to `width` characters, or "no action"."""
    import json

    if k >= len(actions):
        return "no action" if k == 0 else f"no action #{k + 1}"
    action = actions[k]
    if isinstance(action, dict):  # its kind first
        action = {"kind": action.get("kind"), **action}
    text = json.dumps(action, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_import_trace(args: argparse.Namespace) -> int:
    from altosim.importers.philly import import_philly
    from altosim.traces_io import load_trace_dir, write_workload
    if args.kind != "philly":
        raise InputError("<args>", "kind", f"unknown trace kind {args.kind!r}; known: philly")
    check_out_file(args.out, inputs=(args.file,))
    given(args.loss_traces, "--loss-traces")
    loss = load_trace_dir(args.loss_traces) if args.loss_traces else None  # None: the embedded pool, read after the trace
    res = import_philly(args.file, configs_per_task=args.configs_per_task, max_gpus=args.max_gpus,
                        loss_sets=loss, seed=args.seed, skip_bad=args.skip_bad, rigid_share=args.rigid_share)
    if not res.workload.tasks:  # an empty workload is no use to simulate or run: say why instead
        why = (f"{len(res.skipped)} malformed rows skipped, " if res.skipped else "") + (
            f"{len(res.too_large)} tasks larger than --max-gpus {args.max_gpus}" if res.too_large else "no job rows")
        raise InputError(args.file, "<rows>", f"no task to import ({why.rstrip(', ')})")
    write_workload(res.workload, args.out)
    n_rigid = sum(t.rigid for t in res.workload.tasks)
    print(f"imported {len(res.workload.tasks)} tasks into {args.out}" + (f" ({n_rigid} rigid)" if n_rigid else ""))
    if res.skipped:
        print(f"skipped {len(res.skipped)} malformed rows (first: line {res.skipped[0][0]}: {res.skipped[0][1]})")
    if res.too_large:
        print(f"left out {len(res.too_large)} tasks larger than the cluster ({args.max_gpus} GPUs)")
    return 0


def cmd_check_fidelity(args: argparse.Namespace) -> int:
    from altosim.cost import read_profile
    from altosim.fidelity import check_fidelity
    from altosim.schemas import load_config

    check_out(args.out)
    for flag in ("run", "config", "profile", "calibrate_from"):
        given(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.costs == "both":
        args.costs = "measured,model"
    cfg = load_config(args.config) if args.config else None
    if getattr(args, "calibrate_from", None):
        return _check_heldout(args, cfg)
    profile = read_profile(args.profile) if args.profile else None
    rep = check_fidelity(args.out, run_dir=args.run, cfg=cfg, profile=profile, modes=args.costs.split(","),
                         every=args.holdout_every, val_rows=args.val_rows, method=args.profile_method)
    shown = [{**r, "value": f"{r['value']:.4g}" if isinstance(r["value"], float) else r["value"]} for r in rep.rows]
    _print_table(shown, ["metric", "value", "goal", "pass"])
    print(f"\nwrote {', '.join(str(f) for f in rep.files)}")
    return 0 if rep.passed or not args.strict else 1


def _check_heldout(args: argparse.Namespace, cfg: Any) -> int:
    """check-fidelity --calibrate-from FIT_RUN: costs calibrated on another run replay --run."""
    from altosim.cost import EvalShape
    from altosim.fidelity import heldout_fidelity, read_run, run_config_for, run_val_rows, write_heldout

    if not args.run:
        raise InputError("<args>", "--run", "--calibrate-from needs the run to predict (--run)")
    fit, test = read_run(args.calibrate_from, "--calibrate-from"), read_run(args.run)
    cfg = cfg if cfg is not None else run_config_for(test.folder)
    if cfg is None:
        raise InputError(str(test.folder), "--config", "needed to replay an `alto run` log")
    test_rows = args.val_rows if args.val_rows is not None else run_val_rows(test.folder)
    fit_rows = args.calibrate_val_rows if args.calibrate_val_rows is not None else (
        run_val_rows(fit.folder) or test_rows)
    rows, frames, _ = heldout_fidelity(fit, test, cfg, EvalShape(fit_rows), EvalShape(test_rows))
    files = write_heldout(args.out, rows, frames, test.device)
    shown = [{**r, "value": f"{r['value']:.4g}" if isinstance(r["value"], float) else r["value"]} for r in rows]
    _print_table(shown, ["metric", "value", "goal", "pass"])
    print(f"\nwrote {', '.join(str(f) for f in files)}")
    ok = all(r["pass"] is not False for r in rows)
    return 0 if ok or not args.strict else 1


def given(value: str | None, flag: str) -> None:
    """An optional path flag left out is None; given empty (`--config ''`, a slip of an unset shell
    variable) it is refused, not read as left out."""
    if value is not None and not value.strip():
        raise InputError("<args>", flag, "empty: give a path, or leave the flag out")


def cmd_profile_from_run(args: argparse.Namespace) -> int:
    from altosim.cost import EvalShape, write_cost_profile
    from altosim.fidelity import profile_from_run, read_run, run_val_rows
    from altosim.files import atomic_write

    run_inputs = tuple(Path(args.run) / n for n in RUN_INPUTS)
    check_out_file(args.out, inputs=run_inputs, sidecar=None if args.out.endswith(".json") else ".meta.json")
    run = read_run(args.run, "run")
    rows = args.val_rows if args.val_rows is not None else run_val_rows(run.folder)
    prof = profile_from_run(run, args.gpu_type, shape=EvalShape(rows), overheads=args.overheads)
    out = Path(args.out)
    if out.suffix == ".json":
        atomic_write([(out, prof.model_dump_json(indent=1))])
    else:
        write_cost_profile(prof, out)
    print(f"{len(prof.rows)} cost records from {run.folder} -> {out}")
    return 0


RUN_INPUTS = ("events.jsonl", "run_args.json", "summary.csv", "config.json", "config.yaml")  # what a run folder gives


def safe_name(text: str) -> str:
    """An argparse type: a name in the task-id alphabet (a GPU type is a cost-model key and a file-name part)."""
    from altosim.ids import id_problem

    problem = id_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem.replace('task id', 'name')}, got {one_line(text, 40)!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="alto", description="LoRA hyperparameter tuning at cluster scale")
    sub = ap.add_subparsers(dest="cmd", required=True)  # OneLineParsers too, naming "alto"

    s = sub.add_parser("simulate", help="simulate a workload (default: the embedded 11-task, 8-GPU study)")
    s.add_argument("config", nargs="?", help="YAML/JSON run config (default: the embedded workload)")
    s.add_argument("--out", help="output folder (default: config's `out`, else runs/simulate)")
    s.add_argument("--preset", help="a named policy combination (see `alto sweep --help`)")
    s.add_argument("--early-exit", help="early-exit policy name (alto, asha, median, none)")
    s.add_argument("--inter-task", help="inter-task scheduler name (cpsat, fifo, sjf)")
    s.add_argument("--no-batching", action="store_true", help="train one job at a time per task")
    s.add_argument("--planner-sees-arrivals", action="store_true",
                   help="offline planning study: cpsat is told every arrival ahead and plans with release times")
    s.add_argument("--gpus", type=count(1, MAX_GPUS), help="override cluster.gpus")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_simulate)

    from altosim.presets import ABLATION

    w = sub.add_parser("sweep", help="policies x workloads -> one CSV + PNG")
    w.add_argument("configs", nargs="*", help="run configs (default: the embedded workload)")
    w.add_argument("--policies", default=",".join(ABLATION), help="comma-separated presets")
    w.add_argument("--out", default="runs/sweep")
    w.add_argument("-q", "--quiet", action="store_true")
    w.set_defaults(fn=cmd_sweep)

    r = sub.add_parser("replay", help="feed an events.jsonl back through the policy; check decisions")
    r.add_argument("events")
    r.set_defaults(fn=cmd_replay)

    c = sub.add_parser("replay-curves", help="replay an early-exit policy on your own loss curves (a CSV of "
                       "config, samples, train_loss, val_loss): samples saved, the chosen config and its rank")
    c.add_argument("curves", help="CSV: config, samples, train_loss, val_loss (+ optional lr, rank, alpha, "
                   "batch_size, dropout, weight_decay, seed)")
    c.add_argument("--early-exit", default="alto", help="a registered early-exit policy (alto, asha, median, ...)")
    c.add_argument("--params", default="{}", help="the policy's parameters as JSON, e.g. '{\"select_ratio\": 0.25}'")
    c.add_argument("--out", help="also write replay.csv (one row per config) under this folder")
    c.set_defaults(fn=cmd_replay_curves)

    i = sub.add_parser("import-trace", help="convert a cluster trace into a WorkloadTrace")
    i.add_argument("kind", help="trace kind: philly")
    i.add_argument("file")
    i.add_argument("--out", required=True, help="workload file to write (.json or .csv)")
    i.add_argument("--configs-per-task", type=count(1, 100_000), default=16)
    i.add_argument("--max-gpus", type=count(1, MAX_GPUS), default=1024)
    i.add_argument("--loss-traces", help="folder of loss-trace sets (default: the embedded ones)")
    i.add_argument("--seed", type=count(0, MAX_SEED), default=0)
    i.add_argument("--skip-bad", action="store_true", help="skip malformed rows instead of stopping")
    i.add_argument("--rigid-share", type=share, default=0.0, metavar="F",
                   help="keep this share of the trace's jobs (seeded draw; 1 = all) as rigid fixed-duration "
                        "jobs instead of tuning tasks (default 0)")
    i.set_defaults(fn=cmd_import_trace)

    f = sub.add_parser("check-fidelity", help="replay a real run in the simulator (and score step-time "
                       "predictions on held-out profile points): fidelity_<gpu>.csv + timeline PNG")
    f.add_argument("--run", help="run folder written by `alto run` (or `alto simulate`)")
    f.add_argument("--config", help="the run's config (default: <run>/config.json if there)")
    f.add_argument("--profile", help="cost profile (.csv with .meta.json, or .json) for the step-time check")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--costs", default="measured,model",
                   help="step costs of the replay: measured (from the run), model (cost model), or both "
                        "(measured,model or both)")
    f.add_argument("--holdout-every", type=count(1, MAX_ROWS), default=5, help="hold out every k-th profile row")
    f.add_argument("--val-rows", type=count(0, MAX_ROWS), help="validation examples per evaluation in the run (`alto run "
                   "--n-val`), charged in the model replay (default: <run>/run_args.json, else 0)")
    f.add_argument("--profile-method", default="auto", choices=("auto", "interp", "hostgpu"),
                   help="how the model replay reads the profile: multilinear interpolation, the host-floor / "
                        "GPU-line fit, or auto (whichever predicts the profile's held-out rows better)")
    f.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    f.add_argument("--calibrate-from", "--profile-from-run", dest="calibrate_from", help="held-out check: calibrate step, validation, autotune and startup "
                   "costs on this other run folder, then replay --run with them (profile and linear predictors)")
    f.add_argument("--calibrate-val-rows", type=count(0, MAX_ROWS), help="validation examples per evaluation in the "
                   "--calibrate-from run (default: its run_args.json, else --val-rows)")
    f.set_defaults(fn=cmd_check_fidelity)

    pr = sub.add_parser("profile-from-run", help="a CostProfile of the fused steps an `alto run` log measured")
    pr.add_argument("run", help="run folder written by `alto run`")
    pr.add_argument("--out", required=True, help="profile file to write (.csv with .meta.json, or .json)")
    pr.add_argument("--gpu-type", type=safe_name, default="H100", help="GPU type the records are filed under (cost model key)")
    pr.add_argument("--val-rows", type=count(0, MAX_ROWS), help="validation examples per evaluation (`alto run --n-val`; "
                    "default: <run>/run_args.json, else 0)")
    pr.add_argument("--overheads", choices=("subtract", "include"), default="subtract",
                    help="subtract the fitted startup/validation/autotune time from each step (default) or keep it")
    pr.set_defaults(fn=cmd_profile_from_run)

    add_plugin_commands(sub)
    return ap


def add_plugin_commands(sub: Any) -> None:
    """Commands other packages declare under the `alto.commands` entry-point group (the GPU
    runtime's `alto run`); altosim itself never imports the GPU stack, and a plugin whose
    dependencies are missing (no torch) is simply left out."""
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="alto.commands"), key=lambda e: e.name):
        try:
            add = ep.load()
        except ImportError:
            continue
        add(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with signals_as_interrupt():  # a time limit stops any command as Ctrl-C does, at a safe point
            return int(args.fn(args) or 0)
    except InputError as e:
        print(f"alto: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # registry/policy parameter errors are one-liners too
        print(f"alto: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alto: interrupted", file=sys.stderr)
        return 130
    except RecursionError:  # a reader this was not caught in: too deeply nested input
        print("alto: error: <input>: nested too deeply to read", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused (full disk, permissions): one line naming the file
        print(f"alto: error: {one_line(e.filename or '<file>')}: {one_line(e.strerror or e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
