"""fsspec helpers: resolve a URL to a filesystem, and write atomically.

Atomic here means a reader sees the old content or the new content, never a prefix: the bytes
go to a temporary sibling first and are renamed into place. On local disks the rename is
atomic (os.replace); object stores upload whole objects, which is atomic per object.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from schemas.errors import InputError
from storage.chaos import maybe_die

TMP_PREFIX = ".tmp-"


def open_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return (filesystem, path inside it) for a local path or an fsspec URL."""
    url = str(url)
    if "://" not in url:
        url = str(Path(url).expanduser().resolve())
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ValueError as err:  # "Protocol not known: foo"
        raise InputError(f"{url}: {err} (expected a local path or an fsspec URL such as s3://bucket/prefix)") from None
    except ImportError as err:  # a known protocol whose package is missing: fsspec says which to install
        raise InputError(f"{url}: {err}") from None
    return fs, path


def join(base: str, *parts: str) -> str:
    base = str(base).rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            base = f"{base}/{part}"
    return base


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def atomic_write_bytes(url: str, data: bytes) -> None:
    fs, path = open_fs(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if _is_local(fs):
        tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        maybe_die("fs.tmp_written", path)
        os.replace(tmp, path)
    else:
        tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}"
        fs.pipe_file(tmp, data)
        maybe_die("fs.tmp_written", path)
        fs.mv(tmp, path)
    maybe_die("fs.committed", path)


def atomic_write_text(url: str, text: str) -> None:
    atomic_write_bytes(url, text.encode("utf-8"))


def read_bytes(url: str) -> bytes:
    fs, path = open_fs(url)
    return fs.cat_file(path)


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def exists(url: str) -> bool:
    fs, path = open_fs(url)
    return fs.exists(path)


def remove_stale_temporaries(url: str, *, spare: Callable[[str], bool] | None = None) -> int:
    """Delete temporaries left by killed writers under `url`; returns how many.

    `spare(path)` True keeps that temporary: one a live writer may still commit.
    """
    fs, path = open_fs(url)
    if not fs.exists(path):
        return 0
    removed = 0
    for found in fs.find(path):
        if found.rsplit("/", 1)[-1].startswith(TMP_PREFIX) and not (spare and spare(found)):
            fs.rm(found)
            removed += 1
    return removed


def sha256_of(fs: fsspec.AbstractFileSystem, path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed (shards and checkpoints run to gigabytes)."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(url: str) -> str:
    """sha256 of the file at a local path or fsspec URL."""
    return sha256_of(*open_fs(url))
