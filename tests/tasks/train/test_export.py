"""write_model: the hashes and size it returns are those of the bytes it wrote; what model.json tells open_clip."""

from __future__ import annotations

import hashlib
import json

import open_clip
import pytest
import torch

from tasks.train.export import HEAD_FILE, META_FILE, WEIGHTS_FILE, export_model, write_model
from tasks.train.model import TINY_MODEL, create_clip


def test_write_model_returns_the_weights_hash_and_size_beside_the_checkpoint_hash(tiny_config, tmp_path):
    base = tmp_path / "pre.pt"
    torch.save({"state_dict": create_clip(tiny_config()).model.state_dict()}, base)
    created = create_clip(tiny_config(pretrained=str(base), head="mlp", head_hidden=16))
    folder = tmp_path / "final"
    exported = write_model(str(folder), created.model, model_name=TINY_MODEL, model_cfg=created.model_cfg,
                           preprocess_cfg=created.preprocess_cfg, meta={"step": 1})
    weights, head = (folder / WEIGHTS_FILE).read_bytes(), (folder / HEAD_FILE).read_bytes()
    assert exported.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert exported.weights_bytes == len(weights)
    # With a head the checkpoint hash covers both files, so it is not the weights file's own.
    assert exported.checkpoint_sha256 == hashlib.sha256(weights + head).hexdigest() != exported.weights_sha256
    assert json.loads((folder / META_FILE).read_text())["checkpoint_sha256"] == exported.checkpoint_sha256

    again = export_model(str(tmp_path / "again"), created.model, model_name=TINY_MODEL, model_cfg=created.model_cfg,
                         preprocess_cfg=created.preprocess_cfg, meta={"step": 1})
    assert again == exported.checkpoint_sha256


@pytest.mark.parametrize("overrides, expected", [
    ({"loss": "siglip"}, {"init_logit_bias": -10.0}),
    ({"image_size": 48}, {"force_image_size": 48}),
    ({}, {}),
])
def test_model_json_records_the_open_clip_kwargs_that_rebuild_the_model_exactly(tiny_config, tmp_path, overrides,
                                                                                expected):
    # Without them open_clip fails on a SigLIP checkpoint (no logit_bias to load it into) and
    # silently resizes the position embeddings of a run with its own image size.
    created = create_clip(tiny_config(**overrides))
    folder = tmp_path / "final"
    write_model(str(folder), created.model, model_name=TINY_MODEL, model_cfg=created.model_cfg,
                preprocess_cfg=created.preprocess_cfg, meta={})
    kwargs = json.loads((folder / META_FILE).read_text())["open_clip_kwargs"]
    assert kwargs == expected
    trained = created.model.state_dict()
    by_name, _, preprocess = open_clip.create_model_and_transforms(
        TINY_MODEL, pretrained=str(folder / WEIGHTS_FILE), **kwargs)  # the call docs/training.md gives
    by_dir, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    for loaded in (by_name.state_dict(), by_dir.state_dict()):
        assert loaded.keys() == trained.keys()
        assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert tuple(by_name.visual.preprocess_cfg["size"]) == tuple(created.preprocess_cfg["size"])


def test_a_local_dir_or_hub_model_records_no_kwargs_open_clip_would_ignore():
    from tasks.train.export import open_clip_kwargs

    assert open_clip_kwargs("local-dir:/models/x", {"init_logit_bias": -10.0}) is None
    assert open_clip_kwargs("hf-hub:org/model", {}) is None
