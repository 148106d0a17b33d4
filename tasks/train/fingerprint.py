"""Content hashes a run is keyed on beyond its config: the local weights it starts from.

The config names a pretrained checkpoint by its path, so a checkpoint overwritten at the same path
would otherwise find the earlier run's cached result (or resume its last.pt). A local file, or a
`local-dir:` model's folder, is therefore hashed into the run's inputs. open_clip tags ('openai')
and `hf-hub:` names are identifiers of published weights and stay as they are.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import open_clip

from storage.fs import sha256_file

# What open_clip may load from a local-dir: folder (open_clip.factory picks one of these by name).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")


def weights_fingerprint(model: str, pretrained: str) -> str | None:
    """sha256 over the local files the initial weights come from; None for tags, hub names, random init.

    A `local-dir:` folder counts by its open_clip_config.json and every weights file open_clip
    could pick there; a `pretrained` path by its own bytes.
    """
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:"))
        files = [folder / "open_clip_config.json"]
        files += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    elif model.startswith("hf-hub:") or not pretrained:
        return None
    elif open_clip.get_pretrained_cfg(model, pretrained) or not os.path.isfile(pretrained):
        return None  # a tag: open_clip resolves tags before paths (tasks.train.model.check_pretrained)
    else:
        files = [Path(pretrained)]
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(str(file))}\n".encode())
    return digest.hexdigest()
