"""The validation metric the paper tracked during training: in-batch-of-100 top-10% retrieval.

Validation pairs are cut into consecutive batches of 100, in the order the validation loader
gives them; within each, a query is a hit when its true partner ranks within the top
floor(10% of 100) = 10 of the 100 candidates by cosine similarity. The metric itself (ranks,
ties, cut-off, batching) is tasks/evaluate/metrics.py's; this wrapper only takes the training
loop's torch features, batches them in order (the evaluation shuffles with a seed instead) and
checks what validation needs. The features go to the CPU for it: a few thousand 100 x 100
blocks cost nothing next to encoding the pairs.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.evaluate.metrics import inbatch_batches, inbatch_hit_rates


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
    batches = inbatch_batches(np.arange(n), batch_size)
    hits = inbatch_hit_rates(_numpy(image_features), _numpy(text_features), batches, fraction_pct=fraction * 100)
    return {
        "image_to_text": float(hits["i2t"].mean()),
        "text_to_image": float(hits["t2i"].mean()),
        "pairs": float(len(batches) * len(batches[0])),
    }


def _numpy(features: torch.Tensor) -> np.ndarray:
    return features.detach().float().cpu().numpy()
