#!/usr/bin/env bash
# Wheels for own-data tasks (altoruntime/data/files.py reads them with `datasets`) that the GPU
# machine lacks (Python 3.12; it has torch, transformers 5.17, pandas, pyarrow 25, numpy, tqdm,
# requests, pyyaml, huggingface_hub, filelock). Complements ../shared/device/fetch-wheels.sh:
#   .whl/      datasets, dill, multiprocess, xxhash, fsspec, liger-kernel (the versions constraints.txt pins)
#   .whl_hub/  huggingface_hub 1.33 (datasets needs >= 1.31; transformers 5.17 needs < 2): installed
#              by new_traces.sh only when the machine's own huggingface_hub is older than 1.31
# Usage, from the project root:  bash experiments/device/fetch-extra-wheels.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$exclude")"; touch "$exclude"
for d in .whl .whl_hub; do
  grep -qx "/$d/" "$exclude" || echo "/$d/" >> "$exclude"
  mkdir -p "$d"
done
get() {  # get DIR PKG==VER ...
  local dir=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dir" "$@"
}
get .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 fsspec==2026.9.0 liger-kernel==0.8.5
get .whl_hub huggingface_hub==1.33.0
du -ch .whl/datasets-* .whl/dill-* .whl/multiprocess-* .whl/xxhash-* .whl/fsspec-* .whl_hub/* | tail -1
