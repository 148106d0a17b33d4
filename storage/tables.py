"""Parquet tables with manifests: atomic writes, reads, appends by partition, upserts by key.

Layout of one table (see docs/architecture.md):

    tables/<name>/_manifest.json          the current version: the only list of visible files
    tables/<name>/_versions/<digest>.json every version ever committed (history, rollback)
    tables/<name>/<partition>/part-<id>.parquet

A write puts each data file under a temporary name, renames it, and commits by writing the
manifest last (atomically). A writer killed at any point leaves the previous manifest in force;
its orphan files are not listed, so readers never see them, and `gc()` removes them.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.errors import InputError
from schemas.manifest import FileEntry, Manifest
from storage.fs import (
    atomic_write_bytes,
    atomic_write_text,
    join,
    open_fs,
    remove_stale_temporaries,
    sha256_of,
)

MANIFEST = "_manifest.json"
VERSIONS = "_versions"


def _parquet_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression)
    return sink.getvalue()


def _partition_label(value: Any) -> str:
    text = str(value)
    if "/" in text or text.startswith(".") or not text:
        raise InputError(f"partition value {value!r} cannot be used as a directory name")
    return text


class TableStore:
    """All stage tables under one `tables/` root (local path or fsspec URL)."""

    def __init__(self, root: str):
        self.root = root

    # -- paths -------------------------------------------------------------------------------
    def table_dir(self, name: str) -> str:
        if not name or "/" in name or name.startswith((".", "_")):
            raise InputError(f"invalid table name {name!r}")
        return join(self.root, name)

    def manifest_path(self, name: str) -> str:
        return join(self.table_dir(name), MANIFEST)

    # -- manifests ---------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        fs, path = open_fs(self.manifest_path(name))
        return fs.exists(path)

    def manifest(self, name: str, digest: str | None = None) -> Manifest | None:
        """The table's current manifest, or with `digest` that exact earlier version of it."""
        if digest is None:
            fs, path = open_fs(self.manifest_path(name))
        else:
            fs, path = open_fs(join(self.table_dir(name), VERSIONS, f"{digest}.json"))
        if not fs.exists(path):
            return None
        try:
            return Manifest.from_json(fs.cat_file(path), source=path)
        except InputError as err:
            raise InputError(f"table {name!r}: {err}") from None

    def names(self) -> list[str]:
        fs, path = open_fs(self.root)
        if not fs.exists(path):
            return []
        out = []
        for entry in fs.ls(path, detail=False):
            leaf = entry.rstrip("/").rsplit("/", 1)[-1]
            if fs.exists(f"{entry.rstrip('/')}/{MANIFEST}"):
                out.append(leaf)
        return sorted(out)

    def _commit(self, manifest: Manifest) -> Manifest:
        text = manifest.to_json()
        base = self.table_dir(manifest.name)
        atomic_write_text(join(base, VERSIONS, f"{manifest.digest}.json"), text)
        atomic_write_text(join(base, MANIFEST), text)
        return manifest

    # -- writes ------------------------------------------------------------------------------
    def _write_file(self, name: str, table: pa.Table, partition: str) -> FileEntry:
        data = _parquet_bytes(table)
        digest = hashlib.sha256(data).hexdigest()
        # Named by content: rewriting the same rows is idempotent and never clobbers other files.
        rel = f"{partition}/part-{digest[:16]}.parquet" if partition else f"part-{digest[:16]}.parquet"
        atomic_write_bytes(join(self.table_dir(name), rel), data)
        return FileEntry(path=rel, rows=table.num_rows, bytes=len(data), sha256=digest, partition=partition)

    def _split(self, table: pa.Table, partition_by: str | None) -> list[tuple[str, pa.Table]]:
        if partition_by is None:
            return [("", table)]
        if partition_by not in table.column_names:
            raise InputError(f"partition column {partition_by!r} not in table columns {table.column_names}")
        parts = []
        values = table.column(partition_by).to_pylist()
        for value in sorted(set(values), key=str):
            mask = pa.array([v == value for v in values])
            parts.append((f"{partition_by}={_partition_label(value)}", table.filter(mask)))
        return parts

    def write(
        self,
        name: str,
        table: pa.Table,
        *,
        partition_by: str | None = None,
        inputs: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        stats: Mapping[str, Any] | None = None,
        schema_version: int = 1,
    ) -> Manifest:
        """Replace the table with `table` (a new version)."""
        files = [self._write_file(name, part, label) for label, part in self._split(table, partition_by)]
        if not files:
            files = [self._write_file(name, table, "")]
        manifest = Manifest(
            name=name,
            schema_version=schema_version,
            arrow_schema=table.schema.remove_metadata().to_string(),
            files=files,
            inputs=dict(inputs or {}),
            config=dict(config or {}),
            stats=dict(stats or {}),
        )
        return self._commit(manifest)

    def upsert(
        self,
        name: str,
        table: pa.Table,
        *,
        key: str | list[str],
        partition_by: str | None = None,
        inputs: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        stats: Mapping[str, Any] | None = None,
        schema_version: int = 1,
    ) -> Manifest:
        """Merge rows into the table: a new row replaces a stored one with the same key.

        The partitions the new rows land in are rewritten. Another partition keeps its files unless
        it holds one of the new keys (the row moved partition, e.g. a proposal's cycle corrected):
        then it is rewritten without that row, so a key is never stored twice.
        """
        keys = [key] if isinstance(key, str) else list(key)
        for k in keys:
            if k not in table.column_names:
                raise InputError(f"upsert key {k!r} not in columns {table.column_names}")
        old = self.manifest(name)
        if old is None:
            return self.write(name, _dedupe_keep_last(table, keys), partition_by=partition_by, inputs=inputs,
                              config=config, stats=stats, schema_version=schema_version)
        new_parts = dict(self._split(table, partition_by))
        incoming = _key_set(table, keys)
        files = [self._without_keys(name, f, incoming, keys) if partition_by else f
                 for f in old.files if f.partition not in new_parts]
        files = [f for f in files if f is not None]
        for label, part in sorted(new_parts.items()):
            previous = [f for f in old.files if f.partition == label]
            if previous:
                stored = pa.concat_tables([self._read_file(name, f) for f in previous], promote_options="default")
                stored = stored.select(part.column_names) if set(part.column_names) <= set(stored.column_names) else stored
                moved_out = incoming - _key_set(part, keys)  # rows of this partition that now live in another
                if moved_out:
                    stored = stored.filter(pa.array([k not in moved_out for k in _key_list(stored, keys)]))
                merged = _merge_on_key(stored, part, keys)
            else:
                merged = _dedupe_keep_last(part, keys)
            files.append(self._write_file(name, merged, label))
        manifest = Manifest(
            name=name,
            schema_version=schema_version,
            arrow_schema=table.schema.remove_metadata().to_string(),
            files=files,
            inputs=dict(inputs if inputs is not None else old.inputs),
            config=dict(config if config is not None else old.config),
            stats=dict(stats if stats is not None else old.stats),
        )
        return self._commit(manifest)

    def _without_keys(self, name: str, entry: FileEntry, incoming: set[tuple], keys: list[str]) -> FileEntry | None:
        """`entry`, or a rewrite of it without the rows whose keys are `incoming` (None if none is left)."""
        stored = self._read_file(name, entry)
        stays = [key not in incoming for key in _key_list(stored, keys)]
        if all(stays):
            return entry
        rest = stored.filter(pa.array(stays))
        return self._write_file(name, rest, entry.partition) if rest.num_rows else None

    def append(self, name: str, table: pa.Table, *, partition_by: str | None = None,
               stats: Mapping[str, Any] | None = None, unique_on: Iterable[str] | None = None) -> Manifest:
        """Add rows as new files: for logs such as the quarantine table.

        Files are named by their content, so a batch identical to one already appended (the same
        rows in the same order) is stored once: an append replayed after a kill adds nothing.

        With `unique_on`, rows whose values in those columns are already stored (or repeated in
        `table`) are left out, so a commit replayed after a kill adds nothing twice.
        """
        old = self.manifest(name)
        if unique_on is not None and table.num_rows:
            columns = list(unique_on)
            seen = _key_set(self.read(name, columns=columns), columns) if old is not None else set()
            keep = []
            for i, key in enumerate(_key_list(table, columns)):
                if key not in seen:
                    seen.add(key)
                    keep.append(i)
            if not keep and old is not None:
                return old
            table = table.take(keep)
        files = [self._write_file(name, part, label) for label, part in self._split(table, partition_by)]
        if old is not None:
            known = {f.path for f in old.files}
            files = list(old.files) + [f for f in files if f.path not in known]
        manifest = Manifest(
            name=name,
            arrow_schema=(table.schema.remove_metadata().to_string()),
            files=files,
            inputs=dict(old.inputs) if old else {},
            config=dict(old.config) if old else {},
            stats=dict(stats if stats is not None else (old.stats if old else {})),
            schema_version=old.schema_version if old else 1,
        )
        return self._commit(manifest)

    # -- reads -------------------------------------------------------------------------------
    def _read_file(self, name: str, entry: FileEntry, *, verify: bool = True) -> pa.Table:
        fs, path = open_fs(join(self.table_dir(name), entry.path))
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            # collect_garbage keeps only the current manifest's files: an older version's go.
            raise InputError(f"table {name!r}: file {entry.path} that its manifest lists is missing "
                             "(an older version after garbage collection, or a damaged table)") from None
        if verify and hashlib.sha256(data).hexdigest() != entry.sha256:
            raise InputError(f"table {name!r}: file {entry.path} does not match its manifest hash")
        return pq.read_table(io.BytesIO(data))

    def damaged_files(self, name: str) -> list[str]:
        """The current manifest's files that are missing or whose bytes no longer hash to it: a
        stage that trusts its manifest to skip work checks this first, so a rerun mends the table."""
        manifest = self.manifest(name)
        damaged = []
        for entry in manifest.files if manifest is not None else []:
            fs, path = open_fs(join(self.table_dir(name), entry.path))
            if not fs.exists(path) or sha256_of(fs, path) != entry.sha256:
                damaged.append(entry.path)
        return damaged

    def read(self, name: str, *, columns: Iterable[str] | None = None, verify: bool = True,
             digest: str | None = None) -> pa.Table:
        """The rows the manifest lists; each file is checked against its manifest sha256 first
        (hashing bytes already in memory costs ~1 ms/MB: shared storage is not trusted).

        `digest` reads that version of the table: a stage that keyed its work on a digest reads
        exactly those rows, even if a newer version was committed since it looked.
        """
        manifest = self.manifest(name, digest)
        if manifest is None:
            if digest is not None and self.exists(name):
                raise InputError(f"table {name!r} under {self.root} has no version {digest[:16]}")
            raise InputError(f"table {name!r} does not exist under {self.root} (run the stage that writes it)")
        tables = [self._read_file(name, f, verify=verify) for f in manifest.files]
        table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
        if columns is not None:
            table = table.select(list(columns))
        return table

    def read_rows(self, name: str) -> list[dict[str, Any]]:
        return self.read(name).to_pylist() if self.exists(name) else []

    # -- housekeeping ------------------------------------------------------------------------
    def gc(self, name: str) -> int:
        """Delete data files no manifest version lists, and stale temporaries."""
        base = self.table_dir(name)
        fs, path = open_fs(base)
        if not fs.exists(path):
            return 0
        removed = remove_stale_temporaries(base)
        listed: set[str] = set()
        current = self.manifest(name)
        if current is not None:
            listed |= {f.path for f in current.files}
        for found in fs.find(path):
            rel = found[len(path.rstrip("/")) + 1:]
            if rel.endswith(".parquet") and rel not in listed:
                fs.rm(found)
                removed += 1
        return removed


def _dedupe_keep_last(table: pa.Table, keys: list[str]) -> pa.Table:
    """One row per key (the last given wins), sorted by key.

    Sorted, not in arrival order: concurrent batches commit in whatever order they finish, and
    the file (hence its hash, the manifest digest and every downstream cache key) must depend
    only on which rows the table holds.
    """
    seen: dict[tuple, int] = {}
    for i, key in enumerate(_key_list(table, keys)):
        seen[key] = i
    order = sorted(seen.items(), key=lambda item: tuple((v is None, str(type(v)), v) for v in item[0]))
    return table.take([index for _, index in order])


def _key_list(table: pa.Table, keys: list[str]) -> list[tuple]:
    return list(zip(*(table.column(k).to_pylist() for k in keys), strict=True))


def _key_set(table: pa.Table, keys: list[str]) -> set[tuple]:
    return set(_key_list(table, keys))


def _merge_on_key(stored: pa.Table, new: pa.Table, keys: list[str]) -> pa.Table:
    combined = pa.concat_tables([stored, new], promote_options="default")
    return _dedupe_keep_last(combined, keys)


def table_from_records(records: Iterable[Any], schema: pa.Schema) -> pa.Table:
    """Build an Arrow table from pydantic records (or dicts) with an explicit schema."""
    rows = [r.model_dump() if hasattr(r, "model_dump") else dict(r) for r in records]
    return pa.Table.from_pylist(rows, schema=schema)
