"""Immutable dataset versions: `datasets/<version>/` with shards and a manifest, and `datasets/latest`.

A version's id is a hash of its input manifests' digests and its build config, so the same
inputs give the same id (and nothing is rebuilt), and a version's contents never change after
its manifest is written. A directory without a manifest is an interrupted build: invisible to
readers, removed by `gc_versions`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.dataset import EXAMPLE_SCHEMA, SPLITS
from schemas.errors import InputError
from schemas.manifest import Manifest
from storage import DataLayout
from storage.fs import (
    atomic_write_text,
    exists,
    join,
    open_fs,
    read_bytes,
    read_text,
    remove_stale_temporaries,
    sha256_of,
)
from storage.gc import age_s, youngest_age_s

if TYPE_CHECKING:
    from tasks.dataset.loader import ShardLoader

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
LATEST_FILE = "latest"
MANIFEST_NAME = "dataset"
_VERSION = re.compile(r"^[0-9a-f]{16}$")


def check_shard_schema(schema: pa.Schema, where: str) -> None:
    """InputError naming the shard unless its schema is the example schema (metadata aside)."""
    expected = EXAMPLE_SCHEMA.remove_metadata()
    if not schema.remove_metadata().equals(expected):
        missing = [f.name for f in expected if f.name not in schema.names]
        raise InputError(f"{where} does not have the dataset's example schema"
                         + (f" (missing {missing})" if missing else f" (has {schema.names})"))


def compute_version(inputs: Mapping[str, str], config: Mapping[str, Any]) -> str:
    """The version id: 16 hex digits of sha256 over the input digests and the build config."""
    blob = json.dumps({"inputs": dict(inputs), "config": dict(config)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def version_url(data: str, version: str) -> str:
    if not _VERSION.match(version):
        raise InputError(f"not a dataset version id: {version!r} (expected 16 hex digits)")
    return join(DataLayout(data).datasets, version)


def manifest_url(data: str, version: str) -> str:
    return join(version_url(data, version), MANIFEST_FILE)


def write_manifest(data: str, version: str, manifest: Manifest) -> None:
    atomic_write_text(manifest_url(data, version), manifest.to_json())


def read_manifest(data: str, version: str) -> Manifest | None:
    """The version's manifest, or None if it was never completed. A tampered one raises InputError."""
    url = manifest_url(data, version)
    if not exists(url):
        return None
    manifest = Manifest.from_json(read_bytes(url), source=url)
    if manifest.name != MANIFEST_NAME:
        raise InputError(f"{url} is a {manifest.name!r} manifest, not a dataset manifest")
    return manifest


def set_latest(data: str, version: str) -> None:
    atomic_write_text(join(DataLayout(data).datasets, LATEST_FILE), version + "\n")


def latest_version(data: str) -> str | None:
    """The version `datasets/latest` names; None before the first build. A damaged file is an
    InputError, never None: gc would then take the version it named for an unprotected one."""
    url = join(DataLayout(data).datasets, LATEST_FILE)
    if not exists(url):
        return None
    try:
        found = read_text(url).strip()
    except UnicodeDecodeError:
        found = "<binary>"
    if not _VERSION.match(found):
        raise InputError(f"{url} does not name a dataset version ({found[:40]!r}; expected 16 hex digits): "
                         "write one from `hubbleclip datasets list` into it, or run `hubbleclip build-dataset`")
    return found


def resolve_version(data: str, version: str = "latest") -> str:
    if version != "latest":
        return version
    found = latest_version(data)
    if not found:
        raise InputError(f"no dataset under {DataLayout(data).datasets}: run `hubbleclip build-dataset` first")
    return found


@dataclass(frozen=True)
class ShardInfo:
    """A shard of one split: where it is and how its rows fall into row groups."""

    url: str
    split: str
    rows: int
    sha256: str
    row_groups: tuple[int, ...]


class DatasetVersion:
    """A completed, verified dataset version: the reader API for training, evaluation and search."""

    def __init__(self, data: str, version: str, manifest: Manifest):
        self.data = data
        self.version = version
        self.manifest = manifest
        self.url = version_url(data, version)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={self.count(s)}" for s in SPLITS)
        return f"DatasetVersion({self.version}, {counts})"

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest.config)

    def count(self, split: str) -> int:
        return sum(f.rows for f in self.manifest.files if f.partition == split)

    def shards(self, split: str) -> list[ShardInfo]:
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        groups = self.manifest.stats.get("row_groups", {})
        return [
            ShardInfo(url=join(self.url, f.path), split=split, rows=f.rows, sha256=f.sha256,
                      row_groups=tuple(groups.get(f.path, [f.rows])))
            for f in sorted(self.manifest.files, key=lambda f: f.path) if f.partition == split
        ]

    def data_files(self) -> dict[str, list[str]]:
        """split -> shard URLs, for `datasets.load_dataset("parquet", data_files=...)`."""
        return {s: [shard.url for shard in self.shards(s)] for s in SPLITS if self.count(s)}

    def verify(self) -> None:
        """Refuse the version if any shard's bytes do not hash to the manifest's sha256."""
        for entry in self.manifest.files:
            fs, path = open_fs(join(self.url, entry.path))
            if not fs.exists(path):
                raise InputError(f"dataset {self.version}: shard {entry.path} is missing")
            if sha256_of(fs, path) != entry.sha256:
                raise InputError(f"dataset {self.version}: shard {entry.path} does not match its manifest sha256")
            with fs.open(path, "rb") as fh:
                check_shard_schema(pq.ParquetFile(fh).schema_arrow, f"dataset {self.version}: shard {entry.path}")

    def iter_batches(self, split: str, columns: Sequence[str] | None = None,
                     batch_rows: int = 256) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of a split in stored order (columns=None reads every column)."""
        for shard in self.shards(split):
            fs, path = open_fs(shard.url)
            with fs.open(path, "rb") as fh:
                parquet = pq.ParquetFile(fh)
                check_shard_schema(parquet.schema_arrow, f"dataset {self.version}: shard {shard.url}")
                yield from parquet.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None)

    def iter_examples(self, split: str, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """One dict per example, in stored order; the JPEG is at row['image']['bytes'] if asked for."""
        for batch in self.iter_batches(split, columns):
            yield from batch.to_pylist()

    def read_metadata(self, split: str) -> pa.Table:
        """Every column but the image, for a split (small: safe to hold in memory)."""
        wanted = [f.name for f in EXAMPLE_SCHEMA if f.name != "image"]
        batches = list(self.iter_batches(split, wanted))
        if not batches:
            return EXAMPLE_SCHEMA.remove_metadata().empty_table().drop_columns(["image"])
        return pa.Table.from_batches(batches)

    def make_loader(self, split: str = "train", tokenizer: Any = None, **options: Any) -> ShardLoader:
        """A resumable batch iterator over a split; options are tasks.dataset.LoaderParams fields
        plus rank/world_size (see tasks.dataset.loader.make_loader)."""
        from tasks.dataset.loader import make_loader

        return make_loader(self, split=split, tokenizer=tokenizer, **options)


def open_dataset(data: str, version: str = "latest", *, verify: bool = True) -> DatasetVersion:
    """Open a completed version ('latest' follows datasets/latest); verify=True checks every shard hash."""
    resolved = resolve_version(data, version)
    manifest = read_manifest(data, resolved)
    if manifest is None:
        raise InputError(f"dataset version {resolved} under {DataLayout(data).datasets} does not exist or "
                         "was never completed")
    opened = DatasetVersion(data, resolved, manifest)
    if verify:
        opened.verify()
    return opened


def list_versions(data: str) -> list[dict[str, Any]]:
    """Completed versions, newest first: id, created_at, counts per split, latest flag."""
    fs, root = open_fs(DataLayout(data).datasets)
    if not fs.exists(root):
        return []
    try:
        latest = latest_version(data)
    except InputError as err:  # still list: the versions are what a repair of `latest` picks from
        log.warning("%s", err)
        latest = None
    out = []
    for entry in fs.ls(root, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not _VERSION.match(name):
            continue
        try:
            manifest = read_manifest(data, name)
        except InputError as err:
            log.warning("skipping dataset version %s: %s", name, err)
            continue
        if manifest is None:
            continue
        out.append({
            "version": name,
            "created_at": manifest.created_at.isoformat(),
            "counts": {s: sum(f.rows for f in manifest.files if f.partition == s) for s in SPLITS},
            "bytes": sum(f.bytes for f in manifest.files),
            "split_mode": manifest.config.get("split_mode"),
            "latest": name == latest,
        })
    return sorted(out, key=lambda v: v["created_at"], reverse=True)


def gc_versions(data: str, *, keep: int = 3, dry_run: bool = False, min_age_s: float = 0.0) -> list[str]:
    """Delete interrupted builds and all but the `keep` newest completed versions (never `latest`).

    A build without a manifest that wrote something in the last `min_age_s` seconds may still be
    running and is spared, with its young temporaries (give more than a shard takes to write; a
    store that cannot tell modification times spares nothing). Returns the version
    directories removed (or that would be, with dry_run).
    """
    if keep < 0:
        raise InputError(f"keep must be >= 0, got {keep}")
    fs, root = open_fs(DataLayout(data).datasets)
    if not fs.exists(root):
        return []
    latest = latest_version(data)  # first: a damaged `latest` stops gc before anything is chosen
    completed = [v["version"] for v in list_versions(data)]
    protected = set(completed[:keep]) | ({latest} if latest else set())
    doomed = []
    for entry in fs.ls(root, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not _VERSION.match(name) or name in protected:
            continue
        if name not in completed and exists(manifest_url(data, name)):
            # Its manifest is damaged (list_versions warned): the shards may be all there is.
            log.warning("dataset version %s has an unreadable manifest: left alone, fix or remove it by hand", name)
            continue
        if min_age_s and name not in completed and youngest_age_s(join(root, name)) < min_age_s:
            log.info("dataset version %s has no manifest but was written to recently: left alone", name)
            continue
        doomed.append(name)
    if not dry_run:
        for name in sorted(doomed):
            fs.rm(join(root, name), recursive=True)
            log.info("removed dataset version %s", name)
        now = time.time()
        # A young temporary may be the shard a spared build is writing right now.
        remove_stale_temporaries(DataLayout(data).datasets,
                                 spare=lambda path: bool(min_age_s) and age_s(fs, path, now) < min_age_s)
    return sorted(doomed)
