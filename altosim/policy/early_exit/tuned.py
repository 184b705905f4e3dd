"""`tuned`: ALTO's Algorithm 1 with parameters read from a JSON file written by `altosim.tuning`.

Config: `early_exit: {name: tuned, params: {file: PATH}}`. The file is read once, when the policy
is built, so the Controller loads it the same way in simulation and on GPUs; the policy it
returns is a plain `Alto` with those parameters (equal to `Alto(**params)`), hence its log entry
and `params()` name the numbers actually used, not only the file.

File format (extra keys are provenance and are ignored):
    {"policy": "alto", "params": {"warmup_ratio": 0.1, "select_ratio": 0.2, ...}, ...}
`params` may name any subset of Alto's parameters; the rest keep Alto's defaults (the paper's
thresholds with our plateau and stall conditions; `gap_requires_plateau: false, div_margin: 0`
gives the paper's rule).
Infinity (`tau_gap: Infinity`, the gap rule off) is allowed, as Python's json writes it.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from altosim.policy.early_exit.alto import Alto
from altosim.policy.registry import EARLY_EXIT

ALTO_PARAMS = frozenset(f.name for f in fields(Alto) if f.init)


def read_tuned_params(file: str | Path) -> dict[str, Any]:
    """The Alto parameters stored in a tuner file; any problem -> one-line ValueError naming it."""
    path = Path(file)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"tuned: params file {str(path)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"tuned: params file {str(path)!r}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"tuned: params file {str(path)!r}: bad JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise ValueError(f"tuned: params file {str(path)!r}: expected an object with a 'params' object")
    policy = data.get("policy", "alto")
    if policy != "alto":
        raise ValueError(f"tuned: params file {str(path)!r}: 'policy' must be 'alto', got {policy!r}")
    params = data["params"]
    unknown = sorted(set(params) - ALTO_PARAMS)
    if unknown:
        raise ValueError(f"tuned: params file {str(path)!r}: unknown alto parameter {unknown[0]!r} "
                         f"(known: {', '.join(sorted(ALTO_PARAMS))})")
    return dict(params)


@EARLY_EXIT.register("tuned")
def tuned(file: str) -> Alto:
    """An Alto with the parameters of `file`; bad values -> ValueError naming the file."""
    if not isinstance(file, (str, Path)) or not str(file):
        raise ValueError(f"tuned: parameter 'file' must be a path, got {file!r}")
    params = read_tuned_params(file)
    try:
        return Alto(**params)
    except ValueError as e:
        raise ValueError(f"tuned: params file {str(file)!r}: {e}") from None


def write_tuned_params(file: str | Path, params: dict[str, Any], **provenance: Any) -> None:
    """Write a file `tuned` reads (atomically: temp file + rename). Checks params first."""
    Alto(**params)  # fail before writing anything
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"policy": "alto", "params": params, **provenance}, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
