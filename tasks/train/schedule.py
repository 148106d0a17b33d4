"""Learning-rate schedules: linear warm-up, then constant (the paper) or cosine decay.

`lr_factor` is a pure function of the step so a resumed run gets exactly the same rates; the
scheduler is a LambdaLR around it, whose state is saved in every checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        decay_steps = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}; known: constant, cosine")


def create_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, kind: str) -> LambdaLR:
    lr_factor(0, warmup_steps=warmup_steps, total_steps=total_steps, kind=kind)  # fail on a bad kind now
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps=warmup_steps,
                                                     total_steps=total_steps, kind=kind))


def create_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, fused: bool = False,
                     capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no decay on gains, biases, embeddings' scales and logit scale.

    Betas and eps are AdamW's defaults, which are also optax's (the reference trained with JAX).
    `fused` (CUDA) runs the update as one kernel per group; `capturable` plus a tensor learning
    rate lets a CUDA graph replay the step while the scheduler still changes the rate.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
                   or "logit_scale" in name or "positional_embedding" in name)
        (no_decay if exclude else decay).append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    groups = [g for g in groups if g["params"]]
    if capturable:
        device = next(p for g in groups for p in g["params"]).device
        return torch.optim.AdamW(groups, lr=torch.tensor(lr, device=device), fused=fused,
                                 capturable=True)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)
