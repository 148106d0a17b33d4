"""Which models an evaluation compares, found in runs/ and loaded through the train stage's API.

A training run (tasks/train) leaves runs/<run>/ with config.json, base/ (the model at step 0:
the pretrained weights, or on the synthetic sky the untrained init of the same config and seed),
final/ (the trained model) and manifest.json (written last: the run finished). This module
resolves a run from a name, a path or a manifest digest, lists finished runs, and loads a model
as a ready-to-embed `ClipModel` whose identity is its checkpoint sha256.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import InputError
from schemas.manifest import Manifest
from storage import DataLayout
from storage.fs import exists, join, open_fs, read_bytes, read_text
from tasks.evaluate.embed import ClipModel, prepare_model, resolve_device

log = logging.getLogger(__name__)

RUN_MANIFEST = "manifest.json"
RUN_CONFIG = "config.json"
MODEL_META = "model.json"


@dataclass(frozen=True)
class RunRef:
    """A run directory and what it says about itself."""

    name: str
    dir: str
    config: dict[str, Any] = field(default_factory=dict)  # config.json: {"config": TrainConfig, "dataset": ...}
    manifest: Manifest | None = None

    @property
    def finished(self) -> bool:
        return self.manifest is not None

    @property
    def train_config(self) -> dict[str, Any]:
        return dict(self.config.get("config", {}))

    @property
    def dataset_version(self) -> str:
        return str(self.config.get("dataset", {}).get("version", "")
                   or (self.manifest.config.get("dataset_version", "") if self.manifest else ""))

    @property
    def is_shuffled_control(self) -> bool:
        return bool(self.train_config.get("shuffled_pairs"))

    def model_meta(self, which: str) -> dict[str, Any]:
        url = join(self.dir, which, MODEL_META)
        if not exists(url):
            steps = _checkpoint_count(self.dir)
            raise InputError(
                f"run {self.name} has no {which!r} model ({which}/{MODEL_META} missing; "
                f"{steps} checkpoint file(s)): " + ("it has no checkpoints at all" if not steps else
                                                  "finish or resume its training first")
            )
        return json.loads(read_text(url))

    def checkpoint_sha256(self, which: str = "final") -> str:
        return str(self.model_meta(which)["checkpoint_sha256"])


def _checkpoint_count(run_dir: str) -> int:
    fs, path = open_fs(join(run_dir, "checkpoints"))
    if not fs.exists(path):
        return 0
    return sum(1 for p in fs.ls(path, detail=False) if str(p).endswith(".pt"))


def _read_run(data: str, name: str) -> RunRef | None:
    run_dir = join(DataLayout(data).runs, name)
    fs, path = open_fs(run_dir)
    if not fs.isdir(path):
        return None
    config: dict[str, Any] = {}
    if exists(join(run_dir, RUN_CONFIG)):
        try:
            config = json.loads(read_text(join(run_dir, RUN_CONFIG)))
        except json.JSONDecodeError:
            log.warning("run %s: unreadable %s", name, RUN_CONFIG)
    manifest = None
    manifest_url = join(run_dir, RUN_MANIFEST)
    if exists(manifest_url):
        try:
            manifest = Manifest.from_json(read_bytes(manifest_url), source=manifest_url)
        except InputError as err:
            log.warning("run %s: bad manifest (%s); treated as unfinished", name, err)
    return RunRef(name=name, dir=run_dir, config=config, manifest=manifest)


def list_runs(data: str) -> list[RunRef]:
    """Every run directory, newest finished first, then unfinished ones by name."""
    fs, root = open_fs(DataLayout(data).runs)
    if not fs.exists(root):
        return []
    runs = []
    for entry in fs.ls(root, detail=False):
        name = str(entry).rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("."):
            continue
        ref = _read_run(data, name)
        if ref is not None:
            runs.append(ref)
    finished = sorted((r for r in runs if r.finished), key=lambda r: r.manifest.created_at, reverse=True)
    return finished + sorted((r for r in runs if not r.finished), key=lambda r: r.name)


def resolve_run(data: str, run: str | None) -> RunRef:
    """A run by name, by path (runs/<name>), or by its manifest digest; default: the newest finished
    run that is not a shuffled control."""
    runs = list_runs(data)
    if run is None:
        candidates = [r for r in runs if r.finished and not r.is_shuffled_control]
        if not candidates:
            raise InputError(f"no finished training run under {DataLayout(data).runs}: run `hubbleclip train` first")
        return candidates[0]
    key = str(run).rstrip("/")
    name = key.rsplit("/", 1)[-1]
    for ref in runs:
        if ref.name == name or (ref.manifest is not None and ref.manifest.digest == key):
            return ref
    known = ", ".join(r.name for r in runs[:5]) or "none"
    raise InputError(f"run {run!r} does not exist under {DataLayout(data).runs} (runs: {known})")


def load_clip(run: RunRef, which: str = "final", device: str = "auto", *, label: str | None = None) -> ClipModel:
    """A run's final or base model, ready to embed; InputError naming the run when it is missing."""
    run.model_meta(which)  # the clear error first, before any torch work
    from tasks.train import load_trained  # the train stage's loader: open_clip formats, heads, hashes

    dev = resolve_device(device)
    trained = load_trained(run.dir, which=which, device=dev)
    name = label or f"{run.name}/{which}"
    return prepare_model(name, trained.model, trained.preprocess, trained.tokenizer, trained.checkpoint_sha256,
                         device=str(dev))


def search_model_loader(data: str, run: str, device: str) -> ClipModel:
    """`tasks.evaluate.search.ModelLoader`: the final model of the run that built an index."""
    return load_clip(resolve_run(data, run), "final", device)
