"""Save an adapter in PEFT's on-disk format, so `PeftModel.from_pretrained(backbone, dir)` loads it.

The directory holds adapter_config.json (written by peft's own LoraConfig) and
adapter_model.safetensors with PEFT's key names. It is written to a temporary sibling and
renamed into place, so a crash never leaves a half-written adapter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from altoruntime.protocol import Trainer
from altosim.interrupts import deferred_interrupts


def export_peft(
    trainer: Trainer,
    job_id: str,
    out_dir: str | Path,
    best: bool = False,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write adapter `job_id` (its best-val snapshot when `best`) to `out_dir`; return the path."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    cfg = trainer.config(job_id)
    if best:
        snap = trainer.best_weights(job_id)
        if snap is None:
            raise ValueError(f"best: adapter {job_id!r} has no best snapshot")
        weights = [(n, a, b) for n, (a, b) in zip(trainer.layer_names, snap)]
    else:
        weights = trainer.adapter_weights(job_id)
    tensors = {}
    for name, a, b in weights:
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.contiguous()
    config = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=sorted(trainer.target_modules),
        fan_in_fan_out=bool(getattr(trainer, "fan_in_fan_out", False)),  # Conv1D targets (GPT-2), as PEFT sets it
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with deferred_interrupts():  # an adapter folder is replaced whole: Ctrl-C waits until it is in place
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            config.save_pretrained(str(tmp))
            save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            if out.exists():
                old = out.with_name(f".{out.name}.old")
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out
