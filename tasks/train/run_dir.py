"""Housekeeping of a run directory: is a finished run still whole, and clearing an earlier attempt.

A run name can be reused (an explicit `run_name`, `resume=False`): a fresh start must not inherit
the earlier attempt's files. Its step_N.pt with higher step numbers would outrank (and prune) the
new run's, its base/ would be evaluated as this config's step 0, and its manifest.json would call
the run finished while the new attempt is under way.
"""

from __future__ import annotations

import json
import logging

from fsspec.implementations.local import LocalFileSystem

from schemas.manifest import Manifest
from storage.fs import exists, join, open_fs, read_text, sha256_file
from tasks.train.checkpoint import prune_step_checkpoints
from tasks.train.export import META_FILE

log = logging.getLogger(__name__)

MODEL_DIRS = ("base", "final")


def finished_run_problem(run_dir: str, manifest: Manifest) -> str | None:
    """Why a run with a manifest cannot be returned as cached (None when it can).

    final/model.json and every file the manifest lists must be there with their recorded size,
    and on a local root their recorded sha256 (about a second per GB: far less than training
    again; on an object store it would mean downloading the weights at every cache hit).
    """
    if not exists(join(run_dir, "final", META_FILE)):
        return f"final/{META_FILE} is missing"
    for entry in manifest.files:
        url = join(run_dir, entry.path)
        fs, path = open_fs(url)
        if not fs.exists(path):
            return f"{entry.path} is missing"
        if fs.size(path) != entry.bytes:
            return f"{entry.path} has {fs.size(path)} bytes, not the manifest's {entry.bytes}"
        if isinstance(fs, LocalFileSystem) and sha256_file(url) != entry.sha256:
            return f"{entry.path} does not match the sha256 in the manifest"
    return None


def clear_stale_attempt(run_dir: str, config_hash: str, manifest_file: str) -> list[str]:
    """Remove what an earlier attempt left in this run directory before a run starts from step 0.

    Always: the manifest (the run is unfinished until this attempt writes it) and every
    checkpoint (step_N.pt, last.pt, best.pt: another trajectory's). base/ and final/ only when
    their model.json records another config hash (base/ of the same config is this run's step 0).
    Returns the removed paths.
    """
    removed = []
    manifest = join(run_dir, manifest_file)
    if exists(manifest):
        _remove(manifest, removed)
    checkpoints = join(run_dir, "checkpoints")
    removed += prune_step_checkpoints(checkpoints, keep=0)
    for name in ("last.pt", "best.pt"):
        if exists(join(checkpoints, name)):
            _remove(join(checkpoints, name), removed)
    for name in MODEL_DIRS:
        folder = join(run_dir, name)
        if exists(folder) and _model_config_hash(folder) != config_hash:
            _remove(folder, removed)
    if removed:
        log.warning("run %s starts from step 0: removed the earlier attempt's %s", run_dir,
                    ", ".join(url.rsplit("/", 1)[-1] for url in removed))
    return removed


def _model_config_hash(folder: str) -> str | None:
    url = join(folder, META_FILE)
    if not exists(url):
        return None
    try:
        return json.loads(read_text(url)).get("config_hash")
    except (ValueError, AttributeError):
        return None


def _remove(url: str, removed: list[str]) -> None:
    fs, path = open_fs(url)
    fs.rm(path, recursive=fs.isdir(path))
    removed.append(url)
