"""Content-addressed image store: sha256 of the bytes -> images/<sha[:2]>/<sha>.jpg.

Puts are idempotent: storing the same bytes twice writes once. Objects are immutable, so a
reader never needs a lock and a preview is never downloaded twice.
"""

from __future__ import annotations

import hashlib
import re

from schemas.errors import InputError
from storage.fs import atomic_write_bytes, join, open_fs

_SHA = re.compile(r"^[0-9a-f]{64}$")


class ImageStore:
    def __init__(self, root: str, suffix: str = ".jpg"):
        self.root = root
        self.suffix = suffix

    def path(self, sha256: str) -> str:
        if not _SHA.match(sha256):
            raise InputError(f"not a sha256 image key: {sha256!r}")
        return join(self.root, sha256[:2], f"{sha256}{self.suffix}")

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            atomic_write_bytes(self.path(digest), data)
        return digest

    def has(self, sha256: str) -> bool:
        fs, path = open_fs(self.path(sha256))
        return fs.exists(path)

    def get(self, sha256: str, *, verify: bool = True) -> bytes:
        fs, path = open_fs(self.path(sha256))
        if not fs.exists(path):
            raise InputError(f"image {sha256[:12]} is not in the store at {self.root}")
        data = fs.cat_file(path)
        if verify and hashlib.sha256(data).hexdigest() != sha256:
            raise InputError(f"image {sha256[:12]} is corrupt: its bytes do not hash to its key")
        return data

    def keys(self) -> list[str]:
        fs, path = open_fs(self.root)
        if not fs.exists(path):
            return []
        out = []
        for found in fs.find(path):
            leaf = found.rsplit("/", 1)[-1]
            stem = leaf[: -len(self.suffix)] if leaf.endswith(self.suffix) else ""
            if _SHA.match(stem):
                out.append(stem)
        return sorted(out)
