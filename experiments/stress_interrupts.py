"""SIGTERM at random moments into `alto run` (tiny backbone, a checkpoint every step): does every stop
end the way the README says?

Each run gets one SIGTERM after a random delay and is classed by how it ended:
- `stopped`: exit 130, one line on stderr ("... interrupted ...");
- `finished`: exit 0, nothing on stderr (the signal came after the run's last step and outputs);
- `killed_in_teardown`: killed by the signal (-15) with nothing on stderr and complete outputs
  (summary.csv written, no run.ckpt left): the command had returned and the interpreter was shutting
  down (torch's teardown takes a second or two), where Python's default handler is back;
- `bad`: anything else (a traceback, an abort, a lost stop, half-written outputs).

Exit status 1 if any run is `bad`. Writes <out>/stress_interrupts.csv (one row per run).

    python experiments/stress_interrupts.py --out results/stress_interrupts --runs 60
    python experiments/stress_interrupts.py --out /tmp/si --runs 2          # smoke
    python experiments/stress_interrupts.py --out results/stress_interrupts_ray --engine ray --runs 20 \
        --min-delay 3 --max-delay 16
    python experiments/stress_interrupts.py --out results/stress_interrupts_ray_start --engine ray --runs 14 \
        --min-delay 5 --max-delay 9 --seed 12                             # around Ray's start
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pandas as pd  # noqa: E402

from altosim.argparser import OneLineParser, count, finite  # noqa: E402
from altosim.report import write_csv  # noqa: E402

WORKLOAD = {"name": "stress", "synthetic": True, "tasks": [{
    "id": "t1", "arrival": 0, "model": "tiny", "dataset": "list_ops", "gpus": 1,
    "search_space": {"lr": [3e-3, 5e-4], "rank": [4], "batch_size": [2]},
    "samples_per_job": 16, "eval_every_samples": 4, "seq_len": 160}]}
CONFIG = {"workload": "wl.json", "cluster": {"gpus": 1},
          "policy": {"early_exit": {"name": "none"}, "inter_task": {"name": "fifo"}}}


def verdict(rc: int, stderr: str, out: Path) -> str:
    lines = stderr.strip().splitlines()
    if rc == 130 and len(lines) == 1 and "interrupted" in lines[0]:
        return "stopped"
    complete = (out / "summary.csv").exists() and not (out / "run.ckpt").exists()
    if rc == 0 and not lines and complete:
        return "finished"
    if rc == -signal.SIGTERM and not lines and complete:
        return "killed_in_teardown"
    return "bad"


def one_run(work: Path, i: int, delay: float, engine: str = "local") -> dict:
    out = work / f"out{i}"
    cmd = [sys.executable, "-m", "altosim.cli", "run", "cfg.json", "--backbone", "tiny", "--out", str(out),
           "--n-train", "40", "--n-val", "4", "--n-eval", "0", "--checkpoint-every", "1", "--quiet",
           "--engine", engine]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=600)
    return {"run": i, "engine": engine, "delay_s": round(delay, 3), "wall_s": round(time.monotonic() - t0, 3),
            "rc": p.returncode, "outputs": " ".join(sorted(f.name for f in out.iterdir())) if out.is_dir() else "",
            "stderr_lines": len(err.strip().splitlines()), "verdict": verdict(p.returncode, err, out),
            "stderr_tail": err.strip()[-300:].replace("\n", " | ")}


def delays(runs: int, min_delay: float, max_delay: float, seed: int) -> list[float]:
    """The seconds before each run's SIGTERM: uniform in [min_delay, max_delay], seeded (a CSV's
    `delay_s` column names the command that made it)."""
    rng = random.Random(seed)
    return [rng.uniform(min_delay, max(min_delay, max_delay)) for _ in range(runs)]


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for stress_interrupts.csv")
    ap.add_argument("--runs", type=count(1, 100_000), default=60)
    ap.add_argument("--max-delay", type=finite(0, 1e6), default=7.0, help="delays are uniform in [--min-delay, this] s "
                    "(a run takes 6-8 s on a 2-core machine: some signals land after it)")
    ap.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    ap.add_argument("--engine", choices=("local", "ray"), default="local", help="`alto run --engine` (ray: a "
                    "local Ray instance starts in each run, so give --min-delay/--max-delay room for it)")
    ap.add_argument("--min-delay", type=finite(0, 1e6), default=0.5)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="alto-stress-") as tmp:
        work = Path(tmp)
        (work / "wl.json").write_text(json.dumps(WORKLOAD))
        (work / "cfg.json").write_text(json.dumps(CONFIG))
        for i, delay in enumerate(delays(args.runs, args.min_delay, args.max_delay, args.seed)):
            row = one_run(work, i, delay, args.engine)
            rows.append(row)
            print(f"run {i}: SIGTERM at {row['delay_s']:.2f} s -> rc {row['rc']}, {row['verdict']}", flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    write_csv(table, out / "stress_interrupts.csv")
    counts = table["verdict"].value_counts().to_dict()
    print(f"{len(rows)} runs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; wrote {out}/stress_interrupts.csv")
    return 1 if counts.get("bad") else 0


if __name__ == "__main__":
    sys.exit(main())
