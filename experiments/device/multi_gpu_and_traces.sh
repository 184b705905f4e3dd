#!/usr/bin/env bash
# One command on a 2-GPU machine (after the two staging runs of ../shared/device/README.md):
#  1. bench_parallel.py on both GPUs (AP vs FSDP vs one GPU): SmolLM2-135M (real weights) and a
#     Llama-3.1-70B-shaped random-init backbone truncated to $LAYERS70 layers;
#  2. real LossTraces (60-config grid, no early exit) for list_ops on GPU 0 and python_docs on GPU 1,
#     and e2e method (c) (early exit) + the sequential-PEFT measurement for arithmetic on GPU 1
#     beside python_docs (that wall time is taken on a shared GPU: an upper bound).
# Everything but the bench CSVs lands in one tarball under $OUT.
set -u
GGUF=${GGUF:-/root/model/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-results/device}
BENCH_LIMIT=${BENCH_LIMIT:-110}
LIMIT=${LIMIT:-430}
LAYERS70=${LAYERS70:-2}
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
W=$OUT/work
mkdir -p "$W" "$OUT/par_70b" "$OUT/par_smollm2"
run2() { timeout "$1" python3 -m torch.distributed.run --standalone --nproc-per-node 2 experiments/bench_parallel.py "${@:2}"; }
run2 $((BENCH_LIMIT / 2)) --backbone "llama-3.1-70b:layers=$LAYERS70" --steps 5 --warmup 2 --out "$OUT/par_70b" > "$W/par_70b.log" 2>&1
run2 $((BENCH_LIMIT / 2)) --backbone smollm2 --gguf "$GGUF" --steps 5 --warmup 2 --out "$OUT/par_smollm2" > "$W/par_smollm2.log" 2>&1
tail -3 "$W"/par_*.log
E2E="experiments/e2e_sweep.py --backbone $GGUF --n-train 128 --n-val 48 --n-eval 48 --evals 40"
CUDA_VISIBLE_DEVICES=0 timeout "$LIMIT" python3 $E2E --dataset list_ops --methods batched --concurrent-factor 0 \
  --out "$W/list_ops" --traces-out "$W/traces" > "$W/list_ops.log" 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout "$LIMIT" python3 $E2E --dataset python_docs --methods batched --concurrent-factor 0 \
  --out "$W/python_docs" --traces-out "$W/traces" > "$W/python_docs.log" 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout "$LIMIT" python3 $E2E --dataset arithmetic --methods early_exit,sequential --peft-steps 12 \
  --reference-trace traces/real/SmolLM2-135M__arithmetic.csv.gz --out "$W/arithmetic" > "$W/arithmetic.log" 2>&1 &
wait
for f in "$W"/*.log; do echo "== $f"; grep -v "GGUF tensors\|Loading weights\|Warning\|warn" "$f" | tail -5; done
tar czf "$OUT/runs.tgz" --exclude=best_adapter -C "$OUT" work && rm -rf "$W"
