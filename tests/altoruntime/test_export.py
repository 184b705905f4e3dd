"""Export round-trip: PEFT loads our adapter and gives the runtime's logits."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel

from altoruntime.backbone import tiny_llama
from altoruntime.export import export_peft
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._runtime_helpers import make_batch


@pytest.fixture(scope="module")
def trained():
    base = tiny_llama(seed=0)
    tr = MultiAdapterTrainer(copy.deepcopy(base), target_modules=["q_proj", "v_proj", "down_proj"])
    tr.admit("a", rank=4, alpha=3.0, lr=2e-2, seed=1)
    tr.admit("b", rank=8, lr=1e-2, dropout=0.1, seed=2)
    for s in range(3):
        tr.step({"a": make_batch(s, 2, 10), "b": make_batch(50 + s, 3, 7)})
    return base, tr


@pytest.mark.parametrize("job", ["a", "b"])
def test_peft_loads_export_with_same_logits(trained, tmp_path, job):
    base, tr = trained
    out = export_peft(tr, job, tmp_path / job)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == tr.config(job).rank and cfg["lora_alpha"] == tr.config(job).alpha
    assert sorted(cfg["target_modules"]) == ["down_proj", "q_proj", "v_proj"]
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    ids, mask, _ = make_batch(99, 3, 12)
    with torch.no_grad():
        want = peft_model(input_ids=ids, attention_mask=mask).logits
        plain = base(input_ids=ids, attention_mask=mask).logits
    got = tr.logits(job, ids, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float((got - plain).abs().max()) > 1e-3  # the adapter really changes the logits


def test_export_best_snapshot_and_overwrite(trained, tmp_path):
    base, tr = trained
    tr.snapshot_best("a")
    best_logits = tr.logits("a", make_batch(5, 1, 8)[0])
    tr.step({"a": make_batch(7, 2, 10)})
    out = export_peft(tr, "a", tmp_path / "a")
    out = export_peft(tr, "a", tmp_path / "a", best=True)  # replaces the first export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    with torch.no_grad():
        got = peft_model(input_ids=make_batch(5, 1, 8)[0]).logits
    torch.testing.assert_close(got, best_logits, rtol=1e-5, atol=1e-5)
    tr.admit("fresh", rank=2)
    with pytest.raises(ValueError, match="no best snapshot"):
        export_peft(tr, "fresh", tmp_path / "f", best=True)


def test_generation_with_applied_adapter_equals_peft_generation(trained, tmp_path):
    base, tr = trained
    out = export_peft(tr, "b", tmp_path / "b")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    ids = make_batch(3, 2, 6, pad_tail=False)[0]
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        want = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
    ref = tr.logits("b", ids)
    frozen = [l.weight.detach().clone() for l in tr.store.layers]
    for merge in (True, False):
        with tr.applied("b", merge=merge) as model:
            got = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
            torch.testing.assert_close(model(input_ids=ids).logits, ref)
        assert torch.equal(got, want) and got.shape == (2, 12)
        assert tr.ctx.single is None and tr.ctx.meta is None
        assert all(torch.equal(l.weight, w) for l, w in zip(tr.store.layers, frozen))  # restored exactly
