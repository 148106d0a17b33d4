"""BatchStream over the dataset loader: a resume under another loader layout serves each epoch once."""

from __future__ import annotations

import pytest

from schemas.dataset import BuildDatasetParams
from tasks.dataset import open_dataset, run_build_dataset
from tasks.dataset.synthetic import write_synthetic_inputs
from tasks.train.batches import BatchStream


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("batch-stream") / "data")
    write_synthetic_inputs(data, proposals=24, images_per_proposal=3, size=64, seed=5)
    result = run_build_dataset(BuildDatasetParams(data=data, image_size=64, row_group_rows=8, train_fraction=0.7,
                                                  val_fraction=0.2, test_fraction=0.1))
    return open_dataset(data, result.digest)


def _loader(dataset, world_size: int):
    return dataset.make_loader("train", batch_size=8 // world_size, image_size=48, seed=0, rank=0,
                               world_size=world_size)


def _epoch(dataset, world_size: int, epoch: int) -> list[list[str]]:
    loader = _loader(dataset, world_size)
    loader.set_epoch(epoch)
    return [b.obsids for b in loader]


def test_a_resume_under_another_layout_restarts_the_interrupted_epoch_and_then_moves_on(dataset):
    stream = BatchStream(_loader(dataset, 1))
    per_epoch = len(stream.source)
    for _ in range(per_epoch + 2):  # two batches into epoch 1
        next(stream)
    state = stream.state_dict()
    assert (state["epoch"], state["index"]) == (1, 2)

    resumed = BatchStream(_loader(dataset, 2))  # two ranks now: the saved position means nothing
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.index) == (1, 0)  # the loader's own position, not the saved one
    served = [next(resumed).obsids for _ in range(2 * len(resumed.source))]
    half = len(resumed.source)
    assert served[:half] == _epoch(dataset, 2, 1)  # epoch 1 again, from its first batch
    assert served[half:] == _epoch(dataset, 2, 2)  # then epoch 2, once (it used to be served twice)
    assert resumed.epoch == 2
