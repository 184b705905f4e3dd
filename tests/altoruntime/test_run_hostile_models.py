"""Session 17's hostile-input audit of `alto run` on a task's own model and data: inputs that got
past every check and failed mid-run (a traceback, an error naming no file after training, a
half-written --out) or trained silently on what was not the user's model. Each test failed on
the code before its fix."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altosim.errors import InputError
from tests._hostile import assert_input_error, cli
from tests.altoruntime._runtime_helpers import write_jsonl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from make_tiny_model import save_tiny_model  # noqa: E402

ROWS = [{"prompt": f"Reverse w{i:02d}:", "completion": f" {i:02d}w"} for i in range(60)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "m", "llama", hidden=32)


def _run(tmp_path: Path, model: Path, dataset: str = "d.jsonl", n_eval: int = 0,
         out: Path | None = None, **task) -> tuple[int, str]:
    """`alto run` of one task on `model` (copied into tmp_path as ./m) and `dataset`; the run's
    exit code and stderr, after checking that --out (default: a new tmp_path/out) was not created."""
    if model != tmp_path / "m":
        shutil.copytree(model, tmp_path / "m")
    if not (tmp_path / dataset).exists():
        write_jsonl(tmp_path / dataset, ROWS)
    wl = {"name": "own", "synthetic": True, "tasks": [{
        "id": "t1", "arrival": 0, "model": "./m", "dataset": dataset, "gpus": 1, "dtype": "float32",
        "search_space": {"lr": [1e-2], "rank": [2], "batch_size": [2]},
        "samples_per_job": 4, "eval_every_samples": 2, "seq_len": 64, **task}]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    (tmp_path / "cfg.json").write_text(json.dumps({"workload": "wl.json", "cluster": {"gpus": 1},
                                                   "policy": {"early_exit": "none", "inter_task": "fifo"}}))
    fresh = out is None
    out = tmp_path / "out" if out is None else out
    rc, _, err = cli("run", str(tmp_path / "cfg.json"), "--backbone", "tiny", "--out", str(out), "--n-train", "12",
                     "--n-val", "4", "--n-eval", str(n_eval), "--quiet")
    assert not fresh or not out.exists(), sorted(out.rglob("*"))
    return rc, err


# ------------------------------------------------ a checkpoint missing a weight trained on random values (exit 0)

def _edit_weights(folder: Path, how: str) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    if how == "drop":
        del weights[key]
    else:
        weights[key] = torch.zeros(3, 3)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("how, words", [
    ("drop", ("1 weights missing", "q_proj")),  # was exit 0: transformers initialized it randomly, logged a table
    ("shape", ("another shape", "[3, 3]", "[32, 32]")),  # was a 9-line load report, then "see the report above"
])
def test_a_checkpoint_missing_or_misshaping_a_weight_is_refused(tmp_path, tiny_model, how, words):
    shutil.copytree(tiny_model, tmp_path / "m")
    _edit_weights(tmp_path / "m", how)
    rc, err = _run(tmp_path, tmp_path / "m")
    assert_input_error(rc, err, "wl.json", "tasks[0].model", *words)


# ------------------------------------------------ a tokenizer of another model: IndexError traceback in the first step

def test_a_tokenizer_with_more_ids_than_the_embedding_is_refused(tmp_path, tiny_model):
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(tiny_model, tmp_path / "m")
    small = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))
    small.save_pretrained(tmp_path / "m")  # the byte tokenizer (ids up to 257) stays
    rc, err = _run(tmp_path, tmp_path / "m")
    assert_input_error(rc, err, "wl.json", "tasks[0].model", "token id 257", "100 rows")


# ------------------------------------------------ held-out prompts longer than seq_len: said after training, naming nothing

def test_held_out_prompts_longer_than_seq_len_are_refused_before_training(tmp_path, tiny_model):
    """The eval split is only generated from after training: it failed then ("seq_len=64 too short"),
    naming no file or field, with best_adapter/ already written and no events.jsonl."""
    write_jsonl(tmp_path / "dd" / "train.jsonl", ROWS[:40])
    write_jsonl(tmp_path / "dd" / "validation.jsonl", ROWS[40:])
    write_jsonl(tmp_path / "dd" / "test.jsonl", [{"prompt": "x" * 100 + str(i), "completion": " y"} for i in range(4)])
    rc, err = _run(tmp_path, tiny_model, dataset="dd/", n_eval=2)
    assert_input_error(rc, err, "wl.json", "tasks[0].seq_len", "held-out", "101 tokens")


# ------------------------------------------------ a JSONL string that is not UTF-8: the data file went unnamed

@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                   HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=8).filter(lambda b: not _utf8(b) and b"\n" not in b and b'"' not in b
                                                  and b"\\" not in b and all(c >= 0x20 for c in b)),
       st.integers(0, 59))
def test_a_jsonl_string_that_is_not_utf8_names_the_data_file(tmp_path_factory, raw, row):
    """Latin-1 text in a JSON string: arrow keeps its bytes, and reading them out raised a bare
    UnicodeDecodeError (`alto run` named the workload's field, never the data file)."""
    from altoruntime.data.files import build

    path = tmp_path_factory.mktemp("data") / "d.jsonl"
    lines = [json.dumps(r).encode() for r in ROWS]
    lines[row] = lines[row].replace(b"Reverse", b"Rev" + raw + b"erse")
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputError) as e:
        build(path, n_train=12, n_val=4, n_eval=2)
    assert e.value.file == str(path) and "UTF-8" in e.value.problem and "\n" not in str(e.value)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ------------------------------------------------ --out holding a folder where a file goes: failed after the whole run

@pytest.mark.parametrize("setup, name, words", [
    (lambda o: (o / "events.jsonl").mkdir(), "events.jsonl", ("is a folder",)),  # ".events.jsonl.tmp: Is a directory"
    (lambda o: (o / "tasks").write_text("x"), "tasks", ("is a file",)),  # "tasks/t1: Not a directory"
    (lambda o: ((o / "tasks").mkdir(), (o / "tasks" / "t1").write_text("x")), "tasks/t1", ("is a file",)),
])
def test_an_out_holding_the_wrong_kind_under_an_output_name_is_refused_before_training(tmp_path, tiny_model, setup,
                                                                                       name, words):
    """The run trained, then failed writing its outputs with a bare OS error, leaving best_adapter/,
    configs.csv and a stale .events.jsonl.tmp but no tasks.csv or summary.csv."""
    out = tmp_path / "out"
    out.mkdir()
    setup(out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    rc, err = _run(tmp_path, tiny_model, out=out)
    assert_input_error(rc, err, "--out", name, *words)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


# ------------------------------------------------ an objective function of the wrong shape: a traceback after training

def returns_none(prediction: str, reference: str) -> None:
    """An objective that scores nothing (as `builtins:print` does)."""


def raises(prediction: str, reference: str) -> float:
    return 1 / 0


@pytest.mark.parametrize("metric, words", [
    ("math:sqrt", ("must take (prediction, reference)", "(x, /)")),  # TypeError traceback after training
    ("json:dumps", ("must take (prediction, reference)",)),
    (f"{__name__}:returns_none", ("returned None", "finite number")),  # float(None): TypeError traceback
    (f"{__name__}:raises", ("failed on a prediction", "ZeroDivisionError")),  # its traceback
])
def test_an_objective_function_that_cannot_score_is_one_line(tmp_path, tiny_model, metric, words):
    rc, err = _run(tmp_path, tiny_model, n_eval=2, objective={"metric": metric, "direction": "maximize"})
    assert_input_error(rc, err, "wl.json", "tasks[0].objective.metric", metric, *words)
