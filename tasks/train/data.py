"""The training stage's view of a dataset version: checked up front, then streamed as batches.

Everything about shards, augmentation, captions and tokenization is tasks/dataset's; this
module only opens the version, refuses one without training pairs, or a batch or crop its train
split cannot serve, before any model is built, and asks the dataset's loader for the batches
the config implies (rank-aware under DDP).

Validation runs many times per run (40 in the paper preset) over the same pairs, and its batches
are deterministic: evaluation order, centre crop, captions drawn from the seed and the batch's
place in a fresh loader's first epoch. So the first pass is kept in memory and replayed
(`CachedPasses`) instead of rebuilding the loader and decoding every image again each time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from schemas.errors import InputError
from schemas.train import TrainConfig
from tasks.train.batches import Batch, batch_size_of

log = logging.getLogger(__name__)

# The most validation batch memory kept for the whole run: uint8 images and tokens in host memory,
# as the loader yields them (page-locked on CUDA runs, where the loader pins). The paper preset's
# 3000 pairs at 224 px take 452 MB; past this limit (a bigger val_pairs or crop) each validation
# rebuilds its loader as before, rather than holding gigabytes of host memory through training to
# save a few seconds per validation.
VAL_KEEP_BYTES = 1 << 30


@dataclass
class TrainingData:
    version: str
    digest: str  # the dataset manifest's digest: this stage's input cache key
    counts: dict[str, int]
    dataset: Any  # tasks.dataset DatasetVersion

    def verify(self) -> None:
        """Check every shard against the manifest (reads them all: only for a run that will train)."""
        self.dataset.verify()

    def check_fit(self, cfg: TrainConfig, *, world_size: int, image_size: int | None) -> None:
        """InputError naming the setting when the train split cannot serve the config's batches.

        The loader finds the same problems, but only once the model is built and the run
        directory written. `image_size` is the model's crop side (None: not known yet, unchecked).
        """
        if cfg.batch_size % world_size:
            raise InputError(f"batch_size {cfg.batch_size} does not split evenly over {world_size} ranks")
        train = self.counts["train"]
        if train // world_size < cfg.batch_size // world_size:
            over = f" over {world_size} ranks" if world_size > 1 else ""
            raise InputError(f"batch_size {cfg.batch_size} is larger than the train split of dataset "
                             f"{self.version} ({train} pairs{over})")
        if image_size is None:
            return
        if cfg.resize_to is not None and image_size > cfg.resize_to:
            raise InputError(f"image_size {image_size} (model {cfg.model}) is larger than resize_to {cfg.resize_to}: "
                             "the crop must fit in the resized image")
        stored = int(self.dataset.config.get("image_size", 512))
        if cfg.resize_to is None and image_size > stored:
            raise InputError(f"image_size {image_size} (model {cfg.model}) is larger than dataset {self.version}'s "
                             f"stored images ({stored} px): set resize_to to upscale them")

    def train_batches(self, cfg: TrainConfig, tokenizer: Any, image_size: int, *, rank: int = 0,
                      world_size: int = 1, pin_memory: bool = False) -> Iterable[Batch]:
        """The training split, augmented, at most one image per proposal per batch, this rank's share."""
        if cfg.batch_size % world_size:
            raise InputError(f"batch_size {cfg.batch_size} does not split evenly over {world_size} ranks")
        return self.dataset.make_loader(
            "train", tokenizer=tokenizer, batch_size=cfg.batch_size // world_size, image_size=image_size,
            resize_to=cfg.resize_to, caption_source=cfg.caption_source, seed=cfg.seed,
            num_workers=cfg.workers, rank=rank, world_size=world_size, pin_memory=pin_memory,
            decode_device=cfg.decode_device,
        )

    def val_batches(self, cfg: TrainConfig, tokenizer: Any, image_size: int,
                    pin_memory: bool = False) -> Callable[[], Iterable[Batch]] | None:
        """A factory of passes over the validation split (centre crop, no augmentation), or None.

        Each pass is the first `cfg.val_pairs` pairs (what validation encodes), kept after the
        first pass when they fit in VAL_KEEP_BYTES.
        """
        if not self.counts.get("val"):
            log.warning("dataset %s has no validation split: training without validation", self.version)
            return None

        def batches() -> Iterable[Batch]:
            # A fresh loader every time: its first epoch is the one the kept pass replays.
            return self.dataset.make_loader(
                "val", tokenizer=tokenizer, batch_size=100, image_size=image_size, resize_to=cfg.resize_to,
                caption_source=cfg.caption_source, seed=cfg.seed, num_workers=min(cfg.workers, 2),
                one_per_proposal=True, pin_memory=pin_memory, rank=0, world_size=1,
            )

        return CachedPasses(batches, max_pairs=cfg.val_pairs, max_bytes=VAL_KEEP_BYTES)


class CachedPasses:
    """Passes over a deterministic batch source, each up to `max_pairs` pairs: the first pass is
    built from `build()` and kept, later ones replay it. A pass over `max_bytes` is not kept, and
    every later pass is `build()` itself again, uncut, as before this cache (the consumer stops at
    `max_pairs` either way).

    Only a pass that reached `max_pairs` or the source's end is kept: one abandoned half way (an
    error while encoding) is built again next time. Kept batches are handed out as they are, so
    consumers must not modify them in place (the training loop's ImagePrep copies as it converts).
    """

    def __init__(self, build: Callable[[], Iterable[Batch]], *, max_pairs: int, max_bytes: int):
        self._build = build
        self.max_pairs = max_pairs
        self.max_bytes = max_bytes
        self.builds = 0  # how many times the source was built
        self._kept: list[Batch] | None = None
        self._too_large = False

    def __call__(self) -> Iterable[Batch]:
        if self._kept is not None:
            return iter(self._kept)
        self.builds += 1
        source = self._build()
        return source if self._too_large else self._first_pass(source)

    def _first_pass(self, source: Iterable[Batch]) -> Iterator[Batch]:
        kept: list[Batch] | None = []
        kept_bytes = pairs = 0
        for batch in source:
            if kept is not None:
                kept_bytes += _held_bytes(batch)
                if kept_bytes > self.max_bytes:
                    log.info("validation batches exceed %d MB: their loader is rebuilt at every validation",
                             self.max_bytes >> 20)
                    kept, self._too_large = None, True
                else:
                    kept.append(batch)
            pairs += batch_size_of(batch)
            complete = pairs >= self.max_pairs
            if complete and kept is not None:
                # Before the yield: the consumer stops after this batch and never resumes us.
                self._keep(kept, kept_bytes)
            yield batch
            if complete:
                return
        if kept is not None:
            self._keep(kept, kept_bytes)

    def _keep(self, kept: list[Batch], kept_bytes: int) -> None:
        self._kept = kept
        log.info("validation: %d batches (%.0f MB) kept for the run's later validations", len(kept),
                 kept_bytes / 2**20)


def _held_bytes(value: Any) -> int:
    """Bytes of the tensors (and raw bytes) in a batch: the memory that keeping it holds."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_held_bytes(item) for item in value)
    return 0


def open_training_data(data: str, version: str, *, verify: bool = True) -> TrainingData:
    """Open a dataset version for training; InputError if it is missing or has no train split.

    verify=False skips hashing the shards (the manifest's digest is the cache key, so a finished
    run is found without reading them); call `TrainingData.verify()` before training on them.
    """
    from tasks.dataset import open_dataset  # here, not at import: tasks.train loads without the data stack

    dataset = open_dataset(data, version, verify=verify)
    counts = {split: dataset.count(split) for split in ("train", "val", "test")}
    if counts["train"] == 0:
        raise InputError(f"dataset version {dataset.version} has no train split (counts: {counts})")
    return TrainingData(version=dataset.version, digest=dataset.manifest.digest, counts=counts, dataset=dataset)
