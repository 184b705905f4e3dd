"""experiments/make_datasets.py: deterministic, and the shipped traces/datasets files are its output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from make_datasets import TASKS, main, rows  # noqa: E402

from altoruntime.data.files import build  # noqa: E402


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path):
    main(["--out", str(tmp_path / "a"), "--rows", "200"])
    main(["--out", str(tmp_path / "b"), "--rows", "200"])
    main(["--out", str(tmp_path / "c"), "--rows", "200", "--seed", "1"])
    for t in TASKS:
        a, b, c = ((tmp_path / d / f"{t}.jsonl").read_bytes() for d in "abc")
        assert a == b and a != c


@pytest.mark.parametrize("task", list(TASKS))
def test_shipped_file_is_the_generator_output_and_loads(task):
    shipped = ROOT / "traces" / "datasets" / f"{task}.jsonl"
    lines = shipped.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == rows(task, 0)  # regenerate: make_datasets.py --out traces/datasets
    assert 600 <= len(lines) <= 1500 and len({json.loads(x)["prompt"] for x in lines}) == len(lines)
    assert max(len(x) for x in lines) < 400  # well under ~200 SmolLM2 tokens per row
    ds = build(shipped, n_train=96, n_val=48, n_eval=24)  # the device runs' sizes fit
    assert len(ds.train) == 96 and len(ds.val) == 48
    assert ds.metric_name == ("rouge_l_f1" if task == "record_to_text" else "exact_match")


def test_labels_are_balanced_enough_to_need_learning():
    for task, labels in (("review_sentiment", {"positive", "negative", "neutral"}),
                         ("sentence_topic", {"sports", "politics", "science", "cooking", "finance"})):
        got = [r["completion"].strip() for r in rows(task, 0)]
        assert set(got) == labels
        assert max(got.count(x) for x in labels) < 0.5 * len(got)  # no majority class to guess
