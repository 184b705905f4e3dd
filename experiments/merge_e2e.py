"""One e2e CSV with baseline rows measured apart (e.g. experiments/raytune_asha.py's) beside alto's.

Rows of every CSV are stacked (columns by name); each baseline row adds a column
`speedup_vs_<its method>` (the baseline's wall time over each row's: > 1 means faster than the
baseline). Writes <first CSV's stem>_merged.csv under --out and its plot (experiments/plot_e2e.py).

    python experiments/merge_e2e.py $OUT/e2e_NVIDIA_H200_python_docs.csv $OUT/raytune_NVIDIA_H200.csv --out $OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from altosim.argparser import OneLineParser
from altosim.outdir import check_out, input_files, output_dir
from altosim.report import write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot_e2e import plot_e2e, read_e2e  # noqa: E402
from script_errors import one_line_errors  # noqa: E402


def merge(e2e: pd.DataFrame, baselines: list[pd.DataFrame]) -> pd.DataFrame:
    """The e2e rows and the baselines' rows, with a `speedup_vs_<method>` column per baseline row."""
    df = pd.concat([e2e, *baselines], ignore_index=True)
    for b in baselines:
        for method, wall in zip(b["method"], b["wall_s"]):
            df[f"speedup_vs_{method}"] = float(wall) / df["wall_s"]
    return df


def main(argv: list[str] | None = None) -> Path:
    """Bad input (an unreadable CSV, a wall time that is no number > 0, an --out that is a file or
    an input): one line on stderr, exit 2, nothing written."""
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("e2e", help="experiments/e2e_sweep.py's CSV")
    ap.add_argument("baselines", nargs="+", help="CSVs whose rows are baselines (e.g. raytune_<gpu>.csv)")
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    with one_line_errors():
        frames = [read_e2e(p) for p in (a.e2e, *a.baselines)]
        out = check_out(a.out)
        name = f"{Path(a.e2e).stem}_merged.csv"
        with output_dir(out, keep=input_files(a.e2e, *a.baselines)) as stage:  # lands whole, or not at all
            write_csv(merge(frames[0], frames[1:]), stage / name)
            try:  # the CSV is written first: a plotting problem must not lose it
                plot_e2e(stage / name)
            except Exception as e:  # noqa: BLE001
                print(f"warning: no plot for {out / name}: {e}", file=sys.stderr)
    print(out / name)
    return out / name


if __name__ == "__main__":
    main()
