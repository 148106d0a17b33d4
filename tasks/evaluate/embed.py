"""Batch image and text embedding with an open_clip model: eval transform, no grad, device auto.

Two image paths give the same transform (resize the shortest side, centre crop, CLIP
normalisation, no augmentation):
- `pil`: PIL decode + the model's own eval transform in a thread pool (Pillow releases the GIL
  while decoding and resizing). Any image format. The reference path, used on CPU.
- `torch`: JPEG bytes decoded by torchvision on the model's device (nvJPEG on CUDA), then resized
  and normalised as tensors in batches. Used on CUDA, where CPU decoding would starve the GPU.
Embeddings come back L2-normalised, float32, in input order.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from schemas.errors import InputError

log = logging.getLogger(__name__)

Decoder = Literal["auto", "pil", "torch"]
ImageInput = bytes | Image.Image
Progress = Callable[[int], None]


@dataclass
class ClipModel:
    """An open_clip model ready for inference, with what identifies it."""

    name: str
    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    checkpoint_sha256: str
    device: torch.device

    @property
    def image_cfg(self) -> dict[str, Any]:
        import open_clip

        return dict(open_clip.get_model_preprocess_cfg(self.model))


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is an input error, not a crash later."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but no CUDA GPU is available")
    return torch.device(device)


def prepare_model(
    name: str,
    model: torch.nn.Module,
    preprocess: Callable[[Image.Image], torch.Tensor],
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    checkpoint_sha256: str,
    device: str = "auto",
) -> ClipModel:
    dev = resolve_device(device)
    model = model.to(dev).eval()
    return ClipModel(name, model, preprocess, tokenizer, checkpoint_sha256, dev)


def decode_image(data: ImageInput, name: str = "image") -> Image.Image:
    """Bytes (any format Pillow reads) or a PIL image -> RGB PIL image; InputError if unusable."""
    if isinstance(data, Image.Image):
        return data.convert("RGB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a decodable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{name}: not a decodable image ({type(err).__name__}: {err})") from None


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _encode_images(clip: ClipModel, pixels: torch.Tensor) -> np.ndarray:
    with torch.inference_mode(), _autocast(clip.device):
        feats = clip.model.encode_image(pixels.to(clip.device, non_blocking=True), normalize=True)
    return feats.float().cpu().numpy()


def _workers(workers: int | None) -> int:
    return workers if workers is not None else max(1, min(16, os.cpu_count() or 1))


def _embed_pil(
    clip: ClipModel, images: Sequence[ImageInput], batch_size: int, names: Sequence[str] | None,
    workers: int | None, progress: Progress | None,
) -> np.ndarray:
    def load(i: int) -> torch.Tensor:
        return clip.preprocess(decode_image(images[i], names[i] if names else f"image {i}"))

    out: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=_workers(workers)) as pool:
        for start in range(0, len(images), batch_size):
            idx = range(start, min(start + batch_size, len(images)))
            pixels = torch.stack(list(pool.map(load, idx)))
            out.append(_encode_images(clip, pixels))
            if progress:
                progress(len(idx))
    return np.concatenate(out)


class TensorTransform:
    """The eval transform on uint8 CHW tensors: shortest side to `size`, centre crop, normalise."""

    def __init__(self, cfg: dict[str, Any], device: torch.device):
        # Here, not at import: search loads no data stack. Bound once: __call__ runs every batch.
        from tasks.dataset.augment import channel_stats, normalize

        self._normalize = normalize
        size = cfg["size"]
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean, self.std = channel_stats(cfg["mean"], cfg["std"], torch.float32, device)
        self.interpolation = cfg.get("interpolation", "bicubic")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        resized = F.resize(batch, [min(self.size)], interpolation=mode, antialias=True)
        cropped = F.center_crop(resized, list(self.size))
        return self._normalize(cropped, torch.float32, self.mean, self.std)  # uint8 in: decode_jpeg's output


def _prepare_torch_batch(
    chunk: Sequence[ImageInput], first: int, names: Sequence[str] | None, transform: TensorTransform,
    device: torch.device, stream: Any,
) -> tuple[list[tuple[list[int], torch.Tensor]], Any]:
    """Decode and transform one batch: [(positions, pixels)] per image shape, plus a CUDA event."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext(), torch.inference_mode():
        raw = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in chunk]  # type: ignore[arg-type]
        try:
            decoded = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            # One bad or non-JPEG file fails the whole batch: fall back per image to name it.
            decoded = [_decode_one(b, device, names[first + i] if names else f"image {first + i}")
                       for i, b in enumerate(chunk)]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(decoded):
            by_shape.setdefault(tuple(img.shape), []).append(i)
        groups = [(idx, transform(torch.stack([decoded[i] for i in idx]))) for idx in by_shape.values()]
        event = None
        if stream is not None:
            event = torch.cuda.Event()
            event.record(stream)
    return groups, event


def _embed_torch(
    clip: ClipModel, images: Sequence[ImageInput], batch_size: int, names: Sequence[str] | None,
    progress: Progress | None,
) -> np.ndarray:
    """Batch i+1 is decoded and transformed (on a side CUDA stream, from a helper thread) while
    batch i is encoded, so nvJPEG and the ViT overlap instead of taking turns."""
    transform = TensorTransform(clip.image_cfg, clip.device)
    stream = torch.cuda.Stream(device=clip.device) if clip.device.type == "cuda" else None
    starts = list(range(0, len(images), batch_size))
    out: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-decode") as pool:
        def submit(start: int):
            return pool.submit(_prepare_torch_batch, images[start:start + batch_size], start, names, transform,
                               clip.device, stream)

        pending = submit(starts[0])
        for n, start in enumerate(starts):
            groups, event = pending.result()
            if n + 1 < len(starts):
                pending = submit(starts[n + 1])
            if event is not None:
                torch.cuda.current_stream(clip.device).wait_event(event)
            size = min(batch_size, len(images) - start)
            parts: dict[int, np.ndarray] = {}
            for idx, pixels in groups:
                if stream is not None:
                    pixels.record_stream(torch.cuda.current_stream(clip.device))
                for i, row in zip(idx, _encode_images(clip, pixels), strict=True):
                    parts[i] = row
            out.append(np.stack([parts[i] for i in range(size)]))
            if progress:
                progress(size)
    return np.concatenate(out)


def _decode_one(data: bytes, device: torch.device, name: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                           device=device)
    except RuntimeError:
        # Not a JPEG (or one nvJPEG refuses): the PIL path reads any format, or names the file.
        img = decode_image(data, name)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).to(device)


def embed_images(
    clip: ClipModel,
    images: Sequence[ImageInput],
    *,
    batch_size: int = 64,
    decoder: Decoder = "auto",
    names: Sequence[str] | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Image embeddings (N x D, unit rows, float32). `auto` decodes on the GPU when there is one."""
    if len(images) == 0:
        return np.zeros((0, embedding_dim(clip)), dtype=np.float32)
    if decoder == "auto":
        all_bytes = all(isinstance(i, bytes | bytearray) for i in images)
        decoder = "torch" if clip.device.type == "cuda" and all_bytes else "pil"
    if decoder == "torch":
        return _embed_torch(clip, images, batch_size, names, progress)
    return _embed_pil(clip, images, batch_size, names, workers, progress)


def embed_texts(
    clip: ClipModel, texts: Sequence[str], *, batch_size: int = 256, progress: Progress | None = None
) -> np.ndarray:
    """Text embeddings (N x D, unit rows, float32); texts longer than the context are truncated."""
    if len(texts) == 0:
        return np.zeros((0, embedding_dim(clip)), dtype=np.float32)
    out: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        tokens = clip.tokenizer(chunk).to(clip.device)
        with torch.inference_mode(), _autocast(clip.device):
            feats = clip.model.encode_text(tokens, normalize=True)
        out.append(feats.float().cpu().numpy())
        if progress:
            progress(len(chunk))
    return np.concatenate(out)


def embedding_dim(clip: ClipModel) -> int:
    proj = getattr(clip.model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[-1])
    tokens = clip.tokenizer([""]).to(clip.device)
    with torch.inference_mode():
        return int(clip.model.encode_text(tokens).shape[-1])
