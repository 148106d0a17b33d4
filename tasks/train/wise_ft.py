"""WiSE-FT (Wortsman et al. 2022): interpolate the weights of the base and the fine-tuned model.

theta(alpha) = (1 - alpha) * theta_base + alpha * theta_finetuned. alpha = 0 is the base model,
alpha = 1 the fine-tuned one; intermediate values often keep the base's robustness with most of
the fine-tuned accuracy. Both models must share an architecture (same keys and shapes).
"""

from __future__ import annotations

import torch

from schemas.errors import InputError


def interpolate_state_dicts(base: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """Weight-space interpolation; integer buffers (none in CLIP today) are taken from `finetuned`."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"WiSE-FT alpha must be within [0, 1], got {alpha}")
    if base.keys() != finetuned.keys():
        differ = sorted(set(base) ^ set(finetuned))[:5]
        raise InputError(f"WiSE-FT needs two models of one architecture; keys differ: {differ}")
    out: dict[str, torch.Tensor] = {}
    for key, ft in finetuned.items():
        b = base[key]
        if b.shape != ft.shape:
            raise InputError(f"WiSE-FT: {key} has shape {tuple(b.shape)} in the base, {tuple(ft.shape)} fine-tuned")
        if ft.is_floating_point():
            # torch.lerp is exact at both ends: alpha=0 gives the base, alpha=1 the fine-tuned weights.
            out[key] = torch.lerp(b.to(ft.dtype), ft, alpha)
        else:
            out[key] = ft.clone()
    return out
