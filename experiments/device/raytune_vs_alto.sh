#!/usr/bin/env bash
# One command (< 10 min) on one GPU, after the backbone and Ray are staged (../shared/device/README.md,
# ../shared/device/stage-ray.sh): the Ray Tune + ASHA baseline (experiments/raytune_asha.py, 15 PEFT
# trials sharing the GPU) on the python_docs grid, then alto's early-exit e2e run on the same backbone
# and grid (the README's python_docs command), back to back in one process tree, so both are measured
# on the same machine; experiments/merge_e2e.py puts both rows in one CSV with the speedup over each
# baseline row. Everything lands under $OUT (logs, CSVs, the merged plot; one tarball of the rest).
#   RUNGS=default (the default)       Ray's default rung spacing, then alto
#   RUNGS=gentle E2E=0                the gentler rungs alone (the second variant)
#   RUNGS=default,gentle E2E=0        both settings one after the other (~6 min: give it the whole call)
# Set-up line first, as for every runbook command (experiments/device/README.md):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
set -u -o pipefail
GGUF=${GGUF:-/root/model/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-results/device}
RUNGS=${RUNGS:-default}
E2E=${E2E:-1}
TRIALS=${TRIALS:-15}
RT_LIMIT=${RT_LIMIT:-$([ "$E2E" = 1 ] && echo 300 || echo 560)}
E2E_LIMIT=${E2E_LIMIT:-250}
E2E_METHODS=${E2E_METHODS:-early_exit}  # sequential,early_exit adds sequential PEFT (measured steps, extrapolated)
REF=traces/real/SmolLM2-135M__python_docs.csv.gz
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT"
python3 -c "import ray, ray.tune; print('ray', ray.__version__)" || { echo "no Ray Tune here: stage it first (../shared/device/stage-ray.sh)"; exit 3; }
[ -e "$GGUF" ] || { echo "no backbone at $GGUF: stage it first (../shared/device/stage-smollm2.sh)"; exit 3; }
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
GRID=${GRID:-"--backbone $GGUF --dataset python_docs --n-train 128 --n-val 48 --n-eval 48 --evals 40"}
tag=${RUNGS//,/_}
t0=$(date +%s)
timeout -k 20 "$RT_LIMIT" python3 experiments/raytune_asha.py $GRID --rungs "$RUNGS" --trials-at-once "$TRIALS" \
  --reference-trace "$REF" --out "$OUT/raytune_$tag" 2>&1 | grep --line-buffered -v "GGUF tensors\|Loading weights\|authentication" \
  | tee "$OUT/raytune_$tag.log"
echo "== raytune $RUNGS rc=${PIPESTATUS[0]} $(( $(date +%s) - t0 )) s"
if [ "$E2E" = 1 ]; then
  t0=$(date +%s)
  timeout -k 20 "$E2E_LIMIT" python3 experiments/e2e_sweep.py $GRID --methods "$E2E_METHODS" --concurrent-factor 0 \
    --reference-trace "$REF" --out "$OUT/e2e_ee" 2>&1 | grep --line-buffered -v "GGUF tensors\|Loading weights" | tee "$OUT/e2e_ee.log"
  echo "== e2e early_exit rc=${PIPESTATUS[0]} $(( $(date +%s) - t0 )) s"
fi
# alto's row and the baseline's in one CSV, with speedup_vs_raytune_asha_<rungs> columns, and its plot
rt_csv=$(ls "$OUT/raytune_$tag"/raytune_*.csv 2>/dev/null | grep -v "_trials.csv\|_reports.csv")
e2e_csv=$(ls "$OUT"/e2e_ee/e2e_*.csv 2>/dev/null)
[ -n "$rt_csv" ] && [ -n "$e2e_csv" ] && python3 experiments/merge_e2e.py $e2e_csv $rt_csv --out "$OUT"
# at most 8 files come back from a run: the summary CSVs and logs on top, the rest in one tarball
cp "$OUT/raytune_$tag"/raytune_*.csv "$OUT"/ 2>/dev/null
rm -f "$OUT"/raytune_*_reports.csv
dirs=$(cd "$OUT" && ls -d "raytune_$tag" e2e_ee 2>/dev/null)
[ -n "$dirs" ] && tar czf "$OUT/raytune_vs_alto_$tag.tgz" --exclude=best_adapter -C "$OUT" $dirs && (cd "$OUT" && rm -rf $dirs)
ls "$OUT"
