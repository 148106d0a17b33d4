from __future__ import annotations

import pytest
import torch

from tasks.train.schedule import create_optimizer, create_scheduler, lr_factor


def test_linear_warmup_then_constant():
    f = [lr_factor(s, warmup_steps=4, total_steps=10, kind="constant") for s in range(10)]
    assert f == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_cosine_decays_to_zero_after_warmup():
    f = [lr_factor(s, warmup_steps=2, total_steps=12, kind="cosine") for s in range(13)]
    assert f[:3] == [0.5, 1.0, 1.0]
    assert all(a >= b for a, b in zip(f[2:], f[3:], strict=False))
    assert f[12] == pytest.approx(0.0, abs=1e-12) and f[7] == pytest.approx(0.5)


def test_scheduler_drives_the_optimizer_and_skips_decay_on_gains():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = create_optimizer(model, lr=0.1, weight_decay=0.01)
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    assert len(decayed) == 1 and len(decayed[0]["params"]) == 1  # only the Linear weight
    sched = create_scheduler(opt, warmup_steps=2, total_steps=4, kind="constant")
    seen = []
    for _ in range(3):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.05, 0.1, 0.1])
    with pytest.raises(ValueError):
        create_scheduler(opt, warmup_steps=0, total_steps=4, kind="linear")
