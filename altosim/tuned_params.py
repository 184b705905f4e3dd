"""Files of tuned ALTO parameters (`early_exit: {name: tuned, params: {file: PATH}}`).

The file is read when the run config loads (`resolve_tuned`), never inside the policy core: the
config then names a plain `alto` policy with those parameters, so the Controller, the simulator,
the runtime and `alto replay` build the same policy and the event log names the numbers used.

File format (extra keys are provenance and are ignored):
    {"policy": "alto", "params": {"warmup_ratio": 0.1, "select_ratio": 0.2, ...}, ...}
`params` may name any subset of Alto's parameters; the rest keep Alto's defaults. Infinity
(`tau_gap: Infinity`, the gap rule off) is allowed, as Python's json writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from altosim.errors import InputError
from altosim.files import loads_json, read_text
from altosim.policy.early_exit import Alto, build_early_exit

TUNED = "tuned"
ALTO_PARAMS = frozenset(Alto.model_fields)


def read_tuned_params(file: str | Path) -> dict[str, Any]:
    """The Alto parameters stored in a tuner file; any problem -> one-line ValueError naming it."""
    path = Path(file)
    try:  # a FIFO, bad UTF-8 or JSON, deep nesting, a key given twice: one line
        data = loads_json(read_text(path), str(path))
    except InputError as e:
        where = f"bad JSON at line {e.line}" if e.field == "<json>" else e.field
        raise ValueError(f"tuned: params file {str(path)!r}: {where}: {e.problem}") from None
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
    try:
        build_early_exit("alto", params)
    except ValueError as e:
        raise ValueError(f"tuned: params file {str(path)!r}: {e}") from None
    return dict(params)


def resolve_tuned(name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, params) of the policy a config names: `tuned` becomes `alto` with the file's
    parameters; any other policy is returned unchanged."""
    if name != TUNED:
        return name, params
    extra = sorted(set(params) - {"file"})
    if extra:
        raise ValueError(f"tuned: unknown parameter {extra[0]!r} (only 'file')")
    file = params.get("file")
    if not isinstance(file, (str, Path)) or not str(file):
        raise ValueError(f"tuned: parameter 'file' must be a path, got {file!r}")
    return "alto", read_tuned_params(file)


def write_tuned_params(file: str | Path, params: dict[str, Any], **provenance: Any) -> None:
    """Write a file `tuned` reads (atomically: temp file + rename). Checks params first."""
    build_early_exit("alto", params)  # fail before writing anything
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"policy": "alto", "params": params, **provenance}, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
