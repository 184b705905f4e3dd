"""Shared test helpers for runtime tests: tiny batches and a PEFT reference trainer."""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, get_peft_model

from runtime.backbone import LLAMA_TARGETS

VOCAB = 128


def make_batch(seed: int, b: int, length: int, vocab: int = VOCAB, pad_tail: bool = True):
    """Random (input_ids, attention_mask, labels); with pad_tail, later rows are right-padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, length), generator=g)
    mask = torch.ones_like(ids)
    if pad_tail:
        for i in range(1, b):
            n = int(torch.randint(2, length + 1, (1,), generator=g))
            mask[i, n:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


class PeftReference:
    """One adapter trained alone the standard way: PEFT model + torch.optim.AdamW."""

    def __init__(self, backbone, rank, alpha, lr, weight_decay=0.01, seed=0, targets=LLAMA_TARGETS):
        torch.manual_seed(seed)
        cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
        self.model = get_peft_model(copy.deepcopy(backbone), cfg)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def step(self, batch) -> float:
        ids, mask, labels = batch
        self.model.train()
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return float(loss)

    def weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        sd = self.model.state_dict()
        out = {}
        for k, v in sd.items():
            if ".lora_A.default.weight" in k:
                name = k.removeprefix("base_model.model.").removesuffix(".lora_A.default.weight")
                out[name] = (v, sd[k.replace("lora_A", "lora_B")])
        return out
