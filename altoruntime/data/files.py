"""A task's own data: a local JSONL / CSV / Parquet file, or a folder of them, as a FineTuneDataset.

Read with the ``datasets`` library (its cache goes to a temporary folder that is removed, so
nothing is written beside the data or under the user's home). Each row gives one example from
its ``prompt`` and ``completion`` columns (names configurable), taken verbatim (the prompt ends
where generation starts); or, in a file without the prompt column, from its chat ``messages``
([{role, content}], the last the assistant's), rendered with the model's chat template.

Splits: by default decided by a hash of the prompt, as for the built-in tasks
(``example.fill_splits``): disjoint, stable when sizes change; ``seed`` picks which members of a
split a smaller request gets. Or given: a ``validation`` file beside the train file, a folder of
split files named as ``datasets`` names them (``train``, ``validation``/``valid``/``dev``/``val``,
``test``/``eval``), or a seeded ``validation_fraction`` of the rows (``datasets``'
``train_test_split``, seeded by ``split_seed``, duplicate prompts dropped first). Given splits take
at most n_train / n_val rows (a seeded choice, or the first rows with ``keep_order``); the
generation metric's held-out rows come from the test split, else from validation rows the val
split did not take (else the val rows). Metric: exact match when completions are short (labels,
numbers, expressions: median at most SHORT_ANSWER_WORDS words), else ROUGE-L F1 (sentences).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from altosim.errors import InputError
from altosim.files import check_csv_head, check_regular
from altoruntime.data.example import Example, FineTuneDataset, SplitFractions, check_sizes, fill_splits
from altoruntime.data.metrics import rouge_l_f1, text_exact_match
from altoruntime.data.rng import StableRandom

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SHORT_ANSWER_WORDS = 6  # median completion at most this many words -> exact match


def is_data_path(name: str) -> bool:
    """True when `name` is meant as a file or folder rather than a built-in dataset name."""
    return Path(name).suffix.lower() in BUILDERS or "/" in name or "\\" in name or Path(name).exists()


def _root_cause(e: BaseException) -> BaseException:
    """The innermost explicit cause of an error (`raise ... from`): the parser's own words about
    the data; the errors of fallbacks tried meanwhile (the implicit context) are not followed."""
    seen = {id(e)}
    while (nxt := e.__cause__) is not None and id(nxt) not in seen and str(nxt):
        seen.add(id(nxt))
        e = nxt
    return e


def data_files(path: Path, field: str) -> tuple[str, list[str]]:
    """(datasets builder name, files) of a file or a folder of files of one kind."""
    if path.is_file():
        kind = BUILDERS.get(path.suffix.lower())
        if kind is None:
            raise InputError(str(path), field, f"unsupported file type {path.suffix!r}; use {', '.join(BUILDERS)}")
        return kind, [str(path)]
    if not path.is_dir():
        if path.exists():  # a FIFO, socket or device
            check_regular(path, field)
        raise InputError(str(path), field, "no such file or folder")
    named = sorted(p for p in path.iterdir() if p.suffix.lower() in BUILDERS)
    for p in named:  # a FIFO or device named like a data file (validation.jsonl) is said, not skipped
        if not p.is_dir():
            check_regular(p, field)
    files = [p for p in named if p.is_file()]
    kinds = {BUILDERS[p.suffix.lower()] for p in files}
    if not files:
        raise InputError(str(path), field, f"folder holds no {', '.join(BUILDERS)} files")
    if len(kinds) > 1:
        raise InputError(str(path), field, f"folder mixes file kinds ({', '.join(sorted(kinds))}); keep one kind")
    return kinds.pop(), [str(p) for p in files]


Render = Callable[[Sequence[dict]], "tuple[str, str]"]  # chat messages -> (prompt, completion) text


def split_files(path: Path, field: str) -> dict[str, list[str]] | None:
    """A folder's files by split (train / validation / test) when their names follow the
    ``datasets`` convention, or None (no split names: one pool of rows)."""
    if not path.is_dir():
        return None
    from datasets.data_files import DataFilesDict, get_data_patterns

    data_files(path, field)  # a folder without data files says so first
    patterns = {str(k): v for k, v in get_data_patterns(str(path)).items()}
    if list(patterns) == ["train"] and patterns["train"] == ["**"]:
        return None
    found = DataFilesDict.from_patterns(patterns, base_path=str(path))
    out = {str(k): sorted(f for f in v if Path(f).suffix.lower() in BUILDERS) for k, v in found.items()}
    return {k: v for k, v in out.items() if v}


def read_rows(path: Path, field: str = "dataset", columns: tuple[str, str] = ("prompt", "completion"),
              messages: str | None = None, files: list[str] | None = None) -> list[tuple[str, str]] | list[list[dict]]:
    """(prompt, completion) pairs of every row, in file order; or, when the file has no prompt
    column but a ``messages`` one, each row's chat messages (checked: roles and contents are
    strings, the last turn is the assistant's). `files`: these files of the folder `path` only
    (one split). Bad input -> InputError."""
    import datasets

    if files is None:
        kind, files = data_files(path, field)
    else:
        kinds = {BUILDERS[Path(f).suffix.lower()] for f in files}
        if len(kinds) > 1:
            raise InputError(str(path), field, f"split files mix kinds ({', '.join(sorted(kinds))}); keep one kind")
        kind = kinds.pop()
    quiet = datasets.utils.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()  # a one-line error must stay one line; restored below
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its own "Failed to load JSON" line too
    try:
        return _load(path, field, columns, messages, kind, files)
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not quiet:
            datasets.enable_progress_bars()


def _load(path: Path, field: str, columns: tuple[str, str], messages: str | None, kind: str,
          files: list[str]) -> list[tuple[str, str]] | list[list[dict]]:
    """The rows through ``datasets``, its cache in a temporary folder (removed on return)."""
    import datasets

    if kind == "csv":  # pandas (under datasets) renames a repeated column and shifts a too-wide row's cells
        for f in files:
            check_csv_head(f, f)
    with tempfile.TemporaryDirectory(prefix="alto-datasets-") as cache:
        try:
            # CSV cells as written (" 42" stays a string, "NA" is not a missing value)
            text = {"converters": {c: str for c in columns}, "keep_default_na": False} if kind == "csv" else {}
            ds = datasets.load_dataset(kind, data_files=files, split="train", cache_dir=cache, keep_in_memory=True,
                                       **text)
        except Exception as e:  # noqa: BLE001  # the library's many parse errors -> one line
            if "corresponds to no data" in str(e) or all(Path(f).stat().st_size == 0 for f in files):
                raise InputError(str(path), field, "empty dataset (no rows)") from None
            root = _root_cause(e)  # datasets wraps the parser's error in "An error occurred while generating"
            raise InputError(str(path), field, f"cannot read as {kind}: {type(root).__name__}: {root}") from None
        chat = messages is not None and columns[0] not in ds.column_names and messages in ds.column_names
        missing = [] if chat else [c for c in columns if c not in ds.column_names]
        if missing:
            found = ", ".join(ds.column_names) or "none"
            chat_hint = f" (nor a chat column {messages!r})" if messages is not None and missing[0] == columns[0] else ""
            raise InputError(str(path), missing[0], f"no column {missing[0]!r}{chat_hint}; columns found: {found}")
        if len(ds) == 0:
            raise InputError(str(path), field, "empty dataset (no rows)")
        try:  # arrow keeps a JSON string's bytes as given: invalid UTF-8 (latin-1 text) shows when read out
            if chat:
                conversations = ds.select_columns(messages).to_dict()[messages]
                return [_check_messages(path, messages, i, m) for i, m in enumerate(conversations)]
            table = ds.select_columns(list(columns)).to_dict()  # whole columns at once: row by row is ~15x slower
        except UnicodeDecodeError as e:
            raise InputError(str(path), field, f"not UTF-8 text: {e} (save the file as UTF-8)") from None
        prompts, completions = table[columns[0]], table[columns[1]]
    out = []
    for i, row in enumerate(zip(prompts, completions)):
        for col, v in zip(columns, row):
            if not isinstance(v, str) or not v.strip():
                got = "an empty string" if isinstance(v, str) else type(v).__name__
                raise InputError(str(path), col, f"row {i + 1}: must be a non-empty string, got {got}")
        out.append(row)
    return out


def _check_messages(path: Path, column: str, i: int, value: Any) -> list[dict]:
    """One row's chat messages as [{role, content}] dicts, the last one the assistant's."""
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)
    if not ok:
        raise InputError(str(path), column, f"row {i + 1}: must be a non-empty list of {{role, content}} strings")
    if value[-1]["role"] != "assistant" or not value[-1]["content"].strip():
        raise InputError(str(path), column, f"row {i + 1}: the last message must be a non-empty assistant turn "
                         "(the completion trained on)")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _examples(path: Path, rows: list, messages: str, render: Render | None) -> tuple[list[Example], list[str]]:
    """Examples of prompt/completion pairs, or of chat rows rendered to text; and the reference answers."""
    if not rows or isinstance(rows[0], tuple):
        return [Example(prompt=q, answer=a, key=q) for q, a in rows], [a for _, a in rows]
    if render is None:
        raise InputError(str(path), messages, "chat messages need a tokenizer's chat template to render them")
    out = []
    for i, conv in enumerate(rows):
        try:
            prompt, completion = render(conv)
        except Exception as e:  # noqa: BLE001  # a template's own errors (jinja, raise_exception) -> one line
            raise InputError(str(path), messages, f"row {i + 1}: cannot render: {e}") from None
        out.append(Example(prompt=prompt, answer=conv[-1]["content"], key=prompt, target=completion))
    return out, [conv[-1]["content"] for conv in rows]


def build(path: str | Path, n_train: int = 2000, n_val: int = 200, n_eval: int = 200, seed: int = 0,
          field: str = "dataset", columns: tuple[str, str] = ("prompt", "completion"), messages: str = "messages",
          render: Render | None = None, validation: str | Path | None = None,
          validation_fraction: float | None = None, split_seed: int = 0,
          keep_order: bool = False) -> FineTuneDataset:
    """The file's examples split by prompt hash into the requested sizes (InputError when short),
    or into the splits given (a `validation` file, split files in the folder, or a seeded
    `validation_fraction`); `keep_order`: given splits take their first rows in file order rather
    than a `seed`ed choice (the built-in datasets at seed 0, registry.py). Chat rows (a ``messages``
    column and no prompt column) are rendered by ``render``; their reference answer is the last
    assistant turn's content."""
    check_sizes(n_train, n_val, n_eval)
    p = Path(path)
    by_name = split_files(p, field) if validation is None else None
    if validation is not None or validation_fraction is not None or by_name is not None:
        return _given_splits(p, n_train, n_val, n_eval, seed, field, columns, messages, render,
                             Path(validation) if validation is not None else None, validation_fraction, split_seed,
                             by_name, keep_order)
    rows = read_rows(p, field, columns, messages)
    name = p.stem
    examples, answers = _examples(p, rows, messages, render)
    StableRandom(name, seed).shuffle(examples)
    try:
        splits = fill_splits(name, examples, {"train": n_train, "val": n_val, "eval": n_eval}, SplitFractions())
    except ValueError as e:
        raise InputError(str(p), field, f"{e} ({len(rows)} rows)") from None
    return _dataset(p, splits, answers, len(rows))


def _dataset(p: Path, splits: dict[str, list[Example]], answers: list[str], n_rows: int) -> FineTuneDataset:
    """The splits with the metric their answers call for."""
    short = statistics.median(len(a.split()) for a in answers) <= SHORT_ANSWER_WORDS
    longest = max(len(a) for a in answers)
    chat = any(ex.target is not None for s in splits.values() for ex in s)
    return FineTuneDataset(
        name=p.stem, train=splits["train"], val=splits["val"], eval=splits["eval"],
        metric_name="exact_match" if short else "rouge_l_f1", score_fn=text_exact_match if short else rouge_l_f1,
        max_new_tokens=min(512, longest // 2 + 16),  # ~2+ characters per token, with room
        description=f"own data from {p.name}: {n_rows} {'chat' if chat else 'prompt/completion'} rows",
        rendered=chat,
    )


def _given_splits(p: Path, n_train: int, n_val: int, n_eval: int, seed: int, field: str, columns: tuple[str, str],
                  messages: str, render: Render | None, validation: Path | None, fraction: float | None,
                  split_seed: int, by_name: dict[str, list[str]] | None, keep_order: bool = False) -> FineTuneDataset:
    """Train / val / eval from given splits: files, a folder's split files, or a seeded fraction."""
    def examples(where: Path, what: str, files: list[str] | None = None) -> tuple[list[Example], list[str]]:
        return _examples(where, read_rows(where, what, columns, messages, files), messages, render)

    test: list[Example] = []
    if by_name is not None:
        if "train" not in by_name:
            raise InputError(str(p), field, f"the folder's split files ({', '.join(sorted(by_name))}) include no "
                             "train file (train.jsonl, train.csv, ...)")
        train, answers = examples(p, field, by_name["train"])
        held_files = by_name.get("validation")
        if held_files is not None and fraction is not None:
            raise InputError(str(p), "validation_fraction", "the folder has a validation split already")
        held = examples(p, field, held_files)[0] if held_files else []
        if "test" in by_name:
            test = examples(p, field, by_name["test"])[0]
        if not held and fraction is None:
            if not test:
                raise InputError(str(p), field, "the folder's split files include no validation file "
                                 "(validation.jsonl, dev.jsonl, ...); add one or set validation_fraction")
            held, test = test, []
        held_name = p
    else:
        train, answers = examples(p, field)
        held, held_name = [], p
        if validation is not None:
            held_name = validation
            held = examples(validation, "validation")[0]
    if fraction is not None:
        train, held = _fraction_split(p, train, fraction, split_seed)
    if not held:
        raise InputError(str(held_name), "validation", "empty validation split (no rows)")
    keys = {ex.key for ex in train}
    both = [ex.key for ex in held + test if ex.key in keys]
    if both:
        raise InputError(str(held_name), "validation", f"{len(both)} rows share a prompt with the train split, "
                         f"e.g. {both[0][:60]!r}: splits must not overlap")
    if not keep_order:
        StableRandom(p.stem, seed).shuffle(train)
        StableRandom(p.stem, "held", seed).shuffle(held)
    val = held[:n_val]
    rest = test or held[n_val:] or val
    splits = {"train": train[:n_train], "val": val, "eval": rest[:n_eval]}
    return _dataset(p, splits, answers, len(train) + len(held) + len(test))


def _fraction_split(p: Path, rows: list[Example], fraction: float, split_seed: int) -> tuple[list[Example],
                                                                                                list[Example]]:
    """(train, validation) examples: a seeded `fraction` held out by ``datasets``' train_test_split
    (duplicate prompts dropped first, so no prompt is in both)."""
    import datasets

    seen: set[str] = set()
    unique = [ex for ex in rows if not (ex.key in seen or seen.add(ex.key))]
    try:
        parts = datasets.Dataset.from_dict({"i": list(range(len(unique)))}).train_test_split(
            test_size=fraction, seed=split_seed)
    except ValueError:  # a split of no rows
        raise InputError(str(p), "validation_fraction", f"{fraction} of {len(unique)} distinct rows leaves a split "
                         "empty") from None
    return [unique[i] for i in parts["train"]["i"]], [unique[i] for i in parts["test"]["i"]]
