"""The validation metric the paper tracked during training: in-batch-of-100 top-10% retrieval.

Validation pairs are cut into batches of 100; within each, a query is a hit when its true
partner ranks within the top floor(10% of 100) = 10 of the 100 candidates by cosine similarity.
Ties count as the expected hit under a random order (as in tasks/evaluate/metrics.py), so a
constant embedding scores chance (0.1), not 0 or 1. Pure torch, so it runs on the training device.
The full evaluation (whole-set curves, proposal-level hits) is tasks/evaluate's job.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def topk_hit_rate(sim: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per-row expected hit (0..1) of the diagonal partner within the top `fraction` of candidates."""
    n = sim.shape[0]
    k = max(1, math.floor(fraction * n + 1e-9))
    true = sim.diagonal().unsqueeze(1)
    off = ~torch.eye(n, dtype=torch.bool, device=sim.device)
    greater = ((sim > true) & off).sum(dim=1).float()
    tied = ((sim == true) & off).sum(dim=1).float()
    return ((k - greater) / (tied + 1.0)).clamp(0.0, 1.0)


@torch.no_grad()
def in_batch_topk_accuracy(image_features: torch.Tensor, text_features: torch.Tensor, *,
                           batch_size: int = 100, fraction: float = 0.10) -> dict[str, float]:
    """Mean top-`fraction` hit rate over consecutive batches of `batch_size` pairs, both directions.

    A remainder smaller than `batch_size` is dropped (its chance level would differ), unless the
    whole set is smaller than one batch, in which case it is used as a single batch.
    """
    if image_features.shape != text_features.shape or image_features.ndim != 2:
        raise ValueError(f"paired features must have one shape, got {tuple(image_features.shape)} "
                         f"and {tuple(text_features.shape)}")
    n = image_features.shape[0]
    if n < 2:
        raise ValueError("retrieval needs at least two pairs")
    images = F.normalize(image_features.float(), dim=-1)
    texts = F.normalize(text_features.float(), dim=-1)
    size = batch_size if n >= batch_size else n
    i2t, t2i = [], []
    for start in range(0, n - size + 1, size):
        sim = images[start:start + size] @ texts[start:start + size].T
        i2t.append(topk_hit_rate(sim, fraction))
        t2i.append(topk_hit_rate(sim.T, fraction))
    return {
        "image_to_text": torch.cat(i2t).mean().item(),
        "text_to_image": torch.cat(t2i).mean().item(),
        "pairs": float(len(i2t) * size),
    }
