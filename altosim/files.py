"""Atomic multi-file writes and one-line errors for unreadable files (shared by the readers)."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

from altosim.errors import InputError
from altosim.outdir import file_mode


def atomic_write(files: list[tuple[Path, str | bytes]]) -> None:
    """Write all files, or none of them: contents go to temp files first, then os.replace each."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
            os.chmod(tmp, file_mode())  # mkstemp makes 0600; outputs are ordinary files
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        return (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8-sig")  # a leading BOM is dropped
    except FileNotFoundError:
        raise InputError(str(path), "<file>", "no such file") from None
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as e:  # zlib.error: a corrupt .gz body
        raise InputError(str(path), "<file>", f"cannot read: {e.strerror if isinstance(e, OSError) and e.strerror else e}") from None


MAX_DEPTH = 100  # brackets deep: no real config, workload or log comes near; parsers recurse (or crawl) on more


def check_nesting(text: str, file: str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON/YAML nested deeper than `limit` brackets before a parser recurses into it
    (brackets inside strings count too: a bound, not a parse)."""
    if text.count("[") + text.count("{") <= limit:
        return
    import numpy as np

    b = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    step = (np.isin(b, (0x5B, 0x7B)).astype(np.int32) - np.isin(b, (0x5D, 0x7D)).astype(np.int32))
    depth = int(np.cumsum(step).max(initial=0))
    if depth > limit:
        raise InputError(file, "<root>", f"nested {depth} levels deep; at most {limit}")


def json_file(path: Path) -> Any:
    text = read_text(path)
    check_nesting(text, str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(str(path), "<json>", e.msg, e.lineno) from None
    except RecursionError:
        raise InputError(str(path), "<json>", "nested too deeply") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise InputError(str(path), "<json>", str(e)) from None
