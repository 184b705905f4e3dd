"""Adapter storage: the slots of the stacked LoRA weights and everything kept per adapter.

records (AdapterConfig, AdapterRecord), packing (one-transfer slot reads and writes), grad_check
(per-slot finite gradients), store (AdapterStore: slots, lifecycle, snapshots, state as data).
"""

from altoruntime.adapters.records import AdapterConfig, AdapterRecord, Status, Weights
from altoruntime.adapters.store import AdapterStore

__all__ = ["AdapterConfig", "AdapterRecord", "AdapterStore", "Status", "Weights"]
