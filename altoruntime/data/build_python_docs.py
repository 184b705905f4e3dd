"""Rebuild ``python_docs.json``: (name, signature, docstring summary) of standard-library callables.

Docstrings differ slightly between Python versions, so the dataset reads the committed snapshot,
not the running interpreter; this script is how the snapshot was made (and can be remade):

    python -m altoruntime.data.build_python_docs [OUT.json]

It walks a fixed module list in sorted name order, keeps public functions, classes and the methods
those classes define themselves, with a signature of at most 160 characters and a first docstring
paragraph of 4-80 words, and drops repeated summaries (first in order wins).
"""

from __future__ import annotations

import importlib
import inspect
import json
import platform
import sys
import warnings
from pathlib import Path

MODULES = tuple("""
abc argparse array ast asyncio base64 bdb binascii bisect bz2 calendar cmath cmd code codecs codeop
collections colorsys concurrent.futures configparser contextlib contextvars copy cProfile csv
dataclasses datetime decimal difflib dis email.headerregistry email.message email.parser email.utils
enum filecmp fileinput fnmatch fractions ftplib functools getopt gettext glob graphlib gzip hashlib
heapq hmac html html.parser http.client http.cookies http.server imaplib importlib.metadata inspect
io ipaddress itertools json keyword linecache locale logging lzma mailbox math mimetypes mmap
multiprocessing netrc numbers operator optparse os os.path pathlib pdb pickle pickletools pkgutil
platform plistlib poplib pprint profile pstats queue quopri random re reprlib sched secrets selectors
shlex shutil signal smtplib socket socketserver sqlite3 stat statistics string struct subprocess
sysconfig tarfile tempfile textwrap threading time timeit tokenize trace traceback types typing
unicodedata unittest unittest.mock urllib.parse urllib.request uuid warnings wave weakref
xml.dom.minidom xml.etree.ElementTree zipfile zipimport zlib zoneinfo
""".split())
MAX_SIGNATURE_CHARS = 160
MIN_WORDS, MAX_WORDS = 4, 80


def _summary(doc: str | None) -> str | None:
    if not doc:
        return None
    para = " ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split())
    return para if MIN_WORDS <= len(para.split()) <= MAX_WORDS else None


def _signature(obj: object) -> str | None:
    try:
        sig = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return sig if len(sig) <= MAX_SIGNATURE_CHARS and " at 0x" not in sig else None


def _home(module: str, obj: object) -> bool:
    """Defined by this module (or its C accelerator), not re-exported from elsewhere."""
    owner = getattr(obj, "__module__", None) or ""
    short = module.rsplit(".", 1)[-1]
    return owner in (module, f"_{short}", short) or owner.startswith(module + ".") or (module == "os.path" and owner in ("posixpath", "genericpath"))


def _entries(module: str) -> list[tuple[str, str, str, str]]:
    with warnings.catch_warnings():  # deprecated aliases (typing.io, ...) warn on access
        warnings.simplefilter("ignore")
        return _collect(module)


def _collect(module: str) -> list[tuple[str, str, str, str]]:
    mod = importlib.import_module(module)
    out = []
    for name in sorted(n for n in dir(mod) if not n.startswith("_")):
        obj = getattr(mod, name)
        is_class = inspect.isclass(obj)
        if not (is_class or inspect.isfunction(obj) or inspect.isbuiltin(obj)) or not _home(module, obj):
            continue
        sig, doc = _signature(obj), _summary(obj.__doc__)
        if sig is not None and doc is not None:
            out.append(("class" if is_class else "function", f"{module}.{name}", sig, doc))
        if not is_class:
            continue
        for attr in sorted(n for n in vars(obj) if not n.startswith("_")):
            raw = vars(obj)[attr]
            func = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
            if not (inspect.isfunction(func) or inspect.ismethoddescriptor(func) or inspect.isbuiltin(func)):
                continue
            sig, doc = _signature(getattr(obj, attr)), _summary(getattr(func, "__doc__", None))
            if sig is not None and doc is not None:
                out.append(("method", f"{module}.{name}.{attr}", sig, doc))
    return out


def build_pairs() -> list[dict[str, str]]:
    pairs, seen = [], set()
    for module in MODULES:
        for kind, qualname, sig, doc in _entries(module):
            if doc in seen:
                continue
            seen.add(doc)
            pairs.append({"kind": kind, "name": qualname, "signature": sig, "doc": doc})
    return pairs


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path(__file__).with_name("python_docs.json")
    snapshot = {"python": platform.python_version(), "modules": list(MODULES), "pairs": build_pairs()}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {len(snapshot['pairs'])} pairs to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
