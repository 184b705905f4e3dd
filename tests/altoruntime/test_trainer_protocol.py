"""The single-device and the AP trainer both implement the `Trainer` protocol the backend drives
(same members, same signatures), and one adapter's state moves between two stores exactly."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from altoruntime.backbone import tiny_llama
from altoruntime.parallel import APTrainer
from altoruntime.protocol import Trainer
from altoruntime.trainer import MultiAdapterTrainer
from tests.altoruntime._batches import make_batch

MEMBERS = sorted({n for n in vars(Trainer) if not n.startswith("_")} | {"__contains__"})


def _params(fn) -> list[tuple[str, object, object]]:
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("impl", [MultiAdapterTrainer, APTrainer], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", MEMBERS)
def test_trainer_has_the_protocol_member_with_its_signature(impl, name):
    want, got = inspect.getattr_static(Trainer, name), inspect.getattr_static(impl, name, None)
    assert got is not None, f"{impl.__name__} lacks {name}"
    if isinstance(want, property):
        assert isinstance(got, property), f"{impl.__name__}.{name} should be a property"
    else:
        assert _params(getattr(impl, name)) == _params(getattr(Trainer, name))


def test_protocol_lists_what_the_backend_calls():
    assert {"step", "evaluate_tokens", "admit", "suspend", "resume", "drop", "has_best", "restore_best",
            "snapshot_best", "applied", "state_dict", "load_state_dict", "active", "__contains__"} <= set(MEMBERS)
    assert isinstance(MultiAdapterTrainer(tiny_llama(), capacity=1), Trainer)


def test_an_adapter_moves_between_stores_exactly():
    base = tiny_llama(seed=0)
    src, dst, ref = (MultiAdapterTrainer(copy.deepcopy(base), capacity=2) for _ in range(3))
    for t in (src, ref):
        t.admit("a", rank=4, lr=1e-2, seed=1)
    dst.admit("other", rank=2, lr=1e-2, seed=2)  # "a" lands in another slot there
    for s in range(3):
        if s == 2:
            src.snapshot_best("a")
            ref.snapshot_best("a")
        for t in (src, ref):
            t.step({"a": make_batch(s, 2, 9)})
    with pytest.raises(ValueError, match="is active, expected suspended"):
        src.store.export_adapter("a")
    src.suspend("a")
    state = src.store.export_adapter("a")
    src.drop("a")
    dst.store.import_adapter("a", state)
    with pytest.raises(ValueError, match="already exists"):
        dst.store.import_adapter("a", state)
    assert "a" not in src and dst.status("a") == "suspended" and dst.has_best("a")
    dst.resume("a")
    assert dst.step_count("a") == ref.step_count("a") == 3
    for (_, a, b), (_, a0, b0) in zip(dst.adapter_weights("a"), ref.adapter_weights("a")):
        assert torch.equal(a, a0) and torch.equal(b, b0)
    batch = make_batch(9, 2, 9)
    assert dst.step({"a": batch})["a"] == pytest.approx(ref.step({"a": batch})["a"], rel=1e-6)
    for (_, a, b), (_, a0, b0) in zip(dst.adapter_weights("a"), ref.adapter_weights("a")):
        torch.testing.assert_close(a, a0, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(b, b0, rtol=1e-6, atol=1e-8)
    for (a, b), (a0, b0) in zip(dst.best_weights("a"), ref.best_weights("a")):
        assert torch.equal(a, a0) and torch.equal(b, b0)
