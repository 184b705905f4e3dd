"""Save a tiny random-init Llama and its byte tokenizer with `save_pretrained`: a model folder of
your own, as `alto run --backbone DIR` and `alto.tune(model=DIR)` read one (CPU, a few seconds).

    python traces/examples/make_tiny_model.py runs/tiny-llama
"""

from __future__ import annotations

import sys

from altoruntime.backbone import tiny_llama
from altoruntime.run import byte_tokenizer


def main(out: str) -> None:
    tiny_llama(vocab=258).save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny-llama")
