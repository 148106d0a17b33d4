"""One procedural renderer per visual class (the `style` of classes.ClassSpec).

Each renderer draws into `canvas.img` in the object's own coordinates (canvas.X, canvas.Y, with
the object's radius = 1; the canvas has already applied a random scale, rotation and offset).
Peak brightness is of order 1 against a noise floor of about 0.02, so the class is plain to see at
64 px, while the details (ellipticities, arm pitch, shell counts, star numbers ...) vary enough
that no two previews are alike. A renderer returns True to ask for trailed field stars.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

F = np.float32


def smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Large-scale random structure: a coarse random grid upsampled bicubically (zero mean, unit-ish std)."""
    aspect = width / height
    grid = rng.standard_normal((cells, max(2, int(round(cells * aspect))))).astype(F)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC), F)


def _plummer(rng: np.random.Generator, n: int, scale: float, cut: float) -> tuple[np.ndarray, np.ndarray]:
    u = rng.uniform(0.0, 1.0, n) * (1 - 1e-3) + 1e-4
    r = scale / np.sqrt(u ** (-2.0 / 3.0) - 1.0)
    phi = rng.uniform(0, 2 * math.pi, n)
    keep = r <= cut  # drop the far tail (clamping it would pile stars into a visible ring)
    return (r * np.cos(phi))[keep], (r * np.sin(phi))[keep]


def _luminosity(rng: np.random.Generator, n: int, faint: float, slope: float = 1.6) -> np.ndarray:
    return (faint * (1.0 + rng.pareto(slope, n))).clip(max=faint * 400).astype(F)


def _elliptical(canvas, rng, x: float, y: float, size: float, amp: float) -> None:
    canvas.add_blob(x, y, size, amp, q=rng.uniform(0.6, 1.0), pa=rng.uniform(0, math.pi), profile="devauc")


def _background_galaxies(canvas, rng, n: int, spread: float = 1.4) -> None:
    for _ in range(n):
        canvas.add_blob(rng.uniform(-spread, spread), rng.uniform(-spread, spread), rng.uniform(0.01, 0.03),
                        rng.uniform(0.05, 0.2), q=rng.uniform(0.3, 1.0), pa=rng.uniform(0, math.pi),
                        profile="exp")


def barred_spiral(canvas, rng) -> None:
    q = F(rng.uniform(0.55, 1.0))
    X, Y = canvas.X, canvas.Y / q
    r = np.sqrt(X * X + Y * Y) + F(1e-3)
    phi = np.arctan2(Y, X)
    bar_len = rng.uniform(0.25, 0.42)
    pitch = math.radians(rng.uniform(14, 26))
    wind = F(1.0 / math.tan(pitch))
    phase = F(2.0) * (phi - np.log(r / F(bar_len)) * wind)
    arms = (F(0.5) + F(0.5) * np.cos(phase)) ** 4
    start = np.clip((r - F(0.8 * bar_len)) / F(0.15), 0, 1)
    disk = np.exp(-r / F(0.32))
    bar = np.exp(-(X * X / F(bar_len ** 2) + Y * Y / F((0.13 * bar_len) ** 2)))
    bulge = np.exp(-r / F(0.045))
    canvas.img += F(0.25) * disk + F(1.1) * arms * start * np.exp(-r / F(0.45)) + F(0.9) * bar + F(1.6) * bulge
    # HII regions strung along the arms
    n = int(rng.integers(20, 45))
    rk = rng.uniform(bar_len, 1.0, n)
    arm = rng.integers(0, 2, n)
    pk = np.log(rk / bar_len) * float(wind) + arm * math.pi + rng.normal(0, 0.12, n)
    canvas.add_points(rk * np.cos(pk), rk * np.sin(pk) * float(q), rng.uniform(1.0, 3.0, n).astype(F))


def irregular(canvas, rng) -> None:
    X, Y = canvas.X, canvas.Y
    ox, oy = rng.uniform(-0.2, 0.2, 2)
    canvas.img += F(0.25) * np.exp(-(((X - F(ox)) / F(0.8)) ** 2 + ((Y - F(oy)) / F(0.5)) ** 2) * F(2.0))
    for _ in range(int(rng.integers(8, 18))):
        canvas.add_blob(rng.normal(0, 0.35), rng.normal(0, 0.25), rng.uniform(0.03, 0.12), rng.uniform(0.25, 0.9),
                        q=rng.uniform(0.5, 1.0), pa=rng.uniform(0, math.pi), profile="gauss")
    n = int(rng.integers(60, 160))
    canvas.add_points(rng.normal(0, 0.4, n), rng.normal(0, 0.28, n), _luminosity(rng, n, 0.4))


def globular(canvas, rng) -> None:
    n = int(rng.integers(3500, 8000))
    core = rng.uniform(0.14, 0.26)
    x, y = _plummer(rng, n, core, 1.6)
    canvas.add_points(x, y, _luminosity(rng, len(x), 0.35, 1.8))
    canvas.img += F(0.25) / (F(1.0) + canvas.R * canvas.R / F(core * core)) ** 2
    giants = int(rng.integers(2, 6))
    gx, gy = _plummer(rng, giants, core * 2, 1.0)
    px, py = canvas.to_pixels(gx, gy)
    canvas.add_points_px(px, py, np.full(len(px), 25.0, F))
    for i in range(len(px)):
        canvas.add_spikes(px[i], py[i], 0.3, rng.uniform(8, 14), math.radians(45))


def crowded(canvas, rng) -> None:
    n = int(rng.integers(3000, 6500))
    px = rng.uniform(0, canvas.width, n)
    py = rng.uniform(0, canvas.height, n)
    canvas.add_points_px(px, py, _luminosity(rng, n, 0.35, 1.5))
    if rng.random() < 0.4:  # patchy foreground extinction
        dust = smooth_field(rng, canvas.height, canvas.width, 4)
        canvas.img *= np.clip(F(1.0) - F(0.5) * np.maximum(dust, 0), 0.2, 1)


def dwarf(canvas, rng) -> None:
    q = rng.uniform(0.55, 1.0)
    n = int(rng.integers(500, 1300))
    x, y = _plummer(rng, n, rng.uniform(0.35, 0.55), 1.5)
    canvas.add_points(x, y * q, _luminosity(rng, len(x), 0.3, 2.2))
    r = np.sqrt(canvas.X ** 2 + (canvas.Y / F(q)) ** 2)
    canvas.img += F(0.05) * np.exp(-r / F(0.4))
    _background_galaxies(canvas, rng, int(rng.integers(6, 16)), 1.6)


def einstein_ring(canvas, rng) -> None:
    _elliptical(canvas, rng, 0.0, 0.0, rng.uniform(0.04, 0.07), 1.8)
    r0 = F(rng.uniform(0.38, 0.6))
    width = F(rng.uniform(0.025, 0.045))
    q = F(rng.uniform(0.85, 1.0))
    r = np.sqrt(canvas.X ** 2 + (canvas.Y / q) ** 2)
    ring = np.exp(-(((r - r0) / width) ** 2))
    phi0 = rng.uniform(0, 2 * math.pi)
    canvas.img += F(0.9) * ring * (F(0.75) + F(0.25) * np.cos(canvas.PHI - F(phi0)))
    k = int(rng.integers(2, 5))
    ang = phi0 + np.linspace(0, 2 * math.pi, k, endpoint=False) + rng.normal(0, 0.3, k)
    canvas.add_points(float(r0) * np.cos(ang), float(r0) * float(q) * np.sin(ang), rng.uniform(1.0, 2.5, k).astype(F), 1.5)
    _background_galaxies(canvas, rng, int(rng.integers(3, 8)))


def lensing_arcs(canvas, rng) -> None:
    for i in range(int(rng.integers(1, 3))):
        off = (0.0, 0.0) if i == 0 else tuple(rng.normal(0, 0.15, 2))
        _elliptical(canvas, rng, off[0], off[1], rng.uniform(0.03, 0.06), 1.5 if i == 0 else 0.8)
    R, PHI = canvas.R, canvas.PHI
    for _ in range(int(rng.integers(2, 5))):
        r0 = F(rng.uniform(0.45, 0.95))
        centre = rng.uniform(-math.pi, math.pi)
        half = F(rng.uniform(0.25, 0.7))
        dphi = _wrap(PHI - F(centre))
        arc = np.exp(-(((R - r0) / F(rng.uniform(0.018, 0.035))) ** 2) - (dphi / half) ** 2)
        canvas.img += F(rng.uniform(0.5, 1.0)) * arc
    _background_galaxies(canvas, rng, int(rng.integers(8, 20)))


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + F(math.pi)) % F(2 * math.pi) - F(math.pi)


def galaxy_cluster(canvas, rng) -> None:
    _elliptical(canvas, rng, 0.0, 0.0, rng.uniform(0.06, 0.09), 2.2)
    canvas.img += F(0.06) * np.exp(-canvas.R / F(0.5))  # intracluster light
    n = int(rng.integers(22, 45))
    x, y = _plummer(rng, n, 0.45, 1.5)
    for i in range(len(x)):
        _elliptical(canvas, rng, x[i], y[i], rng.uniform(0.012, 0.035), rng.uniform(0.4, 1.3))
    if rng.random() < 0.5:
        r0, centre = F(rng.uniform(0.5, 0.8)), rng.uniform(-math.pi, math.pi)
        arc = np.exp(-(((canvas.R - r0) / F(0.02)) ** 2) - (_wrap(canvas.PHI - F(centre)) / F(0.3)) ** 2)
        canvas.img += F(0.4) * arc
    _background_galaxies(canvas, rng, int(rng.integers(5, 12)))


def planetary_nebula(canvas, rng) -> None:
    X, Y = canvas.X, canvas.Y
    for k in range(int(rng.integers(1, 4))):
        rs = F(rng.uniform(0.3, 0.55) * (1 + 0.55 * k))
        q = F(rng.uniform(0.6, 1.0))
        rho = np.sqrt(X * X + (Y / q) ** 2) / rs
        rho8 = ((rho * rho) ** 2) ** 2
        shell = np.where(rho < 1, F(0.12) + F(0.88) * rho8, np.exp(-(((rho - F(1.0)) / F(0.035)) ** 2)))
        canvas.img += F(0.9 / (1 + 1.2 * k)) * shell.astype(F)
    if rng.random() < 0.4:  # bipolar lobes
        for sign in (-1, 1):
            canvas.img += F(0.3) * np.exp(-(((X - F(sign * 0.55)) / F(0.32)) ** 2 + (Y / F(0.2)) ** 2))
    canvas.img += F(0.04) * np.exp(-canvas.R / F(0.8))  # faint halo
    canvas.add_points(np.zeros(1), np.zeros(1), np.array([4.0], F))


def supernova_remnant(canvas, rng) -> None:
    R, PHI = canvas.R, canvas.PHI
    r0 = F(rng.uniform(0.7, 0.9))
    wobble = np.zeros_like(PHI)
    for m in range(2, 7):
        wobble += F(rng.uniform(0.02, 0.06)) * np.cos(F(m) * PHI + F(rng.uniform(0, 2 * math.pi)))
    radius = r0 * (F(1.0) + wobble)
    for _ in range(int(rng.integers(4, 8))):
        rk = radius * F(1.0 + rng.uniform(-0.15, 0.04))
        width = F(rng.uniform(0.008, 0.02))
        m = int(rng.integers(2, 7))
        broken = (F(0.5) + F(0.5) * np.cos(F(m) * PHI + F(rng.uniform(0, 2 * math.pi)))) ** 2
        canvas.img += F(rng.uniform(0.4, 0.9)) * np.exp(-(((R - rk) / width) ** 2)) * broken
    canvas.img += F(0.05) * (R < radius)


def edge_on_disk(canvas, rng) -> None:
    X, Y = canvas.X, canvas.Y
    length = F(rng.uniform(0.4, 0.55))
    h = F(rng.uniform(0.1, 0.14)) * (F(1.0) + F(1.2) * X * X)
    b = F(rng.uniform(0.08, 0.12))
    radial = np.exp(-((X / length) ** 2))
    upper = np.exp(-(((Y - h) / b) ** 2))
    lower = np.exp(-(((Y + h) / b) ** 2))
    canvas.img += F(1.0) * radial * (upper + F(rng.uniform(0.35, 0.8)) * lower)
    canvas.img += F(0.08) * np.exp(-canvas.R / F(0.5))  # the envelope's scattered light
    if rng.random() < 0.4:  # a faint jet along the rotation axis
        canvas.img += F(0.3) * np.exp(-((X / F(0.02)) ** 2)) * np.exp(-np.abs(Y) / F(0.5)) * (np.abs(Y) > F(0.2))


def jets(canvas, rng) -> None:
    X, Y = canvas.X, canvas.Y
    canvas.img += F(0.35) * np.exp(-((Y / F(0.012)) ** 2)) * np.exp(-np.abs(X) / F(0.7))
    for sign in (-1, 1):
        n = int(rng.integers(4, 9))
        pos = np.sort(rng.uniform(0.08, 0.85, n)) * sign
        canvas.add_points(pos, rng.normal(0, 0.01, n), (rng.uniform(4.0, 10.0, n) * np.exp(-np.abs(pos))).astype(F), 1.6)
        tip = F(sign * rng.uniform(0.85, 1.05))
        bow = np.exp(-((((tip - X) * F(sign)) - F(5.0) * Y * Y) / F(0.025)) ** 2) * np.exp(-((Y / F(0.16)) ** 2))
        canvas.img += F(rng.uniform(0.4, 0.8)) * bow
    canvas.img += F(0.3) * np.exp(-(X * X + Y * Y) / F(0.01))  # the embedded source's reflection nebula


def nursery(canvas, rng) -> None:
    gas = smooth_field(rng, canvas.height, canvas.width, 5) + F(0.5) * smooth_field(rng, canvas.height, canvas.width, 14)
    glow = np.exp(F(0.6) * gas) * np.exp(-canvas.R / F(1.3))
    canvas.img += F(0.35) * glow
    for _ in range(int(rng.integers(2, 5))):  # dark pillars pointing at the cluster
        ang = rng.uniform(0, 2 * math.pi)
        base = rng.uniform(0.6, 1.1)
        c, s = F(math.cos(ang)), F(math.sin(ang))
        along = canvas.X * c + canvas.Y * s
        across = canvas.Y * c - canvas.X * s
        width = F(rng.uniform(0.05, 0.1))
        pillar = np.exp(-((across / width) ** 2)) * (along > F(base - 0.55)) * np.exp(-np.maximum(along - F(base), 0) / F(0.3))
        tip = np.exp(-((across / width) ** 2) - ((along - F(base - 0.55)) / F(0.04)) ** 2)
        canvas.img *= F(1.0) - F(0.85) * pillar
        canvas.img += F(0.6) * tip
    n = int(rng.integers(25, 70))
    x, y = _plummer(rng, n, 0.12, 0.6)
    flux = _luminosity(rng, len(x), 2.0, 1.4)
    canvas.add_points(x, y, flux)
    px, py = canvas.to_pixels(x, y)
    for i in np.argsort(flux)[-3:]:
        canvas.add_spikes(px[i], py[i], 0.3, rng.uniform(8, 15), math.radians(45))


def solar_system(canvas, rng) -> bool:
    X, Y = canvas.X, canvas.Y
    if rng.random() < 0.5:  # ringed giant planet
        rp = F(rng.uniform(0.32, 0.42))
        rho2 = (X * X + Y * Y) / (rp * rp)
        disk = np.sqrt(np.clip(F(1.0) - rho2, 0, 1))
        bands = F(1.0) + F(0.12) * np.cos(Y / rp * F(rng.uniform(14, 24)))
        tilt = F(rng.uniform(0.2, 0.45))
        ring_r = np.sqrt(X * X + (Y / tilt) ** 2) / rp
        ring = ((ring_r > F(1.3)) & (ring_r < F(2.25)) & ~((ring_r > F(1.85)) & (ring_r < F(1.92)))).astype(F)
        behind = (Y < 0) & (rho2 < 1)
        canvas.img += F(1.2) * disk * bands + F(0.7) * ring * ~behind
        return True
    # comet: nucleus, coma, a straight ion tail and a curved dust tail
    canvas.img += F(0.9) * np.exp(-canvas.R / F(0.05)) + F(0.25) * np.exp(-canvas.R / F(0.18))
    ahead = np.maximum(X + F(0.05), 0)
    canvas.img += F(0.35) * np.exp(-ahead / F(0.9)) * np.exp(-((Y / (F(0.03) + F(0.12) * ahead)) ** 2)) * (X > -0.05)
    curve = Y - F(rng.uniform(0.1, 0.3)) * ahead * ahead
    canvas.img += F(0.25) * np.exp(-ahead / F(0.6)) * np.exp(-((curve / (F(0.05) + F(0.25) * ahead)) ** 2)) * (X > -0.05)
    canvas.add_points(np.zeros(1), np.zeros(1), np.array([2.0], F))
    return True


def merger(canvas, rng) -> None:
    d = rng.uniform(0.22, 0.38)
    ang = rng.uniform(0, math.pi)
    for sign in (-1, 1):
        cx, cy = sign * d * math.cos(ang), sign * d * math.sin(ang)
        canvas.add_blob(cx, cy, rng.uniform(0.08, 0.14), 0.8, q=rng.uniform(0.4, 0.9), pa=rng.uniform(0, math.pi), profile="exp")
        canvas.add_blob(cx, cy, 0.02, 1.2, profile="devauc")
        # a tidal tail: points along a widening logarithmic arc
        t = rng.uniform(0, 1, 1400)
        base = ang + (0 if sign > 0 else math.pi)
        r = 0.12 + 1.1 * t
        phi = base + 0.4 + 1.1 * t  # both tails wind the same way: an S, as in the Antennae
        x = cx + r * np.cos(phi) + rng.normal(0, 0.02 + 0.04 * t)
        y = cy + r * np.sin(phi) + rng.normal(0, 0.02 + 0.04 * t)
        canvas.add_points(x, y, (0.25 * (1.2 - t)).astype(F), 2.0)
    n = int(rng.integers(15, 40))
    canvas.add_points(rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(1.0, 3.0, n).astype(F))


def quasar(canvas, rng) -> None:
    q = F(rng.uniform(0.5, 1.0))
    r = np.sqrt(canvas.X ** 2 + (canvas.Y / q) ** 2)
    canvas.img += F(0.25) * np.exp(-r / F(0.22))
    canvas.add_points(np.zeros(1), np.zeros(1), np.array([60.0], F), 1.4)
    canvas.img += F(1.2) / (F(1.0) + canvas.R * canvas.R / F(0.0025)) ** 1.5
    px, py = canvas.to_pixels(np.zeros(1), np.zeros(1))
    canvas.add_spikes(float(px[0]), float(py[0]), 1.2, canvas.radius_px * rng.uniform(0.25, 0.45), math.radians(45))
    if rng.random() < 0.4:
        canvas.add_blob(rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 0.05, 0.4, profile="exp")


RENDERERS: dict[str, Callable] = {
    "barred_spiral": barred_spiral,
    "irregular": irregular,
    "globular": globular,
    "crowded": crowded,
    "dwarf": dwarf,
    "einstein_ring": einstein_ring,
    "lensing_arcs": lensing_arcs,
    "galaxy_cluster": galaxy_cluster,
    "planetary_nebula": planetary_nebula,
    "supernova_remnant": supernova_remnant,
    "edge_on_disk": edge_on_disk,
    "jets": jets,
    "nursery": nursery,
    "solar_system": solar_system,
    "merger": merger,
    "quasar": quasar,
}
