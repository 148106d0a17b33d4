"""Remove what killed writers leave behind under a data root: temporaries and unlisted table files.

A writer killed mid-commit leaves `.tmp-*` files (anywhere: tables, journal, checkpoints, shards)
and, in a table, data files no manifest lists. Readers never see either; this removes them.
`min_age_s` spares files younger than that, so a collection that runs beside a live writer never
takes the files that writer is about to commit (give it more than the longest commit takes).
Interrupted dataset builds (a version directory without a manifest) are removed by
tasks.dataset.gc_versions.
"""

from __future__ import annotations

import time
from collections import Counter

from storage.fs import TMP_PREFIX, join, open_fs
from storage.layout import DataLayout
from storage.tables import MANIFEST, TableStore


def age_s(fs, path: str, now: float) -> float:  # noqa: ANN001 - any fsspec filesystem
    """Seconds since `path` was last modified (infinite where the store cannot say)."""
    try:
        modified = fs.modified(path)
    except (NotImplementedError, OSError, AttributeError):
        return float("inf")  # a store that cannot say: treat as old
    return now - modified.timestamp()


def find_orphans(root: str) -> list[str]:
    """Paths under `root` that no reader can see: temporaries, and table files no manifest lists."""
    fs, base = open_fs(root)
    if not fs.exists(base):
        return []
    orphans = [p for p in fs.find(base) if p.rsplit("/", 1)[-1].startswith(TMP_PREFIX)]
    layout = DataLayout(root)
    for tables_root in (layout.tables, layout.index):
        store = TableStore(tables_root)
        tfs, tpath = open_fs(tables_root)
        if not tfs.exists(tpath):
            continue
        for entry in tfs.ls(tpath, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith((".", "_")) or not tfs.isdir(entry):
                continue
            manifest = store.manifest(name) if tfs.exists(join(entry, MANIFEST)) else None
            listed = {f.path for f in manifest.files} if manifest else set()
            prefix = entry.rstrip("/") + "/"
            orphans += [p for p in tfs.find(entry) if p.endswith(".parquet") and p[len(prefix):] not in listed]
    return sorted(set(orphans))


def youngest_age_s(root: str, now: float | None = None) -> float:
    """Seconds since anything under `root` was last written: how long a writer there has been quiet."""
    fs, path = open_fs(root)
    now = time.time() if now is None else now
    return min((age_s(fs, found, now) for found in fs.find(path)), default=float("inf"))


def collect_garbage(root: str, *, min_age_s: float = 0.0) -> Counter[str]:
    """Delete the orphans under `root` older than `min_age_s`; returns counts by kind."""
    fs, _ = open_fs(root)
    now = time.time()
    removed: Counter[str] = Counter()
    for path in find_orphans(root):
        if min_age_s and age_s(fs, path, now) < min_age_s:
            removed["kept_young"] += 1
            continue
        fs.rm(path)
        removed["temporaries" if path.rsplit("/", 1)[-1].startswith(TMP_PREFIX) else "unlisted_files"] += 1
    return removed
