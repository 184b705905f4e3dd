"""Batched greedy decoding over a static KV cache; on CUDA every decode step replays one CUDA graph.

`model.generate` pays per token for Python: logits processors, a growing cache, a mask rebuilt from
a growing 2D one, a host sync for its stopping check; a 48-prompt x 144-token ROUGE-L metric of
SmolLM2-135M was ~10 s of an H200 run's finish. Here a decode step has fixed shapes and no host
work: a `transformers.StaticCache` of prompt + new tokens, a 4D mask made on the device from the
step's cache position, the argmax, the finished-row bookkeeping and the step counters all updated
in place, so the same step is captured once and replayed; the host checks whether every row has
finished only every `check_every` steps. On the CPU the same step runs eagerly.

It is HF's greedy search (transformers' `_sample` without sampling), left-padded prompts: positions
count a row's real tokens, a finished row continues with the pad token, decoding stops when every
row has produced an EOS or after `max_new_tokens`; the output is trimmed where HF's would end.
Models whose attention takes no 4D mask (flash attention), or with generation settings that change
greedy search (repetition penalty, forced or suppressed tokens...), go to `model.generate`.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from altosim.interrupts import deferred_interrupts

_PLAIN_ATTENTION = ("sdpa", "eager")
# generation-config fields that make HF's greedy search differ from a plain argmax
_PROCESSORS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "forced_bos_token_id",
               "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens", "min_new_tokens",
               "min_length", "sequence_bias", "encoder_repetition_penalty", "exponential_decay_length_penalty")


def supports(model: Any) -> bool:
    """Whether `greedy_generate` reproduces `model.generate(do_sample=False)` for this model."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "_attn_implementation", None) not in _PLAIN_ATTENTION:
        return False
    if getattr(cfg, "is_encoder_decoder", False) or getattr(cfg, "sliding_window", None):
        return False
    gc = getattr(model, "generation_config", None)
    for name in _PROCESSORS:
        v = getattr(gc, name, None)
        if v not in (None, 1.0, 0, [], False) and not (name == "min_length" and v == 0):
            return False
    return True


class _Decoder:
    """The state of one batch's decoding: static buffers the decode step reads and updates."""

    def __init__(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 eos: Sequence[int], pad: int) -> None:
        from transformers import StaticCache

        self.model = model
        dev = input_ids.device
        b, p = input_ids.shape
        self.prompt, self.total = p, p + max_new_tokens
        self.cache = StaticCache(config=model.config, max_cache_len=self.total)
        # transformers >= 5.2x names the cache argument `cache`, earlier releases `past_key_values`
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        attn = getattr(model.config, "_attn_implementation", "sdpa")
        self.dtype = next(model.parameters()).dtype
        self.bool_mask = attn != "eager"  # sdpa takes a boolean mask (True: attend), eager an additive one
        self.key_ok = torch.cat([attention_mask.bool(), torch.ones(b, max_new_tokens, dtype=torch.bool, device=dev)],
                                1)[:, None, None, :]  # [b, 1, 1, total]: padding never attended
        self.kv_index = torch.arange(self.total, device=dev)
        self.eos = torch.tensor(list(eos), dtype=torch.long, device=dev)
        self.pad = torch.tensor(pad, dtype=torch.long, device=dev)
        self.out = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=dev)
        self.unfinished = torch.ones(b, dtype=torch.bool, device=dev)
        # the decode step's inputs, advanced in place
        self.token = torch.empty(b, 1, dtype=torch.long, device=dev)
        self.position = torch.empty(b, 1, dtype=torch.long, device=dev)
        self.cache_position = torch.empty(1, dtype=torch.long, device=dev)
        self.step_index = torch.zeros(1, dtype=torch.long, device=dev)

    def _mask(self, cache_position: torch.Tensor) -> torch.Tensor:
        """[b, 1, q, total] mask of the queries at `cache_position`: causal, padding hidden."""
        ok = self.key_ok & (self.kv_index[None, None, None, :] <= cache_position[None, None, :, None])
        if self.bool_mask:  # a padding query sees nothing: let it see everything (finite, never read), as HF does
            return ok | ~ok.any(-1, keepdim=True)
        return torch.zeros(ok.shape, dtype=self.dtype, device=ok.device).masked_fill_(~ok, torch.finfo(self.dtype).min)

    def _emit(self, logits: torch.Tensor) -> None:
        """The next token of every row from its last logits (HF: argmax over float32 logits;
        a finished row gets the pad token), written at the step's column; counters advance."""
        nxt = logits.float().argmax(-1)
        nxt = torch.where(self.unfinished, nxt, self.pad)
        self.out.index_copy_(1, self.step_index, nxt[:, None])
        self.unfinished &= ~(nxt[:, None] == self.eos[None, :]).any(1)  # (no isin: its large-set path sorts)
        self.token.copy_(nxt[:, None])
        self.step_index += 1

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        position = attention_mask.long().cumsum(-1) - 1
        position.masked_fill_(attention_mask == 0, 1)  # as HF's prepare_inputs_for_generation
        cache_position = torch.arange(self.prompt, device=input_ids.device)
        out = self.model(input_ids=input_ids, attention_mask=self._mask(cache_position), position_ids=position,
                         cache_position=cache_position, use_cache=True, **{self.cache_arg: self.cache},
                         logits_to_keep=1)
        self.position.copy_(position[:, -1:] + 1)
        self.cache_position.fill_(self.prompt)
        self._emit(out.logits[:, -1])

    def step(self) -> None:
        """One decode step on the static buffers (no host sync: capturable)."""
        out = self.model(input_ids=self.token, attention_mask=self._mask(self.cache_position),
                         position_ids=self.position, cache_position=self.cache_position, use_cache=True,
                         **{self.cache_arg: self.cache})
        self._emit(out.logits[:, -1])
        self.position += 1
        self.cache_position += 1


def _capture(step: Any, device: torch.device) -> Any:
    """`step` captured as a CUDA graph (capturing runs nothing: the state does not advance)."""
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), deferred_interrupts():  # a capture cut short would leave the stream capturing
        with torch.cuda.graph(graph, stream=side):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    return graph


@torch.no_grad()
def greedy_generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                    eos_token_id: int | Sequence[int] | None, pad_token_id: int, cuda_graph: bool = True,
                    check_every: int = 8, info: dict | None = None) -> torch.Tensor:
    """[rows, prompt + new] token ids, equal to `model.generate(input_ids, attention_mask=...,
    max_new_tokens=..., do_sample=False, eos_token_id=..., pad_token_id=...)` for left-padded
    prompts (see the module docstring). cuda_graph: replay captured decode steps on CUDA (a
    capture that fails falls back to eager steps). info: filled with how it went (decode steps,
    whether they were captured, a failed capture's reason)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    if check_every < 1:
        raise ValueError(f"check_every: must be >= 1, got {check_every}")
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    model.eval()
    dec = _Decoder(model, input_ids, attention_mask, max_new_tokens, eos, pad_token_id)
    dec.prefill(input_ids, attention_mask)
    graph = None
    done = 1
    while done < max_new_tokens:
        if eos and done % check_every == 0 and not bool(dec.unfinished.any()):  # one host sync per check_every
            break
        if graph is None and cuda_graph and input_ids.is_cuda and done >= 2:  # warmed up by an eager step
            try:
                graph = _capture(dec.step, input_ids.device)
            except Exception as e:  # noqa: BLE001 - graphs are an optimization, never a new way to fail
                cuda_graph = False
                torch.cuda.synchronize(input_ids.device)
                if info is not None:
                    info["failure"] = f"{type(e).__name__}: {e}"[:300]
        if graph is not None:
            graph.replay()
        else:
            dec.step()
        done += 1
    if info is not None:
        info.update(steps=done, captured=graph is not None)
    new = dec.out[:, :done]
    if eos:  # HF stops at the step where the last row finished: trim what came after
        hit = torch.isin(new, dec.eos)
        first = torch.where(hit.any(1), hit.int().argmax(1), torch.full_like(hit[:, 0], done, dtype=torch.long))
        new = new[:, : int(first.max()) + 1] if bool(hit.any(1).all()) else new
    return torch.cat([input_ids, new], 1)
