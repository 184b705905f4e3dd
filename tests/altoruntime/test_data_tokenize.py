"""Tokenization (label masking, truncation, prompts for generation) and the resumable data order."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from altoruntime.data import IGNORE_INDEX, Example, TokenizedSplit, get_dataset
from altoruntime.data.tokenize import tokenize_examples, tokenize_prompts


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A real HF fast tokenizer: one token per UTF-8 byte, plus <eos> and <pad>."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)} | {"<eos>": 256, "<pad>": 257}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


class NoEosTokenizer:
    """The smallest object the data code accepts: __call__ returning input_ids, no special tokens."""

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict:
        return {"input_ids": [[ord(c) % 251 for c in t] for t in texts]}


TOK = byte_tokenizer()
EXAMPLES = [Example("Question: 2+3?\nAnswer:", " 5"), Example("Q: hi\nAnswer:", " hello there"),
            Example("Question: a much longer prompt here?\nAnswer:", " ok")]


def test_byte_tokenizer_round_trips() -> None:
    ids = TOK("héllo", add_special_tokens=True)["input_ids"]
    assert len(ids) == len("héllo".encode()) and TOK.decode(ids) == "héllo"


def test_labels_cover_answer_and_eos_only() -> None:
    ts = tokenize_examples(TOK, EXAMPLES, seq_len=64)
    assert ts.input_ids.dtype == ts.labels.dtype == ts.attention_mask.dtype == torch.int64
    assert ts.input_ids.shape == (3, max(len((e.prompt + e.answer).encode()) + 1 for e in EXAMPLES))
    for i, e in enumerate(EXAMPLES):
        plen, n = int(ts.prompt_lengths[i]), int(ts.lengths[i])
        assert plen == len(e.prompt.encode()) and n == plen + len(e.answer.encode()) + 1
        assert TOK.decode(ts.input_ids[i, :plen]) == e.prompt
        assert TOK.decode(ts.input_ids[i, plen:n - 1]) == e.answer
        assert int(ts.input_ids[i, n - 1]) == TOK.eos_token_id
        assert (ts.labels[i, :plen] == IGNORE_INDEX).all() and (ts.labels[i, n:] == IGNORE_INDEX).all()
        assert torch.equal(ts.labels[i, plen:n], ts.input_ids[i, plen:n])
        assert ts.attention_mask[i, :n].all() and not ts.attention_mask[i, n:].any()
        assert (ts.input_ids[i, n:] == TOK.pad_token_id).all()
    assert ts.n_answer_tokens == sum(len(e.answer.encode()) + 1 for e in EXAMPLES) and ts.n_truncated == 0


def test_truncation_keeps_prompt_and_counts_rows() -> None:
    rows = [Example("Q: one\nAnswer:", " 1"), Example("Q: two\nAnswer:", " a long answer")]
    ts = tokenize_examples(TOK, rows, seq_len=len(rows[0].prompt.encode()) + 3)
    assert ts.n_truncated == 1 and ts.input_ids.shape[1] == int(ts.lengths.max()) == len(rows[0].prompt) + 3
    assert TOK.decode(ts.input_ids[0, : ts.lengths[0]]) == rows[0].prompt + " 1<eos>"
    assert TOK.decode(ts.input_ids[1, : ts.lengths[1]]) == rows[1].prompt + " a "
    with pytest.raises(ValueError, match="seq_len=10 too short: prompt of example 0 has 22 tokens"):
        tokenize_examples(TOK, EXAMPLES, seq_len=10)
    with pytest.raises(ValueError, match="seq_len must be an int >= 2"):
        tokenize_examples(TOK, EXAMPLES, seq_len=1)


def test_pad_to_seq_len_and_no_eos_tokenizer() -> None:
    assert tokenize_examples(TOK, EXAMPLES, seq_len=128, pad_to_seq_len=True).input_ids.shape == (3, 128)
    ts = tokenize_examples(NoEosTokenizer(), EXAMPLES, seq_len=64)
    assert int(ts.lengths[0]) == len(EXAMPLES[0].prompt) + len(EXAMPLES[0].answer)  # no EOS appended
    assert int((ts.labels[0] != IGNORE_INDEX).sum()) == len(EXAMPLES[0].answer)


def test_generation_prompts_are_the_training_prefix_left_padded() -> None:
    ds = get_dataset("arithmetic", 5, 2, 6)
    pb, ts = ds.tokenize_prompts(TOK, "eval"), ds.tokenize(TOK, "eval")
    width = pb.input_ids.shape[1]
    for i in range(6):
        plen = int(ts.prompt_lengths[i])
        assert torch.equal(pb.input_ids[i, width - plen:], ts.input_ids[i, :plen])
        assert int(pb.attention_mask[i].sum()) == plen and pb.attention_mask[i, width - plen:].all()
    part = pb.slice(2, 4)
    assert part.input_ids.shape[1] == int(ts.prompt_lengths[2:4].max())
    assert TOK.decode(part.input_ids[0][part.attention_mask[0].bool()]) == ds.eval[2].prompt
    with pytest.raises(ValueError, match="prompt 0 has"):
        tokenize_prompts(TOK, [ds.eval[0].prompt], seq_len=8)


def _split(n: int) -> TokenizedSplit:
    return tokenize_examples(TOK, [Example(f"Q{i}:" + "x" * (i % 5), f" {i}") for i in range(n)], seq_len=64)


def test_epoch_batches_cover_each_row_once_deterministically() -> None:
    ts = _split(23)
    rows = [i for b in ts.batches(4, epoch=1, seed=9) for i in b.indices]
    assert sorted(rows) == list(range(23)) and rows != list(range(23))
    assert rows == [i for b in ts.batches(4, epoch=1, seed=9) for i in b.indices]
    assert rows != [i for b in ts.batches(4, epoch=2, seed=9) for i in b.indices]
    assert [i for b in ts.batches(5) for i in b.indices] == list(range(23))  # seed=None: file order
    assert len(list(ts.batches(4, epoch=1, seed=9, drop_last=True))) == 5
    tail = [b.indices for b in ts.batches(4, epoch=1, seed=9, start_batch=3)]
    assert tail == [b.indices for b in ts.batches(4, epoch=1, seed=9)][3:]


def test_batch_is_trimmed_to_its_longest_row() -> None:
    ts = _split(10)
    b = ts.select([0, 5])
    assert b.input_ids.shape[1] == int(ts.lengths[[0, 5]].max()) < ts.input_ids.shape[1]
    assert torch.equal(b.labels, ts.labels[[0, 5], : b.input_ids.shape[1]])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        next(ts.batches(0))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), batch=st.integers(1, 9), seed=st.integers(0, 5), cut=st.integers(0, 6))
def test_stream_resumes_from_any_checkpoint(n: int, batch: int, seed: int, cut: int) -> None:
    ts = _split(n)
    full = list(itertools.islice(ts.stream(batch, seed), cut + 4))
    resumed = list(itertools.islice(ts.stream(batch, seed, position=full[cut].position), 4))
    assert [b.indices for b in resumed] == [b.indices for b in full[cut:]]
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(resumed, full[cut:]))
    assert [b.position for b in full] == [k * batch for k in range(cut + 4)]
    assert all(a.next_position == b.position for a, b in zip(full, full[1:]))
    flat = [i for b in full for i in b.indices]
    for e in range(len(flat) // n):  # every complete epoch is a permutation, in order(e, seed)
        assert flat[e * n:(e + 1) * n] == ts.order(e, seed)


def test_stream_differs_by_seed() -> None:
    ts = _split(30)
    a = [b.indices for b in itertools.islice(ts.stream(6, seed=0), 5)]
    assert a != [b.indices for b in itertools.islice(ts.stream(6, seed=1), 5)]
