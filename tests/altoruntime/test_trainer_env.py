"""`alto run` and `alto profile` build trainers on the same paths (ALTO_LORA_IMPL, ALTO_OPTIM_IMPL)."""

import pytest

from altoruntime.backbone import tiny_llama
from altoruntime.trainer import env_paths, trainer_from_env


def test_env_picks_the_lora_and_optimizer_paths():
    tr = trainer_from_env(tiny_llama(), capacity=2, env={"ALTO_LORA_IMPL": "loop", "ALTO_OPTIM_IMPL": "loop"})
    assert (tr.ctx.impl, tr.store.optim.impl) == ("loop", "loop")
    tr = trainer_from_env(tiny_llama(), capacity=2, env={})
    assert (tr.ctx.impl, tr.store.optim.impl) == ("auto", "fused")
    assert env_paths({"ALTO_OPTIM_IMPL": "loop", "ALTO_KERNELS_AUTOTUNE": "0", "HOME": "/x"}) == \
        "lora=auto optim=loop ALTO_KERNELS_AUTOTUNE=0"


@pytest.mark.parametrize("var, value", [("ALTO_LORA_IMPL", "cuda"), ("ALTO_OPTIM_IMPL", "adam")])
def test_unknown_path_names_the_variable(var, value):
    with pytest.raises(ValueError, match=f"^{var}: expected .*{value!r}"):
        trainer_from_env(tiny_llama(), capacity=1, env={var: value})


def test_profile_builds_its_trainers_from_the_env(monkeypatch, tmp_path):
    """A profile point steps on the optimizer path the env names (the run's), and says so."""
    from altoruntime import profile, trainer

    seen = []
    real = trainer.trainer_from_env

    def spy(*a, **k):  # noqa: ANN002, ANN003, ANN202
        tr = real(*a, **k)
        seen.append(tr.store.optim.impl)
        return tr

    monkeypatch.setenv("ALTO_OPTIM_IMPL", "loop")
    monkeypatch.setattr(trainer, "trainer_from_env", spy)
    grid = profile.Grid(adapters=(1,), ranks=(4,), batches=(1,), seqs=(8,))
    prof, _ = profile.run_profile(["tiny"], grid, tmp_path / "p.csv", steps=1, warmup=0, device="cpu", quiet=True)
    assert seen == ["loop"] and "optim=loop" in prof.source


def test_call_log_records_each_fused_call():
    """ALTO_CALL_LOG=1: every training step and validation forward is one row (kind, size, graph outcome)."""
    from tests.altoruntime._batches import make_batch

    tr = trainer_from_env(tiny_llama(), capacity=2, env={"ALTO_CALL_LOG": "1"})
    assert trainer_from_env(tiny_llama(), capacity=1, env={}).calls is None
    tr.admit("a", rank=4)
    tr.admit("b", rank=8)
    b = make_batch(0, 2, 12)
    tr.step({"a": b, "b": make_batch(1, 1, 12)})
    tr.evaluate_tokens({"a": b})
    assert [(c["kind"], c["adapters"], c["rows"], c["graph"]) for c in tr.calls] == [("train", 2, 3, "eager"),
                                                                                    ("eval", 1, 2, "eager")]
    assert all(c["length"] >= 12 and c["ms"] > 0 for c in tr.calls)
    with pytest.raises(ValueError, match="^ALTO_CALL_LOG: expected"):
        trainer_from_env(tiny_llama(), capacity=1, env={"ALTO_CALL_LOG": "yes"})
