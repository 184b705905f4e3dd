#!/usr/bin/env bash
# Real LossTraces of own-data tasks (traces/datasets/*.jsonl, issue 25): for each dataset, the grid
# trained to completion without early exit (e2e_sweep.py method `batched`, no concurrent baseline),
# ONE training process at a time (two on one GPU time-slice it: README.md, session 3). Each dataset
# gets LIMIT seconds; a run cut by it still writes its curves so far (<label>__<ds>.partial.csv.gz)
# and its log shows progress lines. Traces, logs and e2e tables land in $OUT/new_traces.tgz.
# Stage first (wheels from ../shared/device/fetch-wheels.sh and fetch-extra-wheels.sh in .whl/):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
#   GGUF=/root/model/SmolLM2-135M-Instruct.Q4_1.gguf DATASETS="date_iso unit_conversion" LIMIT=280 \
#     bash experiments/device/new_traces.sh
# Knobs (env): DATASETS (stems under traces/datasets, or paths), LAYERS (keep only the first N decoder
# layers: a second backbone labelled SmolLM2-135M-L<N>), GRID (e2e_sweep grid flags; default the
# 30-config lr {1e-5,5e-5,2e-4,3e-4,5e-4} x rank {16,64} x batch {1,2,4}), N_TRAIN, N_VAL, N_EVAL,
# EVALS, EPOCHS, LIMIT, LOG_EVERY.
set -u
GGUF=${GGUF:-/root/model/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-results/device}
LIMIT=${LIMIT:-300}
GRID=${GRID:---lrs 1e-5,5e-5,2e-4,3e-4,5e-4 --ranks 16,64 --batches 1,2,4}
W=$OUT/work
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
mkdir -p "$W"
# datasets needs huggingface_hub >= 1.31: use the staged one only when the machine's is older
if ! python3 -c "import importlib.metadata as m, sys; v=tuple(int(x) for x in m.version('huggingface_hub').split('.')[:2]); sys.exit(v < (1, 31))" 2>/dev/null \
   && ls .whl_hub/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_hub/*.whl
  echo "== staged huggingface_hub from .whl_hub"
fi
python3 -c "import datasets, huggingface_hub; print('== datasets', datasets.__version__, 'hub', huggingface_hub.__version__)" || exit 3
layers=${LAYERS:+--backbone-layers $LAYERS}
for ds in ${DATASETS:-date_iso unit_conversion review_sentiment sentence_topic python_oneliner record_to_text}; do
  f=$ds; [ -e "$f" ] || f=traces/datasets/$ds.jsonl
  stem=$(basename "$f" .jsonl)
  echo "== $stem start $(date -u +%T) limit ${LIMIT}s ${LAYERS:+layers $LAYERS}"
  t0=$SECONDS
  # shellcheck disable=SC2086  # GRID and layers are word lists on purpose
  timeout "$LIMIT" python3 experiments/e2e_sweep.py --backbone "$GGUF" --dataset "$f" $layers $GRID \
    --n-train "${N_TRAIN:-96}" --n-val "${N_VAL:-48}" --n-eval "${N_EVAL:-0}" --epochs "${EPOCHS:-3}" \
    --evals "${EVALS:-24}" --methods batched --concurrent-factor 0 --log-every "${LOG_EVERY:-25}" \
    --out "$W/${stem}${LAYERS:+_L$LAYERS}" --traces-out "$W/traces" 2>&1 | tee "$W/${stem}${LAYERS:+_L$LAYERS}.log" \
    | grep --line-buffered "\] .*step \|partial\|Error\|error"  # progress lines, also when a limit cuts the run
  echo "== $stem rc=${PIPESTATUS[0]} $((SECONDS - t0)) s"
  grep -v "GGUF tensors\|Loading weights\|Warning\|step " "$W/${stem}${LAYERS:+_L$LAYERS}.log" | tail -3
done
ls "$W/traces"
tar czf "$OUT/new_traces${LAYERS:+_L$LAYERS}.tgz" --exclude=best_adapter --exclude=run.ckpt -C "$OUT" work && rm -rf "$W"
