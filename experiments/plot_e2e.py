"""Plot an end-to-end sweep CSV (experiments/e2e_sweep.py): wall time per method, one bar each.

Bars are the methods' wall times on a log axis (extrapolated ones hatched), each labelled with
its speedup over sequential PEFT, the share of the sweep's samples it trained and, where it
chose a config, how far its best val loss is above the full sweep's.

    python experiments/plot_e2e.py results/e2e_nvidia_h200.csv            # -> results/e2e_nvidia_h200.png
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from altosim.argparser import OneLineParser  # noqa: E402
from altosim.errors import InputError  # noqa: E402
from altosim.files import check_csv_head, read_text  # noqa: E402
from altosim.outdir import check_out_file  # noqa: E402
from altosim.report import save_fig  # noqa: E402

LABELS = {"sequential_peft": "sequential PEFT", "concurrent_peft": "concurrent PEFT workers",
          "concurrent_peft_est": "concurrent PEFT (estimated)", "batched": "alto fused, no exit",
          "early_exit": "alto fused + early exit",
          "early_exit_autotuned": "alto, kernels autotuned", "raytune_asha_default": "Ray Tune + ASHA (default rungs)",
          "raytune_asha_gentle": "Ray Tune + ASHA (gentle rungs)"}
REQUIRED = ("method", "wall_s")


def _label(r: pd.Series) -> str:
    parts = []
    sp = r.get("speedup_vs_sequential")
    if sp is not None and math.isfinite(sp):
        parts.append(f"{sp:.1f}x vs sequential")
    saved = r.get("samples_saved")
    if saved is not None and math.isfinite(saved) and saved > 0:
        parts.append(f"{saved:.0%} samples saved")
    dv = r.get("val_loss_vs_full_sweep")
    if dv is not None and math.isfinite(dv):
        parts.append(f"best val {dv:+.2%}")
    return ", ".join(parts)


def read_e2e(csv: str | Path) -> pd.DataFrame:
    """An e2e CSV (method and wall_s columns, wall_s a finite number > 0 in every row), or an
    InputError naming the file, the field and the row: a FIFO, non-UTF-8 bytes, an empty file,
    a row wider than the header or a wall time of 0, -5, inf or text was a traceback (or a plot
    of a log axis from 0) before."""
    text = read_text(Path(csv))
    if not text.strip():
        raise InputError(str(csv), "<file>", "empty: expected an e2e_sweep CSV (method, wall_s, ...)")
    check_csv_head(io.StringIO(text), str(csv))
    try:
        df = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as e:
        raise InputError(str(csv), "<file>", f"cannot read as CSV: {e}") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(str(csv), missing[0], f"not an e2e_sweep CSV (missing columns {missing})")
    if df.empty:
        raise InputError(str(csv), "<rows>", "no rows")
    wall = pd.to_numeric(df["wall_s"], errors="coerce")
    bad = ~(wall.gt(0) & wall.lt(math.inf))
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        got = str(df["wall_s"].iloc[i])
        raise InputError(str(csv), "wall_s", f"must be a finite number of seconds > 0, got {got!r}", line=i + 2)
    df["wall_s"] = wall
    return df


def plot_e2e(csv: Path, out: Path | None = None) -> Path:
    """Write the PNG for `csv` (default: beside it, same stem); return its path."""
    df = read_e2e(csv)
    df = df.sort_values("wall_s", ascending=True).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(df) + 1.6))
    extrap = df["extrapolated"].astype(str).str.lower().eq("true") if "extrapolated" in df else [False] * len(df)
    for i, r in df.iterrows():
        ours = str(r["method"]) in ("batched", "early_exit", "early_exit_autotuned")
        ax.barh(i, r["wall_s"], color="tab:blue" if ours else "tab:gray",
                hatch="//" if extrap[i] else None, edgecolor="white")
        ax.text(r["wall_s"] * 1.05, i, f"{r['wall_s']:,.0f} s  {_label(r)}", va="center", fontsize=8)
    repeated = df["method"].duplicated(keep=False)  # a method measured in several runs: say which
    names = [LABELS.get(str(m), str(m)) + (f" (run {r['run']})" if repeated[i] and "run" in df else "")
             for i, (m, r) in enumerate(zip(df["method"], df.to_dict("records")))]
    ax.set_yticks(range(len(df)), names)
    ax.set_xscale("log")
    ax.set_xlim(df["wall_s"].min() / 2, df["wall_s"].max() * 10)
    ax.invert_yaxis()
    where = " / ".join(str(df[c].iloc[0]) for c in ("gpu", "dataset") if c in df)
    configs = f", {int(df['configs'].iloc[0])} configs" if "configs" in df else ""
    ax.set_title(f"LoRA sweep wall time{configs} ({where}); hatched: extrapolated", fontsize=10)
    ax.set_xlabel("wall time (s, log scale)")
    fig.tight_layout()
    out = out or Path(csv).with_suffix(".png")
    save_fig(fig, Path(out))  # written whole (temp file + rename) or not at all; closes the figure
    return out


def main(argv: list[str] | None = None) -> Path:
    """One line on stderr and exit 2 for bad input (nothing written), as `alto`'s commands do."""
    from script_errors import one_line_errors  # experiments/ is the script's folder

    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--out", help="PNG to write (default: beside the CSV, same stem)")
    args = ap.parse_args(argv)
    with one_line_errors():
        out = check_out_file(args.out if args.out is not None else args.csv.with_suffix(".png"), inputs=(args.csv,))
        out = plot_e2e(args.csv, out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
