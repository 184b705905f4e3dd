"""What "best config" means for a task: validation loss (the default) or a metric, and its direction.

`metric` is `val_loss`, `exact_match`, `rouge_l`, or a per-example scoring function by import path
(`package.module:function`, called as `function(prediction, reference) -> float` on each held-out
example's greedy generation, averaged). The early-exit policy still reads validation loss; the
objective picks and ranks the configs at the end (`alto run` scores every config that trained).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUILTIN = ("val_loss", "exact_match", "rouge_l")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field("val_loss", description="val_loss | exact_match | rouge_l | package.module:function")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="None -> minimize for val_loss, maximize for a metric")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in BUILTIN and not _IMPORT_PATH.match(v):
            raise ValueError(f"expected one of {', '.join(BUILTIN)} or an import path 'package.module:function'")
        return v

    @model_validator(mode="after")
    def _direction(self) -> "Objective":
        if self.direction is None:
            object.__setattr__(self, "direction", "minimize" if self.metric == "val_loss" else "maximize")
        return self

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"
