"""Shared test helpers for runtime tests: tiny batches and a PEFT reference trainer."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from altoruntime.backbone import LLAMA_TARGETS
from tests.altoruntime._batches import VOCAB, make_batch  # noqa: F401 (re-exported)


class PeftReference:
    """One adapter trained alone the standard way: PEFT model + torch.optim.AdamW."""

    def __init__(self, backbone, rank, alpha, lr, weight_decay=0.01, seed=0, targets=LLAMA_TARGETS):
        torch.manual_seed(seed)
        cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
        self.model = get_peft_model(copy.deepcopy(backbone), cfg)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def step(self, batch) -> float:
        ids, mask, labels = batch
        self.model.train()
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return float(loss)

    def weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        sd = self.model.state_dict()
        out = {}
        for k, v in sd.items():
            if ".lora_A.default.weight" in k:
                name = k.removeprefix("base_model.model.").removesuffix(".lora_A.default.weight")
                out[name] = (v, sd[k.replace("lora_A", "lora_B")])
        return out


def close_to(x: torch.Tensor, ref: torch.Tensor, lr: float) -> None:
    """Relative Frobenius error < 1e-4, and no element off by more than 1% of one Adam step
    (Adam divides by sqrt(v): a coordinate whose gradient is ~0 amplifies rounding noise)."""
    assert float((x - ref).norm() / ref.norm()) < 1e-4
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-2 * lr)


def assert_matches(trainer, job_id: str, ref: PeftReference, lr: float) -> None:
    """The trainer's adapter equals the PEFT reference's, layer by layer."""
    w = ref.weights()
    names = [n for n, _, _ in trainer.adapter_weights(job_id)]
    assert sorted(names) == sorted(w)
    for name, a, b in trainer.adapter_weights(job_id):
        close_to(a, w[name][0], lr)
        if float(w[name][1].norm()) == 0.0:
            assert float(b.norm()) == 0.0
        else:
            close_to(b, w[name][1], lr)


def assert_runs_match(runs, jobs) -> None:
    """Every step's fused loss equals the adapter trained alone, and so do the final weights.
    `runs`: (trainer, refs, fused, alone) with per-step loss dicts; `jobs`: (job_id, _, _, lr, ...)."""
    trainer, refs, fused, alone = runs
    for s, losses in enumerate(alone):
        for j in losses:
            assert fused[s][j] == pytest.approx(losses[j], rel=1e-5, abs=1e-6), (s, j)
    for j, _, _, lr, *_ in jobs:
        assert_matches(trainer, j, refs[j], lr)


def assert_adapters_close(want, got, rtol: float, atol: float) -> None:
    """Every job's adapter weights (`adapter_weights` per job) in `got` close to `want`'s, layer by layer."""
    for j in want:
        for (_, a1, b1), (_, a2, b2) in zip(want[j], got[j], strict=True):
            torch.testing.assert_close(a2, a1, rtol=rtol, atol=atol)
            torch.testing.assert_close(b2, b1, rtol=rtol, atol=atol)


def run_interpreted(script: str) -> dict:
    """Run `script` (which prints one JSON line last) in a subprocess with Triton's CPU interpreter
    on (it must be set before triton is imported); its parsed output."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "ALTO_KERNELS_AUTOTUNE": "0", "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_step_results_close(ref: list[dict], got: list[dict], rel: float = 1e-5) -> None:
    """Per step, the same adapters in the same order with losses (or sums) within `rel`."""
    assert len(ref) == len(got)
    for r0, r1 in zip(ref, got):
        assert list(r0) == list(r1)
        for j in r0:
            assert abs(r0[j] - r1[j]) <= rel * abs(r0[j])


def assert_sums_close(ref: list[float], got: list[float], rel: float = 1e-4) -> None:
    """Per-layer weight sums (or any non-negative figures) within `rel` of the reference's."""
    assert len(ref) == len(got)
    assert all(abs(x - y) <= rel * max(x, 1e-6) for x, y in zip(ref, got))


def weight_sums(trainer, job_ids) -> dict[str, list[float]]:  # noqa: ANN001
    """Each adapter's per-layer |A| + |B| sums (JSON-able: what interpreted scripts print)."""
    return {j: [float(b.abs().sum()) + float(a.abs().sum()) for _, a, b in trainer.adapter_weights(j)] for j in job_ids}


def assert_scripted_runs_agree(runs: dict, results: dict, reference: tuple, graphed: tuple) -> None:
    """Runs of one step script (`test_step_graphs._script`), keyed as `runs`, against the run keyed
    `reference`: the same losses and evaluations, and adapters within AdamW's rounding (its normalized
    update turns a rounding difference in a near-zero gradient into a step of up to lr: a few elements
    differ by ~1e-5; H200: 1 of 128, 1.2e-5). The run keyed `graphed` must have captured and replayed."""
    graphs = runs[graphed].graphs
    assert graphs.disabled is None, graphs.failure_trace
    assert graphs.stats["replayed"] > graphs.stats["captured"] > 0, dict(graphs.stats)
    want, w_want = results[reference]
    for key in (k for k in results if k != reference):
        got, w_got = results[key]
        for a, b in zip(want, got, strict=True):
            if isinstance(a, dict) and a and isinstance(next(iter(a.values())), float):
                assert b == pytest.approx(a, rel=1e-4, abs=1e-6), key
            else:
                for j in a:
                    assert b[j].tokens == a[j].tokens and b[j].correct == a[j].correct
                    assert b[j].loss_sum == pytest.approx(a[j].loss_sum, rel=1e-4), key
        assert_adapters_close(w_want, w_got, rtol=1e-3, atol=5e-5)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """`rows` as a JSONL file at `path` (its folder made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
