"""`alto run` on a user's own model (a tiny Llama or GPT-2 saved with save_pretrained) and data:
each task names its model, LoRA targets and data format; the best adapter loads with PEFT and
reproduces the reported validation loss; bad input is one line and writes nothing."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from altosim.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from make_tiny_model import save_tiny_model as _save  # noqa: E402


def save_tiny_model(folder, style: str):
    """A random 2-layer model of `style` ('llama' or 'gpt2'), hidden 32, and its byte tokenizer
    (chat template; GPT-2's without a pad token), saved with save_pretrained in `folder`."""
    return _save(folder, style, hidden=32)


def _rows(n: int = 60) -> list[dict]:
    return [{"prompt": f"Reverse w{i:02d}:", "completion": f" {i:02d}w"} for i in range(n)]


SPACE = {"lr": [2e-2, 5e-3], "rank": [2, 4], "batch_size": [1, 2]}  # 8 configs
ONE = {"lr": [2e-2], "rank": [2], "batch_size": [2]}


def write_run(tmp_path, model: str, dataset: str = "data.jsonl", rows: list | None = None, space: dict = SPACE,
              **task):
    """A workload of one task (alto early exit) on `model` and `dataset` in tmp_path; the config path."""
    if rows is not None:
        (tmp_path / dataset).write_text("".join(json.dumps(r) + "\n" for r in rows))
    wl = {"name": "own", "synthetic": True, "tasks": [{
        "id": "t1", "arrival": 0, "model": model, "dataset": dataset, "gpus": 1,
        "search_space": space,
        "samples_per_job": 8, "eval_every_samples": 2, "seq_len": 64, **task}]}
    (tmp_path / "wl.json").write_text(json.dumps(wl))
    cfg = {"workload": "wl.json", "cluster": {"gpus": 1},
           "policy": {"early_exit": {"name": "alto"}, "inter_task": {"name": "fifo"}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return str(tmp_path / "cfg.json")


def alto_run(cfg: str, out, n_eval: int = 0) -> int:
    return main(["run", cfg, "--backbone", "tiny", "--out", str(out), "--n-train", "12", "--n-val", "4",
                 "--n-eval", str(n_eval), "--quiet"])


def _peft_val_loss(model_dir, adapter, data_file) -> float:
    """The token-weighted mean validation loss of the exported adapter on PEFT, over alto's val split."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from altoruntime.data import get_dataset

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    val = get_dataset(str(data_file), n_train=12, n_val=4, n_eval=1, seed=0).tokenize(tok, "val", seq_len=64)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        logits = model(input_ids=val.input_ids, attention_mask=val.attention_mask).logits
    want = val.labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(),
                                           want.reshape(-1), ignore_index=-100, reduction="sum")
    return float(ce) / int((want != -100).sum())


@pytest.mark.parametrize("style,targets", [("llama", None), ("gpt2", None), ("gpt2", ["attn.c_attn", "mlp.c_fc"]),
                                           ("llama", r".*\.layers\.1\..*_proj")])
def test_own_model_run_exports_an_adapter_peft_reproduces(tmp_path, capsys, style, targets):
    model_dir = save_tiny_model(tmp_path / "my-model", style)
    extra = {} if targets is None else {"target_modules": targets}
    cfg = write_run(tmp_path, "my-model", rows=_rows(), **extra)
    out = tmp_path / "out"
    assert alto_run(cfg, out) == 0, capsys.readouterr().err
    row = next(csv.DictReader(open(out / "tasks.csv")))
    assert row["jobs"] == "8" and row["model"] == "my-model"
    adapter = out / "tasks" / "t1" / "best_adapter"
    conf = json.loads((adapter / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == str(model_dir.resolve())
    want_targets = {"llama": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
                    "gpt2": ["c_attn", "c_fc", "c_proj"]}[style] if targets is None else None
    if want_targets is not None:
        assert sorted(conf["target_modules"]) == want_targets
    elif style == "gpt2":
        assert sorted(conf["target_modules"]) == ["c_attn", "c_fc"]
    else:  # one layer only: PEFT gets the full names
        assert conf["target_modules"] and all(".layers.1." in n for n in conf["target_modules"])
    assert conf["fan_in_fan_out"] == (style == "gpt2")
    got = _peft_val_loss(model_dir, adapter, tmp_path / "data.jsonl")
    assert got == pytest.approx(float(row["best_val_loss"]), rel=1e-4)


def test_chat_messages_dataset_trains_on_the_assistant_turn(tmp_path, capsys):
    save_tiny_model(tmp_path / "m", "llama")
    rows = [{"messages": [{"role": "user", "content": f"reverse w{i:02d}"}, {"role": "assistant", "content": f"{i:02d}w"}]}
            for i in range(60)]
    cfg = write_run(tmp_path, "./m", dataset="chat.jsonl", rows=rows, space=ONE)
    out = tmp_path / "out"
    assert alto_run(cfg, out, n_eval=2) == 0, capsys.readouterr().err
    row = next(csv.DictReader(open(out / "tasks.csv")))
    assert float(row["best_val_loss"]) > 0 and 0.0 <= float(row["best_metric"]) <= 1.0


def test_chat_rows_render_with_the_template_and_loss_on_picks_the_labels(tmp_path):
    from altoruntime.data import get_dataset
    from altoruntime.run import chat_renderer

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(save_tiny_model(tmp_path / "m", "llama"))
    rows = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(80)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = get_dataset(str(tmp_path / "c.jsonl"), n_train=8, n_val=2, n_eval=1, render=chat_renderer(tok))
    ex = ds.train[0]
    i = ex.prompt.split("<user>q")[1].split("\n")[0]
    assert ex.prompt == f"<system>be brief\n<user>q{i}\n<assistant>" and ex.target == f"a{i}\n" and ex.answer == f"a{i}"
    part = ds.tokenize(tok, "train", seq_len=64)
    first = part.labels[0][part.labels[0] != -100].tolist()
    assert tok.decode(first) == f"a{i}\n<eos>"  # the completion and EOS only, no second BOS anywhere
    every = ds.tokenize(tok, "train", seq_len=64, loss_on="all")
    assert int((every.labels[0] != -100).sum()) == int(every.attention_mask[0].sum())


def test_hub_id_in_the_local_cache_is_used_without_network(tmp_path, capsys, monkeypatch):
    import transformers.utils.hub as hub

    snap = tmp_path / "cache" / "models--alto-test--tiny" / "snapshots" / "0"
    save_tiny_model(snap, "llama")
    real = hub.cached_file

    def cached(path_or_repo_id, filename, **kw):  # the cache lookup of one fake repo, offline
        assert kw.get("local_files_only") is True
        return str(snap / filename) if path_or_repo_id == "alto-test/tiny" else real(path_or_repo_id, filename, **kw)

    monkeypatch.setattr("transformers.utils.cached_file", cached)
    cfg = write_run(tmp_path, "alto-test/tiny", rows=_rows(), space=ONE)
    assert alto_run(cfg, tmp_path / "out") == 0, capsys.readouterr().err
    conf = json.loads((tmp_path / "out" / "tasks" / "t1" / "best_adapter" / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == "alto-test/tiny"


BAD = [  # (model, dataset file, its rows, task fields, field named, words in the problem)
    ("no-such-dir/model", "data.jsonl", _rows(), {}, "tasks[0].model", "no such model folder"),
    ("./nope", "data.jsonl", _rows(), {}, "tasks[0].model", "no such model folder"),
    ("alto-test/surely-not-cached-3f9a", "data.jsonl", _rows(), {}, "tasks[0].model", "not in the local Hugging Face cache"),
    ("m", "data.jsonl", _rows(), {"prompt_column": "question"}, "question", "no column 'question'"),
    ("m", "data.jsonl", [], {}, "tasks[0].dataset", "empty dataset"),
    ("m", "data.jsonl", _rows(), {"target_modules": ["qkv"]}, "tasks[0].target_modules", "q_proj, k_proj"),
    ("m", "data.jsonl", _rows(), {"target_modules": "lm_head"}, "tasks[0].target_modules", "matches no linear layer"),
]


@pytest.mark.parametrize("model,data,rows,task,field,needle", BAD, ids=[f"{b[4]}:{b[5][:12]}" for b in BAD])
def test_bad_own_model_input_is_one_line_naming_file_and_field(tmp_path, capsys, model, data, rows, task, field,
                                                               needle):
    save_tiny_model(tmp_path / "m", "llama")
    cfg = write_run(tmp_path, model, dataset=data, rows=rows, **task)
    capsys.readouterr()  # save_pretrained's progress bars
    out = tmp_path / "out"
    rc = alto_run(cfg, out)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f": {field}: " in err and needle in err, err
    assert ("wl.json" in err) or ("data.jsonl" in err), err
    assert not out.exists()


def test_shipped_own_model_example_resolves_and_is_the_scripts_output(tmp_path):
    from safetensors.torch import load_file

    from altosim.traces_io import read_workload
    from altoruntime.backbone import find_targets
    from altoruntime.model_source import resolve_model
    from altoruntime.run import open_model

    examples = ROOT / "traces" / "examples"
    shipped = examples / "tiny-llama"
    fresh = _save(tmp_path / "fresh", "llama")  # the script's defaults made the shipped folder
    a, b = load_file(shipped / "model.safetensors"), load_file(fresh / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    task = read_workload(examples / "own_model_workload.json").tasks[0]
    src = resolve_model(task.model, examples)
    assert src is not None and src.folder == shipped.resolve()
    assert (examples / task.dataset).is_file()
    assert len(find_targets(open_model(src, torch.float32).model, task.target_modules)) == 14  # 7 per layer


def test_run_fields_round_trip_through_workload_json_and_are_left_out_at_defaults(tmp_path):
    from altosim.schemas.workload import WorkloadTrace
    from altosim.traces_io import read_workload, workload_csv_text, workload_json_text

    task = {"id": "a", "arrival": 0, "model": "m", "dataset": "d", "gpus": 1, "samples_per_job": 4,
            "search_space": {"lr": [1e-3], "rank": [2], "batch_size": [1]}}
    plain = WorkloadTrace(name="w", synthetic=True, tasks=[task])
    assert "loss_on" not in workload_json_text(plain)  # simulator workloads are written as before
    own = WorkloadTrace(name="w", synthetic=True, tasks=[{**task, "target_modules": ["q_proj"], "loss_on": "all",
                                                          "dtype": "bfloat16", "messages_column": "chat"}])
    (tmp_path / "w.json").write_text(workload_json_text(own))
    assert read_workload(tmp_path / "w.json") == own
    with pytest.raises(ValueError, match="no CSV column"):
        workload_csv_text(own)


def test_gpt2_in_bfloat16_trains_and_generates_with_eos_as_pad(tmp_path, capsys):
    save_tiny_model(tmp_path / "m", "gpt2")  # its tokenizer has no pad token
    cfg = write_run(tmp_path, "./m", rows=_rows(), space=ONE, dtype="bfloat16")
    out = tmp_path / "out"
    assert alto_run(cfg, out, n_eval=2) == 0, capsys.readouterr().err
    row = next(csv.DictReader(open(out / "tasks.csv")))
    assert float(row["best_val_loss"]) > 0 and 0.0 <= float(row["best_metric"]) <= 1.0
