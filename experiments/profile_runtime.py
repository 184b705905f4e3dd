"""Where the fused runtime's time goes: host (cProfile) and device (torch.profiler) views.

Three measurements on one backbone, written as text tables under --out:
1. `alto run`'s loop on a short version of the 60-config grid under cProfile (wall, top functions);
2. torch.profiler over a few fused training steps with all configs admitted, and over one fused
   evaluation call (ops by self CPU time and by device time, launches per step);
3. the same for one PEFT adapter step (the standard loop), for the launch count it pays.

    python experiments/profile_runtime.py --backbone /root/model/SmolLM2-135M-Instruct.Q4_1.gguf --out $OUT
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e_sweep  # noqa: E402  (the grid and the cached backbone loader)
from altoruntime.backbone import LLAMA_TARGETS  # noqa: E402
from altoruntime.run import open_backbone  # noqa: E402  (e2e_sweep patched it with a cache)
from altoruntime.task_data import SplitData  # noqa: E402
from altoruntime.trainer import MultiAdapterTrainer  # noqa: E402
from altosim.argparser import OneLineParser, count  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def loop_profile(args, out: Path) -> None:
    """cProfile of `alto run` on the grid, shortened to --samples per config."""
    wl = e2e_sweep.workload(args.dataset, args.samples, args.evals, args.seq_len, args.ranks)
    wl_file = out / "profile_workload.json"
    e2e_sweep.write_workload(wl, wl_file)
    ns = argparse.Namespace(backbone=args.backbone, n_train=args.n_train, n_val=args.n_val, n_eval=0, warmup=0.05,
                            log_every=25)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    e2e_sweep.run_ours(ns, wl_file, "none", out / "run_profile")
    prof.disable()
    wall = time.perf_counter() - t0
    s = io.StringIO()
    s.write(f"alto run, 60 configs x {args.samples} samples, {args.evals} evals each: wall {wall:.1f} s\n\n")
    st = pstats.Stats(prof, stream=s)
    st.sort_stats("tottime").print_stats(40)
    st.sort_stats("cumulative").print_stats(60)
    (out / "loop_cprofile.txt").write_text(s.getvalue())
    print(s.getvalue()[:6000], flush=True)


def table(prof, sort: str, n: int = 40) -> str:
    return prof.key_averages().table(sort_by=sort, row_limit=n, max_name_column_width=60)


def step_profile(args, out: Path) -> None:
    """torch.profiler over fused steps with every config of the grid admitted."""
    from torch.profiler import ProfilerActivity, profile

    from altoruntime.data import get_dataset

    base = open_backbone(args.backbone, torch.bfloat16)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = get_dataset(args.dataset, n_train=args.n_train, n_val=args.n_val, n_eval=1, seed=0)
    data = SplitData(ds.tokenize(base.tokenizer, "train", seq_len=args.seq_len),
                     ds.tokenize(base.tokenizer, "val", seq_len=args.seq_len), 16)
    task = e2e_sweep.workload(args.dataset, 384, 40, args.seq_len, args.ranks).to_task_specs()[0]
    import copy
    tr = MultiAdapterTrainer(copy.deepcopy(base.model).to(dev), capacity=8,
                             pad_token_id=base.tokenizer.pad_token_id or 0)
    for j in task.jobs:
        tr.admit(j.job_id, rank=j.rank, alpha=j.alpha, lr=j.lr, seed=j.seed)
    pos = {j.job_id: 0 for j in task.jobs}

    def batches():
        out_b = {}
        for j in task.jobs:
            out_b[j.job_id], pos[j.job_id] = data.train_batch(j, pos[j.job_id])
        return out_b

    lines = []
    for _ in range(3):  # warm-up (Triton autotune, allocator)
        tr.step(batches())
    sync()
    for label, fn in (("step", lambda: tr.step(batches())),
                      ("snapshot_best x60", lambda: [tr.snapshot_best(j.job_id) for j in task.jobs]),
                      ("eval 16 jobs x 1 val batch", lambda: tr.evaluate_tokens(
                          {j.job_id: data.val_batches()[0] for j in task.jobs[:16]}))):
        ts = []
        for _ in range(3):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        lines.append(f"{label}: {', '.join(f'{1e3 * t:.1f}' for t in ts)} ms")
    ids = batches()
    toks = sum(int(b[0].numel()) for b in ids.values())
    lines.append(f"tokens per fused step (padded): {toks}; adapters {len(ids)}")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(2):
            tr.step(batches())
        sync()
    text = "\n".join(lines) + "\n\n== 2 fused steps, by self CPU ==\n" + table(prof, "self_cpu_time_total")
    if dev.type == "cuda":
        text += "\n\n== by device time ==\n" + table(prof, "self_cuda_time_total")
        launches = sum(e.count for e in prof.key_averages() if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                                          "cudaLaunchKernelExC"))
        text += f"\n\nkernel launches in 2 steps: {launches}\n"
    with profile(activities=acts) as prof:
        tr.evaluate_tokens({j.job_id: data.val_batches()[0] for j in task.jobs[:16]})
        sync()
    text += "\n\n== one fused eval call, by self CPU ==\n" + table(prof, "self_cpu_time_total", 25)
    (out / "step_profile.txt").write_text(text)
    print(text[:8000], flush=True)


def peft_profile(args, out: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from torch.profiler import ProfilerActivity, profile

    from altoruntime.data import get_dataset

    base = open_backbone(args.backbone, torch.bfloat16)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = get_dataset(args.dataset, n_train=args.n_train, n_val=8, n_eval=1, seed=0)
    split = ds.tokenize(base.tokenizer, "train", seq_len=args.seq_len)
    import copy
    model = get_peft_model(copy.deepcopy(base.model).to(dev), LoraConfig(
        r=16, lora_alpha=32, target_modules=list(LLAMA_TARGETS), lora_dropout=0.0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = list(split.batches(1, epoch=0, seed=0))

    def step(i):
        bt = batches[i % len(batches)]
        loss = model(input_ids=bt.input_ids.to(dev), attention_mask=bt.attention_mask.to(dev),
                     labels=bt.labels.to(dev)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(3):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(5):
        step(i)
    sync()
    text = f"PEFT r=16 b=1: {(time.perf_counter() - t0) / 5 * 1e3:.1f} ms/step\n"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step(0)
        sync()
    text += table(prof, "self_cpu_time_total", 25)
    (out / "peft_profile.txt").write_text(text)
    print(text[:3000], flush=True)


def main() -> None:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--dataset", default="arithmetic")
    ap.add_argument("--n-train", type=count(1, 10**9), default=128)
    ap.add_argument("--n-val", type=count(1, 10**9), default=48)
    ap.add_argument("--samples", type=count(1, 10**9), default=48, help="samples per config in the loop profile")
    ap.add_argument("--evals", type=count(1, 100_000), default=8)
    ap.add_argument("--seq-len", type=count(1, 1 << 20), default=256)
    ap.add_argument("--ranks", default="16,32,64")
    ap.add_argument("--parts", default="step,peft,loop")
    ap.add_argument("--out", default="results/profile")
    args = ap.parse_args()
    args.ranks = ap.int_list("--ranks", args.ranks)
    parts = ap.name_list("--parts", args.parts, ("step", "peft", "loop"))
    e2e_sweep.check_data_and_backbone(args.dataset, args.backbone, args.ranks, args.n_train, args.n_val)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "step" in parts:
        step_profile(args, out)
    if "peft" in parts:
        peft_profile(args, out)
    if "loop" in parts:
        loop_profile(args, out)


if __name__ == "__main__":
    from script_errors import run_script  # noqa: E402  # experiments/ is the script's folder

    run_script(main)
