"""`normalize` is the project's one (x/255 - mean)/std: pin the numbers each caller relied on."""

from __future__ import annotations

import pytest
import torch

from tasks.dataset.augment import CLIP_MEAN, CLIP_STD, channel_stats, normalize
from tasks.dataset.batch import Batch, device_images

OTHER_MEAN = (0.5, 0.25, 0.125)
OTHER_STD = (0.2, 0.3, 0.4)


def _images(seed: int = 0, shape=(2, 3, 5, 7)) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_default_stats_are_clips_and_bf16_arithmetic_stays_bf16():
    images = _images()
    for dtype in (torch.float32, torch.bfloat16):
        # The formula normalize had before it took mean/std: every step in `dtype`.
        x = images.to(dtype).div_(255.0)
        mean = torch.tensor(CLIP_MEAN, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=dtype).view(1, 3, 1, 1)
        out = normalize(images, dtype)
        assert out.dtype == dtype and torch.equal(out, x.sub_(mean).div_(std))


def test_given_stats_match_the_float32_formula_of_training_and_embedding():
    images = _images(1)
    # What ImagePrep and TensorTransform computed before they called normalize.
    mean = torch.tensor(OTHER_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(OTHER_STD, dtype=torch.float32).view(1, -1, 1, 1)
    expected = (images.float().div_(255.0) - mean) / std
    as_values = normalize(images, torch.float32, OTHER_MEAN, OTHER_STD)
    as_tensors = normalize(images, torch.float32, *channel_stats(OTHER_MEAN, OTHER_STD, torch.float32, "cpu"))
    assert as_values.dtype == torch.float32
    assert torch.equal(as_values, expected) and torch.equal(as_tensors, expected)
    assert torch.equal(images, _images(1))  # input left untouched


def test_float_input_is_taken_as_0_to_1_and_left_untouched():
    images = _images(2)
    unit = images.float() / 255
    before = unit.clone()
    assert torch.equal(normalize(unit, torch.float32, OTHER_MEAN, OTHER_STD),
                       normalize(images, torch.float32, OTHER_MEAN, OTHER_STD))
    assert torch.equal(unit, before)


def test_channel_stats_shape_dtype_and_no_copy_when_already_made():
    mean, std = channel_stats(OTHER_MEAN, OTHER_STD, torch.float32, "cpu")
    assert mean.shape == std.shape == (1, 3, 1, 1) and mean.dtype == torch.float32
    # Tensors already in the right dtype and place come back as they are: nothing to copy
    # (the CUDA-graph training step relies on this during capture).
    again_mean, again_std = channel_stats(mean, std, torch.float32, "cpu")
    assert again_mean.data_ptr() == mean.data_ptr() and again_std.data_ptr() == std.data_ptr()
    as_bf16, _ = channel_stats(mean, std, torch.bfloat16, "cpu")
    assert as_bf16.dtype == torch.bfloat16
    one_channel, _ = channel_stats([0.5], [0.25], torch.float32, "cpu")
    assert one_channel.shape == (1, 1, 1, 1)


def test_device_images_keeps_uint8_and_refuses_a_batch_without_images():
    images = _images(3, (2, 3, 4, 4))
    batch = Batch(images=images, tokens=None, proposal_ids=["1", "2"], obsids=["1", "2"], captions=["a", "b"])
    out = device_images(batch, "cpu")
    assert out.dtype == torch.uint8 and torch.equal(out, images)
    with pytest.raises(ValueError, match="neither decoded images nor encoded JPEGs"):
        device_images(batch._replace(images=None), "cpu")
