"""A model's identity in the summary cache key: a hub id or name as given, a local directory by content.

A directory's path says nothing about its weights (a retrained ./ckpt keeps its path), and one
directory has many spellings (./ckpt, /abs/ckpt), so it is keyed by its resolved path plus a
fingerprint of its files. Cheap: no full hash of gigabytes of weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SAMPLED_BYTES = 1 << 20  # read from each end of a model file for its fingerprint


def model_cache_id(name: str) -> str:
    """`name` itself, or for a local directory '<resolved path>@<fingerprint>'.

    The fingerprint covers every top-level file's name, size, and first and last MiB: all of
    config.json, the tokenizer files and the chat template; a weight shard's header and some of its
    tensors, which is enough to tell retrained weights of the same shape apart.
    """
    path = Path(name)
    if not path.is_dir():
        return name
    path = path.resolve()
    digest = hashlib.sha256()
    for file in sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")):
        size = file.stat().st_size
        digest.update(f"{file.name}\0{size}\0".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(SAMPLED_BYTES))
            if size > SAMPLED_BYTES:
                handle.seek(max(SAMPLED_BYTES, size - SAMPLED_BYTES))
                digest.update(handle.read())
    return f"{path}@{digest.hexdigest()[:12]}"
