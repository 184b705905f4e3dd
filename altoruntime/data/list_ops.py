"""List manipulation with one exact answer: sort, reverse, deduplicate, count, pick.

A different flavour from arithmetic: the answer is a copied and reordered list (or a word or a
count), so it tests exact copying and ordering rather than calculation. Words come from a fixed
vocabulary; numbers are small. Exact match after case and whitespace normalisation.
The generator of the shipped ``builtin/list_ops/`` files (build_builtin.py); runs read the files.
"""

from __future__ import annotations

from typing import Callable, Iterator

from altoruntime.data.example import Example, FineTuneDataset, SplitFractions, check_sizes, fill_splits
from altoruntime.data.metrics import text_exact_match
from altoruntime.data.rng import StableRandom

NAME = "list_ops"
WORDS = tuple("""
apple banana cherry grape lemon mango melon olive peach pear plum berry fig kiwi lime
cat dog horse mouse tiger lion zebra otter eagle robin shark whale snake camel goat sheep
red blue green black white orange purple yellow silver gold
river mountain forest desert island valley ocean meadow canyon lake
chair table lamp sofa shelf window door mirror carpet pillow
piano violin guitar drum flute trumpet harp cello
bread butter cheese honey pepper salt sugar rice pasta soup
train plane boat truck bicycle rocket wagon taxi
winter summer autumn spring morning evening
""".split())
Op = Callable[[StableRandom], tuple[str, str, str]]  # -> (key, question, answer)


def _words(rng: StableRandom, lo: int = 3, hi: int = 7) -> list[str]:
    return rng.sample(WORDS, rng.randint(lo, hi))


def _join(items: list[object]) -> str:
    return ", ".join(str(x) for x in items)


def _sort_words(rng: StableRandom) -> tuple[str, str, str]:
    w = _words(rng)
    q = rng.choice(("Sort these words in alphabetical order: {l}.", "Put these words in alphabetical order: {l}.",
                    "Arrange the following words alphabetically: {l}."))
    return f"sortw|{_join(w)}", q.format(l=_join(w)), _join(sorted(w))


def _reverse(rng: StableRandom) -> tuple[str, str, str]:
    w = _words(rng)
    q = rng.choice(("Reverse the order of this list: {l}.", "Write these words in reverse order: {l}.",
                    "List these items from last to first: {l}."))
    return f"rev|{_join(w)}", q.format(l=_join(w)), _join(w[::-1])


def _sort_numbers(rng: StableRandom) -> tuple[str, str, str]:
    n = rng.sample(range(1, 100), rng.randint(3, 7))
    if rng.random() < 0.5:
        q = rng.choice(("Sort these numbers from smallest to largest: {l}.", "Arrange these numbers in increasing order: {l}."))
        return f"sortn-up|{_join(n)}", q.format(l=_join(n)), _join(sorted(n))
    q = rng.choice(("Sort these numbers from largest to smallest: {l}.", "Arrange these numbers in decreasing order: {l}."))
    return f"sortn-down|{_join(n)}", q.format(l=_join(n)), _join(sorted(n, reverse=True))


def _dedupe(rng: StableRandom) -> tuple[str, str, str]:
    base = _words(rng, 3, 5)
    w = base + [rng.choice(base) for _ in range(rng.randint(1, 3))]
    rng.shuffle(w)
    q = rng.choice(("Remove the repeated words from this list, keeping the first occurrence of each: {l}.",
                    "Write this list without duplicates, in its original order: {l}."))
    return f"dedup|{_join(w)}", q.format(l=_join(w)), _join(list(dict.fromkeys(w)))


def _count_letter(rng: StableRandom) -> tuple[str, str, str]:
    w = _words(rng, 4, 8)
    letter = rng.choice(sorted({x[0] for x in w}))
    q = rng.choice(("How many words in this list start with the letter {c}: {l}?",
                    "Count the words that begin with '{c}' in this list: {l}."))
    return f"count|{letter}|{_join(w)}", q.format(c=letter, l=_join(w)), str(sum(x[0] == letter for x in w))


def _first_letters(rng: StableRandom) -> tuple[str, str, str]:
    w = _words(rng)
    q = rng.choice(("Write the first letter of each word: {l}.", "Give the initial letter of every word in this list: {l}."))
    return f"initials|{_join(w)}", q.format(l=_join(w)), _join([x[0] for x in w])


def _longest(rng: StableRandom) -> tuple[str, str, str]:
    while True:  # redraw until the longest word is unique, so the answer is exact
        w = _words(rng)
        longest = max(len(x) for x in w)
        if sum(len(x) == longest for x in w) == 1:
            break
    q = rng.choice(("Which word in this list is the longest: {l}?", "Find the longest word: {l}."))
    return f"longest|{_join(w)}", q.format(l=_join(w)), next(x for x in w if len(x) == longest)


def _nth(rng: StableRandom) -> tuple[str, str, str]:
    w = _words(rng, 4, 7)
    k = rng.randint(2, len(w))
    ordinal = {2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh"}[k]
    q = rng.choice(("What is the {o} word in this list: {l}?", "Name the {o} item of this list: {l}."))
    return f"nth|{k}|{_join(w)}", q.format(o=ordinal, l=_join(w)), w[k - 1]


OPS: tuple[Op, ...] = (_sort_words, _reverse, _sort_numbers, _dedupe, _count_letter, _first_letters, _longest, _nth)


def make_example(seed: int, index: int) -> Example:
    """Example number ``index`` of the stream for ``seed``; independent of every other index."""
    rng = StableRandom(NAME, seed, index)
    key, question, answer = rng.choice(OPS)(rng)
    return Example(prompt=f"Question: {question}\nAnswer:", answer=f" {answer}", key=key)


def _stream(seed: int) -> Iterator[Example]:
    index = 0
    while True:
        yield make_example(seed, index)
        index += 1


def build(n_train: int = 2000, n_val: int = 200, n_eval: int = 200, seed: int = 0) -> FineTuneDataset:
    check_sizes(n_train, n_val, n_eval)
    total = n_train + n_val + n_eval
    splits = fill_splits(NAME, _stream(seed), {"train": n_train, "val": n_val, "eval": n_eval},
                         SplitFractions(), max_candidates=50 * total + 1000)
    return FineTuneDataset(
        name=NAME, train=splits["train"], val=splits["val"], eval=splits["eval"],
        metric_name="exact_match", score_fn=text_exact_match, max_new_tokens=48,
        description="sort / reverse / deduplicate / count / pick on short word and number lists; exact match",
    )
