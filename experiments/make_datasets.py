"""Six small own-data tasks as prompt/completion JSONL files (traces/datasets/), one seeded generator.

Each task differs in kind (the paper's spread: classification-like, code, arithmetic, text
transformation, generation) and in difficulty, so LoRA configs separate on them. Same seed, same
bytes (draws from altoruntime.data.rng.StableRandom, stable across Python versions).

    python experiments/make_datasets.py --out traces/datasets [--seed 0]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from altoruntime.data.rng import StableRandom
from altosim.argparser import OneLineParser, count

ROWS = 1000  # per task; duplicates of a prompt are dropped, so a file holds at most this many

# (a) sentiment of templated product reviews, with negation and mixed reviews
PRODUCTS = ["blender", "laptop", "headphones", "backpack", "coffee maker", "phone case", "desk lamp", "kettle",
            "keyboard", "vacuum", "tent", "monitor", "toaster", "jacket", "printer", "speaker"]
ASPECTS = ["battery", "price", "design", "sound", "build quality", "delivery", "screen", "handle", "manual",
           "noise level", "size", "color"]
GOOD = ["great", "excellent", "solid", "lovely", "reliable", "impressive", "fantastic"]
BAD = ["terrible", "flimsy", "disappointing", "awful", "cheap-feeling", "annoying", "poor"]
MEH = ["okay", "average", "fine", "acceptable", "ordinary"]


def sentiment(r: StableRandom) -> tuple[str, str]:
    prod, a1, a2 = r.choice(PRODUCTS), r.choice(ASPECTS), r.choice(ASPECTS)
    kind = r.choice(["pos", "neg", "neu", "neg_of_good", "neg_of_bad", "mixed_pos", "mixed_neg", "mixed_neu"])
    if kind == "pos":
        text, label = f"The {a1} of this {prod} is {r.choice(GOOD)}. I would buy it again.", "positive"
    elif kind == "neg":
        text, label = f"The {a1} of this {prod} is {r.choice(BAD)}. I want a refund.", "negative"
    elif kind == "neu":
        text, label = f"The {prod} arrived on Tuesday. The {a1} is {r.choice(MEH)}.", "neutral"
    elif kind == "neg_of_good":
        text, label = f"I can't say the {a1} of this {prod} is {r.choice(GOOD)}. Not worth it.", "negative"
    elif kind == "neg_of_bad":
        text, label = f"The {a1} of this {prod} is not {r.choice(BAD)} at all. Really happy with it.", "positive"
    elif kind == "mixed_pos":
        text, label = (f"The {a1} is {r.choice(BAD)}, but the {a2} of this {prod} is so {r.choice(GOOD)} "
                       "that I love it anyway.", "positive")
    elif kind == "mixed_neg":
        text, label = (f"The {a1} is {r.choice(GOOD)}, but the {a2} of this {prod} is {r.choice(BAD)}, "
                       "so I am sending it back.", "negative")
    else:
        text, label = (f"The {a1} of this {prod} is {r.choice(GOOD)} and the {a2} is {r.choice(BAD)}; "
                       "overall it evens out.", "neutral")
    return f"Review: {text}\nSentiment (positive, negative or neutral):", f" {label}"


# (b) topic of a templated sentence, 5 topics
TOPICS = {
    "sports": (["the striker", "the coach", "the goalkeeper", "the team", "the runner"],
               ["scored twice in", "was injured before", "trained hard for", "celebrated after"],
               ["the final", "the league match", "the marathon", "the cup game"]),
    "politics": (["the senator", "the minister", "parliament", "the mayor", "the party"],
                 ["voted against", "proposed", "debated", "announced"],
                 ["the new tax bill", "the election reform", "the budget", "the coalition deal"]),
    "science": (["the researchers", "the lab", "the astronomers", "a biologist", "the physicists"],
                ["discovered", "measured", "published a study on", "observed"],
                ["a new protein", "a distant galaxy", "the gene", "the particle decay"]),
    "cooking": (["the chef", "my grandmother", "the baker", "the restaurant", "the cook"],
                ["roasted", "seasoned", "baked", "simmered"],
                ["the lamb", "a sourdough loaf", "the tomato sauce", "the vegetables"]),
    "finance": (["the bank", "investors", "the central bank", "the company", "the fund"],
                ["raised", "cut", "sold", "reported"],
                ["interest rates", "its quarterly earnings", "the bonds", "its shares"]),
}
SHARED_OBJECTS = ["the results", "the plan", "the numbers", "the new season"]  # ambiguous on purpose


def topic(r: StableRandom) -> tuple[str, str]:
    name = r.choice(sorted(TOPICS))
    subj, verb, obj = TOPICS[name]
    o = r.choice(SHARED_OBJECTS) if r.random() < 0.25 else r.choice(obj)
    when = r.choice(["on Monday", "last week", "yesterday", "this morning", "after a long delay", ""])
    text = " ".join(x for x in (r.choice(subj).capitalize(), r.choice(verb), o, when) if x) + "."
    return f"Sentence: {text}\nTopic (sports, politics, science, cooking or finance):", f" {name}"


# (c) code: a Python one-liner from an English description
def code(r: StableRandom) -> tuple[str, str]:
    v = r.choice(["xs", "nums", "items", "values", "data", "scores", "prices", "counts", "ages", "sizes"])
    n = r.randint(2, 20)
    ops: list[tuple[str, str]] = [
        (f"the sum of the list {v}", f"sum({v})"),
        (f"the largest element of {v}", f"max({v})"),
        (f"the list {v} sorted in descending order", f"sorted({v}, reverse=True)"),
        (f"the elements of {v} that are greater than {n}", f"[x for x in {v} if x > {n}]"),
        (f"each element of {v} multiplied by {n}", f"[x * {n} for x in {v}]"),
        (f"the number of distinct elements in {v}", f"len(set({v}))"),
        (f"the first {n} elements of {v}", f"{v}[:{n}]"),
        (f"the last {n} elements of {v}", f"{v}[-{n}:]"),
        (f"the list {v} reversed", f"{v}[::-1]"),
        (f"whether {n} is in {v}", f"{n} in {v}"),
        (f"the even elements of {v}", f"[x for x in {v} if x % 2 == 0]"),
        (f"the squares of the elements of {v}", f"[x ** 2 for x in {v}]"),
        (f"a dict mapping each element of {v} to its count", f"{{x: {v}.count(x) for x in {v}}}"),
        (f"the index of the smallest element of {v}", f"{v}.index(min({v}))"),
        (f"the elements of {v} joined by '{r.choice(['-', ', ', '|'])}'", None),
        (f"the sum of the elements of {v} at even positions", f"sum({v}[::2])"),
    ]
    desc, expr = r.choice(ops)
    if expr is None:
        sep = desc.rsplit("'", 2)[1]
        expr = f"'{sep}'.join(map(str, {v}))"
    return f"Write a Python expression for {desc}.\nCode:", f" {expr}"


# (d) arithmetic: unit conversion, answer a number
UNITS = [("km", "m", 1000), ("m", "cm", 100), ("kg", "g", 1000), ("hours", "minutes", 60), ("minutes", "seconds", 60),
         ("liters", "milliliters", 1000), ("feet", "inches", 12), ("days", "hours", 24), ("yards", "feet", 3),
         ("weeks", "days", 7)]


def units(r: StableRandom) -> tuple[str, str]:
    big, small, f = r.choice(UNITS)
    whole = r.random() < 0.6
    x = r.randint(2, 99) if whole else r.randint(3, 199) / 2
    if r.random() < 0.5:  # big -> small: multiply
        q, ans = f"Convert {x:g} {big} to {small}.", x * f
    else:  # small -> big: divide, chosen to come out at a few decimals at most
        y = x * f
        q, ans = f"How many {big} are {y:g} {small}?", x
    return f"{q}\nAnswer:", f" {ans:g}"


# (e) dates in several styles -> ISO 8601
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def dates(r: StableRandom) -> tuple[str, str]:
    y, m, d = r.randint(1950, 2049), r.randint(1, 12), r.randint(1, 28)
    mon = MONTHS[m - 1]
    style = r.choice(["us", "eu", "long", "long_eu", "short", "dots", "ordinal"])
    text = {
        "us": f"{m}/{d}/{y} (US style)", "eu": f"{d}/{m}/{y} (European style)", "long": f"{mon} {d}, {y}",
        "long_eu": f"{d} {mon} {y}", "short": f"{mon[:3]} {d} {y}", "dots": f"{d:02d}.{m:02d}.{y}",
        "ordinal": f"the {d}{'st' if d in (1, 21) else 'nd' if d in (2, 22) else 'rd' if d in (3, 23) else 'th'} of {mon}, {y}",
    }[style]
    return f"Convert the date to ISO format (YYYY-MM-DD): {text}\nISO:", f" {y:04d}-{m:02d}-{d:02d}"


# (f) a key-value record -> one English sentence (fixed template per record type)
CITIES = ["Lyon", "Osaka", "Denver", "Porto", "Krakow", "Austin", "Leeds", "Perth", "Quito", "Bergen"]
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Juno", "Kai", "Lena"]
JOBS = ["nurse", "carpenter", "teacher", "pilot", "chef", "engineer", "farmer", "librarian"]


def records(r: StableRandom) -> tuple[str, str]:
    kind = r.choice(["person", "flight", "weather", "hotel"])
    if kind == "person":
        rec = {"name": r.choice(NAMES), "age": r.randint(19, 80), "job": r.choice(JOBS), "city": r.choice(CITIES)}
        s = f"{rec['name']} is a {rec['age']}-year-old {rec['job']} who lives in {rec['city']}."
    elif kind == "flight":
        a, b = r.sample(CITIES, 2)
        rec = {"flight": f"{r.choice(['AX', 'BQ', 'LM'])}{r.randint(100, 999)}", "from": a, "to": b,
               "departs": f"{r.randint(5, 22):02d}:{r.choice(['00', '15', '30', '45'])}", "gate": r.choice("ABCD") + str(r.randint(1, 30))}
        s = f"Flight {rec['flight']} from {a} to {b} departs at {rec['departs']} from gate {rec['gate']}."
    elif kind == "weather":
        rec = {"city": r.choice(CITIES), "day": r.choice(["Monday", "Tuesday", "Friday", "Sunday"]),
               "high_c": r.randint(-5, 38), "sky": r.choice(["sunny", "cloudy", "rainy", "windy"])}
        s = f"On {rec['day']} {rec['city']} will be {rec['sky']} with a high of {rec['high_c']} degrees Celsius."
    else:
        rec = {"hotel": f"Hotel {r.choice(['Aurora', 'Bellevue', 'Cedar', 'Delta'])}", "city": r.choice(CITIES),
               "stars": r.randint(2, 5), "price_eur": r.randint(6, 40) * 10}
        s = (f"{rec['hotel']} in {rec['city']} is a {rec['stars']}-star hotel that costs {rec['price_eur']} euros "
             "per night.")
    fields = "; ".join(f"{k}: {v}" for k, v in rec.items())
    return f"Record: {fields}\nWrite it as one sentence:", f" {s}"


TASKS: dict[str, Callable[[StableRandom], tuple[str, str]]] = {
    "review_sentiment": sentiment, "sentence_topic": topic, "python_oneliner": code,
    "unit_conversion": units, "date_iso": dates, "record_to_text": records,
}


def rows(task: str, seed: int, n: int = ROWS) -> list[dict[str, str]]:
    """Up to `n` rows with distinct prompts (draws stop after 20n tries)."""
    r, make = StableRandom("make_datasets", task, seed), TASKS[task]
    seen: dict[str, str] = {}
    for _ in range(20 * n):
        if len(seen) == n:
            break
        p, c = make(r)
        seen.setdefault(p, c)
    return [{"prompt": p, "completion": c} for p, c in seen.items()]


def main(argv: list[str] | None = None) -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="traces/datasets")
    ap.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    ap.add_argument("--rows", type=count(1, 10**9), default=ROWS)
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of: " + ", ".join(TASKS))
    args = ap.parse_args(argv)
    tasks = ap.name_list("--tasks", args.tasks, list(TASKS))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        data = rows(task, args.seed, args.rows)
        tmp = out / f".{task}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in data), encoding="utf-8")
        tmp.replace(out / f"{task}.jsonl")
        print(f"{task}: {len(data)} rows -> {out / f'{task}.jsonl'}")


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
