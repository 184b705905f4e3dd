"""The runtime backend executes Controller actions and reports the events the simulator would."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from altosim.policy.types import (
    Admit, FinishTask, JobFailed, JobFinished, JobSpec, StartTask, Stop, StepReport, TaskArrived, TaskSpec,
)
from altoruntime.backbone import tiny_llama
from altoruntime.backend import RunLog, RuntimeBackend, SplitData
from altoruntime.task_runner import TaskRunner
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch


class RandomData:
    """Batches that are a pure function of (job seed, position)."""

    def train_batch(self, job, position):
        return make_batch(1000 * job.seed + position, job.batch_size, 10), position + 1

    def val_batches(self):
        return [make_batch(-1 % 997, 3, 12), make_batch(998, 2, 7)]


class MetricData(RandomData):
    """Scores the best adapter by a number that depends on every adapter weight."""

    @torch.no_grad()
    def final_metric(self, model):
        return float(model(input_ids=make_batch(77, 2, 9, pad_tail=False)[0]).logits.std())


class PoisonTrainer(MultiAdapterTrainer):
    """Adapter 'poison' starts with a NaN weight, so its first loss is NaN."""

    def admit(self, job_id, **kw):
        super().admit(job_id, **kw)
        if job_id == "poison":
            with torch.no_grad():
                self.store.layers[0].B[self.store.adapters[job_id].slot, 0, 0] = math.nan


class StubController:
    """Admit everything at once; stop job 'slow' at its second report keeping its best; finish
    with the job of lowest val loss when every job has ended."""

    def __init__(self):
        self.open: dict[str, set[str]] = {}
        self.best: dict[str, tuple[float, str]] = {}
        self.reports: list[StepReport] = []

    def on_event(self, ev):
        if isinstance(ev, TaskArrived):
            self.open[ev.task.task_id] = {j.job_id for j in ev.task.jobs}
            return [StartTask(ev.task.task_id, (0,))] + [Admit(ev.task.task_id, j.job_id) for j in ev.task.jobs]
        if isinstance(ev, StepReport):
            if ev.val_loss is not None and ev.val_loss < self.best.get(ev.task_id, (math.inf, ""))[0]:
                self.best[ev.task_id] = (ev.val_loss, ev.job_id)
            self.reports.append(ev)
            if ev.job_id == "slow" and sum(r.job_id == "slow" for r in self.reports) == 2:
                return self._end(ev.task_id, ev.job_id, [Stop(ev.task_id, ev.job_id, "overfitting", True)])
            return []
        if isinstance(ev, JobFailed):
            return self._end(ev.task_id, ev.job_id, [Stop(ev.task_id, ev.job_id, "failed")])
        if isinstance(ev, JobFinished):
            return self._end(ev.task_id, ev.job_id, [])
        return []

    def _end(self, task_id, job_id, acts):
        self.open[task_id].discard(job_id)
        if not self.open[task_id]:
            val, best = self.best[task_id]
            acts.append(FinishTask(task_id, (0,), best, val))
        return acts


def _task(jobs, samples=12, every=4):
    return TaskSpec("t", 0.0, "tiny", "random", 1, tuple(jobs), samples_per_job=samples, eval_every_samples=every)


@pytest.fixture(scope="module")
def base():
    return tiny_llama(seed=0)


def test_stub_controller_run_reports_finishes_fails_and_exports(base, tmp_path):
    jobs = [JobSpec("fast", "t", 1e-2, 4, 2, seed=1), JobSpec("slow", "t", 1e-3, 2, 1, seed=2),
            JobSpec("poison", "t", 1e-2, 2, 2, seed=3)]
    task = _task(jobs)
    steps_seen: dict[str, list[float]] = {}
    clock = itertools.count()
    backend = RuntimeBackend(
        StubController(), lambda t, g: PoisonTrainer(copy.deepcopy(base), capacity=2), lambda t: MetricData(),
        out_dir=tmp_path, clock=lambda: float(next(clock)),
        on_step=lambda tid, losses: [steps_seen.setdefault(j, []).append(v) for j, v in losses.items()],
    )
    log = backend.run([task])
    reports = [e for e in log.events if isinstance(e, StepReport)]
    fast = [r for r in reports if r.job_id == "fast"]
    # fast: batch 2 -> 6 steps, evaluates every 4 / 2 = 2 steps
    assert [r.step for r in fast] == [2, 4, 6] and [r.samples for r in fast] == [4, 8, 12]
    losses = steps_seen["fast"]
    assert [r.train_loss for r in fast] == pytest.approx([sum(losses[i:i + 2]) / 2 for i in (0, 2, 4)])
    assert [r.step for r in reports if r.job_id == "slow"] == [4, 8]  # stopped at its 2nd report
    assert len(steps_seen["slow"]) == 8 and len(steps_seen["poison"]) == 1
    assert math.isnan(steps_seen["poison"][0])
    ends = [e for e in log.events if isinstance(e, (JobFinished, JobFailed))]
    assert [(type(e).__name__, e.job_id) for e in ends] == [("JobFailed", "poison"), ("JobFinished", "fast")]
    assert ends[0].reason == "non-finite loss"
    assert all(r.val_loss is not None and math.isfinite(r.val_loss) for r in reports)
    assert all(0.0 <= r.metric <= 1.0 for r in reports)
    fin = log.results["t"]
    assert fin.best_job == min(reports, key=lambda r: r.val_loss).job_id
    assert (log.exported["t"] / "adapter_model.safetensors").is_file()
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(log.exported["t"])).eval()
    assert log.metrics["t"] == pytest.approx(MetricData().final_metric(peft_model), rel=1e-5)
    log.write_events(tmp_path / "events.jsonl")
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(log.trace) and '"kind": "task_arrived"' in lines[0]


def test_val_loss_is_the_token_weighted_mean_over_the_val_set(base):
    tr = MultiAdapterTrainer(copy.deepcopy(base))
    tr.admit("a", rank=2, seed=1)
    data = RandomData()
    tr.admit("b", rank=4, seed=2)
    tr.admit("c", rank=2, seed=3)
    tr.step({j: make_batch(i, 2, 8) for i, j in enumerate("abc")})  # B leaves zero: adapters differ
    runner = TaskRunner(_task([]), (0,), tr, data, RunLog(), eval_rows=4)  # 1-2 jobs a call
    vals = runner.validate(["a", "b", "c"])
    got, acc = vals["a"]
    assert vals["b"][0] != got
    total = n = hits = 0
    for ids, mask, labels in data.val_batches():
        k = int((labels[:, 1:] != -100).sum())
        total += tr.evaluate({"a": (ids, mask, labels)})["a"] * k
        logits = tr.logits("a", ids, mask)
        hits += int(((logits[:, :-1].argmax(-1) == labels[:, 1:]) & (labels[:, 1:] != -100)).sum())
        n += k
    assert got == pytest.approx(total / n) and got != pytest.approx(tr.evaluate({"a": data.val_batches()[0]})["a"])
    assert acc == pytest.approx(hits / n)


def test_real_controller_drives_the_runtime(base):
    from altosim.policy.controller import Controller, ControllerConfig

    jobs = [JobSpec(f"j{i}", "t", lr, r, b, seed=i) for i, (lr, r, b) in enumerate([(1e-2, 4, 2), (1e-3, 2, 1), (5e-3, 8, 2)])]
    ctl = Controller(ControllerConfig(num_gpus=1, early_exit="none", inter_task="fifo"), duration_for=lambda t: 1.0)
    clock = itertools.count()
    backend = RuntimeBackend(ctl, lambda t, g: MultiAdapterTrainer(copy.deepcopy(base)), lambda t: RandomData(),
                             clock=lambda: float(next(clock)))
    log = backend.run([_task(jobs, samples=8, every=4)])
    finished = {e.job_id for e in log.events if isinstance(e, JobFinished)}
    assert finished == {"j0", "j1", "j2"}
    assert log.results["t"].best_job in finished and not backend.tasks


def test_split_data_streams_runtime_data(base):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from altoruntime.data import get_dataset

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)} | {"<eos>": 256, "<pad>": 257}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    ds = get_dataset("arithmetic", n_train=8, n_val=4, n_eval=2, seed=0)
    data = SplitData(ds.tokenize(tokenizer, "train", seq_len=200), ds.tokenize(tokenizer, "val", seq_len=200), 3)
    job = JobSpec("a", "t", 1e-3, 2, 3, seed=5)
    (ids, mask, labels), nxt = data.train_batch(job, 0)
    assert ids.shape[0] == 3 and nxt == 3 and len(data.val_batches()) == 2
    seq = [data.train_batch(job, p)[0][0] for p in (3, 6, 9)]  # sequential reads reuse the stream
    fresh = SplitData(data.train, ds.tokenize(tokenizer, "val", seq_len=200), 3)
    assert torch.equal(fresh.train_batch(job, 6)[0][0], seq[1])  # a jump reopens at that position
    again, _ = data.train_batch(job, 0)
    assert torch.equal(again[0], ids)  # the order is a pure function of (seed, position)
    tr = MultiAdapterTrainer(tiny_llama(vocab=258))
    tr.admit("a", rank=2)
    assert math.isfinite(tr.step({"a": (ids, mask, labels)})["a"])


class Crash(Exception):
    pass


def test_killed_run_resumes_from_checkpoint_with_the_same_decisions(base, tmp_path):
    """A real Controller with ALTO early exit; the run crashes mid-way and resumes from its
    checkpoint with a fresh Controller: events and actions equal an uninterrupted run's."""
    from altosim.policy.controller import Controller, ControllerConfig

    jobs = [JobSpec(f"j{i}", "t", lr, r, b, dropout=0.1, seed=i)
            for i, (lr, r, b) in enumerate([(3e-2, 4, 2), (1e-4, 2, 1), (5e-3, 8, 2), (2e-2, 2, 1)])]
    task = _task(jobs, samples=16, every=2)

    def backend(ckpt, on_step=None):
        ctl = Controller(ControllerConfig(num_gpus=1, early_exit="alto", inter_task="fifo"), duration_for=lambda t: 1.0)
        return RuntimeBackend(ctl, lambda t, g: MultiAdapterTrainer(copy.deepcopy(base), capacity=2),
                              lambda t: RandomData(), clock=lambda: 0.0, on_step=on_step,
                              checkpoint_path=ckpt, checkpoint_every=2)

    torch.manual_seed(0)
    full = backend(None).run([task]).trace
    steps = itertools.count(1)

    def crash_at_5(task_id, losses):
        if next(steps) == 5:  # after the ALTO cut at step 2; last checkpoint after step 3
            raise Crash()

    torch.manual_seed(0)
    with pytest.raises(Crash):
        backend(tmp_path / "run.ckpt", crash_at_5).run([task])
    assert (tmp_path / "run.ckpt").is_file()
    torch.manual_seed(999)  # the checkpoint restores the RNG, whatever the new process has
    resumed = backend(tmp_path / "run.ckpt").run([task]).trace
    assert resumed == full
    kinds = {type(x).__name__ for x in full}
    assert {"StepReport", "Admit", "Stop", "FinishTask"} <= kinds


def test_phases_keep_the_controllers_time_and_time_actions_apart(base):
    """The Controller's own time on a report is the policy phase's (never lost, never negative)
    even when a job's finish is timed apart right after it; actions and finishes have their own
    phases, and the phases never add up to more than the run."""
    import time

    class SlowController(StubController):
        def on_event(self, ev):
            if isinstance(ev, StepReport):
                time.sleep(0.05)
            return super().on_event(ev)

    jobs = [JobSpec("fast", "t", 1e-2, 4, 2, seed=1), JobSpec("other", "t", 1e-2, 4, 4, seed=2)]
    backend = RuntimeBackend(SlowController(), lambda t, g: MultiAdapterTrainer(copy.deepcopy(base), capacity=2),
                             lambda t: RandomData())
    t0 = time.perf_counter()
    log = backend.run([_task(jobs)])
    wall = time.perf_counter() - t0
    reports = sum(isinstance(e, StepReport) for e in log.events)
    ph = log.phases
    assert ph["policy"] >= 0.05 * reports * 0.9  # the sleeps are the policy's
    assert ph["job_finished"] > 0 and ph["start_task"] > 0 and ph["admit"] > 0
    assert min(ph.values()) >= 0 and sum(ph.values()) <= wall


def test_cuda_defaults_parking_and_packed_moves_give_the_same_run(base):
    """ALTO early exit (rungs suspend and resume jobs) on a trainer with CUDA's defaults (parked
    suspends off the stacks, packed slot moves and initial weights, admits told ahead) decides
    and reports exactly what the CPU defaults do."""
    from altosim.policy.controller import Controller, ControllerConfig

    jobs = [JobSpec(f"j{i}", "t", lr, r, b, seed=i)
            for i, (lr, r, b) in enumerate([(3e-2, 4, 2), (1e-4, 2, 1), (5e-3, 8, 2), (2e-2, 2, 1)])]
    task = _task(jobs, samples=8, every=2)

    def trainer(cuda_defaults):
        tr = MultiAdapterTrainer(copy.deepcopy(base), capacity=2, park=cuda_defaults)
        tr.store.pack = cuda_defaults
        return tr

    traces, parked = [], []
    for cuda_defaults in (False, True):
        ctl = Controller(ControllerConfig(num_gpus=1, early_exit="alto", inter_task="fifo"), duration_for=lambda t: 1.0)
        made = []
        backend = RuntimeBackend(ctl, lambda t, g: made.append(trainer(cuda_defaults)) or made[-1],
                                 lambda t: RandomData(), clock=lambda: 0.0)
        traces.append(backend.run([task]).trace)
        parked.append(made[0].store.parked)
    assert traces[0] == traces[1]
    assert {"Suspend", "Admit", "Stop"} <= {type(x).__name__ for x in traces[0]}
    assert parked[0] == [] and parked[1]  # (the suspended jobs that never came back stay parked)
