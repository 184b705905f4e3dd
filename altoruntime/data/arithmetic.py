"""GSM8K-like arithmetic word problems, generated from a seed with exact ground truth.

Six story families (a changing collection, packs, sharing, money, rates, comparisons), each with
several wordings, 1-3 operations, small numbers. The answer shows one equation per operation on
one line and ends with ``#### N`` so the metric reads the final number as in GSM8K.
The generator of the shipped ``builtin/arithmetic/`` files (build_builtin.py); runs read the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from altoruntime.data.example import Example, FineTuneDataset, SplitFractions, check_sizes, fill_splits
from altoruntime.data.metrics import number_exact_match
from altoruntime.data.rng import StableRandom

NAME = "arithmetic"
PEOPLE = (
    ("Mia", "she", "her"), ("Liam", "he", "him"), ("Ava", "she", "her"), ("Noah", "he", "him"),
    ("Zoe", "she", "her"), ("Omar", "he", "him"), ("Lena", "she", "her"), ("Ravi", "he", "him"),
    ("Sofia", "she", "her"), ("Ben", "he", "him"), ("Maya", "she", "her"), ("Leo", "he", "him"),
    ("Nora", "she", "her"), ("Ivan", "he", "him"), ("Aisha", "she", "her"), ("Tom", "he", "him"),
)
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "cards", "stamps",
         "shells", "balloons", "coins", "buttons", "candies", "toy cars", "beads", "eggs")
GOODS = (("notebook", "notebooks"), ("pen", "pens"), ("sandwich", "sandwiches"), ("ticket", "tickets"),
         ("cupcake", "cupcakes"), ("comic", "comics"), ("plant", "plants"), ("mug", "mugs"))


@dataclass(frozen=True)
class Problem:
    key: str
    question: str
    steps: tuple[str, ...]  # "a + b = c" per operation
    answer: int


class _Story:
    """Names and nouns drawn once per problem, so every family words it the same way."""

    def __init__(self, rng: StableRandom) -> None:
        self.rng = rng
        self.name, self.pron, self.obj = rng.choice(PEOPLE)
        others = [p for p in PEOPLE if p[0] != self.name]
        self.friend = rng.choice(others)[0]
        self.items = rng.choice(ITEMS)

    def fill(self, template: str, **kw: object) -> str:
        text = template.format(name=self.name, pron=self.pron, obj=self.obj, friend=self.friend, items=self.items, **kw)
        return ". ".join(s[:1].upper() + s[1:] for s in text.split(". "))


def _chain(rng: StableRandom) -> Problem:
    s = _Story(rng)
    value = rng.randint(5, 60)
    start = value
    sentences = [s.fill(rng.choice(("{name} has {a} {items}.", "{name} starts the day with {a} {items}.",
                                   "There are {a} {items} in {name}'s bag.")), a=value)]
    steps, ops = [], []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("add", "sub", "mul")) if value <= 40 else rng.choice(("add", "sub"))
        if kind == "sub" and value < 3:
            kind = "add"
        if kind == "add":
            b = rng.randint(2, 30)
            sentences.append(s.fill(rng.choice(("{name} buys {b} more {items}.", "{pron} finds {b} more {items}.",
                                                "{friend} gives {obj} {b} {items}.", "{pron} gets {b} more {items} as a gift.")), b=b))
            steps.append(f"{value} + {b} = {value + b}")
            value += b
        elif kind == "sub":
            b = rng.randint(1, min(value - 1, 30))
            sentences.append(s.fill(rng.choice(("{pron} gives {b} {items} to {friend}.", "{pron} loses {b} {items}.",
                                                "{pron} sells {b} {items}.", "{pron} trades away {b} {items}.")), b=b))
            steps.append(f"{value} - {b} = {value - b}")
            value -= b
        else:
            b = rng.choice((2, 3))
            word = "doubles" if b == 2 else "triples"
            sentences.append(s.fill(rng.choice((f"then the number of {{items}} {{pron}} has {word}.",
                                                f"{{name}}'s collection of {{items}} {word}.")), b=b))
            steps.append(f"{value} * {b} = {value * b}")
            value *= b
        ops.append(steps[-1])
    sentences.append(s.fill(rng.choice(("How many {items} does {name} have now?", "How many {items} does {name} have in the end?"))))
    return Problem(f"chain|{start}|{'|'.join(ops)}", " ".join(sentences), tuple(steps), value)


def _packs(rng: StableRandom) -> Problem:
    s = _Story(rng)
    p, q = rng.randint(2, 9), rng.randint(2, 12)
    total = p * q
    first = rng.choice(("{name} buys {p} packs of {items}. Each pack has {q} {items}.",
                        "There are {p} boxes with {q} {items} in each box, and {name} takes all of them.",
                        "{name} fills {p} bags with {q} {items} each."))
    sentences, steps, value = [s.fill(first, p=p, q=q)], [f"{p} * {q} = {total}"], total
    n_ops = rng.randint(1, 3)
    extra = []
    if n_ops >= 2:
        r = rng.randint(1, 20)
        sentences.append(s.fill(rng.choice(("{pron} already had {r} {items}.", "{friend} adds {r} more {items}.")), r=r))
        steps.append(f"{value} + {r} = {value + r}")
        value += r
        extra.append(f"+{r}")
    if n_ops == 3:
        r = rng.randint(1, value - 1)
        sentences.append(s.fill(rng.choice(("{pron} gives away {r} of them.", "{pron} uses {r} of them.")), r=r))
        steps.append(f"{value} - {r} = {value - r}")
        value -= r
        extra.append(f"-{r}")
    sentences.append(s.fill(rng.choice(("How many {items} does {name} have now?", "How many {items} does {name} have in total?"))))
    return Problem(f"packs|{p}|{q}|{'|'.join(extra)}", " ".join(sentences), tuple(steps), value)


def _share(rng: StableRandom) -> Problem:
    s = _Story(rng)
    k, q = rng.randint(2, 8), rng.randint(2, 12)
    total = k * q
    ask = rng.choice((("shares them equally among {k} friends.", "How many {items} does each friend get?"),
                      ("puts them into {k} equal piles.", "How many {items} are in each pile?")))
    if rng.random() < 0.5:
        sentences = [s.fill("{name} has {t} {items} and " + ask[0], t=total, k=k)]
        steps: tuple[str, ...] = (f"{total} / {k} = {q}",)
        key = f"share|{total}|{k}"
    else:
        a = rng.randint(1, total - 1)
        sentences = [s.fill("{name} has {a} {items} and buys {b} more.", a=a, b=total - a),
                     s.fill("{pron} " + ask[0], k=k)]
        steps = (f"{a} + {total - a} = {total}", f"{total} / {k} = {q}")
        key = f"share|{a}|{total - a}|{k}"
    return Problem(key, " ".join(sentences + [s.fill(ask[1])]), steps, q)


def _money(rng: StableRandom) -> Problem:
    s = _Story(rng)
    (one, many), (one2, many2) = rng.sample(GOODS, 2)
    p, n = rng.randint(2, 9), rng.randint(2, 6)
    cost = p * n
    shape = rng.randint(1, 3)
    if shape == 1:
        q = s.fill("A {one} costs {p} dollars. {name} buys {n} {many}. How much does {pron} spend?", one=one, many=many, p=p, n=n)
        return Problem(f"money1|{p}|{n}", q, (f"{p} * {n} = {cost}",), cost)
    if shape == 2:
        bill = next(b for b in (20, 50, 100) if b > cost)
        q = s.fill("A {one} costs {p} dollars. {name} buys {n} {many} and pays with a {bill}-dollar bill. "
                   "How much change does {pron} get?", one=one, many=many, p=p, n=n, bill=bill)
        return Problem(f"money2|{p}|{n}|{bill}", q, (f"{p} * {n} = {cost}", f"{bill} - {cost} = {bill - cost}"), bill - cost)
    p2, n2 = rng.randint(2, 9), rng.randint(2, 6)
    cost2 = p2 * n2
    q = s.fill("{name} buys {n} {many} at {p} dollars each and {n2} {many2} at {p2} dollars each. "
               "How many dollars does {pron} spend in total?", many=many, many2=many2, p=p, n=n, p2=p2, n2=n2)
    steps = (f"{n} * {p} = {cost}", f"{n2} * {p2} = {cost2}", f"{cost} + {cost2} = {cost + cost2}")
    return Problem(f"money3|{p}|{n}|{p2}|{n2}", q, steps, cost + cost2)


def _rate(rng: StableRandom) -> Problem:
    s = _Story(rng)
    p, d = rng.randint(2, 15), rng.randint(2, 9)
    done = p * d
    if rng.random() < 0.5:
        t = done + rng.randint(1, 60)
        q = s.fill(rng.choice(("{name} reads {p} pages every day. The book has {t} pages. How many pages are left after {d} days?",
                               "A book has {t} pages. {name} reads {p} pages a day for {d} days. How many pages does {pron} still have to read?")),
                   p=p, d=d, t=t)
        return Problem(f"rate-left|{p}|{d}|{t}", q, (f"{p} * {d} = {done}", f"{t} - {done} = {t - done}"), t - done)
    e = rng.randint(1, 12)
    q = s.fill(rng.choice(("{name} walks {p} kilometers each day for {d} days and then {e} more kilometers. How many kilometers does {pron} walk in total?",
                           "{name} saves {p} dollars a week for {d} weeks, then gets {e} dollars from {friend}. How many dollars does {pron} have now?")),
               p=p, d=d, e=e)
    return Problem(f"rate-more|{p}|{d}|{e}", q, (f"{p} * {d} = {done}", f"{done} + {e} = {done + e}"), done + e)


def _compare(rng: StableRandom) -> Problem:
    s = _Story(rng)
    a = rng.randint(5, 50)
    shape = rng.choice(("more", "fewer", "twice"))
    b = rng.randint(1, a - 1) if shape == "fewer" else rng.randint(1, 30)
    c = {"more": a + b, "fewer": a - b, "twice": 2 * a}[shape]
    rel = {"more": "{b} more {items} than", "fewer": "{b} fewer {items} than", "twice": "twice as many {items} as"}[shape]
    first = s.fill("{name} has {a} {items}. {friend} has " + rel + " {name}.", a=a, b=b)
    step1 = {"more": f"{a} + {b} = {c}", "fewer": f"{a} - {b} = {c}", "twice": f"{a} * 2 = {c}"}[shape]
    if rng.random() < 0.5:
        q = first + " " + s.fill("How many {items} does {friend} have?")
        return Problem(f"cmp1|{shape}|{a}|{b if shape != 'twice' else 0}", q, (step1,), c)
    q = first + " " + s.fill("How many {items} do they have together?")
    return Problem(f"cmp2|{shape}|{a}|{b if shape != 'twice' else 0}", q, (step1, f"{a} + {c} = {a + c}"), a + c)


FAMILIES: tuple[Callable[[StableRandom], Problem], ...] = (_chain, _packs, _share, _money, _rate, _compare)


def make_problem(seed: int, index: int) -> Problem:
    """Problem number ``index`` of the stream for ``seed``; independent of every other index."""
    rng = StableRandom(NAME, seed, index)
    return rng.choice(FAMILIES)(rng)


def to_example(p: Problem) -> Example:
    answer = " " + ". ".join(p.steps) + f". #### {p.answer}"
    return Example(prompt=f"Question: {p.question}\nAnswer:", answer=answer, key=p.key)


def _stream(seed: int) -> Iterator[Example]:
    index = 0
    while True:
        yield to_example(make_problem(seed, index))
        index += 1


def build(n_train: int = 2000, n_val: int = 200, n_eval: int = 200, seed: int = 0) -> FineTuneDataset:
    check_sizes(n_train, n_val, n_eval)
    total = n_train + n_val + n_eval
    splits = fill_splits(NAME, _stream(seed), {"train": n_train, "val": n_val, "eval": n_eval},
                         SplitFractions(), max_candidates=50 * total + 1000)
    return FineTuneDataset(
        name=NAME, train=splits["train"], val=splits["val"], eval=splits["eval"],
        metric_name="exact_match", score_fn=number_exact_match, max_new_tokens=64,
        description="GSM8K-like word problems (1-3 operations); exact match of the number after '####'",
    )
