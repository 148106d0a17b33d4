from __future__ import annotations

import pytest
import torch

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
