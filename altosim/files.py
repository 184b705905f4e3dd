"""Atomic multi-file writes and one-line errors for unreadable files (shared by the readers)."""

from __future__ import annotations

import gzip
import json
import os
import stat
import tempfile
import zlib
from pathlib import Path
from typing import Any

from altosim.errors import InputError
from altosim.interrupts import deferred_interrupts
from altosim.outdir import file_mode


def atomic_write(files: list[tuple[Path, str | bytes]]) -> None:
    """Write all files, or none of them: contents go to temp files first, then os.replace each
    (Ctrl-C and SIGTERM wait until every file is in place)."""
    temps: list[tuple[str, Path]] = []
    with deferred_interrupts():
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


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode cannot be read as an input, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, expected a file"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"is {kind}, not a regular file (reading it can block or never end); give a file"


def check_regular(path: Path, field: str = "<file>") -> None:
    """`path` names a regular file (for readers that open it themselves: pandas, datasets)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(str(path), field, "no such file") from None
    except OSError as e:
        raise InputError(str(path), field, f"cannot read: {e.strerror or e}") from None
    problem = _not_regular(mode)
    if problem:
        raise InputError(str(path), field, problem)


def read_bytes(path: Path) -> bytes:
    """A regular file's bytes. It is opened without blocking and checked before any read: a FIFO
    with no writer (or a device such as /dev/zero) would hang or fill memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(str(path), "<file>", "no such file") from None
    except OSError as e:
        raise InputError(str(path), "<file>", f"cannot read: {e.strerror or e}") from None
    problem = _not_regular(os.fstat(fd).st_mode)
    if problem:
        os.close(fd)
        raise InputError(str(path), "<file>", problem)
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except OSError as e:
            raise InputError(str(path), "<file>", f"cannot read: {e.strerror or e}") from None


def read_text(path: Path) -> str:
    """A regular file's text (UTF-8, a leading BOM dropped; `.gz` decompressed)."""
    raw = read_bytes(path)
    try:
        return (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as e:  # zlib.error: a corrupt .gz body
        raise InputError(str(path), "<file>", f"cannot read: {e.strerror if isinstance(e, OSError) and e.strerror else e}") from None


MAX_DEPTH = 100  # brackets deep: no real config, workload or log comes near; parsers recurse (or crawl) on more


def check_nesting(text: str, file: str, limit: int = MAX_DEPTH, field: str = "<root>") -> None:
    """Refuse JSON/YAML nested deeper than `limit` brackets before a parser recurses into it
    (brackets inside strings count too: a bound, not a parse)."""
    if text.count("[") + text.count("{") <= limit:
        return
    import numpy as np

    b = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    step = (np.isin(b, (0x5B, 0x7B)).astype(np.int32) - np.isin(b, (0x5D, 0x7D)).astype(np.int32))
    depth = int(np.cumsum(step).max(initial=0))
    if depth > limit:
        raise InputError(file, field, f"nested {depth} levels deep; at most {limit}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a key given twice (json keeps the last silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKey(dup)
    return out


class DuplicateKey(ValueError):
    """A mapping key given twice in one JSON object or YAML mapping."""

    def __init__(self, key: Any, line: int | None = None) -> None:
        self.key, self.line = key, line
        super().__init__(f"key {key!r} given twice in one mapping; keep one")


def loads_json(text: str, file: str, field: str = "<json>", line: int | None = None) -> Any:
    """JSON text parsed, every problem one InputError naming `file`: bad syntax, nesting deeper
    than MAX_DEPTH, an integer of more than 4300 digits, a key given twice in one object."""
    check_nesting(text, file, field="<root>" if field == "<json>" else field)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        problem = e.msg if field == "<json>" else f"invalid JSON: {e.msg}"
        raise InputError(file, field, problem, e.lineno if line is None else line) from None
    except DuplicateKey as e:
        raise InputError(file, f"{field}.{e.key}" if field != "<json>" else str(e.key), str(e), line) from None
    except RecursionError:
        raise InputError(file, field, "nested too deeply", line) from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise InputError(file, field, str(e), line) from None


def json_file(path: Path) -> Any:
    return loads_json(read_text(path), str(path))


def check_columns(names: list[str], file: str, line: int = 1) -> None:
    """Each CSV column named once: readers keep the last of two (csv.DictReader) or rename the
    second `x.1` (pandas), so the values a user sees in one column are not those read."""
    seen: set[str] = set()
    for name in (n.strip() for n in names):
        if name in seen:
            raise InputError(file, name or "<header>", "column given twice in the header; keep one", line)
        seen.add(name)


def check_csv_head(source: Any, file: str) -> None:
    """A CSV (path or buffer) for pandas: each column named once, and its first row no wider than
    the header (pandas would make the extra leading cells the index, shifting every value of every
    row one column over, silently)."""
    import pandas as pd

    try:
        head = pd.read_csv(source, header=None, nrows=2, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.ParserError as e:
        text = " ".join(str(e).split())
        if "Expected" not in text:
            return  # another problem: the reader says it in its own words
        raise InputError(file, "<row>", f"a row has more cells than the header has columns ({text})") from None
    except (ValueError, OSError, EOFError, zlib.error):  # empty, not UTF-8, a corrupt .gz: the reader says so
        return
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
    if len(head):
        check_columns([str(c) for c in head.iloc[0].tolist()], file)


MAX_YAML_NODES = 1_000_000  # values a YAML document may expand to through its aliases (a config has hundreds)


def _yaml_loader() -> Any:
    """yaml.SafeLoader refusing a key given twice in one mapping (YAML requires unique keys;
    PyYAML keeps the last silently). Keys a `<<` merge brings in may still be overridden."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=deep)
                    try:
                        dup = key in seen
                    except TypeError:  # unhashable: SafeLoader says so
                        continue
                    if dup:
                        raise DuplicateKey(key, key_node.start_mark.line + 1)
                    seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def _expanded_size(node: Any, limit: int) -> int | None:
    """How many values the node tree holds once its aliases are expanded (shared subtrees counted
    each time they are used, capped just past `limit`); None when an alias sits inside its own
    anchor (a cycle: no config is infinite)."""
    import yaml

    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(n: Any) -> int:
        if id(n) in open_:
            raise _Cycle
        if id(n) in sizes:
            return sizes[id(n)]
        open_.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        open_.discard(id(n))
        sizes[id(n)] = min(total, limit + 1)
        return sizes[id(n)]

    try:
        return size(node)
    except _Cycle:
        return None


class _Cycle(Exception):
    pass


def loads_yaml(text: str, file: str) -> Any:
    """YAML text parsed safely, every problem one InputError naming `file`: bad syntax, a key given
    twice in one mapping, aliases expanding past MAX_YAML_NODES values (a "billion laughs")."""
    import yaml

    check_nesting(text, file)
    loader = None
    try:
        loader = _yaml_loader()(text)  # its reader refuses a NUL or other control character here
        node = loader.get_single_node()
        if node is None:
            return None
        n = _expanded_size(node, MAX_YAML_NODES)
        if n is None:
            raise InputError(file, "<yaml>", "an alias refers to the anchor it is inside (a cycle)")
        if n > MAX_YAML_NODES:
            raise InputError(file, "<yaml>", f"its aliases expand to more than {MAX_YAML_NODES} values")
        return loader.construct_document(node)
    except DuplicateKey as e:
        raise InputError(file, str(e.key), str(e), e.line) from None
    except RecursionError:
        raise InputError(file, "<yaml>", "nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(file, "<yaml>", getattr(e, "problem", None) or str(e), line) from None
    except (ValueError, OverflowError, TypeError) as e:  # a scalar its constructor refuses: 2020-13-45, 5000 digits
        raise InputError(file, "<yaml>", f"unreadable value: {e}") from None
    finally:
        if loader is not None:
            loader.dispose()
