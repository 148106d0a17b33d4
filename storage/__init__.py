"""The one API for paths, Parquet tables, the content-addressed image store and atomic writes.

Everything goes through fsspec, so the data root can be a local path (the default), `memory://`
(tests) or any remote URL such as `s3://bucket/prefix` in production.
"""

from storage.fs import atomic_write_bytes, exists, join, open_fs, read_bytes, read_text
from storage.images import ImageStore
from storage.layout import DataLayout
from storage.tables import TableStore

__all__ = [
    "DataLayout",
    "ImageStore",
    "TableStore",
    "atomic_write_bytes",
    "exists",
    "join",
    "open_fs",
    "read_bytes",
    "read_text",
]
