"""The built-in datasets are shipped dataset folders read by files.py: today's rows kept, found as
package data, rebuilt by build_builtin.py, too-large requests one line."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from altosim.cli import main
from altoruntime.data import DATASETS, SPLITS, files, get_dataset
from altoruntime.data.build_builtin import FILES, main as build_main

NAMES = sorted(DATASETS)
ROOT = Path(__file__).resolve().parents[2]


def _digest(ds) -> str:
    h = hashlib.sha256()
    for s in SPLITS:
        for e in ds.split(s):
            h.update(f"{s}\x1f{e.prompt}\x1f{e.answer}\n".encode())
    return h.hexdigest()[:16]


# Recorded from the generators at d876fb4, before the built-ins became shipped files (same digest as _digest):
#   mkdir /tmp/old && git archive d876fb4 altoruntime altosim | tar -x -C /tmp/old && cd /tmp/old &&
#   PYTHONPATH=$PWD python -c "import hashlib
#   from altoruntime.data import get_dataset as g, SPLITS as S
#   d = lambda ds: hashlib.sha256(''.join(f'{s}\x1f{e.prompt}\x1f{e.answer}\n' for s in S for e in ds.split(s)).encode()).hexdigest()[:16]
#   for n, big in [('arithmetic', (2000, 250, 250)), ('list_ops', (2000, 250, 250)), ('python_docs', (2095, 261, 260))]:
#       print(n, [d(g(n, *z, seed=0)) for z in (big, (2000, 200, 200), (128, 48, 48))])"
# (sizes, seed 0): the whole shipped pool, `alto run`'s defaults, the real traces' 128/48/48 (traces/real/).
# Every seed-0 size the repository uses (2000/200/200 down to 3/1/1) was also checked to be a prefix of
# the pool, split by split, and equal to today's rows.
GOLDEN = {
    "arithmetic": {(2000, 250, 250): "cc8c94c45af45cc7", (2000, 200, 200): "c234940ad9fbb787",
                   (128, 48, 48): "c3dfeda0edcf10e0"},
    "list_ops": {(2000, 250, 250): "dea3a86e44286196", (2000, 200, 200): "45a5a9f4910fc531",
                 (128, 48, 48): "6caf644d0d6c9b35"},
    "python_docs": {(2095, 261, 260): "023cfd17f8ac2c17", (2000, 200, 200): "9955f5c6c3923475",
                    (128, 48, 48): "076eca451147a195"},
}
METRICS = {"arithmetic": ("exact_match", 64), "list_ops": ("exact_match", 48), "python_docs": ("rouge_l_f1", 144)}


@pytest.mark.parametrize("name", NAMES)
def test_shipped_rows_are_the_generators_rows_at_seed_0(name: str) -> None:
    pool = max(GOLDEN[name])
    whole = get_dataset(name, *pool, seed=0)
    for sizes, digest in GOLDEN[name].items():
        ds = get_dataset(name, *sizes, seed=0) if sizes != pool else whole
        assert _digest(ds) == digest, sizes
        assert (ds.metric_name, ds.max_new_tokens) == METRICS[name] and ds.name == name
        for split, n in zip(SPLITS, sizes):
            assert ds.split(split) == whole.split(split)[:n]  # prefix-stable, split by split


def test_shipped_folders_are_package_data_found_by_importlib_resources() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["altoruntime"]
    for name in NAMES:
        folder = resources.files("altoruntime.data").joinpath("builtin", name)
        for file in FILES.values():
            assert folder.joinpath(file).is_file(), (name, file)
            assert any(fnmatch.fnmatch(f"data/builtin/{name}/{file}", p) for p in patterns), (name, file)
        assert Path(str(folder)) == DATASETS[name].path()
    total = sum(p.stat().st_size for p in (ROOT / "altoruntime/data/builtin").rglob("*") if p.is_file())
    assert total < 3 * 2**20


def test_build_script_reproduces_the_shipped_files(tmp_path: Path, capsys) -> None:
    assert build_main(["--out", str(tmp_path), "--names", *NAMES]) == 0
    assert "wrote" in capsys.readouterr().out
    for name in NAMES:
        for file in FILES.values():
            assert (tmp_path / name / file).read_bytes() == (DATASETS[name].path() / file).read_bytes(), (name, file)


@pytest.mark.parametrize("name, split, sizes", [("arithmetic", "val", (10, 251, 1)), ("list_ops", "train", (2001, 1, 1)),
                                               ("python_docs", "eval", (10, 10, 261))])
def test_request_beyond_a_shipped_split_names_dataset_split_and_sizes(name: str, split: str, sizes: tuple) -> None:
    n = sizes[SPLITS.index(split)]
    with pytest.raises(ValueError, match=rf"built-in dataset '{name}' ships {n - 1} {split} rows; n_{split}={n}") as e:
        get_dataset(name, *sizes)
    assert len(str(e.value).splitlines()) == 1


def test_alto_run_beyond_a_shipped_split_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    wl = {"name": "w", "synthetic": True, "tasks": [{
        "id": "t1", "arrival": 0, "model": "tiny", "dataset": "list_ops", "gpus": 1,
        "search_space": {"lr": [1e-3], "rank": [2], "batch_size": [2]}, "samples_per_job": 4, "seq_len": 160}]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    (tmp_path / "cfg.json").write_text(json.dumps({"workload": "wl.json", "cluster": {"gpus": 1}}))
    out = tmp_path / "out"
    rc = main(["run", str(tmp_path / "cfg.json"), "--backbone", "tiny", "--out", str(out), "--n-train", "5000",
               "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "tasks[0].dataset" in err and "'list_ops' ships 2000 train rows; n_train=5000" in err
    assert not out.exists()


@pytest.mark.parametrize("name", NAMES)
def test_other_seeds_choose_among_the_same_shipped_rows(name: str) -> None:
    pool = get_dataset(name, *max(GOLDEN[name]), seed=0)
    a, b, zero = (get_dataset(name, 40, 10, 10, seed=s) for s in (5, 5, 0))
    assert (a.train, a.val, a.eval) == (b.train, b.val, b.eval)
    assert a.train != zero.train and a.val != zero.val
    for s in SPLITS:
        assert {e.prompt for e in a.split(s)} <= {e.prompt for e in pool.split(s)}


def test_a_copied_builtin_folder_is_ordinary_own_data(tmp_path: Path) -> None:
    copy = tmp_path / "my_task"
    shutil.copytree(DATASETS["list_ops"].path(), copy)
    mine = files.build(copy, n_train=30, n_val=5, n_eval=5, keep_order=True)
    ours = get_dataset("list_ops", 30, 5, 5)
    assert [(e.prompt, e.answer) for s in SPLITS for e in mine.split(s)] == \
        [(e.prompt, e.answer) for s in SPLITS for e in ours.split(s)]
    shuffled = get_dataset(str(copy), n_train=30, n_val=5, n_eval=5)  # a user's folder: a seeded choice
    assert {e.prompt for e in shuffled.train} <= {e.prompt for e in get_dataset("list_ops", 2000, 1, 1).train}
