"""write_model: the hashes and size it returns are those of the bytes it wrote."""

from __future__ import annotations

import hashlib
import json

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
