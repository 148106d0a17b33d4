"""Procedural previews: deterministic, instrument-shaped, and carrying their class at 64 px."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks.archive.render import INSTRUMENTS, render_preview
from tasks.archive.render_objects import RENDERERS

INSTRUMENT_CYCLE = ("ACS/WFC", "WFC3/UVIS", "WFC3/IR", "WFPC2")


def _thumbnail(data: bytes, side: int = 64) -> np.ndarray:
    """What a small model sees: padded to a square, resized to side x side."""
    image = Image.open(io.BytesIO(data)).convert("L")
    square = Image.new("L", (max(image.size),) * 2)
    square.paste(image, ((square.width - image.width) // 2, (square.height - image.height) // 2))
    return np.asarray(square.resize((side, side), Image.BILINEAR), np.float32) / 255


def _rotation_invariant_features(thumb: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64]
    rings = np.minimum((np.hypot(xx - 31.5, yy - 31.5) / 2).astype(int), 15).ravel()
    counts = np.bincount(rings, minlength=16)
    mean = np.bincount(rings, thumb.ravel(), 16) / counts
    spread = np.sqrt(np.maximum(np.bincount(rings, (thumb * thumb).ravel(), 16) / counts - mean**2, 0))
    power = np.abs(np.fft.fftshift(np.fft.fft2(thumb - thumb.mean()))).ravel()
    return np.concatenate([mean, spread, np.log1p(np.bincount(rings, power, 16) / counts),
                           np.histogram(thumb, bins=8, range=(0, 1))[0] / thumb.size])


@pytest.mark.parametrize("style", sorted(RENDERERS))
def test_each_style_renders_deterministically(style: str) -> None:
    first = render_preview(style, "ACS/WFC", 1234, color=True, single_filter=True)
    again = render_preview(style, "ACS/WFC", 1234, color=True, single_filter=True)
    other = render_preview(style, "ACS/WFC", 1235)
    assert first.total == again.total and first.color == again.color and first.single_filter == again.single_filter
    assert first.total != other.total
    total = Image.open(io.BytesIO(first.total))
    assert total.mode == "L" and (total.width, total.height) == (first.width, first.height)
    assert Image.open(io.BytesIO(first.color)).mode == "RGB"
    pixels = np.asarray(total, np.float32)
    assert pixels.max() > 150, "the object must be visible"
    assert (pixels < 8).mean() > 0.02, "black corners outside the rotated detector footprint"


def test_instruments_give_different_frames() -> None:
    sizes = {inst: render_preview("globular", inst, 99).width for inst in INSTRUMENTS}
    assert sizes["WFC3/IR"] < sizes["ACS/WFC"]
    for inst in INSTRUMENTS:
        r = render_preview("quasar", inst, 5)
        assert 300 <= r.width <= 800 and 300 <= r.height <= 800
    with pytest.raises(ValueError, match="unknown render style"):
        render_preview("nonsense", "ACS/WFC", 1)
    with pytest.raises(ValueError, match="unknown instrument"):
        render_preview("globular", "NICMOS", 1)


def test_classes_are_separable_at_64_px() -> None:
    """Crude rotation-invariant features and nearest centroids: far above chance (1/16)."""
    styles = sorted(RENDERERS)
    features, labels = [], []
    for label, style in enumerate(styles):
        for k in range(8):
            rendered = render_preview(style, INSTRUMENT_CYCLE[k % 4], 50_000 + 100 * label + k)
            features.append(_rotation_invariant_features(_thumbnail(rendered.total)))
            labels.append(label)
    x = np.array(features)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = np.array(labels)
    correct = 0
    for i in range(len(x)):
        others = np.arange(len(x)) != i
        centroids = np.array([x[others & (y == c)].mean(0) for c in range(len(styles))])
        correct += int(np.argmin(((centroids - x[i]) ** 2).sum(1)) == y[i])
    assert correct / len(x) >= 0.6
