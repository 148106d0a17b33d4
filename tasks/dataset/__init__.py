"""The build_dataset stage and the reader API for the training set.

Build (plain Python; flows/build_dataset.py wraps it for Prefect):
    run_build_dataset(BuildDatasetParams(data=...)) -> StageResult   # digest = the version id

Read:
    ds = open_dataset(data, version="latest")        # DatasetVersion, shard hashes verified
    ds.manifest, ds.version, ds.count("val"), ds.shards("train"), ds.data_files()
    ds.iter_examples("test", columns=["obsid", "proposal_id", "caption_summary", "image"])
    loader = ds.make_loader("train", tokenizer, batch_size=32, image_size=224, seed=0, num_workers=4)
    for batch in loader:                              # Batch(images uint8, tokens, proposal_ids, ...)
        images, tokens = to_model_input(batch, "cuda")
    loader.state_dict() / loader.load_state_dict(state)

See docs/dataset.md. The build and the version API never import torch (a build process stays
small and the CLI fast); the loader names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from schemas.dataset import BuildDatasetParams, Example, ExampleMeta, LoaderParams
from tasks.dataset.sampler import ProposalBatcher
from tasks.dataset.splits import assign_split, cycle_split, hash_split
from tasks.dataset.stage import plan_version, run_build_dataset
from tasks.dataset.versions import (
    DatasetVersion,
    ShardInfo,
    gc_versions,
    latest_version,
    list_versions,
    open_dataset,
    read_manifest,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "Batch",
    "BuildDatasetParams",
    "DatasetVersion",
    "Example",
    "ExampleMeta",
    "LoaderParams",
    "ProposalBatcher",
    "ShardInfo",
    "ShardLoader",
    "assign_split",
    "cycle_split",
    "gc_versions",
    "hash_split",
    "latest_version",
    "list_versions",
    "make_loader",
    "normalize",
    "open_dataset",
    "plan_version",
    "read_manifest",
    "run_build_dataset",
    "sentence_window",
    "split_sentences",
    "to_model_input",
    "tokenize",
]

# Names that need torch, and the module that defines each (PEP 562 lazy attributes).
_LAZY = {
    "CLIP_MEAN": "augment", "CLIP_STD": "augment", "normalize": "augment", "Batch": "batch",
    "to_model_input": "batch", "ShardLoader": "loader", "make_loader": "loader",
    "sentence_window": "text", "split_sentences": "text", "tokenize": "text",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tasks.dataset.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tasks.dataset' has no attribute {name!r}")
