#!/usr/bin/env bash
# Issue 24 on the GPU: `alto run` on SmolLM2 with a task whose model and data are named only in
# the workload (a .gguf file and a JSONL of prompt/completion pairs), 16 configs drawn
# quasi-randomly from distributions, early exit on. Writes $OUT/own/{cfg.yaml,workload.json} and
# the run under $OUT/own/run (configs.csv, losses.png, summary, best adapter); prints the summary.
# Stage the backbone and wheels first (runbook), then:
#   GGUF=/root/model/SmolLM2-135M-Instruct.Q4_1.gguf DATA=traces/datasets/date_iso.jsonl bash experiments/device/own_data_run.sh
# Knobs (env): DATA, GGUF, OUT, RANKS (a JSON list), DTYPE, SAMPLES (per config).
set -eu
GGUF=${GGUF:-/root/model/SmolLM2-135M-Instruct.Q4_1.gguf}
DATA=$(realpath "${DATA:-traces/datasets/date_iso.jsonl}")
OUT=${OUT:-results/device}
W=$OUT/own
mkdir -p "$W"
if ! python3 -c "import importlib.metadata as m, sys; v=tuple(int(x) for x in m.version('huggingface_hub').split('.')[:2]); sys.exit(v < (1, 31))" 2>/dev/null \
   && ls .whl_hub/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_hub/*.whl
fi
cat > "$W/workload.json" <<JSON
{"name": "own-data-smollm2", "synthetic": false, "source": "$DATA",
 "tasks": [{"id": "$(basename "$DATA" .jsonl)", "arrival": 0, "model": "$GGUF", "dataset": "$DATA", "gpus": 1,
   "dtype": "${DTYPE:-bfloat16}", "target_modules": "all-linear",
   "search_space": {"lr": {"distribution": "log_uniform", "low": 1e-5, "high": 1e-3},
                    "rank": {"distribution": "categorical", "choices": ${RANKS:-[16, 32, 64]}},
                    "batch_size": {"distribution": "categorical", "choices": [1, 2, 4]},
                    "sampler": "quasi-random", "n_configs": 16, "seed": 0},
   "samples_per_job": ${SAMPLES:-192}, "eval_every_samples": 8, "seq_len": 256}]}
JSON
cat > "$W/cfg.yaml" <<YAML
cluster: {gpus: 1}
workload: workload.json
policy:
  early_exit: {name: alto}
  inter_task: {name: fifo}
YAML
t0=$(date +%s)
# the GPU machine runs from a copy of the tree, not an install: `alto run` is registered by hand
python3 - "$W/cfg.yaml" "$W/run" <<'PY'
import sys
from altosim import cli
from altoruntime.cli import add_commands
cli.add_plugin_commands = add_commands
sys.exit(cli.main(["run", sys.argv[1], "--out", sys.argv[2], "--n-train", "256", "--n-val", "48", "--n-eval", "48",
                   "--quiet"]))
PY
echo "== own-data run: $(( $(date +%s) - t0 )) s wall"
