"""Examples, splits and the dataset object the trainer holds.

Split membership is decided by a hash of each example's *key* (its underlying problem, not its
wording), never by position: the three splits are disjoint by construction, the eval set does not
move when ``n_train`` changes, and no problem reappears in another split under a new wording or a
different seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from altoruntime.data.rng import unit_hash

if TYPE_CHECKING:  # torch stays out of import time for callers that only need the text
    from altoruntime.data.tokenize import PromptBatch, TokenizedSplit

SPLITS = ("train", "val", "eval")


@dataclass(frozen=True)
class Example:
    """One fine-tuning pair. ``prompt`` ends where generation starts; ``answer`` is one line."""

    prompt: str
    answer: str
    key: str = ""  # identity of the underlying problem; equal keys never cross splits
    target: str | None = None  # the text trained on after the prompt when not ``answer`` (a chat turn's markup)


@dataclass(frozen=True)
class SplitFractions:
    """Share of the key space owned by val and eval (train owns the rest)."""

    val: float = 0.1
    eval: float = 0.1

    def bucket(self, task: str, key: str) -> str:
        u = unit_hash("split", task, key)
        if u < self.eval:
            return "eval"
        if u < self.eval + self.val:
            return "val"
        return "train"


def check_sizes(n_train: int, n_val: int, n_eval: int) -> None:
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_eval", n_eval)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")


def fill_splits(
    task: str,
    candidates: Iterable[Example],
    sizes: dict[str, int],
    fractions: SplitFractions,
    max_candidates: int | None = None,
) -> dict[str, list[Example]]:
    """Route candidates to their hash bucket until every split holds its requested size.

    Duplicate keys are skipped (first one wins). Raises ValueError when the candidates run out
    (or ``max_candidates`` is reached) before a split is full, naming what was available.
    """
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    taken = 0
    it: Iterator[Example] = iter(candidates)
    while any(len(out[s]) < sizes[s] for s in SPLITS):
        if max_candidates is not None and taken >= max_candidates:
            break
        ex = next(it, None)
        if ex is None:
            break
        taken += 1
        if ex.key in seen:
            continue
        seen.add(ex.key)
        split = fractions.bucket(task, ex.key)
        if len(out[split]) < sizes[split]:
            out[split].append(ex)
    short = [s for s in SPLITS if len(out[s]) < sizes[s]]
    if short:
        have = ", ".join(f"n_{s}<={len(out[s])}" for s in short)
        raise ValueError(f"dataset {task!r} has too few distinct examples for the requested sizes ({have})")
    return out


@dataclass(frozen=True)
class FineTuneDataset:
    """A task's three splits, its metric and its prompt format. Immutable; cheap to pass around."""

    name: str
    train: list[Example]
    val: list[Example]
    eval: list[Example]
    metric_name: str
    score_fn: Callable[[str, str], float] = field(repr=False)
    max_new_tokens: int = 64  # enough greedy tokens to produce any reference answer
    description: str = ""
    rendered: bool = False  # prompts are chat-template text holding their special tokens already

    def split(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, split)

    def references(self, split: str = "eval") -> list[str]:
        return [ex.answer for ex in self.split(split)]

    def prompts(self, split: str = "eval") -> list[str]:
        return [ex.prompt for ex in self.split(split)]

    def metric(self, predictions: list[str], split: str = "eval") -> float:
        """Mean per-example score in [0, 1] (higher is better) of generated continuations.

        ``predictions[i]`` is the text generated after ``prompts(split)[i]``; only its first line
        counts, since every reference answer is a single line.
        """
        refs = self.references(split)
        if len(predictions) != len(refs):
            raise ValueError(f"predictions has {len(predictions)} items; split {split!r} has {len(refs)}")
        if not refs:
            raise ValueError(f"split {split!r} is empty; no metric to compute")
        return sum(self.score_fn(p, r) for p, r in zip(predictions, refs)) / len(refs)

    def tokenize(self, tokenizer: object, split: str, seq_len: int = 512, pad_to_seq_len: bool = False,
                 loss_on: str = "completion") -> "TokenizedSplit":
        """Prompt+answer+EOS rows with labels on the answer and EOS only, or on every token for
        ``loss_on="all"`` (see tokenize.py)."""
        from altoruntime.data.tokenize import tokenize_examples

        return tokenize_examples(tokenizer, self.split(split), seq_len=seq_len, pad_to_seq_len=pad_to_seq_len,
                                 add_special_tokens=not self.rendered, loss_on=loss_on)

    def tokenize_prompts(self, tokenizer: object, split: str = "eval", seq_len: int = 512) -> "PromptBatch":
        """Left-padded prompts for batched greedy generation, in split order."""
        from altoruntime.data.tokenize import tokenize_prompts

        return tokenize_prompts(tokenizer, self.prompts(split), seq_len=seq_len, add_special_tokens=not self.rendered)
