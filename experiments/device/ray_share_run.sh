#!/usr/bin/env bash
# Issue 27 on one GPU: two tasks sharing it through Ray fractional GPUs. `alto run --engine ray
# --gpu-share 0.5` on SmolLM2 with two own-data tasks (8 configs each, early exit) planned on 2 GPUs
# of half a Ray GPU each, so both task workers land on the one H200 and step together. Then the same
# workload on the local engine with 1 GPU (tasks one after the other) for comparison (LOCAL=0 skips
# it). Prints each task's span of step reports, how much of it the other task overlaps, and walls.
# Stage the backbone, the wheels and Ray first (runbook), then:
#   GGUF=/root/smollm2_hf OUT=$OUT bash experiments/device/ray_share_run.sh
set -eu
GGUF=${GGUF:-/root/smollm2_hf}
OUT=${OUT:-results/device}
W=$OUT/ray_share
mkdir -p "$W"
A=$(realpath traces/datasets/date_iso.jsonl)
B=$(realpath traces/datasets/unit_conversion.jsonl)
task() {  # id dataset
  cat <<JSON
  {"id": "$1", "arrival": 0, "model": "$GGUF", "dataset": "$2", "gpus": 1, "dtype": "bfloat16",
   "target_modules": "all-linear",
   "search_space": {"lr": [1e-4, 3e-4, 1e-3, 3e-3], "rank": ${RANKS:-[16, 64]}, "batch_size": [2]},
   "samples_per_job": ${SAMPLES:-128}, "eval_every_samples": 8, "seq_len": 256}
JSON
}
printf '{"name": "ray-share", "synthetic": false, "source": "two own-data tasks",\n "tasks": [\n%s,\n%s]}\n' \
  "$(task date_iso "$A")" "$(task unit_conversion "$B")" > "$W/workload.json"
for g in 1 2; do
  printf 'cluster: {gpus: %s}\nworkload: workload.json\npolicy:\n  early_exit: {name: alto}\n  inter_task: {name: fifo}\n' "$g" \
    > "$W/cfg_$g.yaml"
done
run() {  # cfg out extra-args...
  python3 - "$@" <<'PY'
import sys
from altosim import cli
from altoruntime.cli import add_commands
cli.add_plugin_commands = add_commands
cfg, out, *extra = sys.argv[1:]
sys.exit(cli.main(["run", cfg, "--out", out, "--n-train", "256", "--n-val", "48", "--n-eval", "0", "--quiet", *extra]))
PY
}
t0=$(date +%s)
run "$W/cfg_2.yaml" "$W/ray" --engine ray --gpu-share 0.5
echo "== ray engine, gpu-share 0.5: $(( $(date +%s) - t0 )) s wall"
if [ "${LOCAL:-1}" = 1 ]; then
  t0=$(date +%s)
  run "$W/cfg_1.yaml" "$W/local"
  echo "== local engine, 1 GPU: $(( $(date +%s) - t0 )) s wall"
fi
python3 - "$W" <<'PY'
import json, pathlib, sys
w = pathlib.Path(sys.argv[1])
for run in ("ray", "local"):
    f = w / run / "events.jsonl"
    if not f.exists():
        continue
    times: dict[str, list[float]] = {}
    for line in f.read_text().splitlines()[1:]:
        r = json.loads(line)
        if r.get("kind") == "step_report":
            times.setdefault(r["task_id"], []).append(r["now"])
    spans = {t: (min(v), max(v)) for t, v in times.items()}
    (a, sa), (b, sb) = sorted(spans.items())
    both = max(0.0, min(sa[1], sb[1]) - max(sa[0], sb[0]))
    inside = sum(sa[0] <= x <= sa[1] for x in times[b])
    print(f"{run}: {a} reports {sa[0]:.1f}-{sa[1]:.1f} s ({len(times[a])}), {b} {sb[0]:.1f}-{sb[1]:.1f} s "
          f"({len(times[b])}); overlap {both:.1f} s, {inside} of {b}'s reports inside {a}'s span")
PY
