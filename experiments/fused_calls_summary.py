"""Where a run's fused calls went: eager runs, CUDA-graph captures and replays, per kind.

`ALTO_CALL_LOG=1 alto run ...` (or `experiments/e2e_sweep.py`) writes each task's fused calls to
`<out>/tasks/<task>/fused_calls.csv` (kind train/eval, adapters, rows, length, labels, graph outcome,
graph drops so far, wall ms to the call's host sync). This tables one or more such logs: per log,
kind and outcome, the calls, their seconds and median ms, the graph drops (stack reallocations), the
captures the memory gate skipped or that ran out of memory, and the most memory the allocator reserved.
`--by-shape` splits each row by the call's adapters, rows and length (fused_calls_by_shape.csv), so two
runs' calls can be compared at equal shapes.

    python experiments/fused_calls_summary.py results/device_h200/session11/e2e_alto/fused_calls.csv --out DIR
    python experiments/fused_calls_summary.py A/fused_calls.csv B/fused_calls.csv --by-shape --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from altosim.argparser import OneLineParser
from altosim.files import check_csv_head, check_regular

COLUMNS = {"kind", "adapters", "rows", "length", "graph", "ms"}


def summarize(path: Path, by_shape: bool = False) -> pd.DataFrame:
    check_regular(path)  # a FIFO blocked the read forever
    check_csv_head(path, str(path))
    calls = pd.read_csv(path)
    missing = COLUMNS - set(calls.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} missing (not an ALTO_CALL_LOG file)")
    keys = ["kind", "graph"] + (["adapters", "rows", "length"] if by_shape else [])
    table = (calls.groupby(keys).ms.agg(calls="count", seconds="sum", median_ms="median")
             .reset_index())
    table["seconds"] = (table["seconds"] / 1e3).round(2)
    table["median_ms"] = table["median_ms"].round(1)
    table.insert(0, "log", str(path))
    for col, name in (("invalidated", "graph_drops"), ("skipped_memory", "captures_skipped_memory"),
                      ("capture_oom", "captures_oom")):  # running counts: the run's total is the last row's
        table[name] = int(calls[col].max()) if col in calls else None
    table["peak_reserved_gib"] = round(calls["reserved_mib"].max() / 1024, 1) if "reserved_mib" in calls else None
    return table


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.split("\n")[0])
    ap.add_argument("calls", nargs="+", type=Path, help="fused_calls.csv files")
    ap.add_argument("--out", required=True, type=Path, help="folder for fused_calls_summary.csv")
    ap.add_argument("--by-shape", action="store_true",
                    help="one row per kind, outcome, adapters, rows and length, to fused_calls_by_shape.csv")
    args = ap.parse_args(argv)
    try:
        table = pd.concat([summarize(p, args.by_shape) for p in args.calls], ignore_index=True)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / ("fused_calls_by_shape.csv" if args.by_shape else "fused_calls_summary.csv"), index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
