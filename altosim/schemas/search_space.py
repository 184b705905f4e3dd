"""A task's search space as Optuna and Ray Tune users write it: grid lists or distributions + a sampler.

Each hyperparameter (lr, rank, batch_size, alpha, dropout, weight_decay, seed, grad_accum_steps) is a list of values
(a grid axis; a categorical under a random sampler) or a distribution:

    lr: {distribution: log_uniform, low: 1.0e-5, high: 1.0e-3}
    rank: {distribution: int, low: 4, high: 64, log: true}
    dropout: {distribution: uniform, low: 0.0, high: 0.1}
    batch_size: {distribution: categorical, choices: [1, 2, 4]}

`sampler: grid` (the default when every axis is a list) expands the product in the fixed order lr,
rank, batch_size, alpha, dropout, weight_decay, seed; `random` and `quasi-random` draw `n_configs`
configs. Both samplers map one uniform point per config through each axis's inverse CDF; `random`
takes the points from numpy's PCG64, `quasi-random` from a scrambled Sobol sequence
(`scipy.stats.qmc`). `tpe`, `optuna-random` and `optuna-qmc` draw the `n_configs` through Optuna's
samplers (its ask-and-tell API, all asked up front: `optuna_draw.py`). Seeded: the same space and
seed give the same configs.
Sampled floats keep 4 significant digits (read as 0.0001234, not 0.000123456789).

`batch_size` is what one forward/backward pass holds; `grad_accum_steps` (default 1; one number
for every job, a list or an int distribution) accumulates that many passes into one optimizer
step, so a job's effective batch (its JobSpec `batch_size`: samples per step) is their product.

`lr_schedule` (constant / linear / cosine), `warmup_ratio` and `max_grad_norm` may be searched too
(lists or distributions); unset, every job takes the task's own value.

`weight_decay` and `seed` may also be one number: then every job shares the weight decay, and
`seed` is the base seed each job's seed is derived from (`job_seed`); a list or distribution of
seeds makes the seed a searched axis and a job's seed is its drawn value. The sampler's seed is
`sampler_seed` if given, else `seed` when it is a number, else 0.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from altosim.schemas.limits import MAX_BATCH, MAX_CONFIGS, MAX_RANK, MAX_SEED, Float, Int

AXES = ("lr", "rank", "batch_size", "alpha", "dropout", "weight_decay", "seed", "grad_accum_steps", "lr_schedule",
        "warmup_ratio", "max_grad_norm")
KNOBS = ("lr_schedule", "warmup_ratio", "max_grad_norm")  # None: the task's own value
SAMPLERS = ("grid", "random", "quasi-random", "tpe", "optuna-random", "optuna-qmc")
# union tags pydantic puts in an error's location; altosim.errors drops them so a field reads `lr.low`
LIST_TAG, DIST_TAG, NUMBER_TAG = "<list>", "<distribution>", "<number>"
UNION_TAGS = frozenset({LIST_TAG, DIST_TAG, NUMBER_TAG})
SIG_DIGITS = 4
OPTUNA_SAMPLERS = ("tpe", "optuna-random", "optuna-qmc")  # drawn through optuna.samplers (optuna_draw.py)


def _check_list(values: list, name: str, positive: bool = True) -> list:
    if not values:
        raise ValueError(f"{name} must list at least one value")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has duplicate values")
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{name} values must be finite")
        if positive and v <= 0:
            raise ValueError(f"{name} values must be > 0")
    return values


def _dist_model(name: str, number: Any, kinds: tuple[str, ...]) -> type[BaseModel]:
    """A distribution over one axis: `number` bounds every value (low, high, each choice)."""

    class Dist(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        distribution: Literal[kinds]  # type: ignore[valid-type]
        low: number | None = Field(None, validate_default=True)  # type: ignore[valid-type]
        high: number | None = Field(None, validate_default=True)  # type: ignore[valid-type]
        log: bool = Field(False, description="int only: sample uniformly in log space")
        choices: list[number] | None = Field(None, min_length=1, max_length=MAX_CONFIGS)  # type: ignore[valid-type]

        @field_validator("low", "high")
        @classmethod
        def _bound(cls, v: Any, info: Any) -> Any:
            kind, name = info.data.get("distribution"), info.field_name
            if kind == "categorical":
                if v is not None:
                    raise ValueError("not used by a categorical distribution (give choices)")
                return v
            if v is None:
                raise ValueError(f"a {kind} distribution needs {name}")
            if name == "low" and (kind == "log_uniform" or info.data.get("log")) and v <= 0:
                raise ValueError("must be > 0 on a log scale")
            low = info.data.get("low")
            if name == "high" and low is not None and (v < low if kind == "int" else v <= low):
                raise ValueError(f"must be {'>=' if kind == 'int' else '>'} low ({low})")
            return v

        @field_validator("choices")
        @classmethod
        def _choices(cls, v: Any, info: Any) -> Any:
            if info.data.get("distribution") != "categorical":
                if v is not None:
                    raise ValueError("only a categorical distribution takes choices")
                return v
            if len(set(v)) != len(v):
                raise ValueError("has duplicate values")
            return v

        @model_validator(mode="after")
        def _complete(self) -> "Dist":
            if self.distribution == "categorical" and self.choices is None:
                raise ValueError("choices: a categorical distribution needs choices")
            if self.log and self.distribution != "int":
                raise ValueError("log: only for an int distribution (use log_uniform for floats)")
            return self

        def values(self) -> list:
            return list(self.choices or [])

        def sample(self, u: np.ndarray) -> list:
            """Values at quantiles `u` in [0, 1) (one per config)."""
            if self.distribution == "categorical":
                ch = self.choices or []
                return [ch[min(int(x * len(ch)), len(ch) - 1)] for x in u]
            lo, hi = self.low, self.high
            if self.distribution == "int":
                if self.log:
                    vals = np.floor(np.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))))
                else:
                    vals = np.floor(lo + u * (hi - lo + 1))
                return [int(min(max(v, lo), hi)) for v in vals]
            if self.distribution == "log_uniform":
                vals = np.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            else:
                vals = lo + u * (hi - lo)
            return [min(max(float(f"{v:.{SIG_DIGITS}g}"), lo), hi) for v in vals]

    Dist.__name__ = Dist.__qualname__ = f"{name}_distribution"
    return Dist


def _tag(v: Any) -> str | None:
    if isinstance(v, (list, tuple)):
        return LIST_TAG
    if isinstance(v, dict) or isinstance(v, BaseModel):
        return DIST_TAG
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return NUMBER_TAG
    return None


def _axis(name: str, number: Any, kinds: tuple[str, ...], scalar: bool = False) -> Any:
    """The type of one axis: a list, a distribution, or (weight_decay, seed) one number."""
    members = [Annotated[list[number], Tag(LIST_TAG), Field(max_length=MAX_CONFIGS)],  # type: ignore[valid-type]
               Annotated[_dist_model(name, number, kinds), Tag(DIST_TAG)]]
    if scalar:
        members.append(Annotated[number, Tag(NUMBER_TAG)])  # type: ignore[valid-type]
    what = "a number, " if scalar else ""
    return Annotated[Union[tuple(members)], Discriminator(
        _tag, custom_error_type="search_axis",
        custom_error_message=f"expected {what}a list of values or a distribution "
                             f"{{distribution: {'|'.join(kinds)}, ...}}")]


FLOATS, INTS = ("uniform", "log_uniform", "categorical"), ("int", "categorical")
LrT = _axis("lr", Annotated[Float, Field(gt=0, allow_inf_nan=False)], FLOATS)
RankT = _axis("rank", Annotated[Int, Field(ge=1, le=MAX_RANK)], INTS)
BatchT = _axis("batch_size", Annotated[Int, Field(ge=1, le=MAX_BATCH)], INTS)
AlphaT = _axis("alpha", Annotated[Float, Field(gt=0, allow_inf_nan=False)], FLOATS)
DropoutT = _axis("dropout", Annotated[Float, Field(ge=0, lt=1)], FLOATS)
DecayT = _axis("weight_decay", Annotated[Float, Field(ge=0, allow_inf_nan=False)], FLOATS, scalar=True)
SeedT = _axis("seed", Annotated[Int, Field(ge=0, le=MAX_SEED)], INTS, scalar=True)
ScheduleT = _axis("lr_schedule", Literal["constant", "linear", "cosine"], ("categorical",))
WarmupT = _axis("warmup_ratio", Annotated[Float, Field(ge=0, lt=1, allow_inf_nan=False)], FLOATS)
ClipT = _axis("max_grad_norm", Annotated[Float, Field(gt=0, allow_inf_nan=False)], FLOATS)
AccumT = _axis("grad_accum_steps", Annotated[Int, Field(ge=1, le=MAX_BATCH)], INTS, scalar=True)


def _is_dist(v: Any) -> bool:
    return isinstance(v, BaseModel)


class SearchSpace(BaseModel):
    """LoRA configs of one task: a grid of lists, or `n_configs` draws from distributions.

    `subset` (grid only) keeps only these indices of the expanded grid (e.g. K configs drawn from a
    loss-trace set); job ids keep the full-grid index so a job names its config unambiguously.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: LrT = Field(description="learning rates (constant schedule)")
    rank: RankT = Field(description="LoRA ranks")
    batch_size: BatchT = Field(description="per-adapter batch sizes")
    alpha: AlphaT | None = Field(None, description="LoRA alphas; None -> 2 * rank")
    dropout: DropoutT = Field(default_factory=lambda: [0.0], description="LoRA dropouts")
    weight_decay: DecayT = Field(0.01, description="AdamW weight decay: one for every job, a list or a distribution")
    seed: SeedT = Field(0, description="base seed (a number), or searched seeds (a list or distribution)")
    grad_accum_steps: AccumT = Field(1, description="micro-batches of batch_size accumulated per optimizer step: "
                                     "one for every job, a list or an int distribution")
    lr_schedule: ScheduleT | None = Field(None, description="searched lr schedules; None -> the task's")
    warmup_ratio: WarmupT | None = Field(None, description="searched warm-up ratios; None -> the task's")
    max_grad_norm: ClipT | None = Field(None, description="searched gradient-norm clips; None -> the task's")
    sampler: Literal["grid", "random", "quasi-random", "tpe", "optuna-random", "optuna-qmc"] | None = Field(
        None, description="grid | random | quasi-random | Optuna's tpe / optuna-random / optuna-qmc; None -> grid "
        "when every axis is a list")
    n_configs: Int | None = Field(None, ge=1, le=MAX_CONFIGS, description="configs a drawing sampler draws")
    sampler_seed: Int | None = Field(None, ge=0, le=MAX_SEED, description="None -> seed (when a number), else 0")
    subset: list[Int] | None = Field(None, description="indices of the expanded grid to keep")

    @field_validator("lr", "rank", "batch_size", "alpha", "max_grad_norm")
    @classmethod
    def _positive_lists(cls, v: Any, info: Any) -> Any:
        return v if v is None or _is_dist(v) else _check_list(v, info.field_name)

    @field_validator("dropout", "weight_decay", "seed", "grad_accum_steps", "lr_schedule", "warmup_ratio")
    @classmethod
    def _lists(cls, v: Any, info: Any) -> Any:
        return _check_list(v, info.field_name, positive=False) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _subset(self) -> "SearchSpace":
        dists = [a for a in AXES if _is_dist(getattr(self, a))]
        kind = self.kind
        if kind == "grid":
            if dists:
                raise ValueError(f"{dists[0]}: a distribution needs sampler: random, quasi-random or an Optuna one "
                                 "(with n_configs); a grid takes lists")
            if self.n_configs is not None:
                raise ValueError("n_configs: only with a sampler that draws (random, quasi-random, tpe, ...); a grid "
                                 "has all its configs")
            if self.grid_size > MAX_CONFIGS:
                raise ValueError(f"the grid expands to {self.grid_size} configs; at most {MAX_CONFIGS} per task")
        else:
            if self.n_configs is None:
                raise ValueError(f"n_configs: sampler {kind} needs the number of configs to draw")
            if self.subset is not None:
                raise ValueError("subset: only for a grid")
        if self.subset is not None:
            n = self.grid_size
            if not self.subset:
                raise ValueError("subset must keep at least one config")
            if len(set(self.subset)) != len(self.subset):
                raise ValueError("subset has duplicate indices")
            bad = [i for i in self.subset if not 0 <= i < n]
            if bad:
                raise ValueError(f"subset index {bad[0]} outside the grid of {n} configs")
            if self.subset != sorted(self.subset):
                raise ValueError("subset indices must be increasing")
        return self

    @property
    def kind(self) -> str:
        """The sampler in effect: `sampler`, else grid when no axis is a distribution, else random."""
        if self.sampler is not None:
            return self.sampler
        return "random" if any(_is_dist(getattr(self, a)) for a in AXES) else "grid"

    @property
    def searched_seed(self) -> bool:
        """True when `seed` is an axis (a list or distribution), not the base seed."""
        return not isinstance(self.seed, int)

    def _axis_values(self, axis: str) -> Any:
        """A grid axis's values; None (one entry) for alpha unset or a searched seed's absence."""
        v = getattr(self, axis)
        if axis in ("alpha", *KNOBS) and v is None:
            return [None]
        if axis == "seed" and not self.searched_seed:
            return [None]
        if axis in ("weight_decay", "grad_accum_steps") and not isinstance(v, (list, BaseModel)):
            return [v]
        return v.values() if _is_dist(v) else v

    @property
    def grid_size(self) -> int:
        if self.kind != "grid":
            return int(self.n_configs or 0)
        return math.prod(len(self._axis_values(a)) for a in AXES)

    def configs(self, cache: dict | None = None) -> list[tuple[int, dict[str, Any]]]:
        """(index, config) pairs: the grid in its fixed order (only `subset` ones when set), or the
        sampler's draws. A config holds every axis; `seed` is None unless the seed is searched.

        `cache` (a dict the caller owns) shares expanded configs between equal search spaces.
        """
        key = self.model_dump_json(exclude={"subset"})
        configs = cache.get(key) if cache is not None else None
        if configs is None:
            configs = self._expand() if self.kind == "grid" else self._draw()
            if cache is not None:
                cache[key] = configs
        if self.subset is None:
            return list(enumerate(configs))
        return [(i, configs[i]) for i in self.subset]

    def _expand(self) -> list[dict[str, Any]]:
        return [dict(zip(AXES, vals)) for vals in itertools.product(*(self._axis_values(a) for a in AXES))]

    def _draw(self) -> list[dict[str, Any]]:
        n = int(self.n_configs or 0)
        varying = [a for a in AXES if len(self._axis_values(a)) > 1 or _is_dist(getattr(self, a))]
        seed = self.sampler_seed if self.sampler_seed is not None else (0 if self.searched_seed else self.seed)
        if self.kind in OPTUNA_SAMPLERS and varying:
            return self._optuna(varying, n, seed)
        if not varying:
            u = np.zeros((n, 0))
        elif self.kind == "quasi-random":
            from scipy.stats import qmc

            with warnings.catch_warnings():  # Sobol balance needs n a power of 2; any n is fine here
                warnings.simplefilter("ignore", UserWarning)
                u = qmc.Sobol(len(varying), scramble=True, seed=np.random.default_rng(seed)).random(n)
        else:
            u = np.random.default_rng(seed).random((n, len(varying)))
        columns: dict[str, list] = {}
        for a in AXES:
            v = getattr(self, a)
            if a in varying:
                u_a = u[:, varying.index(a)]
                if _is_dist(v):
                    columns[a] = v.sample(u_a)
                else:
                    vals = self._axis_values(a)
                    columns[a] = [vals[min(int(x * len(vals)), len(vals) - 1)] for x in u_a]
            else:
                columns[a] = [self._axis_values(a)[0]] * n
        return [{a: columns[a][i] for a in AXES} for i in range(n)]

    def _optuna(self, varying: list[str], n: int, seed: int) -> list[dict[str, Any]]:
        """Draws of Optuna's sampler (altosim/schemas/optuna_draw.py); fixed axes as they are."""
        from altosim.schemas.optuna_draw import draw

        def rounded(axis: str, v: Any) -> Any:  # floats to SIG_DIGITS within their bounds, as sample() does
            d = getattr(self, axis)
            if _is_dist(d) and d.distribution in ("uniform", "log_uniform"):
                return min(max(float(f"{v:.{SIG_DIGITS}g}"), d.low), d.high)
            return v

        axes = {a: getattr(self, a) if _is_dist(getattr(self, a)) else self._axis_values(a) for a in varying}
        drawn = draw(self.kind, axes, n, seed, rounded)
        return [{a: d[a] if a in d else self._axis_values(a)[0] for a in AXES} for d in drawn]

    def __len__(self) -> int:
        return self.grid_size if self.subset is None else len(self.subset)


def job_seed(base_seed: int, task_id: str, index: int) -> int:
    """Deterministic per-job seed: CRC32 of (base seed, task id, config index), 31 bits."""
    return zlib.crc32(f"{base_seed}/{task_id}/{index}".encode()) & 0x7FFFFFFF
