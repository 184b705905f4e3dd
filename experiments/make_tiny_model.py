"""A tiny random-init causal LM saved as a user's own model folder (config.json, weights, tokenizer
with a chat template), for CPU examples of `alto run` on a model named by the workload.

    python experiments/make_tiny_model.py --out traces/examples/tiny-llama [--style llama|gpt2] [--seed 0]

The tokenizer is byte-level (one token per UTF-8 byte, <eos>=256, <pad>=257), so any text works.
"""

from __future__ import annotations

from pathlib import Path

import torch

from altosim.argparser import OneLineParser, count

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def save_tiny_model(out: str | Path, style: str = "llama", hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Write the model and its tokenizer to `out` (save_pretrained's layout); return the folder."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from altoruntime.run import byte_tokenizer

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if style == "llama":
            model = LlamaForCausalLM(LlamaConfig(
                vocab_size=258, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                pad_token_id=257, bos_token_id=256, eos_token_id=256))
        elif style == "gpt2":
            model = GPT2LMHeadModel(GPT2Config(vocab_size=258, n_embd=hidden, n_layer=layers, n_head=4,
                                               n_positions=512, bos_token_id=256, eos_token_id=256))
        else:
            raise ValueError(f"style: expected 'llama' or 'gpt2', got {style!r}")
    tok = byte_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    if style == "gpt2":
        tok.pad_token = None  # as GPT-2's own: alto falls back to EOS
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = OneLineParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--style", default="llama", choices=["llama", "gpt2"])
    ap.add_argument("--hidden", type=count(1, 1 << 16), default=64)
    ap.add_argument("--layers", type=count(1, 4096), default=2)
    ap.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    a = ap.parse_args()
    print(save_tiny_model(a.out, a.style, a.hidden, a.layers, a.seed))


if __name__ == "__main__":
    main()
