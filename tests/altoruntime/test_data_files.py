"""Own data: a JSONL / CSV / Parquet file or folder as a FineTuneDataset; bad files are one InputError."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altosim.errors import InputError
from altoruntime.data import get_dataset
from altoruntime.data.files import build
from tests.altoruntime._runtime_helpers import write_jsonl


def _rows(n: int, long: bool = False) -> list[dict[str, str]]:
    tail = " and then a much longer sentence follows here" if long else ""
    return [{"prompt": f"Q{i}: {i} + 1 =", "completion": f" {i + 1}{tail}", "extra": i} for i in range(n)]


def test_jsonl_splits_disjoint_sized_and_exact_match(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", _rows(80))
    ds = get_dataset("d.jsonl", n_train=30, n_val=5, n_eval=4, base=tmp_path)
    assert (len(ds.train), len(ds.val), len(ds.eval)) == (30, 5, 4) and ds.name == "d"
    keys = [{e.key for e in ds.split(s)} for s in ("train", "val", "eval")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    ex = ds.train[0]
    i = int(ex.prompt[1:ex.prompt.index(":")])
    assert ex.answer == f" {i + 1}"  # verbatim completion of that very row
    assert ds.metric_name == "exact_match" and ds.metric([e.answer for e in ds.eval], "eval") == 1.0
    again = get_dataset(str(tmp_path / "d.jsonl"), n_train=30, n_val=5, n_eval=4)
    assert again.train == ds.train and again.eval == ds.eval  # absolute path, same seed: same examples
    other = get_dataset(str(tmp_path / "d.jsonl"), n_train=30, n_val=5, n_eval=4, seed=1)
    assert [e.key for e in other.train] != [e.key for e in ds.train]  # the seed picks other members first
    assert not {e.key for e in other.train} & keys[1]  # but never moves a key into another split


def test_csv_parquet_and_folder_give_the_same_examples(tmp_path):
    rows = _rows(60)
    write_jsonl(tmp_path / "d.jsonl", rows)
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", rows[:25])
    write_jsonl(folder / "b.jsonl", rows[25:])
    got = [get_dataset(n, n_train=20, n_val=3, n_eval=3, base=tmp_path) for n in ("d.jsonl", "d.csv", "d.parquet")]
    assert got[0].train == got[1].train == got[2].train
    part = build(folder, n_train=20, n_val=3, n_eval=3)
    assert {e.key for e in part.train} | {e.key for e in part.val} <= {r["prompt"] for r in rows}


def test_a_bare_folder_name_is_found_beside_base_not_the_working_folder(tmp_path, monkeypatch):
    """`dataset: parts` in a workload names the folder beside the workload (base), wherever the
    command runs from; it was looked for in the working folder and called an unknown dataset."""
    rows = _rows(60)
    (tmp_path / "wl" / "parts").mkdir(parents=True)
    write_jsonl(tmp_path / "wl" / "parts" / "a.jsonl", rows)
    monkeypatch.chdir(tmp_path)  # no `parts` here
    ds = get_dataset("parts", n_train=20, n_val=3, n_eval=3, base=tmp_path / "wl")
    assert {e.key for e in ds.train} <= {r["prompt"] for r in rows}
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset("nothere", n_train=20, n_val=3, n_eval=3, base=tmp_path / "wl")


def test_long_completions_score_with_rouge(tmp_path):
    write_jsonl(tmp_path / "g.jsonl", _rows(40, long=True))
    ds = build(tmp_path / "g.jsonl", n_train=10, n_val=2, n_eval=2)
    assert ds.metric_name == "rouge_l_f1" and ds.max_new_tokens >= 16


def test_nothing_written_beside_the_data(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", _rows(30))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    build(tmp_path / "d.jsonl", n_train=10, n_val=2, n_eval=2)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("setup, field, needle", [
    (lambda d: None, "dataset", "no such file"),
    (lambda d: (d / "x.jsonl").write_text(""), "dataset", "empty dataset"),
    (lambda d: (d / "x.jsonl").write_text("prompt,completion\n"), "dataset", "cannot read"),
    (lambda d: write_jsonl(d / "x.jsonl", [{"question": "a", "answer": "b"}]), "prompt", "columns found: question, answer"),
    (lambda d: write_jsonl(d / "x.jsonl", [{"prompt": "a", "answer": "b"}]), "completion", "columns found: prompt, answer"),
    (lambda d: write_jsonl(d / "x.jsonl", [{"prompt": "a", "completion": 3}]), "completion", "non-empty string"),
    (lambda d: write_jsonl(d / "x.jsonl", _rows(3)), "dataset", "too few distinct examples"),
])
def test_bad_files_are_one_line_input_errors(tmp_path, setup, field, needle):
    setup(tmp_path)
    with pytest.raises(InputError) as e:
        build(tmp_path / "x.jsonl", n_train=10, n_val=2, n_eval=2)
    assert e.value.field == field and needle in e.value.problem and "\n" not in str(e.value)
    assert str(tmp_path / "x.jsonl") in str(e.value)


def test_empty_csv_and_folder_without_data(tmp_path):
    (tmp_path / "h.csv").write_text("prompt,completion\n")
    with pytest.raises(InputError, match="empty dataset"):
        build(tmp_path / "h.csv", n_train=1, n_val=0, n_eval=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .jsonl"):
        build(tmp_path / "empty", n_train=1, n_val=0, n_eval=0)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="unsupported file type"):
        build(tmp_path / "x.txt", n_train=1, n_val=0, n_eval=0)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda s: s.strip()), min_size=12, max_size=40, unique=True))
def test_any_prompt_text_round_trips_into_one_split(tmp_path_factory, prompts):
    d = tmp_path_factory.mktemp("h")
    write_jsonl(d / "h.jsonl", [{"prompt": p, "completion": " ok"} for p in prompts])
    ds = build(d / "h.jsonl", n_train=4, n_val=0, n_eval=0)
    assert len(ds.train) == 4 and {e.prompt for e in ds.train} <= set(prompts)


def test_a_fifo_named_like_a_split_file_is_said_not_skipped(tmp_path):
    """A FIFO `validation.jsonl` in a split folder was skipped, and the error then said the folder
    had no validation file; reading it would block forever. Now it is named as what it is."""
    folder = tmp_path / "splits"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", _rows(60))
    os.mkfifo(folder / "validation.jsonl")
    with pytest.raises(InputError, match="validation.jsonl.*(FIFO|pipe)"):
        get_dataset("splits", n_train=20, n_val=3, n_eval=3, base=tmp_path)
