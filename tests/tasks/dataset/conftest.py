"""Fixtures: small input tables written with the real schemas, and a built dataset version."""

from __future__ import annotations

import pytest

from schemas.dataset import BuildDatasetParams
from tasks.dataset import open_dataset, run_build_dataset
from tasks.dataset.synthetic import write_synthetic_inputs

# 128-px previews keep the suite fast; one test builds from real 512-px previews.
SMALL = 128


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A dataset of 30 proposals x 4 images (128 px), 8-row row groups, tiny shards."""
    data = str(tmp_path_factory.mktemp("dataset") / "data")
    write_synthetic_inputs(data, proposals=30, images_per_proposal=4, size=SMALL, seed=1)
    params = BuildDatasetParams(data=data, image_size=SMALL, row_group_rows=8, shard_target_mb=0.05)
    result = run_build_dataset(params)
    return open_dataset(data, result.digest)


@pytest.fixture(scope="session")
def tokenizer():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-16")
