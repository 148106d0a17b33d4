"""Fixtures for evaluation tests: a tiny random-init open_clip model and small JPEG previews."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

TINY_NAME = "hubbleclip-eval-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip model through the real factory (registered config, random init, offline tokenizer)."""
    import open_clip
    import torch

    from tasks.evaluate.embed import prepare_model

    cfg_dir = tmp_path_factory.mktemp("clipcfg")
    (cfg_dir / f"{TINY_NAME}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(TINY_NAME)
    return prepare_model(TINY_NAME, model, preprocess, tokenizer, "0" * 64, device="cpu")


def jpeg_bytes(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="session")
def jpegs() -> list[bytes]:
    return [jpeg_bytes(i) for i in range(12)]


XSS_TITLE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@pytest.fixture(scope="module")
def indexed_searcher(tmp_path_factory, tiny_clip, jpegs):
    """A Searcher over an index of the fixture JPEGs (stored in the image store), one hostile title."""
    from storage import DataLayout, ImageStore
    from tasks.evaluate import index as idx
    from tasks.evaluate.embed import embed_images
    from tasks.evaluate.search import Searcher

    data = str(tmp_path_factory.mktemp("data"))
    shas = [ImageStore(DataLayout(data).images).put(b) for b in jpegs]
    n = len(jpegs)
    meta = {
        "obsid": [str(1000 + i) for i in range(n)],
        "obs_id": [f"j8pu{i:02d}010" for i in range(n)],
        "proposal_id": [str(10 + i // 3) for i in range(n)],
        "title": [XSS_TITLE if i % 2 else f"Proposal {10 + i // 3}" for i in range(n)],
        "target": ["NGC-104"] * n,
        "preview_sha256": shas,
    }
    idx.write_index(data, dataset_version="v1", checkpoint_sha256=tiny_clip.checkpoint_sha256,
                    embeddings=embed_images(tiny_clip, jpegs), metadata=meta, run="r1")
    return Searcher(idx.open_index(data), tiny_clip)


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 40),
          "white": (235, 235, 235), "purple": (140, 40, 180)}


def color_jpeg(rgb: tuple[int, int, int], seed: int, size: int = 128) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 25, size=(size, size, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_color_dataset(data: str, *, proposals_per_split: dict[str, int], images_per_proposal: int = 3,
                        size: int = 128) -> tuple[str, dict]:
    """A learnable toy dataset version through the dataset stage's own shard writer: each proposal
    has one colour; its images are that colour with noise; its caption names the colour.

    Returns (version, ground truth in the synthetic sky's format, with colour names as classes)."""
    import hashlib

    from schemas.dataset import DATASET_FORMAT, EXAMPLE_SCHEMA, Example
    from schemas.manifest import FileEntry, Manifest
    from tasks.dataset.shards import SplitShardWriter
    from tasks.dataset.versions import MANIFEST_NAME, set_latest, version_url, write_manifest

    version = hashlib.sha256(json.dumps(proposals_per_split, sort_keys=True).encode()).hexdigest()[:16]
    root = version_url(data, version)
    names = list(COLORS)
    truth: dict = {"proposals": {}, "observations": {}}
    files = []
    pid, obsid = 100, 5000
    for split, count in proposals_per_split.items():
        writer = SplitShardWriter(root, split, row_group_rows=64)
        for _ in range(count):
            pid += 1
            color = names[pid % len(names)]
            truth["proposals"][str(pid)] = {"classes": [color, "dust"], "cycle": 20}
            for _ in range(images_per_proposal):
                obsid += 1
                image = color_jpeg(COLORS[color], obsid, size)
                truth["observations"][str(obsid)] = {"proposal_id": str(pid), "classes": [color, "dust"]}
                writer.add(Example(
                    obsid=str(obsid), obs_id=f"j{obsid}", proposal_id=str(pid), split=split, cycle=20,
                    title=f"A survey of {color} things #{pid}", instrument="ACS/WFC", target=f"T{pid}",
                    caption_summary=f"{color} objects; the physics of {color} light",
                    caption_abstract=f"Category: Stars. We observe {color} objects. They are {color}.",
                    image_sha256=hashlib.sha256(image).hexdigest(), image=image))
        if (f := writer.close()) is not None:
            files.append(FileEntry(path=f.path, rows=f.rows, bytes=f.bytes, sha256=f.sha256, partition=f.split))
    manifest = Manifest(name=MANIFEST_NAME, schema_version=DATASET_FORMAT,
                        arrow_schema=EXAMPLE_SCHEMA.remove_metadata().to_string(), files=files,
                        inputs={"test": version}, config={"image_size": size, "format": DATASET_FORMAT}, stats={})
    write_manifest(data, version, manifest)
    set_latest(data, version)
    return version, truth


_TRAINED: dict = {}


def build_trained_data(tmp_root) -> dict:
    """A data root with a toy dataset version, a short tiny-preset run and its shuffled control
    (both through the train stage's real run_train), and the ground truth file. Built once per
    session, whichever test directory asks first (flow tests reuse it)."""
    if _TRAINED:
        return _TRAINED
    from schemas.train import TrainParams
    from tasks.train import run_train

    root = tmp_root
    data = str(root)
    version, truth = write_color_dataset(data, proposals_per_split={"train": 30, "val": 4, "test": 20})
    (root / "ground_truth.json").write_text(json.dumps(truth))
    # Colours are learned within a few steps; more would only slow the suite.
    common = dict(data=data, dataset_version=version, preset="tiny", steps=12, batch_size=16, warmup_steps=2,
                  val_every=12, checkpoint_every=12, val_pairs=100, device="cpu", workers=0, seed=0)
    run = run_train(TrainParams(**common, run_name="colors"))
    control = run_train(TrainParams(**common, run_name="colors-shuffled", shuffled_pairs=True))
    _TRAINED.update(data=data, version=version, run=run, control=control,
                    ground_truth=str(root / "ground_truth.json"))
    return _TRAINED


@pytest.fixture(scope="session")
def trained_data(tmp_path_factory):
    return build_trained_data(tmp_path_factory.mktemp("evaldata"))
