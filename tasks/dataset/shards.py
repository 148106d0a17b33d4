"""Write examples as Parquet shards: one per writer, streaming row groups, zstd, HF Image column.

Memory stays bounded by one row group: rows are buffered until `row_group_rows`, written as one
row group, and dropped. A shard is written to a temporary file and renamed (or uploaded whole)
only once its footer is written, so a reader never sees a half-written row group, and a killed
build leaves at most temporaries, which `gc` removes.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from schemas.dataset import EXAMPLE_SCHEMA, Example
from storage.fs import TMP_PREFIX, join, open_fs, sha256_of

log = logging.getLogger(__name__)

_LIST_OVER = 64  # sizes of more objects than this on an object store: one listing
# JPEG bytes are already entropy-coded: zstd level 1 keeps the column zstd at a quarter of level
# 3's cost (neither saves more than ~0.2 %), and a dictionary on them would make every read ~10x
# slower (measured: 104 ms vs 10 ms per 256 images) for nothing, as images are distinct.
_IMAGE_LEVEL = 1
_DICTIONARY_COLUMNS = ["proposal_id", "split", "category", "title", "instrument", "filters",
                       "caption_summary", "caption_abstract", "objects_and_phenomena.list.element",
                       "science_use_cases.list.element"]
_STATISTICS_COLUMNS = ["obsid", "proposal_id", "split", "cycle", "category"]


def _leaf_columns(schema: pa.Schema) -> list[str]:
    """Parquet column paths of the schema's leaves (per-column writer settings are keyed by them)."""
    paths = []
    for f in schema:
        if pa.types.is_list(f.type):
            paths.append(f"{f.name}.list.element")
        elif pa.types.is_struct(f.type):
            paths += [f"{f.name}.{child.name}" for child in f.type]
        else:
            paths.append(f.name)
    return paths


@dataclass(frozen=True)
class ShardFile:
    """One written shard: its path relative to the version directory, and what it holds."""

    path: str
    split: str
    rows: int
    bytes: int
    sha256: str
    row_groups: tuple[int, ...]


def check_jpeg(data: bytes, image_size: int) -> tuple[str, str] | None:
    """(reason, detail) if `data` is not a decodable image_size x image_size JPEG, else None.

    Decoding at 1/8 scale still reads every entropy-coded byte (so truncation and corruption
    surface) at a fraction of the cost of a full decode.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                return "unreadable_image", f"not a JPEG ({im.format})"
            if im.size != (image_size, image_size):
                return "bad_image_size", f"{im.size[0]}x{im.size[1]}, expected {image_size}x{image_size}"
            im.draft("RGB", (max(1, image_size // 8), max(1, image_size // 8)))
            im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return "unreadable_image", f"{type(err).__name__}: {err}"
    return None


class _AtomicFile:
    """A file that appears at `url` only on commit(): a renamed local temporary, or one upload."""

    def __init__(self, url: str):
        self.fs, self.path = open_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        parent = self.path.rsplit("/", 1)[0]
        if self.local:
            os.makedirs(parent, exist_ok=True)
            self.tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}"
        else:
            handle, self.tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".parquet")
            os.close(handle)
        self.handle: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort

    def commit(self) -> tuple[int, str]:
        """Close, hash, and move into place; returns (bytes, sha256)."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        size = os.path.getsize(self.tmp)
        sha256 = sha256_of(LocalFileSystem(), self.tmp)
        if self.local:
            os.replace(self.tmp, self.path)
        else:
            self.fs.put_file(self.tmp, self.path)
            os.remove(self.tmp)
        return size, sha256

    def abort(self) -> None:
        self.handle.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


@dataclass
class _Buffer:
    columns: dict[str, list] = field(default_factory=lambda: {f.name: [] for f in EXAMPLE_SCHEMA})
    rows: int = 0

    def add(self, example: Example) -> None:
        values = example.model_dump(exclude={"image"})
        for name, column in self.columns.items():
            if name == "image":
                column.append({"bytes": example.image, "path": f"{example.obsid}.jpg"})
            else:
                column.append(values[name])
        self.rows += 1

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.columns, schema=EXAMPLE_SCHEMA)


def shard_relpath(split: str, part: int) -> str:
    return f"{split}/part-{part:05d}.parquet"


def shard_to_json(shard: ShardFile) -> dict:
    return {**asdict(shard), "row_groups": list(shard.row_groups)}


def shard_from_json(data: dict) -> ShardFile:
    return ShardFile(**{**data, "row_groups": tuple(data["row_groups"])})


def object_sizes(root: str, relpaths: Mapping[str, str]) -> dict[str, int]:
    """key -> size in bytes of the file at `root`/relpath (0 when absent), without reading it.

    On object stores one listing of `root` (pages of 1,000) replaces a request per object.
    """
    fs, base = open_fs(root)
    if not relpaths:
        return {}
    if not isinstance(fs, LocalFileSystem) and len(relpaths) > _LIST_OVER:
        try:
            listing = fs.find(base, detail=True)
        except FileNotFoundError:
            listing = {}
        sizes = {fs._strip_protocol(path): int(info.get("size") or 0) for path, info in listing.items()}
        return {key: sizes.get(fs._strip_protocol(f"{base}/{rel}"), 0) for key, rel in relpaths.items()}
    out = {}
    for key, rel in relpaths.items():
        try:
            out[key] = int(fs.size(f"{base}/{rel}") or 0)
        except FileNotFoundError:
            out[key] = 0
    return out


class SplitShardWriter:
    """Streams examples of one split into one shard, `<version>/<split>/part-<first_part>.parquet`.

    The build plans shard boundaries before any image is read (tasks.dataset.stage.plan_chunks),
    so a writer never decides where a shard ends: every example it is given goes into its one file.
    """

    def __init__(self, version_url: str, split: str, *, row_group_rows: int, compression_level: int = 3,
                 first_part: int = 0):
        self.version_url = version_url
        self.split = split
        self.first_part = first_part  # the shard's part number (a chunk of a split starts later)
        self.row_group_rows = row_group_rows
        self.compression_level = compression_level
        self._levels = {path: (_IMAGE_LEVEL if path == "image.bytes" else compression_level)
                        for path in _leaf_columns(EXAMPLE_SCHEMA)}
        self._buffer = _Buffer()
        self._file: _AtomicFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._row_groups: list[int] = []

    def _relpath(self) -> str:
        return shard_relpath(self.split, self.first_part)

    def add(self, example: Example) -> None:
        self._buffer.add(example)
        if self._buffer.rows >= self.row_group_rows:
            self._flush_row_group()

    def _flush_row_group(self) -> None:
        if not self._buffer.rows:
            return
        if self._writer is None:
            self._file = _AtomicFile(join(self.version_url, self._relpath()))
            self._writer = pq.ParquetWriter(
                self._file.handle, EXAMPLE_SCHEMA, compression="zstd", compression_level=self._levels,
                use_dictionary=_DICTIONARY_COLUMNS, write_statistics=_STATISTICS_COLUMNS,
            )
        table = self._buffer.table()
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._row_groups.append(table.num_rows)
        self._buffer = _Buffer()

    def close(self) -> ShardFile | None:
        """Commit the shard: its ShardFile, or None when nothing was added (then no file is written)."""
        self._flush_row_group()
        if self._writer is None or self._file is None:
            return None
        relpath = self._relpath()
        self._writer.close()
        size, digest = self._file.commit()
        shard = ShardFile(path=relpath, split=self.split, rows=sum(self._row_groups), bytes=size, sha256=digest,
                          row_groups=tuple(self._row_groups))
        log.info("wrote %s: %d rows in %d row groups, %.1f MB", relpath, shard.rows, len(self._row_groups),
                 size / 1e6)
        self._writer, self._file, self._row_groups = None, None, []
        return shard

    def abort(self) -> None:
        """Drop the shard in progress (its temporary): nothing appears at its path."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is being discarded anyway
                pass
        if self._file is not None:
            self._file.abort()
        self._writer, self._file = None, None
