"""Image decoding and per-sample augmentation, kept in uint8 until the GPU.

Training: a random 90-degree rotation, a random horizontal flip (together: all 8 symmetries of
the square, each equally likely) and a random crop, drawn per sample (the reference drew one per
batch). Evaluation: the centre crop, nothing else. Either can resize the stored 512 image first
(`resize_to`), so a tiny model can train on 64-px crops of a 128-px image; power-of-two
reductions decode directly at the smaller size (JPEG DCT scaling), which is almost free.

The CPU side returns uint8 [B, 3, S, S]; float conversion and CLIP normalisation happen on the
device (tasks.dataset.batch.to_model_input). With decode_device='cuda', JPEG bytes and the
drawn parameters cross over instead, and `augment_on_device` does the same work on the GPU.
`normalize` is the project's one (x/255 - mean)/std: training (tasks.train.batches.ImagePrep)
and embedding (tasks.evaluate.embed) call it with their model's mean and std.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode

log = logging.getLogger(__name__)

# OpenAI CLIP's normalisation (open_clip.constants.OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# Columns of the per-sample parameter array: crop top, crop left, quarter turns, horizontal flip.
PARAM_Y, PARAM_X, PARAM_K, PARAM_FLIP = range(4)


def draw_params(rng: np.random.Generator, n: int, side: int, crop: int, train: bool) -> np.ndarray:
    """int64 [n, 4]: per-sample (top, left, quarter turns, flip) for crops of `crop` from `side`."""
    if crop > side:
        raise ValueError(f"crop {crop} is larger than the image side {side}")
    params = np.zeros((n, 4), dtype=np.int64)
    if train:
        params[:, PARAM_Y] = rng.integers(0, side - crop + 1, n)
        params[:, PARAM_X] = rng.integers(0, side - crop + 1, n)
        params[:, PARAM_K] = rng.integers(0, 4, n)
        params[:, PARAM_FLIP] = rng.integers(0, 2, n)
    else:
        params[:, PARAM_Y] = params[:, PARAM_X] = (side - crop) // 2
    return params


def decode_rgb(data: bytes, resize_to: int | None = None) -> torch.Tensor:
    """uint8 [3, H, W]. Full size through libjpeg-turbo (torchvision); smaller sizes through PIL's
    draft mode, which decodes at 1/2, 1/4 or 1/8 scale and so skips most of the work."""
    if resize_to is None:
        return torchvision.io.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                          mode=ImageReadMode.RGB)
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (resize_to, resize_to))
        rgb = im.convert("RGB")
    if rgb.size != (resize_to, resize_to):
        rgb = rgb.resize((resize_to, resize_to), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)  # a writable copy of a small image


class DecodedCache:
    """Decoded, resized images by key, up to a byte budget (first come, kept; no eviction).

    A small model trains for many epochs over a small set: the tiny preset sees each demo image
    ~120 times, and decoding was half of its step time. Resized images are small (80 px: 19 KB),
    so a few hundred MB hold tens of thousands. Augmentation still runs per sample on the copy.
    Keeping the first images that arrive (rather than LRU) suits epochs that visit every image
    once in a random order: an LRU would evict each image just before it came round again.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.images: dict[object, torch.Tensor] = {}

    def get(self, key: object) -> torch.Tensor | None:
        return self.images.get(key)

    def put(self, key: object, image: torch.Tensor) -> None:
        size = image.numel() * image.element_size()
        if self.bytes + size <= self.max_bytes and key not in self.images:
            self.images[key] = image
            self.bytes += size


def transform(image: torch.Tensor, p: Sequence[int] | np.ndarray, crop: int) -> torch.Tensor:
    """Crop first (so the flips touch only crop-sized data), then flip, then rotate."""
    y, x, k, flip = (int(v) for v in p)
    out = image[:, y:y + crop, x:x + crop]
    if flip:
        out = out.flip(-1)
    if k:
        out = torch.rot90(out, k, (1, 2))
    return out


def augment_batch(jpegs: Sequence[bytes], params: np.ndarray, crop: int, resize_to: int | None = None, *,
                  cache: DecodedCache | None = None, keys: Sequence[object] | None = None) -> tuple[torch.Tensor, int]:
    """uint8 [B, 3, crop, crop] on the CPU, and how many images failed to decode (left black).

    With `cache` and `keys` (one per image, e.g. obsids), decoded images are looked up first and
    kept after decoding; the result is the same either way."""
    out = torch.zeros((len(jpegs), 3, crop, crop), dtype=torch.uint8)
    failures = 0
    for i, data in enumerate(jpegs):
        try:
            image = cache.get(keys[i]) if cache is not None and keys is not None else None
            if image is None:
                image = decode_rgb(data, resize_to)
                if cache is not None and keys is not None:
                    cache.put(keys[i], image)
            out[i].copy_(transform(image, params[i], crop))
        except (RuntimeError, OSError, ValueError) as err:
            # Shards are hash-verified and every image was decoded at build time, so this is a
            # damaged disk or memory, not data: log, keep the batch shape, go on.
            failures += 1
            log.warning("could not decode an image (%s); using a black image", err)
    return out, failures


def augment_on_device(jpegs: Sequence[torch.Tensor], params: torch.Tensor | np.ndarray, crop: int,
                      resize_to: int | None, device: torch.device | str) -> torch.Tensor:
    """The same crops and symmetries as augment_batch, with decoding on the GPU (nvJPEG)."""
    images = torchvision.io.decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device)
    rows = params.tolist() if isinstance(params, torch.Tensor | np.ndarray) else list(params)
    out = torch.empty((len(images), 3, crop, crop), dtype=torch.uint8, device=device)
    for i, image in enumerate(images):
        if resize_to is not None and image.shape[-1] != resize_to:
            image = torch.nn.functional.interpolate(image[None].float(), size=(resize_to, resize_to),
                                                    mode="bilinear", antialias=True, align_corners=False)
            image = image[0].round_().clamp_(0, 255).to(torch.uint8)
        out[i].copy_(transform(image, rows[i], crop))
    return out


def channel_stats(mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor, dtype: torch.dtype,
                  device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as [1, C, 1, 1] `dtype` tensors on `device` (no copy if already so).

    Build them once where normalisation runs inside a captured CUDA graph: making a device tensor
    from Python numbers is a host-to-device copy, which graph capture does not allow."""
    return (torch.as_tensor(mean, dtype=dtype, device=device).view(1, -1, 1, 1),
            torch.as_tensor(std, dtype=dtype, device=device).view(1, -1, 1, 1))


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32,
              mean: Sequence[float] | torch.Tensor = CLIP_MEAN,
              std: Sequence[float] | torch.Tensor = CLIP_STD) -> torch.Tensor:
    """uint8 (or [0, 1] float) [B, C, H, W] -> (x - mean) / std in `dtype`, on the tensor's device.

    The arithmetic runs in `dtype` (mean and std are cast to it too), so a bf16 `dtype` is bf16
    throughout; the input is never modified. `mean`/`std` default to CLIP's."""
    x = images.to(dtype) if images.dtype != dtype else images.clone()
    if images.dtype == torch.uint8:
        x = x.div_(255.0)
    mean_t, std_t = channel_stats(mean, std, dtype, x.device)
    return x.sub_(mean_t).div_(std_t)
