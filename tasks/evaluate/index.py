"""An embedding index per dataset version and model, for plain-language search of the archive.

Stored as one TableStore table under index/<dataset version>-<checkpoint sha256[:16]>: image
embeddings as float16 with their obsid and the metadata a result shows (proposal id and title,
observation name, preview key). The manifest's config records the checkpoint sha256 that made the
embeddings; a query embedded by any other model is refused, never mixed in. `index/latest` names
the index `hubbleclip search` uses by default.

Search is exhaustive (the archive is small enough: 100,000 x 512 float16 is 100 MB): one
float16 matrix-vector product over every embedding (torch, one thread: a memory-bound product that
extra threads only slow down on a busy machine), the top candidates re-scored in float32, and
metadata looked up in in-memory arrays.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from schemas.errors import InputError
from schemas.manifest import Manifest
from storage import DataLayout, TableStore
from storage.fs import atomic_write_text, exists, join, read_text

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
LATEST = "latest"
METADATA_COLUMNS = ("obsid", "proposal_id", "obs_id", "title", "preview_sha256", "split", "target", "instrument")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
_RESCORE_EXTRA = 16  # candidates beyond k re-scored in float32, so float16 rounding cannot reorder the top k


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one intra-op thread for the duration: one query is too small to share out."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def index_name(dataset_version: str, checkpoint_sha256: str) -> str:
    name = f"{dataset_version}-{checkpoint_sha256[:16]}"
    if not _NAME.match(name):
        raise InputError(f"cannot name an index after dataset version {dataset_version!r}")
    return name


def index_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [pa.field(c, pa.string()) for c in METADATA_COLUMNS]
        + [pa.field("embedding", pa.list_(pa.float16(), dim))]
    )


@dataclass(frozen=True)
class SearchHit:
    rank: int
    score: float
    obsid: str
    proposal_id: str
    obs_id: str
    title: str
    preview_sha256: str
    preview_path: str
    target: str = ""
    instrument: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class EmbeddingIndex:
    """Unit-norm float32 embeddings in memory plus column arrays of metadata."""

    def __init__(self, name: str, embeddings: np.ndarray, metadata: dict[str, list[str]], config: dict[str, Any],
                 images_root: str):
        self.name = name
        emb = np.asarray(embeddings, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self._matrix = torch.from_numpy(np.ascontiguousarray(emb / np.where(norms > 0, norms, 1.0), dtype=np.float16))
        self.metadata = {c: np.asarray(metadata.get(c, [""] * len(emb)), dtype=object) for c in METADATA_COLUMNS}
        self.config = config
        self.images_root = images_root
        self._previews = frozenset(self.metadata["preview_sha256"].tolist()) - {""}

    # -- identity ------------------------------------------------------------------------------
    @property
    def checkpoint_sha256(self) -> str:
        return str(self.config["checkpoint_sha256"])

    @property
    def dataset_version(self) -> str:
        return str(self.config["dataset_version"])

    @property
    def model_name(self) -> str:
        return str(self.config.get("model_name", ""))

    @property
    def run(self) -> str:
        return str(self.config.get("run", ""))

    @property
    def embeddings(self) -> np.ndarray:
        """The unit embeddings as float32 (a copy: the index keeps float16)."""
        return self._matrix.float().numpy()

    @property
    def dim(self) -> int:
        return int(self._matrix.shape[1])

    def __len__(self) -> int:
        return int(self._matrix.shape[0])

    def has_preview(self, sha256: str) -> bool:
        """Only previews of indexed observations may be served."""
        return sha256 in self._previews

    def preview_path(self, sha256: str) -> str:
        return join(self.images_root, sha256[:2], f"{sha256}.jpg") if sha256 else ""

    # -- search --------------------------------------------------------------------------------
    def check_model(self, checkpoint_sha256: str) -> None:
        if checkpoint_sha256 != self.checkpoint_sha256:
            raise InputError(
                f"index {self.name} was built with checkpoint {self.checkpoint_sha256[:12]}, not "
                f"{checkpoint_sha256[:12]}: embeddings of different models are never mixed "
                "(rerun `hubbleclip evaluate` for this model)"
            )

    def search(self, query: np.ndarray, k: int, *, checkpoint_sha256: str) -> list[SearchHit]:
        """The k indexed images most similar to one query embedding, best first (exact)."""
        self.check_model(checkpoint_sha256)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise InputError(f"query has {q.shape[0]} dimensions, index {self.name} has {self.dim}")
        n = len(self)
        if n == 0:
            return []
        k = max(1, min(int(k), n))
        q = q / (np.linalg.norm(q) or 1.0)
        with single_thread(), torch.inference_mode():
            rough = self._matrix @ torch.from_numpy(q.astype(np.float16))
            candidates = torch.topk(rough.float(), min(n, k + _RESCORE_EXTRA)).indices
            exact = self._matrix[candidates].float() @ torch.from_numpy(q)
            order = torch.argsort(exact, descending=True, stable=True)[:k]
        rows = candidates[order].numpy()
        return self._hits(rows, exact[order].numpy())

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[SearchHit]:
        m = {c: self.metadata[c][rows] for c in METADATA_COLUMNS}
        return [
            SearchHit(
                rank=i + 1, score=float(scores[i]), obsid=m["obsid"][i], proposal_id=m["proposal_id"][i],
                obs_id=m["obs_id"][i], title=m["title"][i], preview_sha256=m["preview_sha256"][i],
                preview_path=self.preview_path(m["preview_sha256"][i]), target=m["target"][i],
                instrument=m["instrument"][i],
            )
            for i in range(len(rows))
        ]


def _store(data: str) -> TableStore:
    return TableStore(DataLayout(data).index)


def write_index(
    data: str,
    *,
    dataset_version: str,
    checkpoint_sha256: str,
    embeddings: np.ndarray,
    metadata: dict[str, Sequence[str]],
    model_name: str = "",
    run: str = "",
    inputs: dict[str, str] | None = None,
    make_latest: bool = True,
) -> Manifest:
    """Write (replace) the index of this dataset version and checkpoint; returns its manifest."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise InputError(f"embeddings must be a matrix, got shape {embeddings.shape}")
    n, dim = embeddings.shape
    for c in METADATA_COLUMNS:
        if c in metadata and len(metadata[c]) != n:
            raise InputError(f"index metadata column {c!r} has {len(metadata[c])} rows, embeddings {n}")
    if "obsid" not in metadata:
        raise InputError("an index needs the obsid of every embedding")
    name = index_name(dataset_version, checkpoint_sha256)
    columns: dict[str, pa.Array] = {c: pa.array([str(v) for v in metadata.get(c, [""] * n)], pa.string())
                                    for c in METADATA_COLUMNS}
    flat = pa.array(embeddings.astype(np.float16).reshape(-1), pa.float16())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, dim)
    table = pa.table(columns, schema=index_schema(dim))
    config = {"format": INDEX_FORMAT, "kind": "embedding-index", "dataset_version": dataset_version,
              "checkpoint_sha256": checkpoint_sha256, "model_name": model_name, "run": run, "dim": dim}
    manifest = _store(data).write(name, table, inputs=inputs, config=config, stats={"rows": n})
    if make_latest:
        atomic_write_text(join(DataLayout(data).index, LATEST), name + "\n")
    log.info("index %s: %d embeddings of dimension %d", name, n, dim)
    return manifest


def index_manifest(data: str, name: str) -> Manifest | None:
    return _store(data).manifest(name)


def latest_index_name(data: str) -> str:
    pointer = join(DataLayout(data).index, LATEST)
    if not exists(pointer):
        raise InputError(f"no search index under {DataLayout(data).index}: run `hubbleclip evaluate` first")
    name = read_text(pointer).strip()
    if not _NAME.match(name):
        raise InputError(f"index pointer {pointer} holds an invalid name {name!r}")
    return name


def list_indexes(data: str) -> list[str]:
    return _store(data).names()


def open_index(data: str, name: str | None = None) -> EmbeddingIndex:
    """Load an index into memory (default: the one `index/latest` names)."""
    name = name or latest_index_name(data)
    if not _NAME.match(name):
        raise InputError(f"invalid index name {name!r}")
    store = _store(data)
    manifest = store.manifest(name)
    if manifest is None:
        raise InputError(f"search index {name!r} does not exist under {DataLayout(data).index}")
    if manifest.config.get("kind") != "embedding-index":
        raise InputError(f"{name!r} under {DataLayout(data).index} is not an embedding index")
    table = store.read(name)
    dim = int(manifest.config["dim"])
    values = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    emb = values.astype(np.float32).reshape(-1, dim)  # renormalised by EmbeddingIndex (float16 rounds norms)
    metadata = {c: table.column(c).to_pylist() for c in METADATA_COLUMNS if c in table.column_names}
    return EmbeddingIndex(name, emb, metadata, dict(manifest.config), DataLayout(data).images)
