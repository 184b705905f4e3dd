"""Cost profiles on disk: `.csv` with the CostRecord columns + optional `<stem>.meta.json` provenance,
or one `.json` (the CostProfile model). The schema itself is a boundary schema (`altosim.schemas.cost`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from pydantic import ValidationError

from altosim.errors import InputError, from_validation_error
from altosim.files import atomic_write, check_columns, check_regular, json_file, read_text
from altosim.schemas.cost import CostProfile, CostRecord


COST_COLUMNS = list(CostRecord.model_fields)
OPTIONAL_COLUMNS = ("note", "parallel_degree", "first_step_ms", "eval_ms", "val_ms", "first_val_ms")  # older profiles lack them


def read_cost_profile(path: str | Path) -> CostProfile:
    path = Path(path)
    meta_path = path.with_name(path.stem + ".meta.json")
    head = json_file(meta_path) if meta_path.exists() else {"source": str(path)}
    if not isinstance(head, dict):
        raise InputError(str(meta_path), "<root>", "expected a JSON object")
    reader = csv.DictReader(io.StringIO(read_text(path)))
    check_columns(list(reader.fieldnames or []), str(path))
    missing = [c for c in COST_COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL_COLUMNS]
    if missing:
        raise InputError(str(path), missing[0], "missing column", 1)
    rows = []
    for row in reader:
        if not any((v or "").strip() for v in row.values()):
            continue
        rec = {k: v for k, v in row.items() if v not in ("", None) or k == "note"}
        try:
            rows.append(CostRecord.model_validate(rec))
        except ValidationError as e:
            raise from_validation_error(e, str(path), reader.line_num) from None
    try:
        return CostProfile.model_validate({**head, "rows": rows})
    except ValidationError as e:
        raise from_validation_error(e, str(meta_path)) from None


def write_cost_profile(profile: CostProfile, path: str | Path) -> None:
    path = Path(path)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COST_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in profile.rows:
        w.writerow(r.model_dump())
    meta = json.dumps(profile.model_dump(exclude={"rows"}), indent=1, sort_keys=True) + "\n"
    atomic_write([(path, buf.getvalue()), (path.with_name(path.stem + ".meta.json"), meta)])


def read_profile(path: str | Path) -> CostProfile:
    """A CostProfile from .csv (+ .meta.json sidecar) or .json; bad input is one InputError."""
    p = Path(path)
    check_regular(p, "--profile")  # no such file, a folder or a FIFO: one line saying which
    if p.suffix == ".json":
        try:
            return CostProfile.model_validate_json(read_text(p))
        except ValidationError as e:
            raise from_validation_error(e, str(p)) from None
    return read_cost_profile(p)
