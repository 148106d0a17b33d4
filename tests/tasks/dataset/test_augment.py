import io

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.dataset.augment import (
    CLIP_MEAN,
    CLIP_STD,
    PARAM_FLIP,
    PARAM_K,
    DecodedCache,
    augment_batch,
    decode_rgb,
    draw_params,
    normalize,
    transform,
)
from tasks.dataset.batch import Batch, to_model_input


def _jpeg(array: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_training_parameters_cover_all_symmetries_and_crops_stay_inside():
    params = draw_params(np.random.default_rng(0), 4000, 512, 224, train=True)
    assert params[:, :2].min() >= 0 and params[:, :2].max() <= 512 - 224
    pairs = {(int(k), int(f)) for k, f in params[:, [PARAM_K, PARAM_FLIP]]}
    assert pairs == {(k, f) for k in range(4) for f in range(2)}  # all 8 symmetries of the square
    assert len({tuple(p) for p in params[:50]}) == 50  # drawn per sample, not per batch
    centre = draw_params(np.random.default_rng(0), 3, 512, 224, train=False)
    assert (centre == np.array([[144, 144, 0, 0]] * 3)).all()


def test_transform_crops_then_flips_then_rotates_like_numpy():
    image = torch.arange(3 * 6 * 6, dtype=torch.uint8).reshape(3, 6, 6)
    crop = image[:, 1:5, 2:6].numpy()
    for k in range(4):
        for flip in (0, 1):
            expected = crop[:, :, ::-1] if flip else crop
            expected = np.rot90(expected, k, axes=(1, 2))
            assert np.array_equal(transform(image, [1, 2, k, flip], 4).numpy(), expected)


def test_augment_batch_decodes_to_uint8_crops():
    rng = np.random.default_rng(1)
    array = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    payload = _jpeg(array)
    params = draw_params(rng, 3, 64, 32, train=True)
    images, failures = augment_batch([payload, payload, b"not a jpeg"], params, 32)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32) and failures == 1
    decoded = decode_rgb(payload)
    assert torch.equal(images[0], transform(decoded, params[0], 32))
    assert images[2].sum() == 0  # the undecodable one is black, the batch keeps its shape


def test_a_decoded_cache_changes_nothing_but_the_decoding_and_keeps_to_its_budget(monkeypatch):
    rng = np.random.default_rng(2)
    payloads = [_jpeg(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    params = draw_params(rng, 3, 48, 32, train=True)
    plain, _ = augment_batch(payloads, params, 32, 48)
    cache = DecodedCache(max_bytes=2 * 3 * 48 * 48)  # room for two of the three
    first, _ = augment_batch(payloads, params, 32, 48, cache=cache, keys=["a", "b", "c"])
    assert torch.equal(first, plain) and list(cache.images) == ["a", "b"] and cache.bytes == 2 * 3 * 48 * 48
    decoded = []
    import tasks.dataset.augment as augment

    real = augment.decode_rgb
    monkeypatch.setattr(augment, "decode_rgb", lambda data, size=None: decoded.append(data) or real(data, size))
    again, _ = augment_batch(payloads, params, 32, 48, cache=cache, keys=["a", "b", "c"])
    assert torch.equal(again, plain) and decoded == [payloads[2]]  # only the one that did not fit


def test_resize_before_crop_uses_draft_for_power_of_two_and_resamples_otherwise():
    array = np.zeros((128, 128, 3), dtype=np.uint8)
    array[:, 64:] = 255
    payload = _jpeg(array)
    half = decode_rgb(payload, resize_to=64)
    assert half.shape == (3, 64, 64) and half[:, :, :28].float().mean() < 20 and half[:, :, 36:].float().mean() > 235
    assert decode_rgb(payload, resize_to=100).shape == (3, 100, 100)
    assert decode_rgb(payload).shape == (3, 128, 128)


def test_normalize_and_to_model_input():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(images)
    expected = (1.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[0, :, 0, 0], expected)
    as_float = images.float() / 255
    assert torch.allclose(normalize(as_float), out) and as_float.max() == 1.0  # input left untouched
    batch = Batch(images=images, tokens=torch.ones(2, 77, dtype=torch.long), proposal_ids=["1", "2"],
                  obsids=["1", "2"], captions=["a", "b"])
    model_images, tokens = to_model_input(batch, "cpu", dtype=torch.bfloat16)
    assert model_images.dtype == torch.bfloat16 and tokens.shape == (2, 77)
    with pytest.raises(ValueError):
        to_model_input(batch._replace(images=None), "cpu")
