"""alto's real backend: fused multi-adapter LoRA training on a frozen backbone.

    from altoruntime.backbone import load_backbone, tiny_llama
    from altoruntime.trainer import MultiAdapterTrainer
    tr = MultiAdapterTrainer(tiny_llama(), target_modules=["q_proj", "v_proj"])
    tr.admit("a", rank=8, lr=2e-4); tr.admit("b", rank=16, lr=5e-4)
    losses = tr.step({"a": (ids, mask, labels), "b": (ids2, mask2, labels2)})

Modules: backbone (load/freeze, targets), lora_layer (stacked adapters by slot), optim (per-slot
AdamW), adapters (AdapterStore: slots, lifecycle, snapshots, one adapter's state as data),
batching (fuse micro-batches), trainer (the fused step and evaluation on one device), protocol
(the `Trainer` the backend drives; parallel/ holds the multi-GPU one), export (PEFT format),
checkpoint (atomic), task_data + backend (execute Controller actions), run + cli (`alto run`),
data (datasets).
Importing this package imports nothing heavy.
"""
