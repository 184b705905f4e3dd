#!/usr/bin/env bash
# Real LossTraces on the GPU machine: the 60-config grid trained to completion without early exit
# (method `batched` of e2e_sweep.py), one dataset after the other. ONE process at a time: two
# processes on one GPU time-slice it (no MPS), and a host-bound run of many small kernels then
# crawls (2026-12-03, H200: two at once trained 9% of the grid in 480 s; one alone did the whole
# arithmetic grid in 350 s on an H100). Each dataset gets LIMIT seconds; a cut run still writes
# its curves so far as <model>__<ds>.partial.csv.gz. Everything lands in one tarball under $OUT.
#   GGUF=/root/model/SmolLM2-135M-Instruct.Q4_1.gguf DATASETS="list_ops python_docs" LIMIT=280 bash experiments/device/real_traces.sh
set -u
GGUF=${GGUF:-/root/model/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-results/device}
LIMIT=${LIMIT:-540}
N_TRAIN=${N_TRAIN:-128}
W=$OUT/work
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
mkdir -p "$W"
for ds in ${DATASETS:-list_ops python_docs}; do
  timeout "$LIMIT" python3 experiments/e2e_sweep.py --backbone "$GGUF" --dataset "$ds" --n-train "$N_TRAIN" --n-val 48 \
    --n-eval 48 --evals 40 --methods batched --concurrent-factor 0 --log-every "${LOG_EVERY:-10}" --out "$W/$ds" \
    --traces-out "$W/traces" > "$W/$ds.log" 2>&1
  echo "== $ds rc=$?"; grep -v "GGUF tensors\|Loading weights\|Warning" "$W/$ds.log" | tail -4
done
tar czf "$OUT/real_traces.tgz" --exclude=best_adapter -C "$OUT" work && rm -rf "$W"
