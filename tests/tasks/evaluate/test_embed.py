"""Embedding with a real (tiny) open_clip model: both decode paths agree, bad images are named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from schemas.errors import InputError
from tasks.evaluate.embed import decode_image, embed_images, embed_texts, embedding_dim, resolve_device


def test_images_embed_to_unit_rows_in_input_order(tiny_clip, jpegs):
    seen = []
    emb = embed_images(tiny_clip, jpegs, batch_size=5, progress=seen.append)
    assert emb.shape == (len(jpegs), embedding_dim(tiny_clip)) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert seen == [5, 5, 2]
    one = embed_images(tiny_clip, [jpegs[7]])
    np.testing.assert_allclose(one[0], emb[7], atol=1e-5)


def test_tensor_decode_path_matches_the_pil_eval_transform(tiny_clip, jpegs):
    pil = embed_images(tiny_clip, jpegs, decoder="pil")
    tensor = embed_images(tiny_clip, jpegs, decoder="torch", batch_size=4)
    cos = np.einsum("ij,ij->i", pil, tensor)
    assert cos.min() > 0.98  # same transform; only resampling kernels differ slightly


def test_tensor_path_reads_non_jpeg_images_too(tiny_clip):
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(buf, format="PNG")
    emb = embed_images(tiny_clip, [buf.getvalue()], decoder="torch")
    assert emb.shape[0] == 1 and np.isfinite(emb).all()


def test_texts_embed_and_long_texts_are_truncated(tiny_clip):
    emb = embed_texts(tiny_clip, ["globular cluster", "dwarf galaxy " * 200])
    assert emb.shape == (2, embedding_dim(tiny_clip))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert embed_texts(tiny_clip, []).shape == (0, embedding_dim(tiny_clip))


def test_an_undecodable_image_is_an_input_error_naming_it(tiny_clip, jpegs):
    with pytest.raises(InputError, match="obs 42: not a decodable image"):
        embed_images(tiny_clip, [jpegs[0], b"not an image"], names=["obs 1", "obs 42"])
    with pytest.raises(InputError, match="obs 42"):
        embed_images(tiny_clip, [jpegs[0], jpegs[1][:40]], names=["obs 1", "obs 42"], decoder="torch")
    assert decode_image(Image.new("L", (4, 4))).mode == "RGB"


def test_cuda_without_a_gpu_is_refused_up_front():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_tensor_transform_normalises_with_the_models_mean_and_std(tiny_clip):
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from tasks.evaluate.embed import TensorTransform

    cfg = {"size": 16, "mean": (0.5, 0.25, 0.125), "std": (0.2, 0.3, 0.4), "interpolation": "bicubic"}
    transform = TensorTransform(cfg, torch.device("cpu"))
    batch = torch.randint(0, 256, (2, 3, 24, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = transform(batch)
    # The formula TensorTransform had before it called tasks.dataset.augment.normalize.
    cropped = F.center_crop(F.resize(batch, [16], interpolation=InterpolationMode.BICUBIC, antialias=True), [16, 16])
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 16, 16)
    assert torch.equal(out, (cropped.float().div_(255.0) - mean) / std)
    assert torch.equal(TensorTransform(tiny_clip.image_cfg, tiny_clip.device).mean.flatten(),
                       torch.tensor(tiny_clip.image_cfg["mean"], dtype=torch.float32))
