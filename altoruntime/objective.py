"""A task's objective as a scorer: `model with one adapter -> float` over the held-out examples.

`exact_match` uses the dataset's own exact match when it has one (e.g. numbers for arithmetic),
else normalized text; `rouge_l` is ROUGE-L F1; an import path names a per-example
`function(prediction, reference) -> float`. Scores are means over greedy generations.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from typing import Any, Callable

import torch

from altosim.schemas.objective import Objective
from altoruntime.data.metrics import rouge_l_f1, text_exact_match


def per_example(objective: Objective, ds: Any) -> Callable[[str, str], float]:
    """The per-example scoring function; ValueError (one line) when an import path does not resolve."""
    if objective.metric == "exact_match":
        return ds.score_fn if getattr(ds, "metric_name", "") == "exact_match" else text_exact_match
    if objective.metric == "rouge_l":
        return rouge_l_f1
    module, _, name = objective.metric.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {objective.metric}: {e}") from None
    if not callable(fn):
        raise ValueError(f"{objective.metric} is not a function")
    try:  # said before training, not when the first config is scored (os:system, math:sqrt were a traceback then)
        inspect.signature(fn).bind("prediction", "reference")
    except TypeError:
        raise ValueError(f"{objective.metric} must take (prediction, reference); "
                         f"its signature is {inspect.signature(fn)}") from None
    except ValueError:  # a builtin without a signature: checked when it scores
        pass
    return fn


def _scored(metric: str, fn: Callable[[str, str], float], prediction: str, reference: str) -> float:
    """One per-example score, a finite number (a bool counts), or a ValueError naming the metric."""
    try:
        v = fn(prediction, reference)
    except Exception as e:  # noqa: BLE001  # the user's function: its failure is one line, not a traceback
        raise ValueError(f"{metric} failed on a prediction: {type(e).__name__}: {e}") from None
    if not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{metric} returned {v!r:.60} for a prediction; expected a finite number")
    return float(v)


def scorer(objective: Objective, ds: Any, tokenizer: Any, seq_len: int) -> Callable[[torch.nn.Module], float]:
    """Mean of the objective's per-example score over `ds`'s eval split, from greedy generations."""
    from altoruntime.data.evaluate import greedy_predictions

    fn = per_example(objective, ds)

    def score(model: torch.nn.Module) -> float:
        preds = greedy_predictions(model, tokenizer, ds, "eval", seq_len=seq_len)
        refs = ds.references("eval")
        return sum(_scored(objective.metric, fn, p, r) for p, r in zip(preds, refs)) / max(1, len(refs))

    return score
