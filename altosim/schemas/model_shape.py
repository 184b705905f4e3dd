"""A backbone named by its shape, for models the cost model has no profile or table entry for.

A task's `model_shape` is either a `ShapeSpec` (layers, hidden size, intermediate size, heads,
kv heads, vocabulary) or the path of a local Hugging Face `config.json`, read here with the field
names transformers' decoder configs use (`num_hidden_layers`, `hidden_size`, ...; a multimodal
config's `text_config` is read when it holds them). Only shapes matter to the analytic cost model:
weights never change step time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from altosim.errors import InputError, from_validation_error
from altosim.schemas.limits import Int

MAX_DIM = 1 << 20  # hidden / intermediate size
MAX_LAYERS = 4096
MAX_HEADS = 65_536
MAX_VOCAB = 1 << 24
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KB


class ShapeSpec(BaseModel):
    """A decoder-only transformer's shape (what `altosim.cost.specs.ModelShape` is built from)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: Int = Field(ge=1, le=MAX_LAYERS, description="decoder layers")
    hidden: Int = Field(ge=1, le=MAX_DIM, description="hidden size")
    intermediate: Int = Field(ge=1, le=MAX_DIM, description="MLP intermediate size")
    heads: Int = Field(ge=1, le=MAX_HEADS, description="attention heads")
    kv_heads: Int | None = Field(None, ge=1, le=MAX_HEADS, description="key/value heads; None -> heads")
    head_dim: Int | None = Field(None, ge=1, le=MAX_DIM, description="per-head size; None -> hidden / heads")
    vocab: Int = Field(ge=1, le=MAX_VOCAB, description="vocabulary size")
    tied_embeddings: bool = Field(True, description="output head shares the input embedding")

    @model_validator(mode="after")
    def _heads(self) -> "ShapeSpec":
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"heads: hidden size {self.hidden} is not a multiple of {self.heads} heads "
                             "(give head_dim when it differs from hidden / heads)")
        if self.kv_heads is not None and (self.kv_heads > self.heads or self.heads % self.kv_heads):
            raise ValueError(f"kv_heads: {self.kv_heads} must divide heads ({self.heads})")
        return self

    @property
    def kv_dim(self) -> int:
        """Width of the key (or value) projection: kv heads x head size."""
        return (self.kv_heads or self.heads) * (self.head_dim or self.hidden // self.heads)

    @property
    def params(self) -> float:
        """Weights: the layers' 7 projections, embeddings (twice when the head is not tied)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * i
        return float(self.layers * per_layer + self.vocab * h * (1 if self.tied_embeddings else 2))


_HF_FIELDS = {"layers": "num_hidden_layers", "hidden": "hidden_size", "intermediate": "intermediate_size",
              "heads": "num_attention_heads", "kv_heads": "num_key_value_heads", "head_dim": "head_dim",
              "vocab": "vocab_size", "tied_embeddings": "tie_word_embeddings"}


def read_hf_config(path: str | Path) -> ShapeSpec:
    """The shape in a Hugging Face `config.json`; InputError naming the file and field otherwise."""
    path = Path(path)
    name = str(path)
    from altosim.files import loads_json, read_text  # no cycle: files imports only errors and outdir

    try:
        too_big = path.stat().st_size > MAX_CONFIG_BYTES
    except FileNotFoundError:
        raise InputError(name, "<file>", "no such file") from None
    except OSError as e:
        raise InputError(name, "<file>", f"cannot read: {e.strerror or e}") from None
    if too_big:
        raise InputError(name, "<file>", f"over {MAX_CONFIG_BYTES} bytes: not a model config.json")
    data = loads_json(read_text(path), name)  # a FIFO, bad UTF-8 or JSON, a key given twice: one line
    if not isinstance(data, dict):
        raise InputError(name, "<root>", "expected a JSON object (a Hugging Face model config)")
    if "hidden_size" not in data and isinstance(data.get("text_config"), dict):
        data = data["text_config"]  # multimodal configs nest the language model's
    shape: dict[str, Any] = {k: data[v] for k, v in _HF_FIELDS.items() if data.get(v) is not None}
    missing = [v for k, v in _HF_FIELDS.items() if k in ("layers", "hidden", "intermediate", "heads", "vocab")
               and k not in shape]
    if missing:
        raise InputError(name, missing[0], "missing: a decoder config.json names num_hidden_layers, hidden_size, "
                         "intermediate_size, num_attention_heads and vocab_size")
    try:
        return ShapeSpec.model_validate(shape)
    except ValidationError as e:
        err = from_validation_error(e, name)
        field = err.field.split(".")[0]
        raise InputError(name, _HF_FIELDS.get(field, field), err.problem) from None
