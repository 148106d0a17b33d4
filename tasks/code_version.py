"""The code version of a stage: a hash of its modules' source files, so an edit invalidates caches.

Prefect-free, so a stage's own cache (e.g. the evaluate stage's manifest) can record it too;
flows/caching.py builds the Prefect cache keys on it and re-exports it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

# Bump to invalidate every pipeline cache entry at once (e.g. after a storage-format change).
CACHE_VERSION = "1"
# Source files that make up a stage's code version.
_CODE_SUFFIXES = (".py", ".json", ".txt", ".j2", ".md")


def _module_files(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise ModuleNotFoundError(f"cannot find module {module!r} to compute its code version", name=module)
    if spec.submodule_search_locations:  # a package: every source, prompt and preset file in it
        files: list[Path] = []
        for location in spec.submodule_search_locations:
            files += [p for p in Path(location).rglob("*")
                      if p.suffix in _CODE_SUFFIXES and "__pycache__" not in p.parts]
        return sorted(files)
    return [Path(spec.origin)]


@lru_cache(maxsize=64)
def code_version(*modules: str) -> str:
    """Hash of the source files of `modules` (packages recursively), so an edit invalidates caches.

    A module that cannot be found raises: hashing it as absent would let a misspelt name silently
    drop its files from the key, and edits to them would then serve stale cache hits.
    """
    digest = hashlib.sha256(CACHE_VERSION.encode())
    for module in sorted(modules):
        digest.update(f"\0{module}\0".encode())
        for path in _module_files(module):
            digest.update(path.name.encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
