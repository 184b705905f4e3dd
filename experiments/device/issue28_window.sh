#!/usr/bin/env bash
# Issue 28's measurements on one H200, after staging (experiments/device/README.md: `.stage_a` copied,
# the wheels installed into /root/site, then a run carrying `.stage_b`). Steps by name, in order:
#   setup   assemble the GGUF, check its hash, convert it once to the plain bf16 folder /root/smollm2_hf
#   tests   the GPU tests of the host-cost changes (in-place weight gradients, step graphs, fused
#           backbone, compile ahead); the log goes to $OUT/tests.log
#   e2e0    the python_docs early-exit e2e run (the README's command) with ALTO_COMPILE_AHEAD=0
#   e2e1    the same with ALTO_COMPILE_AHEAD=1
#   e2eg    the same with ALTO_GROUP_PROJECTIONS=1 (q/k/v and gate/up as one LoRA call each), compile ahead
#           as COMPILE_AHEAD says (0 by default, to compare with e2e0)
#   e2ep    the same as e2e1 with ALTO_GRAPH_PAD_FAMILIES=1 (a new family of captured shapes padded up front
#           to its kind's widest: session 18 re-captured families 20 times, 5.1 s); compare with e2e1
#   e2es    the e2e run with sequential PEFT first (extrapolated from PEFT steps measured in the same run,
#           training steps only) then alto's early exit, today's defaults: the 40x figure from one CSV
#   capt    the GPU tests of captured steps alone (tests/altoruntime/test_step_graphs_gpu.py); log $OUT/capt.log
#   diag    diag_host.py at 4, 15 and 60 adapters, eager and captured steps
#   shrink  diag_shrink.py on the run's paths: the group shrinks 60 -> 15 -> 4 -> 2 -> 1, step ms and new Triton
#           compiles; a cProfile table of the cold first step ($OUT/first_step_prof.txt)
#   setupprof  where a run's `models` setup seconds go (7-10 s in session 17): cProfile of opening the
#           backbone as `alto run` does, top functions by cumulative time; log $OUT/setupprof.log
#   kbench  bench_kernels.py --quick --graphs: the fused layer vs the frozen base and padded torch grouped
#           GEMMs, each timed as a CUDA graph replay, with the floor rows at the copy bandwidth it measures
#   kgemm   the kernel bench's --gemm rows (cuBLAS vs our Triton GEMM with the LoRA expand in its
#           epilogue, variant "gemm"; session 15) and that variant's GPU tests; log $OUT/kgemm.log
# Every e2e run starts from an empty Triton cache (a cold start, as a fresh machine sees) and logs
# its fused calls (ALTO_CALL_LOG=1); its CSVs are copied to $OUT's top (deep paths do not come back).
#   OUT=$OUT bash experiments/device/issue28_window.sh setup tests e2e0
set -u -o pipefail
OUT=${OUT:?set OUT}
export PYTHONPATH=/root/site:$PWD:$PWD/experiments HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
G=/root/model/SmolLM2-135M-Instruct.Q4_1.gguf
HF=/root/smollm2_hf
E2E_LIMIT=${E2E_LIMIT:-220}
mkdir -p "$OUT"

e2e() {  # $1: tag; $2: ALTO_COMPILE_AHEAD; $3: ALTO_GROUP_PROJECTIONS; $4: methods (default early_exit)
  local tag=$1 dir=/root/$1 methods=${4:-early_exit} t0
  rm -rf "$dir"
  t0=$(date +%s)
  ALTO_CALL_LOG=1 ALTO_COMPILE_AHEAD=$2 ALTO_GROUP_PROJECTIONS=$3 TRITON_CACHE_DIR=$(mktemp -d) timeout -k 20 "$E2E_LIMIT" \
    python3 experiments/e2e_sweep.py --backbone "$HF" --dataset python_docs --n-train 128 --n-val 48 \
    --n-eval 48 --evals 40 --methods "$methods" --concurrent-factor 0 \
    --reference-trace traces/real/SmolLM2-135M__python_docs.csv.gz --out "$dir" > "$OUT/$tag.log" 2>&1
  echo "== $tag rc=$? $(( $(date +%s) - t0 )) s"
  tail -6 "$OUT/$tag.log"
  for name in fused_calls.csv summary.csv "e2e_*.csv"; do
    f=$(find "$dir" -name "$name" | head -1)
    [ -n "$f" ] && cp "$f" "$OUT/${tag}_$(basename "$f")"
  done
  f=$(find "$dir" -name events.jsonl | head -1)
  [ -n "$f" ] && gzip -c "$f" > "$OUT/${tag}_events.jsonl.gz"
  [ -e "$OUT/${tag}_fused_calls.csv" ] && python3 experiments/fused_calls_summary.py "$OUT/${tag}_fused_calls.csv" \
    --out "/tmp/${tag}_calls" 2>&1 | cut -c1-160
  [ -e "$OUT/${tag}_summary.csv" ] && cat "$OUT/${tag}_summary.csv"
}

for step in "$@"; do
  case $step in
    setup)
      mkdir -p /root/model
      cat /root/stage/part_aa .stage_b/part_ab > "$G" || exit 3
      echo "$(cat .stage_b/SHA256)  $G" | sha256sum -c || exit 3
      nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv,noheader
      python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers',
        transformers.__version__, 'triton', triton.__version__)"
      [ -e "$HF/config.json" ] || python3 -c "import torch; from pathlib import Path; import raytune_asha as r
r.plain_checkpoint('$G', None, torch.bfloat16, Path('$HF'))" 2>&1 | tail -2
      ;;
    tests)
      timeout -k 10 "${TEST_LIMIT:-240}" python3 -m pytest -q -m gpu -rs -s -p no:cacheprovider \
        tests/altokernels/test_inplace_wgrad.py tests/altoruntime/test_step_graphs_gpu.py \
        tests/altokernels/test_group.py tests/altoruntime/test_group_projections.py \
        tests/altoruntime/test_compile_ahead_gpu.py tests/altoruntime/test_fused_backbone_gpu.py \
        tests/altokernels/test_rope.py tests/altokernels/test_rms_norm.py \
        > "$OUT/tests.log" 2>&1
      echo "== tests rc=$?"
      grep -E "passed|failed|error|FAILED|ERROR|first step|rerun - first" "$OUT/tests.log" | tail -25
      ;;
    e2e0) e2e e2e0 0 0 ;;
    e2e1) e2e e2e1 1 0 ;;
    e2eg) e2e e2eg "${COMPILE_AHEAD:-0}" 1 ;;
    e2es) e2e e2es 1 0 sequential,early_exit ;;
    e2ep) export ALTO_GRAPH_PAD_FAMILIES=1; e2e e2ep 1 0; unset ALTO_GRAPH_PAD_FAMILIES ;;
    capt)
      timeout -k 10 120 python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests/altoruntime/test_step_graphs_gpu.py \
        > "$OUT/capt.log" 2>&1
      echo "== capt rc=$?"; tail -5 "$OUT/capt.log"
      ;;
    diag)
      timeout -k 10 "${DIAG_LIMIT:-200}" python3 experiments/device/diag_host.py --sizes 4,15,60 --graphs 0,1 \
        --styles profile,run --fused 1 --warmup 4 --out "$OUT/diag_host.csv" > "$OUT/diag_host.log" 2>&1
      echo "== diag rc=$?"
      tail -16 "$OUT/diag_host.log"
      ;;
    shrink)
      timeout -k 10 "${SHRINK_LIMIT:-150}" python3 experiments/device/diag_shrink.py --impls auto --profile-first "$OUT/first_step_prof.txt" \
        --out "$OUT/diag_shrink.csv" > "$OUT/diag_shrink.log" 2>&1
      echo "== shrink rc=$?"
      tail -20 "$OUT/diag_shrink.log" | cut -c1-200
      ;;
    setupprof)
      timeout -k 10 120 python3 -c "import cProfile, pstats, time
t = time.perf_counter()
pr = cProfile.Profile(); pr.enable()
import torch
from altoruntime.run import _open_flag_backbone
t_import = time.perf_counter() - t
b = _open_flag_backbone('$HF', torch.bfloat16)
pr.disable()
print(f'imports {t_import:.2f} s, total {time.perf_counter() - t:.2f} s')
pstats.Stats(pr).sort_stats('cumulative').print_stats(45)" > "$OUT/setupprof.log" 2>&1
      echo "== setupprof rc=$?"; head -3 "$OUT/setupprof.log"
      ;;
    kbench)
      timeout -k 10 "${KBENCH_LIMIT:-200}" python3 experiments/bench_kernels.py --quick --graphs --out /root/kbench \
        > "$OUT/kbench.log" 2>&1
      echo "== kbench rc=$?"
      tail -25 "$OUT/kbench.log"
      for f in /root/kbench/*.csv /root/kbench/*.txt; do [ -e "$f" ] && cp "$f" "$OUT/kbench_$(basename "$f")"; done
      ;;
    kgemm)
      timeout -k 10 "${GEMM_LIMIT:-420}" python3 experiments/bench_kernels.py --gemm --out /root/kgemm \
        > "$OUT/kgemm.log" 2>&1
      echo "== kgemm rc=$?"
      tail -30 "$OUT/kgemm.log"
      for f in /root/kgemm/*.csv; do [ -e "$f" ] && cp "$f" "$OUT/kgemm_$(basename "$f")"; done
      timeout -k 10 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/altokernels/test_gemm_epilogue.py \
        > "$OUT/kgemm_tests.log" 2>&1
      echo "== kgemm tests rc=$?"; tail -3 "$OUT/kgemm_tests.log"
      ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
ls "$OUT"
