"""Procedural HST-like preview images whose content follows a science class.

One call renders one observation: the class's object (render_objects.py) at a random scale,
orientation and offset, inside an instrument footprint (drizzled previews are north-up, so the
detector is a rotated rectangle with black corners), with sky noise, background stars, diffraction
spikes, cosmic rays, detector gaps, and an asinh stretch, encoded as JPEG. Everything is vectorised
numpy on float32 frames of a few hundred pixels, so tens of thousands of previews take minutes.

The randomness comes only from the `seed` argument, so a preview's bytes depend on nothing else.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.archive.render_objects import RENDERERS, smooth_field


@dataclass(frozen=True)
class InstrumentSpec:
    footprint: tuple[int, int]  # detector footprint in preview pixels (width, height)
    psf_sigma: float  # point-spread function width in pixels
    chip_gap: bool  # two-chip mosaic with a gap across the middle
    read_noise: float  # relative noise floor
    cosmic_rays: tuple[int, int]  # range of cosmic-ray hits left after combination
    max_tilt_deg: float  # how far north-up drizzling rotates the footprint
    quadrant_mask: bool = False  # WFPC2's stair-step: the PC chip leaves a quadrant mostly empty


INSTRUMENTS: dict[str, InstrumentSpec] = {
    "ACS/WFC": InstrumentSpec((470, 450), 1.0, True, 0.012, (0, 25), 40.0),
    "WFC3/UVIS": InstrumentSpec((450, 425), 1.0, True, 0.014, (0, 30), 40.0),
    "WFC3/IR": InstrumentSpec((330, 330), 1.7, False, 0.018, (0, 3), 35.0),
    "WFPC2": InstrumentSpec((420, 420), 1.2, False, 0.02, (5, 45), 45.0, quadrant_mask=True),
    "ACS/HRC": InstrumentSpec((320, 300), 1.1, False, 0.016, (0, 15), 30.0),
    "ACS/SBC": InstrumentSpec((340, 300), 1.3, False, 0.03, (0, 0), 30.0),
    "STIS/CCD": InstrumentSpec((300, 300), 1.1, False, 0.02, (5, 40), 30.0),
}


@dataclass
class RenderedPreview:
    total: bytes  # the combined "total" preview (grey)
    color: bytes | None  # an RGB colour composite, when asked for
    single_filter: bytes | None  # a one-filter preview, when asked for
    width: int
    height: int


def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates as a (1, w) row and an (h, 1) column: broadcasting makes the full grid."""
    return _AXIS[None, :width], _AXIS[:height, None]


_AXIS = np.arange(1024, dtype=np.float32)
_NOISE_SIDE = 1024


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of unit Gaussian noise; each image takes a random window of it, flipped at random.

    Drawing fresh Gaussian noise for every frame costs more than the rest of the rendering; windows
    of one fixed bank cost a copy. The bank is seeded by a constant, so bytes stay deterministic.
    """
    return np.random.default_rng(20240308).standard_normal((_NOISE_SIDE, _NOISE_SIDE), dtype=np.float32)


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y0 = int(rng.integers(0, _NOISE_SIDE - height + 1))
    x0 = int(rng.integers(0, _NOISE_SIDE - width + 1))
    window = _noise_bank()[y0 : y0 + height, x0 : x0 + width]
    flip = int(rng.integers(0, 4))
    return window[:: (-1 if flip & 1 else 1), :: (-1 if flip & 2 else 1)]


@lru_cache(maxsize=16)
def _psf_stamp(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets and weights of a normalised Gaussian core plus a faint halo."""
    half = max(2, int(math.ceil(3.5 * sigma)))
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
    r2 = (dx * dx + dy * dy).astype(np.float32)
    core = np.exp(-r2 / (2 * sigma * sigma))
    halo = 0.04 / (1.0 + r2 / (2.5 * sigma) ** 2)
    weights = core + halo
    weights /= weights.sum()
    return dx.ravel(), dy.ravel(), weights.ravel().astype(np.float32)


class Canvas:
    """A float32 frame plus the object's coordinate system (object radius = 1)."""

    def __init__(self, height: int, width: int, center: tuple[float, float], radius_px: float,
                 angle: float, psf_sigma: float, rng: np.random.Generator):
        self.height, self.width = height, width
        self.img = np.zeros((height, width), np.float32)
        self.cx, self.cy = center
        self.radius_px = radius_px
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.psf_sigma = psf_sigma
        self.rng = rng
        xx, yy = _pixel_grid(height, width)
        dx = xx - np.float32(self.cx)
        dy = yy - np.float32(self.cy)
        inv = np.float32(1.0 / radius_px)
        c, s = np.float32(self.cos), np.float32(self.sin)
        self.X = (dx * c + dy * s) * inv
        self.Y = (dy * c - dx * s) * inv
        self._r = None
        self._phi = None

    @property
    def R(self) -> np.ndarray:
        if self._r is None:
            self._r = np.sqrt(self.X * self.X + self.Y * self.Y)
        return self._r

    @property
    def PHI(self) -> np.ndarray:
        if self._phi is None:
            self._phi = np.arctan2(self.Y, self.X)
        return self._phi

    def to_pixels(self, xo: np.ndarray, yo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Object coordinates -> pixel coordinates."""
        px = self.cx + (xo * self.cos - yo * self.sin) * self.radius_px
        py = self.cy + (xo * self.sin + yo * self.cos) * self.radius_px
        return px, py

    def add_points_px(self, px: np.ndarray, py: np.ndarray, flux: np.ndarray, sigma: float | None = None) -> None:
        """Deposit point sources (pixel coordinates) convolved with the PSF, via one bincount."""
        if len(px) == 0:
            return
        ddx, ddy, w = _psf_stamp(round(sigma or self.psf_sigma, 1))
        ix = np.rint(px).astype(np.int64)[:, None] + ddx[None, :]
        iy = np.rint(py).astype(np.int64)[:, None] + ddy[None, :]
        weights = (np.asarray(flux, np.float32)[:, None] * w[None, :]).ravel()
        ix, iy = ix.ravel(), iy.ravel()
        keep = (ix >= 0) & (ix < self.width) & (iy >= 0) & (iy < self.height)
        flat = iy[keep] * self.width + ix[keep]
        self.img += np.bincount(flat, weights[keep], minlength=self.height * self.width).reshape(
            self.height, self.width).astype(np.float32)

    def add_points(self, xo: np.ndarray, yo: np.ndarray, flux: np.ndarray, sigma: float | None = None) -> None:
        px, py = self.to_pixels(np.asarray(xo), np.asarray(yo))
        self.add_points_px(px, py, flux, sigma)

    def _rotated_window(self, px: float, py: float, half: int, angle: float
                        ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
        """The image window of +-half pixels around (px, py), clipped, and its pixel offsets rotated
        by `angle` (u along it, v across); None when the window lies outside the image."""
        x0, x1 = max(int(px) - half, 0), min(int(px) + half + 1, self.width)
        y0, y1 = max(int(py) - half, 0), min(int(py) + half + 1, self.height)
        if x0 >= x1 or y0 >= y1:
            return None
        xx, yy = _pixel_grid(self.height, self.width)
        dx = xx[:, x0:x1] - np.float32(px)
        dy = yy[y0:y1, :] - np.float32(py)
        c, s = math.cos(angle), math.sin(angle)
        return (y0, y1, x0, x1), dx * c + dy * s, dy * c - dx * s

    def add_blob(self, xo: float, yo: float, size: float, amp: float, q: float = 1.0, pa: float = 0.0,
                 profile: str = "devauc") -> None:
        """A small galaxy (object coordinates) rendered in a local window only."""
        px, py = self.to_pixels(np.float32(xo), np.float32(yo))
        size_px = max(size * self.radius_px, 0.6)
        half = int(min(max(size_px * (12 if profile == "devauc" else 4), 4), max(self.width, self.height)))
        window = self._rotated_window(px, py, half, pa)
        if window is None:
            return
        (y0, y1, x0, x1), u, v = window
        u, v = u / size_px, v / (size_px * q)
        r2 = u * u + v * v
        if profile == "devauc":
            patch = 1.0 / (1.0 + r2) ** 1.6
        elif profile == "exp":
            patch = np.exp(-np.sqrt(r2))
        else:
            patch = np.exp(-0.5 * r2)
        self.img[y0:y1, x0:x1] += np.float32(amp) * patch.astype(np.float32)

    def add_spikes(self, px: float, py: float, amp: float, length_px: float, angle: float) -> None:
        """HST's four-pointed diffraction spikes (fixed to the telescope, not the object)."""
        window = self._rotated_window(px, py, int(length_px * 3), angle)
        if window is None:
            return
        (y0, y1, x0, x1), u, v = window
        spike = np.exp(-np.abs(u) / length_px - v * v / 0.8) + np.exp(-np.abs(v) / length_px - u * u / 0.8)
        self.img[y0:y1, x0:x1] += np.float32(amp) * spike.astype(np.float32)


def _footprint(rng: np.random.Generator, spec: InstrumentSpec) -> tuple[int, int, float, float, float]:
    """Frame size that holds the rotated detector footprint; returns (h, w, tilt, half_w, half_h)."""
    fw, fh = spec.footprint
    jitter = rng.uniform(0.9, 1.12)
    fw, fh = fw * jitter, fh * jitter * rng.uniform(0.94, 1.06)
    tilt = math.radians(rng.uniform(-spec.max_tilt_deg, spec.max_tilt_deg))
    c, s = abs(math.cos(tilt)), abs(math.sin(tilt))
    width = int(min(800, max(300, fw * c + fh * s + 8)))
    height = int(min(800, max(300, fw * s + fh * c + 8)))
    return height, width, tilt, fw / 2, fh / 2


def _background_stars(canvas: Canvas, rng: np.random.Generator, trailed: bool, spike_angle: float) -> None:
    n = int(rng.integers(8, 70))
    px = rng.uniform(0, canvas.width, n)
    py = rng.uniform(0, canvas.height, n)
    flux = (0.15 * (1.0 + rng.pareto(1.3, n))).clip(max=80).astype(np.float32)
    if trailed:  # moving-target tracking smears field stars into short parallel trails
        length = rng.uniform(8, 25)
        direction = rng.uniform(0, math.pi)
        steps = np.linspace(-0.5, 0.5, 12)
        tx = (px[:, None] + steps[None, :] * length * math.cos(direction)).ravel()
        ty = (py[:, None] + steps[None, :] * length * math.sin(direction)).ravel()
        canvas.add_points_px(tx, ty, np.repeat(flux / 12 * 3, 12))
        return
    canvas.add_points_px(px, py, flux)
    brightest = np.argsort(flux)[::-1][: int(rng.integers(0, 4))]
    for i in brightest:
        if flux[i] > 2.0:
            canvas.add_spikes(px[i], py[i], min(float(flux[i]) * 0.02, 0.5), rng.uniform(6, 14), spike_angle)


def _cosmic_rays(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    h, w = img.shape
    for _ in range(count):
        length = int(rng.integers(1, 7))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang = rng.uniform(0, math.pi)
        xs = np.clip((x + np.arange(length) * math.cos(ang)).astype(int), 0, w - 1)
        ys = np.clip((y + np.arange(length) * math.sin(ang)).astype(int), 0, h - 1)
        img[ys, xs] += np.float32(rng.uniform(0.3, 2.5))


def _stretch(img: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """asinh stretch to [0, 1]: faint structure visible, bright cores not saturated flat."""
    sample = img[::3, ::3].ravel()
    top = float(np.partition(sample, int(len(sample) * 0.9985))[int(len(sample) * 0.9985)])
    soft = noise * rng.uniform(2.5, 5.0)
    scale = np.float32(1.0 / soft)
    out = np.arcsinh(np.maximum(img, 0) * scale) * np.float32(1.0 / math.asinh(max(top, soft * 4) / soft))
    return np.clip(out, 0, 1)


def _encode(array: np.ndarray, quality: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def render_preview(style: str, instrument: str, seed: int, *, color: bool = False,
                   single_filter: bool = False) -> RenderedPreview:
    """Render one observation's previews. Deterministic in (style, instrument, seed)."""
    if style not in RENDERERS:
        raise ValueError(f"unknown render style {style!r}; known: {sorted(RENDERERS)}")
    spec = INSTRUMENTS.get(instrument)
    if spec is None:
        raise ValueError(f"unknown instrument {instrument!r}; known: {sorted(INSTRUMENTS)}")
    rng = np.random.default_rng(seed)
    height, width, tilt, half_w, half_h = _footprint(rng, spec)
    fc = (width / 2, height / 2)
    short = min(half_w, half_h)
    center = (fc[0] + rng.uniform(-0.12, 0.12) * short, fc[1] + rng.uniform(-0.12, 0.12) * short)
    radius = short * rng.uniform(0.55, 0.85)
    canvas = Canvas(height, width, center, radius, rng.uniform(0, 2 * math.pi), spec.psf_sigma, rng)

    trailed = RENDERERS[style](canvas, rng) is True  # solar-system renderers ask for trailed stars
    spike_angle = tilt + math.radians(45.0 if instrument.startswith("ACS") else 0.0)
    _background_stars(canvas, rng, trailed, spike_angle)

    # Detector footprint (rotated rectangle), chip gap, WFPC2 stair-step.
    xx, yy = _pixel_grid(height, width)
    c, s = np.float32(math.cos(tilt)), np.float32(math.sin(tilt))
    u = (xx - np.float32(fc[0])) * c + (yy - np.float32(fc[1])) * s
    v = (yy - np.float32(fc[1])) * c - (xx - np.float32(fc[0])) * s
    inside = (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    if spec.quadrant_mask:
        pc = rng.uniform(0.35, 0.5)
        inside &= ~((u > 0) & (v < 0) & ((u > pc * half_w) | (v < -pc * half_h)))
    img = canvas.img
    sky = np.float32(rng.uniform(0.002, 0.02))
    noise = spec.read_noise * rng.uniform(0.7, 1.4)
    img += sky
    gain = np.float32(rng.uniform(0.01, 0.03))
    img += _noise(rng, height, width) * np.sqrt(np.float32(noise * noise) + gain * np.maximum(img, 0) * np.float32(noise))
    lo, hi = spec.cosmic_rays
    _cosmic_rays(img, rng, int(rng.integers(lo, hi + 1)) if hi > 0 else 0)
    if spec.chip_gap:
        gap = np.abs(v - np.float32(rng.uniform(-0.05, 0.05) * half_h)) < np.float32(rng.uniform(3.0, 7.0))
        if rng.random() < 0.6:
            img[gap] = 0.0
        else:  # dithered: the gap is filled at half depth, with more noise
            img[gap] = img[gap] * 0.5 + rng.standard_normal(int(gap.sum())).astype(np.float32) * noise * 2
    if rng.random() < 0.15:  # a hot column
        col = int(rng.integers(0, width))
        img[:, col] += np.float32(rng.uniform(0.05, 0.3))

    stretched = _stretch(img, noise, rng)
    stretched[~inside] = 0.0
    grey = (stretched * 255).astype(np.uint8)
    quality = int(rng.integers(78, 92))
    total = _encode(grey, quality)

    color_bytes = None
    if color:  # a false-colour composite: channels differ by smooth tints and gamma
        tint = smooth_field(rng, height, width, 3) * np.float32(0.12)
        root = np.sqrt(stretched)
        rgb = np.stack([(stretched + np.float32(0.25) * root) * (1 + tint), stretched * np.float32(1.1),
                        stretched * stretched * (1 - tint) + np.float32(0.2) * stretched], axis=-1)
        color_bytes = _encode((np.clip(rgb, 0, 1) * 255).astype(np.uint8), quality, "RGB")
    single_bytes = None
    if single_filter:  # one filter: a different depth and noise realisation of the same scene
        depth = np.float32(rng.uniform(0.6, 0.9))
        jitter = np.abs(_noise(rng, height, width)) * np.float32(0.03)
        single = np.clip(stretched * depth + jitter, 0, 1)
        single[~inside] = 0.0
        single_bytes = _encode((single * 255).astype(np.uint8), quality)
    return RenderedPreview(total, color_bytes, single_bytes, width, height)


def corrupt_jpeg(data: bytes, seed: int) -> bytes:
    """A JPEG that starts right and then turns to garbage (a truncated, damaged transfer)."""
    rng = np.random.default_rng(seed)
    keep = max(64, len(data) // 5)
    return data[:keep] + rng.integers(0, 256, size=keep, dtype=np.uint8).tobytes()


@dataclass(frozen=True)
class RenderJob:
    """One observation's previews to render and write into `directory`."""

    style: str
    instrument: str
    seed: int
    directory: str
    total: str
    color: str | None
    single: str | None
    defect: str | None  # corrupt_jpeg | zero_byte_jpeg | preview_404 | None


def run_render_job(job: RenderJob) -> dict[str, int]:
    """Render and write one job's files; returns {filename: size} (the size a product row declares).

    Files are written plainly, not atomically: a new sky is built in a temporary directory that is
    renamed into place at the end, and an extension's new files stay unreferenced until the
    sky's index files are replaced, so a killed generator never leaves a visible half-written file.
    """
    rendered = render_preview(job.style, job.instrument, job.seed, color=job.color is not None,
                              single_filter=job.single is not None)
    files: dict[str, bytes] = {job.total: rendered.total}
    if job.color:
        files[job.color] = rendered.color or b""
    if job.single:
        files[job.single] = rendered.single_filter or b""
    sizes = {name: len(data) for name, data in files.items()}
    if job.defect == "corrupt_jpeg":
        files[job.total] = corrupt_jpeg(rendered.total, job.seed)
        sizes[job.total] = len(files[job.total])
    elif job.defect == "zero_byte_jpeg":
        files[job.total] = b""
        sizes[job.total] = 0
    elif job.defect == "preview_404":  # listed with its size, never written: downloads answer 404
        del files[job.total]
    directory = Path(job.directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return sizes
