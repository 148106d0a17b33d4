"""The training stage's view of a dataset version: checked up front, then streamed as batches.

Everything about shards, augmentation, captions and tokenization is tasks/dataset's; this
module only opens the version, refuses one without training pairs before any model is built,
and asks the dataset's loader for the batches the config implies (rank-aware under DDP).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from schemas.errors import InputError
from schemas.train import TrainConfig
from tasks.train.batches import Batch

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    version: str
    digest: str  # the dataset manifest's digest: this stage's input cache key
    counts: dict[str, int]
    dataset: Any  # tasks.dataset DatasetVersion

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
        """A factory of passes over the validation split (centre crop, no augmentation), or None."""
        if not self.counts.get("val"):
            log.warning("dataset %s has no validation split: training without validation", self.version)
            return None

        def batches() -> Iterable[Batch]:
            return self.dataset.make_loader(
                "val", tokenizer=tokenizer, batch_size=100, image_size=image_size, resize_to=cfg.resize_to,
                caption_source=cfg.caption_source, seed=cfg.seed, num_workers=min(cfg.workers, 2),
                one_per_proposal=True, pin_memory=pin_memory, rank=0, world_size=1,
            )

        return batches


def open_training_data(data: str, version: str) -> TrainingData:
    """Open a dataset version for training; InputError if it is missing or has no train split."""
    from tasks.dataset import open_dataset  # here, not at import: tasks.train loads without the data stack

    dataset = open_dataset(data, version, verify=True)  # shards are checked against the manifest
    counts = {split: dataset.count(split) for split in ("train", "val", "test")}
    if counts["train"] == 0:
        raise InputError(f"dataset version {dataset.version} has no train split (counts: {counts})")
    return TrainingData(version=dataset.version, digest=dataset.manifest.digest, counts=counts, dataset=dataset)
