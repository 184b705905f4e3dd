"""One e2e CSV with baseline rows measured apart (e.g. experiments/raytune_asha.py's) beside alto's.

Rows of every CSV are stacked (columns by name); each baseline row adds a column
`speedup_vs_<its method>` (the baseline's wall time over each row's: > 1 means faster than the
baseline). Writes <first CSV's stem>_merged.csv under --out and its plot (experiments/plot_e2e.py).

    python experiments/merge_e2e.py $OUT/e2e_NVIDIA_H200_python_docs.csv $OUT/raytune_NVIDIA_H200.csv --out $OUT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from altosim.report import write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot_e2e import plot_e2e  # noqa: E402

REQUIRED = ("method", "wall_s")


def merge(e2e: pd.DataFrame, baselines: list[pd.DataFrame]) -> pd.DataFrame:
    """The e2e rows and the baselines' rows, with a `speedup_vs_<method>` column per baseline row."""
    df = pd.concat([e2e, *baselines], ignore_index=True)
    for b in baselines:
        for method, wall in zip(b["method"], b["wall_s"]):
            df[f"speedup_vs_{method}"] = float(wall) / df["wall_s"]
    return df


def read(path: str) -> pd.DataFrame:
    """A CSV with the e2e columns, or an InputError-style line and exit 2."""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        sys.exit(f"error: {path}: columns: missing {missing} (not an e2e CSV)")
    if not pd.to_numeric(df["wall_s"], errors="coerce").gt(0).all():
        sys.exit(f"error: {path}: wall_s: every value must be a number > 0")
    return df


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("e2e", help="experiments/e2e_sweep.py's CSV")
    ap.add_argument("baselines", nargs="+", help="CSVs whose rows are baselines (e.g. raytune_<gpu>.csv)")
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    try:
        frames = [read(p) for p in (a.e2e, *a.baselines)]
    except SystemExit as e:  # one line, exit 2, nothing written
        print(e.code, file=sys.stderr)
        sys.exit(2)
    out = Path(a.out) / f"{Path(a.e2e).stem}_merged.csv"
    write_csv(merge(frames[0], frames[1:]), out)
    try:  # the CSV is written first: a plotting problem must not lose it
        plot_e2e(out)
    except Exception as e:  # noqa: BLE001
        print(f"warning: no plot for {out}: {e}", file=sys.stderr)
    print(out)
    return out


if __name__ == "__main__":
    main()
