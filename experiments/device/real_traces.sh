#!/usr/bin/env bash
# Real LossTraces on the GPU machine: the 60-config grid trained to completion without early exit
# (method `batched` of e2e_sweep.py), one process per dataset, all sharing the one GPU (the fused
# runtime is host-bound, so two processes fill the GPU better than one). Everything lands in one
# tarball under $OUT (the device tool brings back at most 8 files).
#   GGUF=/root/model/SmolLM2-135M-Instruct.Q4_1.gguf DATASETS="list_ops python_docs" bash experiments/device/real_traces.sh
set -u
GGUF=${GGUF:-/root/model/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-results/device}
LIMIT=${LIMIT:-540}
W=$OUT/work
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
mkdir -p "$W"
for ds in ${DATASETS:-list_ops python_docs}; do
  timeout "$LIMIT" python3 experiments/e2e_sweep.py --backbone "$GGUF" --dataset "$ds" --n-train 128 --n-val 48 \
    --n-eval 48 --evals 40 --methods batched --concurrent-factor 0 --log-every "${LOG_EVERY:-10}" --out "$W/$ds" --traces-out "$W/traces" \
    > "$W/$ds.log" 2>&1 &
done
wait
for f in "$W"/*.log; do echo "== $f"; grep -v "GGUF tensors\|Loading weights\|Warning" "$f" | tail -6; done
tar czf "$OUT/real_traces.tgz" --exclude=best_adapter -C "$OUT" work && rm -rf "$W"
