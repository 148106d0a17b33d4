from __future__ import annotations

import pytest
import torch

from schemas.dataset import BuildDatasetParams
from schemas.train import TrainParams
from tasks.train.model import get_tokenizer
from tasks.train.presets import resolve_config


@pytest.fixture(autouse=True)
def _one_thread():
    # CI boxes have 2 cores shared with other jobs; tiny matrices gain nothing from a second
    # thread, and an oversubscribed one makes every op wait for a straggler.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return get_tokenizer("hubbleclip-tiny")


@pytest.fixture
def tiny_config():
    def make(**overrides):
        base = {"preset": "tiny", "steps": 20, "batch_size": 32, "checkpoint_every": 10, "val_every": 10,
                "val_pairs": 100, "device": "cpu", "log_every": 5}
        base.update(overrides)
        return resolve_config(TrainParams(**base))

    return make


def build_small_dataset(root, *, proposals: int, seed: int, fractions: tuple[float, float, float],
                        size: int = 80) -> tuple[str, str]:
    """(data root, dataset version) of a synthetic sky built under `root`: 3 images per proposal,
    stored at `size` px (the tiny preset crops 64 px from 80), split train/val/test by `fractions`."""
    from tasks.dataset import run_build_dataset
    from tasks.dataset.synthetic import write_synthetic_inputs

    data = str(root / "data")
    write_synthetic_inputs(data, proposals=proposals, images_per_proposal=3, size=size, seed=seed)
    train, val, test = fractions
    result = run_build_dataset(BuildDatasetParams(data=data, image_size=size, row_group_rows=16,
                                                  train_fraction=train, val_fraction=val, test_fraction=test))
    return data, result.digest
