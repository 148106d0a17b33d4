"""Contrastive losses: open_clip's ClipLoss (InfoNCE) and SigLipLoss, distributed-aware.

The temperature: open_clip models return `exp(logit_scale)` as their third output, and the losses
multiply cosine similarities by it. That is the standard CLIP form; the reference implementation
of the paper multiplied by `logit_scale` itself (about 4.6 instead of 100, an effective temperature
of about 0.22). Hold the temperature fixed with `TrainConfig.fixed_temperature` (see
`model.fix_temperature`); otherwise it is learned and clamped to at most 100, as in CLIP.
"""

from __future__ import annotations

import math

import torch
from open_clip import ClipLoss
from open_clip.loss import SigLipLoss
from torch import nn

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: a temperature never below 0.01


def create_loss(kind: str, rank: int = 0, world_size: int = 1) -> nn.Module:
    """'clip' or 'siglip'. With several ranks, features are gathered from all of them (with grad),
    and each rank computes the loss of its own rows against every column (open_clip's local loss),
    so the mean over ranks equals the single-process loss on the global batch."""
    if kind == "clip":
        distributed = world_size > 1
        return ClipLoss(local_loss=distributed, gather_with_grad=distributed, cache_labels=True,
                        rank=rank, world_size=world_size)
    if kind == "siglip":
        return SigLipLoss(rank=rank, world_size=world_size)
    raise ValueError(f"unknown loss {kind!r}; known: clip, siglip")


@torch.no_grad()
def clamp_logit_scale(model: nn.Module) -> None:
    """Keep a learned logit scale within [0, ln 100] (open_clip's trainer does the same)."""
    scale = model.logit_scale
    if scale.requires_grad:
        scale.clamp_(0, MAX_LOGIT_SCALE)
