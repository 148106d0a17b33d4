"""What the training loop eats: batches of (images, tokens, proposal_ids), from any source.

A batch source is any iterable that yields one epoch of `(images [B,3,S,S] uint8 or float,
tokens [B,ctx] long, proposal_ids)` per `iter()`, or tasks.dataset's `Batch` records (whose
images may still be JPEGs to decode on the GPU). uint8 images are normalised on the training
device with the model's mean/std (cheap there, and 4x less to copy); float images are taken as
already normalised. A source may offer `set_epoch(n)` (reshuffle), and `state_dict()` /
`load_state_dict()` (its own resumable position); `BatchStream` turns it into an endless,
resumable stream either way, by fast-forwarding when the source cannot restore itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, Sequence[Any]]


def batch_size_of(batch: Any) -> int:
    if hasattr(batch, "proposal_ids"):
        return len(batch.proposal_ids)
    return int(batch[0].shape[0])


def unpack(batch: Any, device: torch.device) -> Batch:
    """(images, tokens, proposal_ids) from a plain triple or a tasks.dataset Batch.

    A dataset batch's images come to `device` still as uint8 (tasks.dataset.batch.device_images,
    which also decodes them there with GPU decoding), so normalisation stays the model's own
    (ImagePrep). A plain triple is returned as it is.
    """
    if not hasattr(batch, "proposal_ids"):
        return batch
    if batch.tokens is None:
        raise ValueError("the batch has no tokens: the loader needs the model's tokenizer")
    from tasks.dataset.batch import device_images

    return device_images(batch, device), batch.tokens, batch.proposal_ids


class BatchStream:
    """Endless batches over epochs of a source, with a position that checkpoints can save."""

    def __init__(self, source: Iterable[Batch]):
        self.source = source
        self.epoch = 0
        self.index = 0  # batches already taken from the current epoch
        self._iterator: Iterator[Batch] | None = None
        self._skip = 0
        self._source_restored = False

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "index": self.index}
        if hasattr(self.source, "state_dict"):
            state["source"] = self.source.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.index = int(state.get("index", 0))
        self._iterator = None
        if "source" in state and hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state["source"])
            self._skip = 0
            self._source_restored = True  # the source resumes mid-epoch by itself
            # ...and may not resume where it was saved (ShardLoader restarts the epoch under another
            # layout): count from where it really is, or the stream's next epoch would replay one.
            self.epoch = int(getattr(self.source, "epoch", self.epoch))
            self.index = int(getattr(self.source, "position", self.index))
        else:
            self._skip = self.index  # replay the epoch's order and drop what was already used

    def _start_epoch(self) -> None:
        if hasattr(self.source, "set_epoch") and not self._source_restored:
            self.source.set_epoch(self.epoch)
        self._source_restored = False
        self._iterator = iter(self.source)
        for _ in range(self._skip):
            next(self._iterator)
        self._skip = 0

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        if self._iterator is None:
            self._start_epoch()
        assert self._iterator is not None
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self.index == 0:
                raise RuntimeError("the batch source yielded no batch in a whole epoch") from None
            self.epoch += 1
            self.index = 0
            self._start_epoch()
            batch = next(self._iterator)
        self.index += 1
        return batch


class ImagePrep:
    """Move a batch to the device; normalise uint8 images there with the model's mean/std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        from tasks.dataset.augment import (  # here, not at import: as in tasks.train.data
            channel_stats,
            normalize,
        )

        self.device = device
        self._normalize = normalize  # bound once: `images` runs every step
        # Made once: the CUDA-graph step calls `images` during capture, where no host copy may run.
        self.mean, self.std = channel_stats(mean, std, torch.float32, device)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            return self._normalize(images, torch.float32, self.mean, self.std)
        return images.float()

    def tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.to(self.device, non_blocking=True).long()


def shuffle_captions(tokens: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """The shuffled-pairs control: a fresh random pairing inside each batch (must stay at chance).

    Seeded from (seed, step) with its own generator, so it is reproducible and resumable and
    never disturbs the global RNG.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    perm = torch.randperm(tokens.shape[0], generator=generator)
    return tokens[perm.to(tokens.device)]
