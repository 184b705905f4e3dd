"""`alto profile`: measure fused multi-adapter step time and peak memory over a grid.

For each backbone (SmolLM2 from its GGUF, or a random-init Llama shape, optionally truncated to
N decoder layers: weights do not change speed and per-layer cost is what matters) and each grid
point (adapters A, LoRA rank r, per-adapter batch b, sequence length L), a fresh
`MultiAdapterTrainer` (as `alto run` builds it) takes `warmup` steps on random tokens, then
`steps` timed steps (each synchronized); the row keeps the median. Peak memory is
`torch.cuda.max_memory_reserved` over the point (reset before it, with the previous point's
trainer freed, so the row holds the backbone and this point's trainer only); on CPU it is 0 and the row's
note says so. A point that runs out of memory becomes a FailedPoint, and so does every later point
of the same rank with at least as many tokens (skipped, said so). The memory line
M(B) = k0 + k1 * B * L of each model is fitted to its rows (B = A * b) as the intra-task
scheduler's `MemoryModel.fit` does.

Each row also keeps its first step's time (`first_step_ms`: a new shape's compiles and autotuning,
given the points measured before it), for a simulator that charges new shapes, and a validation
forward as the runtime calls it (`val_ms`, its first call `first_val_ms`: one shared batch of 16
rows of the point's length for min(adapters, 16) of its adapters). Rows are written in the order
they were measured (the first rows' first steps are a fresh process's cold compiles). Per backbone, the meta keeps
the median host cost of the runtime's actions over the points (`overheads`: a task's start = the
backbone copy and trainer build, admit / snapshot / stop per adapter, a task's finish = restore +
PEFT export), so a replay can charge what is neither a step nor a validation.

Output: the existing cost-profile format, `<out>.csv` (CostRecord rows) and `<out>.meta.json`
(device, date, layers per model, memory fits, failed points).

Default grid (32 points per backbone): adapters 1,4,16,32; ranks 16,64; batch 1,4; seq 128,512;
2 warm-up + 5 timed steps (3 timed steps were too few on an H200, where the host-bound SmolLM2
step jitters by ~25%). On an H100 a point takes ~5 s, mostly the first step's Triton autotuning
for the new token count (the runtime pays it once per shape too; it is untimed here).
"""

from __future__ import annotations

import copy
import datetime as dt
import gc
import math
import re
import statistics
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch

from altosim.cost.io import write_cost_profile
from altosim.policy.memory import MemoryModel
from altosim.schemas.cost import VAL_BATCH, ActionCosts, CostProfile, CostRecord, FailedPoint, MemoryFit, val_adapters
from altoruntime.batching import IGNORE

T = TypeVar("T")
MAX_ADAPTERS = 4096  # co-located adapters per profiled point: far past any real group, short of an allocation bomb
KNOWN_GPUS = ("GH200", "H200", "H100", "H800", "A100", "A800", "L40S", "L40", "L4", "A10G", "V100", "T4")


@dataclass(frozen=True)
class Grid:
    """The measured axes; every combination is one point."""

    adapters: tuple[int, ...] = (1, 4, 16, 32)
    ranks: tuple[int, ...] = (16, 64)
    batches: tuple[int, ...] = (1, 4)
    seqs: tuple[int, ...] = (128, 512)

    def __post_init__(self) -> None:
        from altosim.schemas.limits import MAX_BATCH, MAX_RANK, MAX_SEQ_LEN

        bounds = {"adapters": MAX_ADAPTERS, "ranks": MAX_RANK, "batches": MAX_BATCH, "seqs": MAX_SEQ_LEN}
        for name, hi in bounds.items():
            vals = getattr(self, name)
            if not vals or any(not isinstance(v, int) or v < 1 for v in vals):
                raise ValueError(f"--{name}: need positive integers, got {vals!r}")
            if max(vals) > hi:  # a typo (1e9) would allocate until the machine gives out
                raise ValueError(f"--{name}: at most {hi}, got {max(vals)}")
            if len(set(vals)) != len(vals):  # the same point measured twice: two rows of one cost-model key
                raise ValueError(f"--{name}: a value listed twice, got {vals!r}")
        if min(self.seqs) < 2:
            raise ValueError(f"--seqs: sequences need >= 2 tokens, got {self.seqs!r}")

    def points(self) -> list[tuple[int, int, int, int]]:
        """(rank, adapters, batch, seq), by rank then by tokens, so an OOM ends a rank's run."""
        pts = product(self.ranks, self.adapters, self.batches, self.seqs)
        return sorted(pts, key=lambda p: (p[0], p[1] * p[2] * p[3], p[1], p[2]))



# Fine-tuning data labels the answer only (altoruntime/data: ~30% of the tokens of an arithmetic
# batch), and the trainer runs the LM head (49k-vocab logits for SmolLM2) on labelled positions
# only; the profile labels the last quarter of every sequence so its steps cost what real ones do
# (labelling every token would also build >2^31-element logits at the grid's largest points).
ANSWER_FRACTION = 0.25

def profile_device(device: str | None) -> torch.device:
    """`--device` (default: cuda if available, else cpu) as a device this machine has; a ValueError
    naming the flag otherwise (torch's own errors are a RuntimeError or an AssertionError)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"--device: not a torch device: {e}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device: {device!r} is not on this machine ({torch.cuda.device_count()} CUDA devices)")
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ValueError(f"--device: {device!r}: expected cpu, cuda or cuda:N")
    return dev


def parse_ints(text: str, name: str) -> tuple[int, ...]:
    """'1,4,16' -> (1, 4, 16); a clear ValueError naming the flag otherwise."""
    try:
        vals = tuple(int(v) for v in text.split(","))  # an empty item too ("1,,2" is a slip, not 1,2)
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise ValueError(f"{name}: expected at least one integer, got {text!r}")
    return vals


def gpu_type_of(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100' (the cost model's GPU key); 'cpu' stays 'cpu'."""
    for key in KNOWN_GPUS:
        if key.lower() in device_name.lower():
            return key
    return re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-") or "unknown"


def resolve_backbone(spec: str, layers: int | None) -> tuple[str, str]:
    """(factory spec, model name). `layers` truncates random-init shapes that name no depth."""
    from altoruntime.parallel.shapes import parse_spec

    name, opts = parse_spec(spec)
    if name == "smollm2":
        if opts:
            raise ValueError(f"backbone: {spec!r}: smollm2 loads its real weights and cannot be truncated")
        return spec, "smollm2-135m"
    if layers is not None and "layers" not in opts:
        spec = f"{name}:layers={layers}"
    return spec, name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _oom_count(device: torch.device) -> int:
    """Out-of-memory events the CUDA allocator has seen (0 on CPU). The trainer catches an OOM
    itself and retries the step in halves, so an exception alone would miss it."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.memory_stats(device).get("num_ooms", 0))


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()


@dataclass
class PointTimes:
    """What one grid point measured (ms): the steady step (median), the very first step (what the
    shape costs the first time it runs in the process), a validation forward as the runtime calls
    it (median, and its first call), and the host time of the actions taken on it: (total ms,
    how many) per action."""

    step_ms: float
    first_step_ms: float
    val_ms: float
    first_val_ms: float
    failures: int
    actions: dict[str, tuple[float, int]]  # ActionCosts field name -> (ms, count)
    peak_mem_bytes: int = 0  # reserved after the timed steps (0 on CPU)


def _timed_call(device: torch.device, fn: Callable[[], T]) -> tuple[float, T]:
    """(ms, value) of `fn()`, synchronized before and after (its device work included)."""
    _sync(device)
    t0 = time.perf_counter()
    value = fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3, value


def _timed(device: torch.device, fn: Callable[[], object]) -> float:
    """ms of `fn()` (see `_timed_call`)."""
    return _timed_call(device, fn)[0]


def _time_point(trainer, adapters: int, rank: int, batch: int, seq: int, vocab: int, steps: int,
                warmup: int, device: torch.device, evals: int = 3) -> PointTimes:
    """Time `steps` synchronized fused steps after `warmup` ones, `evals` forward-only evaluations
    (after one untimed), and the actions a run takes on the point's adapters: admit, best
    snapshot, stop (suspend without the optimizer), and the task's finish (best restored, PEFT
    export to a temporary folder).

    An adapter the trainer fails (non-finite loss or gradient) is re-admitted fresh before the next
    step, outside the timed region, so every step runs all `adapters`. A step during which the
    allocator ran out of memory (the trainer then splits the step in halves, or fails adapters
    that do not fit alone) raises OutOfMemoryError: that point is not a fused step."""
    for j in trainer.job_ids:
        trainer.drop(j)
    g = torch.Generator().manual_seed(adapters * 7919 + batch * 31 + seq)
    batches = {}
    admit_ms = _timed(device, lambda: [trainer.admit(f"a{i}", rank=rank, lr=1e-4, seed=i) for i in range(adapters)])
    for i in range(adapters):
        ids = torch.randint(3, vocab, (batch, seq), generator=g).to(device)
        labels = ids.clone()
        labels[:, : seq - max(1, round(ANSWER_FRACTION * seq))] = IGNORE  # answers only, like SFT data
        batches[f"a{i}"] = (ids, torch.ones_like(ids), labels)
    failures = 0
    ooms = _oom_count(device)

    def check_oom() -> None:
        if _oom_count(device) != ooms:
            raise torch.cuda.OutOfMemoryError("out of memory inside the trainer's step (it split the step)")

    def readmit() -> None:
        nonlocal failures
        for i in range(adapters):
            if trainer.status(f"a{i}") == "failed":
                failures += 1
                trainer.drop(f"a{i}")
                trainer.admit(f"a{i}", rank=rank, lr=1e-4, seed=i)

    def timed_step() -> float:
        """One synchronized fused step of all `adapters`, ms."""
        readmit()
        ms = _timed(device, lambda: trainer.step(batches))
        check_oom()
        return ms

    warm = [timed_step() for _ in range(warmup)]
    times = [timed_step() for _ in range(steps)]
    readmit()
    # the training peak, before the validation forward (a 16-row batch per adapter, with its
    # LM-head logits, can need more than the step) and the actions
    peak = int(torch.cuda.max_memory_reserved(device)) if device.type == "cuda" else 0
    names = [f"a{i}" for i in range(adapters)]
    # validation as the runtime calls it: one CPU batch of VAL_BATCH rows shared by a chunk of adapters
    ids = torch.randint(3, vocab, (VAL_BATCH, seq), generator=g)
    labels = ids.clone()
    labels[:, : seq - max(1, round(ANSWER_FRACTION * seq))] = IGNORE
    chunk = {j: (ids, torch.ones_like(ids), labels) for j in names[:val_adapters(adapters)]}
    try:
        val = [_timed(device, lambda: trainer.evaluate_tokens(chunk)) for _ in range(evals + 1)] if evals else []
    except (RuntimeError, MemoryError) as e:  # the point's training step stands; its validation is not measured
        if not _is_oom(e):
            raise
        val = []
        _free(device)
    suspend_ms = _timed(device, lambda: (trainer.suspend(names[0]), trainer.resume(names[0])))
    snapshot_ms = _timed(device, lambda: [trainer.snapshot_best(j) for j in names])
    stop_ms = _timed(device, lambda: [trainer.suspend(j, keep_optimizer=False) for j in names[1:]])
    finish_ms = _timed(device, lambda: _finish(trainer, names[0]))
    actions = {"admit_ms": (admit_ms, adapters), "snapshot_ms": (snapshot_ms, adapters),
               "finish_task_ms": (finish_ms, 1), "suspend_ms": (suspend_ms, 1)}
    if adapters > 1:
        actions["stop_ms"] = (stop_ms, adapters - 1)
    return PointTimes(statistics.median(times), (warm + times)[0], statistics.median(val[1:]) if val else math.nan,
                      val[0] if val else math.nan, failures, actions, peak)


def _action_ms(measured: list[tuple[float, int]]) -> float:
    """One action's cost from the points' (total ms, count): once-per-point actions (a task's start
    and finish) the median; per-adapter ones the total over the total count, so the many-adapter
    points (where a run admits most of its adapters) weigh most and a point's first, costlier admit
    is spread as a run spreads it."""
    if all(n == 1 for _, n in measured):
        return statistics.median(ms for ms, _ in measured)
    return sum(ms for ms, _ in measured) / sum(n for _, n in measured)


def _finish(trainer, job_id: str) -> None:
    """What the runtime does at a task's finish (altoruntime/backend.py FinishTask, no final metric):
    the best snapshot restored, the adapter exported in PEFT format."""
    import tempfile

    from altoruntime.export import export_peft

    trainer.restore_best(job_id)
    with tempfile.TemporaryDirectory(prefix="alto-profile-export-") as d:
        export_peft(trainer, job_id, Path(d) / "best_adapter")


def profile_backbone(spec: str, model: str, grid: Grid, device: torch.device, *, gpu_type: str,
                     gguf: str | None = None, steps: int = 5, warmup: int = 2, evals: int = 3,
                     tick: Callable[[str], None] = lambda s: None,
                     ) -> tuple[list[CostRecord], list[FailedPoint], int, ActionCosts | None]:
    """Rows and failed points of one backbone over `grid`, the depth it ran at, and the median
    host cost of the runtime's actions over its points (None when no point ran)."""
    from altoruntime.parallel.shapes import backbone_factory
    from altoruntime.trainer import trainer_from_env

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps: need steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    if evals < 0:
        raise ValueError(f"evals: need >= 0, got {evals}")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = backbone_factory(spec, "cpu", dtype, gguf)()  # pristine copy stays off the device
    vocab, layers = int(base.config.vocab_size), int(base.config.num_hidden_layers)
    full = _full_layers(model)
    note = f"layers={layers}" + (f" of {full}" if full and full != layers else "")
    note += "; random-init" if model != "smollm2-135m" else "; GGUF weights"
    if device.type != "cuda":
        note += "; cpu: peak memory not measured (0)"
    rows: list[CostRecord] = []
    failed: list[FailedPoint] = []
    oom_tokens: dict[int, int] = {}
    acts: dict[str, list[float]] = {}  # ActionCosts field -> ms per point (the profile keeps the median)
    trainer = None
    for rank, a, b, s in grid.points():
        tick(f"{model} A={a} r={rank} b={b} L={s}")
        key = dict(model=model, gpu_type=gpu_type, adapters=a, mean_rank=rank, per_adapter_batch=b, seq_len=s)
        if rank in oom_tokens and a * b * s >= oom_tokens[rank]:
            failed.append(FailedPoint(**key, reason="skipped: >= tokens of an oom point"))
            continue
        try:
            # a fresh trainer per point, built after the last one is freed: a trainer reused across
            # points kept what a larger earlier point cached, and its peak showed in later rows
            # (H200, 2026-12-03: 12 GB for one adapter of 128 tokens right after a 60 GB point)
            trainer = None
            _free(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start_ms, trainer = _timed_call(device, lambda: trainer_from_env(  # a task's start (altoruntime/run.py):
                copy.deepcopy(base).to(device), capacity=a))  # the paths `alto run` takes
            pt = _time_point(trainer, a, rank, b, s, vocab, steps, warmup, device, evals)
            extra = f"; {pt.failures} adapter steps non-finite (re-admitted)" if pt.failures else ""
            measured_val = evals > 0 and not math.isnan(pt.val_ms)
            if evals and not measured_val:
                extra += "; validation forward out of memory (not measured)"
            rows.append(CostRecord(**key, step_ms=pt.step_ms, peak_mem_bytes=pt.peak_mem_bytes, note=note + extra,
                                   first_step_ms=pt.first_step_ms, val_ms=pt.val_ms if measured_val else None,
                                   first_val_ms=pt.first_val_ms if measured_val else None))
            for k, v in {"start_task_ms": (start_ms, 1), **pt.actions}.items():
                acts.setdefault(k, []).append(v)
        except (RuntimeError, MemoryError) as e:
            if not _is_oom(e):
                raise
            oom_tokens[rank] = min(oom_tokens.get(rank, a * b * s), a * b * s)
            failed.append(FailedPoint(**key, reason="oom"))
            trainer = None
            _free(device)
    trainer = None
    _free(device)
    costs = ActionCosts(**{k: _action_ms(v) for k, v in acts.items()}) if acts else None
    return rows, failed, layers, costs


def _full_layers(model: str) -> int | None:
    from altoruntime.parallel.shapes import LLAMA_SHAPES

    return LLAMA_SHAPES[model][5] if model in LLAMA_SHAPES else None


def fit_memory(rows: Sequence[CostRecord], capacity: float) -> MemoryFit | None:
    """M(B) = k0 + k1 * B * L over one model's measured rows (B = adapters * batch); None when
    memory was not measured (CPU) or the rows do not determine a line."""
    pts = [(r.adapters * r.per_adapter_batch, r.seq_len, float(r.peak_mem_bytes)) for r in rows if r.peak_mem_bytes > 0]
    try:
        m = MemoryModel.fit(pts, capacity=capacity)
    except ValueError:
        return None
    err = max(abs(m.predict(b, l) - y) / y for b, l, y in pts)
    return MemoryFit(k0=m.k0, k1=m.k1, capacity=capacity, points=len(pts), max_rel_err=err)


def run_profile(backbones: Sequence[str], grid: Grid, out: str | Path | None = None, *, layers: int | None = None,
                gguf: str | None = None, steps: int = 5, warmup: int = 2, evals: int = 3, device: str | None = None,
                quiet: bool = False) -> tuple[CostProfile, Path]:
    """Profile every backbone on the local device and write one CostProfile (+ memory fits)."""
    from altoruntime.trainer import env_paths

    if not backbones:
        raise ValueError("backbone: name at least one backbone")
    dev = profile_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    gpu_type = gpu_type_of(name)
    capacity = float(torch.cuda.get_device_properties(dev).total_memory) if dev.type == "cuda" else 1.0
    resolved = [resolve_backbone(b, layers) for b in backbones]
    path = Path(out) if out is not None else Path("traces/profiles") / f"{gpu_type.lower()}.csv"
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(resolved) * len(grid.points()), desc="profile", unit="point", dynamic_ncols=True)

    def tick(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label)
            bar.update(1)

    rows, failed, depth, fits, overheads = [], [], {}, {}, {}
    t0 = time.perf_counter()  # the folder of `path` is made by the first save: a failure before it leaves nothing

    def save(done: list[str]) -> CostProfile:
        source = (f"alto profile {' '.join(done)} on {name}; grid adapters={list(grid.adapters)} "
                  f"ranks={list(grid.ranks)} batches={list(grid.batches)} seqs={list(grid.seqs)}; "
                  f"median of {steps} steps after {warmup}, of {evals} evaluations after 1; paths: {env_paths()}; "
                  f"{time.perf_counter() - t0:.0f} s")
        prof = CostProfile(rows=rows, device=name, date=dt.date.today().isoformat(), synthetic=False, source=source,
                           layers=depth, memory_fits=fits, failed=failed, overheads=overheads)
        write_cost_profile(prof, path)  # after every backbone: a run cut short keeps what it measured
        return prof

    try:
        for i, (spec, model) in enumerate(resolved):
            r, f, depth[model], costs = profile_backbone(spec, model, grid, dev, gpu_type=gpu_type, gguf=gguf,
                                                         steps=steps, warmup=warmup, evals=evals, tick=tick)
            if costs is not None:
                overheads[model] = costs
            rows += r
            failed += f
            fit = fit_memory(r, capacity)
            if fit is not None:
                fits[model] = fit
            prof = save(list(backbones[: i + 1]))
    finally:
        if bar is not None:
            bar.close()
    return prof, path


if __name__ == "__main__":  # `python -m altoruntime.profile ...`: the flags of `alto profile`
    from altoruntime.cli import profile_main

    raise SystemExit(profile_main())
