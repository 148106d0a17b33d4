"""Plain-language search of the archive (text -> top images) and image description (image -> classes).

A `Searcher` pairs an index with the model that built it; it checks the model's checkpoint hash
against the index before any query, so results from two models can never be mixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.errors import InputError
from schemas.vocabulary import CURATED_CLASSES
from storage.fs import exists, open_fs, read_bytes
from tasks.evaluate.embed import ClipModel, ImageInput, decode_image, embed_images, embed_texts
from tasks.evaluate.index import EmbeddingIndex, SearchHit, open_index, single_thread
from tasks.evaluate.zeroshot import DEFAULT_TEMPLATE, ClassRanking, class_embeddings, rank_classes

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 300
MAX_K = 100
MAX_IMAGE_BYTES = 50 * 1024 * 1024


def clean_query(query: str) -> str:
    """The query with whitespace collapsed; InputError when empty or longer than MAX_QUERY_CHARS."""
    text = " ".join(str(query).split())
    if not text:
        raise InputError("empty query: type what to look for, e.g. 'globular cluster'")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"query too long: {len(text)} characters (at most {MAX_QUERY_CHARS})")
    return text


def check_k(k: int, upper: int = MAX_K) -> int:
    if not 1 <= int(k) <= upper:
        raise InputError(f"k must be between 1 and {upper}, got {k}")
    return int(k)


@dataclass
class Searcher:
    index: EmbeddingIndex
    clip: ClipModel
    classes: tuple[str, ...] = CURATED_CLASSES
    template: str = DEFAULT_TEMPLATE
    _class_emb: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.index.check_model(self.clip.checkpoint_sha256)

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        text = clean_query(query)
        k = check_k(k)
        with single_thread():  # one short text: thread hand-offs cost more than they save
            vec = embed_texts(self.clip, [text])[0]
        return self.index.search(vec, k, checkpoint_sha256=self.clip.checkpoint_sha256)

    def describe(self, image: ImageInput, k: int = 5, name: str = "image") -> ClassRanking:
        """The top-k curated classes for any image (bytes in any format Pillow reads, or PIL)."""
        k = check_k(k, len(self.classes))
        pil = decode_image(image, name)
        emb = embed_images(self.clip, [pil], decoder="pil")
        if self._class_emb is None:
            self._class_emb = class_embeddings(self.clip, self.classes, self.template)
        return rank_classes(emb, self._class_emb, self.classes, k=k)[0]


def read_image_file(path: str) -> bytes:
    """Bytes of an image file for `describe`; InputError when missing, a folder or too large."""
    if not exists(path):
        raise InputError(f"image file {path} does not exist")
    fs, inner = open_fs(path)
    if fs.isdir(inner):
        raise InputError(f"{path} is a folder, not an image file")
    size = fs.size(inner)
    if size is not None and size > MAX_IMAGE_BYTES:
        raise InputError(f"image file {path} is {size} bytes (at most {MAX_IMAGE_BYTES})")
    return read_bytes(path)


ModelLoader = Callable[[str, str, str], ClipModel]  # (data, run, device) -> model


def open_searcher(data: str, load_model: ModelLoader, *, index: str | None = None,
                  device: str = "auto") -> Searcher:
    """The index (default: index/latest) and the model of the run that built it, hash-checked."""
    idx = open_index(data, index)
    if not idx.run:
        raise InputError(f"index {idx.name} does not record the run that made it; rebuild it")
    clip = load_model(data, idx.run, device)
    return Searcher(idx, clip)


def hits_as_rows(hits: list[SearchHit]) -> list[dict[str, Any]]:
    return [h.to_dict() for h in hits]
