"""Per-example task scores in [0, 1]. Each takes (prediction, reference) and reads only the
prediction's first line, so a model that keeps generating after its answer is not penalised
for the tail (and cannot score from it either)."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"\w+|[^\w\s]")


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip() if text.strip() else ""


def _to_number(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def final_number(text: str) -> float | None:
    """The GSM8K-style final answer: the first number after the first '####', else the last
    number of the line; None when there is none."""
    line = first_line(text)
    if "####" in line:
        m = _NUMBER.search(line.split("####", 1)[1])
        return _to_number(m.group()) if m else None
    found = _NUMBER.findall(line)
    return _to_number(found[-1]) if found else None


def number_exact_match(prediction: str, reference: str) -> float:
    """1.0 when the predicted final number equals the reference's, else 0.0."""
    want = final_number(reference)
    if want is None:
        raise ValueError(f"reference has no final number: {reference!r}")
    got = final_number(prediction)
    return 1.0 if got is not None and got == want else 0.0


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace, drop a trailing period."""
    return " ".join(first_line(text).lower().split()).rstrip(".").strip()


def text_exact_match(prediction: str, reference: str) -> float:
    return 1.0 if normalize_text(prediction) == normalize_text(reference) else 0.0


def word_tokens(text: str) -> list[str]:
    return _WORD.findall(first_line(text).lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word and punctuation tokens."""
    p, r = word_tokens(prediction), word_tokens(reference)
    if not p or not r:
        return 1.0 if p == r else 0.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)
