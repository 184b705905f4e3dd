"""Output folders and files: checked before any work, locked against a second writer, filled atomically.

`check_out` rejects an `--out` that cannot work (a file, not writable, a name too long, a NUL,
a file system with less than `MIN_FREE_BYTES` free) before anything runs. `output_dir` locks the folder (`<out>/.alto.lock`, an flock the kernel
frees when the process dies), gives the caller a staging folder inside it, and moves the staged
files into place only when the block ends without an error; on an error the staging folder,
the lock and every folder it created are removed, so bad input leaves nothing in `--out`.
`locked_dir` is the same lock without staging, for `alto run`, whose checkpoint and adapters
must stay in place between a stop and a resume.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from altosim.errors import InputError, one_line

LOCK = ".alto.lock"
MAX_NAME_BYTES = 255  # one path component (Linux NAME_MAX)
MAX_PATH_BYTES = 4000  # the whole path (Linux PATH_MAX is 4096)
MIN_FREE_BYTES = 64 * 2**20  # an --out whose file system has less free is refused before any work


def file_mode() -> int:
    """The mode an ordinary new file gets under the process umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_path(path: str | Path, flag: str) -> Path:
    """A path a file can be created at: no NUL, components <= 255 bytes, <= 4000 bytes in all."""
    text = str(path)
    if "\x00" in text:
        raise InputError(flag, "<path>", "contains a NUL character")
    if not text.strip():
        raise InputError(flag, "<path>", "empty path")
    p = Path(text).expanduser()
    for part in p.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise InputError(flag, "<path>", f"a folder or file name of {len(os.fsencode(part))} bytes, at most "
                             f"{MAX_NAME_BYTES}: {one_line(text, 100)!r}")
    if len(os.fsencode(str(p.absolute()))) > MAX_PATH_BYTES:
        raise InputError(flag, "<path>", f"path longer than {MAX_PATH_BYTES} bytes")
    return p


def _existing_ancestor(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _check_writable(p: Path, flag: str) -> None:
    anc = _existing_ancestor(p if not p.exists() else p)
    if not anc.is_dir():
        raise InputError(flag, str(anc), "is a file, so no folder can be made under it")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(flag, str(anc), "folder is not writable")


def check_free_space(p: Path, flag: str = "--out", floor: int | None = None) -> None:
    """At least `floor` bytes (default `MIN_FREE_BYTES`) free on the file system `p` would be on,
    so a run does not stop half-written on a full disk."""
    floor = MIN_FREE_BYTES if floor is None else floor
    anc = _existing_ancestor(p)
    free = shutil.disk_usage(anc).free
    if free < floor:
        raise InputError(flag, str(p), f"only {free / 2**20:.1f} MiB free on its file system ({anc}), "
                         f"at least {floor / 2**20:.0f} MiB needed")


def check_out(out: str | Path, flag: str = "--out") -> Path:
    """An output folder: not a file, creatable, writable, with room. Raises InputError otherwise."""
    p = check_path(out, flag)
    if p.exists() and not p.is_dir():
        raise InputError(flag, str(p), "is a file, expected an output folder")
    _check_writable(p, flag)
    check_free_space(p, flag)
    return p


def check_out_file(out: str | Path, flag: str = "--out", inputs: tuple[str | Path, ...] = (),
                   sidecar: str | None = None) -> Path:
    """An output file path: not an existing folder, its folder creatable and writable, and neither
    it nor its `sidecar` (a suffix written next to it, e.g. ".meta.json") one of the `inputs`
    (writing there would replace what the command is reading)."""
    p = check_path(out, flag)
    if p.is_dir():
        raise InputError(flag, str(p), "is a folder, expected a file name (e.g. workload.json)")
    _check_writable(p.parent, flag)
    written = [p] + ([p.with_name(p.stem + sidecar)] if sidecar else [])
    for w in written:
        try:
            mode = os.stat(w).st_mode
        except OSError:  # not there yet (or a dangling link the write replaces): fine
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):  # a FIFO, socket or device (--out /dev/null): the rename would replace it
            raise InputError(flag, str(w), "exists and is not a regular file (a FIFO, socket or device); "
                             "choose a file name")
        for src in inputs:
            if w.exists() and Path(src).exists() and os.path.samefile(w, src):
                raise InputError(flag, str(w), f"is an input of this command ({src}); choose another output file")
    return p


def _mkdirs(p: Path, flag: str) -> list[Path]:
    """Create `p` and missing parents; return the folders created, outermost first."""
    missing = []
    q = p.absolute()
    while not q.exists():
        missing.append(q)
        q = q.parent
    missing.reverse()
    made = []
    for d in missing:
        try:
            d.mkdir()
            made.append(d)
        except FileExistsError:
            pass
        except OSError as e:  # a link loop, a read-only or vanished parent
            _remove_created(made)
            raise InputError(flag, str(p), f"cannot make the folder {d}: {e.strerror or e}") from None
    return missing


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()  # only if empty: never deletes what someone else put there
        except OSError:
            break


@contextmanager
def _locked(out: Path, flag: str) -> Iterator[list[Path]]:
    created = _mkdirs(out, flag)
    lock_path = out / LOCK
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as e:
        _remove_created(created)
        raise InputError(flag, str(out), f"cannot write here: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise InputError(flag, str(out), "another alto command is writing this folder (it holds "
                             f"{lock_path}); wait for it or pick another --out") from None
        raise
    try:
        yield created
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def locked_dir(out: str | Path, flag: str = "--out") -> Iterator[Path]:
    """`out` created and locked for the block; folders it created are removed again if the
    block fails while they are still empty."""
    p = check_out(out, flag)
    with _locked(p, flag) as created:
        try:
            yield p
        except BaseException:
            (p / LOCK).unlink(missing_ok=True)
            _remove_created(created)
            raise


def _check_keeps(src: Path, dst: Path, keep: list[Path], flag: str) -> None:
    """Refuse (before anything moves) a staged file that would replace one of the `keep` files:
    an input of the command that sits in `--out` under an output's name (a workload `tasks.csv`)."""
    for entry in sorted(src.rglob("*")):
        target = dst / entry.relative_to(src)
        if entry.is_file() and target.is_file() and any(os.path.samefile(target, k) for k in keep):
            raise InputError(flag, str(target), "would be replaced by an output of the same name, but it is an input "
                             "of this command; choose another --out")


def check_no_clash(out: Path, names: tuple[str, ...], keep: list[Path], flag: str = "--out") -> None:
    """For commands that write straight into `out` (alto run): none of the `keep` files (inputs) may
    be one of the `names` written there, or inside a folder of those names."""
    base = out.resolve()
    for k in keep:
        rel = k.resolve().relative_to(base) if k.resolve().is_relative_to(base) else None
        if rel is not None and rel.parts and rel.parts[0] in names:
            raise InputError(flag, str(k), "is an input of this command but also where an output of the same name "
                             "goes; choose another --out")


def check_out_kinds(out: Path, files: tuple[str, ...], folders: tuple[str, ...], flag: str = "--out") -> None:
    """What is already in `out` under an output's name is of that output's kind (a regular file,
    or a folder): `alto run`'s writes at the end of a run cannot fail on it after all the work
    (`events.jsonl/` a folder: "Is a directory"), and a staged output never replaces a user's
    folder (output_dir removed a folder `summary.csv/` with its files)."""
    for name, want_dir in [(n, False) for n in files] + [(n, True) for n in folders]:
        path = out / name
        try:
            mode = os.stat(path).st_mode
        except OSError:  # not there yet: written fresh
            continue
        if want_dir and not stat.S_ISDIR(mode):
            raise InputError(flag, str(path), "is a file where this command writes a folder of that name; move it "
                             "or choose another --out")
        if not want_dir and not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise InputError(flag, str(path), f"is {kind} where this command writes a file of that name; move it "
                             "or choose another --out")


def input_files(*paths: str | Path | None) -> list[Path]:
    """The existing files among `paths`, and the files inside the folders among them (one level)."""
    found: list[Path] = []
    for p in paths:
        if p is None or not str(p):
            continue
        p = Path(p)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(q for q in p.iterdir() if q.is_file())
    return found


def _move_into(src: Path, dst: Path) -> None:
    """Staged files replace `dst`'s files of the same names (whose kinds `check_out_kinds` checked:
    a user's folder named like an output is never removed)."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _move_into(entry, target)
        else:
            os.replace(entry, target)


@contextmanager
def output_dir(out: str | Path, flag: str = "--out", keep: list[Path] | None = None) -> Iterator[Path]:
    """Yield a staging folder inside the locked `out`; its files replace those of `out` when the
    block succeeds, and nothing of it is left when the block fails. A staged file that would
    replace one of the `keep` files (the command's inputs) fails the block instead."""
    p = check_out(out, flag)
    with _locked(p, flag) as created:
        stage = Path(tempfile.mkdtemp(prefix=".alto-stage-", dir=p))
        try:
            yield stage
            _check_keeps(stage, p, keep or [], flag)
            staged = sorted(stage.rglob("*"))  # a folder summary.csv/ in --out was removed with its files
            check_out_kinds(p, tuple(str(e.relative_to(stage)) for e in staged if not e.is_dir()),
                            tuple(str(e.relative_to(stage)) for e in staged if e.is_dir()), flag)
            _move_into(stage, p)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            (p / LOCK).unlink(missing_ok=True)
            _remove_created(created)
            raise
        shutil.rmtree(stage, ignore_errors=True)
