"""What the loader yields, and the device-side last step that turns it into model input."""

from __future__ import annotations

from typing import NamedTuple

import torch

from tasks.dataset.augment import augment_on_device, normalize


class Batch(NamedTuple):
    """One batch. `images` is uint8 [B, 3, S, S] (CPU decoding) or None (decode_device='cuda': then
    `encoded` holds the JPEGs as uint8 tensors and `params` the drawn crops and symmetries)."""

    images: torch.Tensor | None
    tokens: torch.Tensor | None
    proposal_ids: list[str]
    obsids: list[str]
    captions: list[str]
    jpegs: list[bytes] | None = None
    encoded: list[torch.Tensor] | None = None
    params: torch.Tensor | None = None
    crop: int = 0
    resize_to: int | None = None

    @property
    def size(self) -> int:
        return len(self.obsids)


def device_images(batch: Batch, device: torch.device | str, non_blocking: bool = True) -> torch.Tensor:
    """The batch's uint8 images [B, 3, S, S] on `device`: copied there when the loader decoded them,
    decoded and augmented there when it handed over JPEGs (decode_device='cuda')."""
    device = torch.device(device)
    if batch.images is not None:
        return batch.images.to(device, non_blocking=non_blocking)
    if batch.encoded is None or batch.params is None:
        raise ValueError("batch has neither decoded images nor encoded JPEGs with parameters")
    return augment_on_device(batch.encoded, batch.params, batch.crop, batch.resize_to, device)


def to_model_input(batch: Batch, device: torch.device | str, dtype: torch.dtype = torch.float32,
                   non_blocking: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(CLIP-normalised images [B, 3, S, S] in `dtype`, tokens) on `device`.

    The uint8 -> float conversion and the normalisation run on the device, so the CPU hands over
    a quarter of the bytes and skips the arithmetic; with GPU decoding the JPEGs are decoded here.
    """
    images = device_images(batch, device, non_blocking)
    tokens = batch.tokens.to(device, non_blocking=non_blocking) if batch.tokens is not None else None
    return normalize(images, dtype), tokens
