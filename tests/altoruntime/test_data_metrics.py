"""Task metrics on hand-worked cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from altoruntime.data import get_dataset
from altoruntime.data.metrics import (final_number, lcs_length, normalize_text, number_exact_match, rouge_l_f1,
                                  text_exact_match)


@pytest.mark.parametrize("text, want", [
    (" 12 + 5 = 17. 17 - 3 = 14. #### 14", 14.0),
    ("#### 1,234", 1234.0),
    ("#### -3", -3.0),
    (" 3 * 4 = 12. ####12 and then #### 99", 12.0),   # first '####' wins
    (" the answer is 7 or maybe 9", 9.0),              # no '####': last number
    (" 5 #### 6\n#### 7", 6.0),                        # only the first line counts
    (" #### seven", None),
    ("", None),
])
def test_final_number(text: str, want: float | None) -> None:
    assert final_number(text) == want


def test_number_exact_match_hand_cases() -> None:
    ref = " 40 * 2 = 80. 80 + 19 = 99. #### 99"
    assert number_exact_match(" 40 * 2 = 80. 80 + 19 = 99. #### 99", ref) == 1.0
    assert number_exact_match(" 40 * 2 = 80. 80 + 19 = 98. #### 99\nQuestion: ...", ref) == 1.0
    assert number_exact_match(" 40 * 2 = 80. 80 + 19 = 99. #### 98", ref) == 0.0
    assert number_exact_match(" 40 * 2 = 80\n#### 99", ref) == 0.0  # answer on a second line does not count
    assert number_exact_match("#### 99.0", ref) == 1.0
    with pytest.raises(ValueError, match="reference has no final number"):
        number_exact_match("1", "no number")


def test_text_exact_match_normalizes_case_space_and_period() -> None:
    assert text_exact_match("  Apple,  Fig, pear.\nQuestion: next", " apple, fig, pear") == 1.0
    assert text_exact_match("apple, pear, fig", " apple, fig, pear") == 0.0
    assert text_exact_match("", " 3") == 0.0
    assert normalize_text(" A  B. ") == "a b"


def test_lcs_and_rouge_hand_cases() -> None:
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4
    ref = " Return the cosine of x."
    assert rouge_l_f1(" Return the cosine of x.", ref) == 1.0
    assert rouge_l_f1(" Completely unrelated words", ref) == 0.0
    # pred tokens: return, the, sine, of, x, . (6); ref: return, the, cosine, of, x, . (6); LCS 5
    assert rouge_l_f1(" return the sine of x.", ref) == pytest.approx(5 / 6)
    # pred: return, x (2); LCS 2 -> P=1, R=2/6 -> F1 = 0.5
    assert rouge_l_f1("Return x", ref) == pytest.approx(0.5)
    assert rouge_l_f1("", ref) == 0.0


@given(st.text(max_size=40), st.text(max_size=40))
def test_rouge_bounded_and_symmetric(a: str, b: str) -> None:
    score = rouge_l_f1(a, b)
    assert 0.0 <= score <= 1.0 and score == pytest.approx(rouge_l_f1(b, a))


@pytest.mark.parametrize("name", ["arithmetic", "list_ops", "python_docs"])
def test_dataset_metric_perfect_wrong_and_partial(name: str) -> None:
    ds = get_dataset(name, 10, 4, 4)
    refs = ds.references("eval")
    assert ds.metric(refs) == 1.0
    assert ds.metric(["\n"] * 4) == 0.0
    half = refs[:2] + ["zzz qqq"] * 2
    assert ds.metric(half, split="eval") == pytest.approx(0.5)
    assert ds.metric(ds.references("val"), split="val") == 1.0


def test_metric_rejects_wrong_length() -> None:
    ds = get_dataset("arithmetic", 10, 4, 4)
    with pytest.raises(ValueError, match="predictions has 3 items; split 'eval' has 4"):
        ds.metric(["#### 1"] * 3)
