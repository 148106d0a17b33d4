"""Small, realistic inputs for the dataset stage: tests, benchmarks and demos without MAST.

Writes the four input tables with their real schemas through TableStore and stores sky-like
512x512 JPEG previews (noise, stars, a few extended blobs, white padding like the real
previews) in the ImageStore, so the build runs its real code path end to end.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from schemas.arrow import OBSERVATIONS_SCHEMA, PREVIEWS_SCHEMA, PROPOSALS_SCHEMA
from schemas.records import Observation, PreviewImage, Proposal, sha256_text
from schemas.vocabulary import CURATED_CLASSES
from storage import DataLayout, ImageStore, TableStore
from storage.tables import table_from_records

SUMMARIES_SCHEMA = pa.schema([
    pa.field("proposal_id", pa.string()),
    pa.field("abstract_sha256", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("objects_and_phenomena", pa.list_(pa.string())),
    pa.field("science_use_cases", pa.list_(pa.string())),
])

_CATEGORIES = ("Galaxies", "Stellar Physics", "Cosmology", "Solar System", "Star Formation", "Hot Stars")
_SENTENCES = (
    "We propose deep imaging of {obj} to measure their structure.",
    "These observations will constrain models of {use}.",
    "The unique resolution of the telescope allows us to resolve {obj} in unprecedented detail.",
    "Our sample was selected from a wide-field survey and spans a broad range of properties.",
    "Combined with archival data, the images will reveal how {obj} evolve over time.",
    "The results will provide a legacy data set for studies of {use}.",
)


def sky_jpeg(rng: np.random.Generator, size: int = 512, quality: int = 90) -> bytes:
    """A sky-like RGB JPEG: noisy background, point sources, blobs, sometimes white padding."""
    image = rng.normal(18, 7, (size, size)).astype(np.float32)
    for _ in range(int(rng.integers(10, 80))):
        y, x = rng.integers(0, size, 2)
        sigma = float(rng.uniform(0.7, 2.5 if rng.random() < 0.9 else 12.0))
        r = int(3 * sigma) + 1
        y0, y1, x0, x1 = max(0, y - r), min(size, y + r + 1), max(0, x - r), min(size, x + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1] += rng.uniform(40, 240) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    gray = image.clip(0, 255).astype(np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    if rng.random() < 0.3:  # a non-square original, padded to a square with white
        pad = int(rng.integers(size // 16, size // 4))
        rgb[:pad] = 255
        rgb[size - pad:] = 255
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class SyntheticInputs:
    observations: int
    proposals: list[str]
    image_keys: list[str]


def _abstract(rng: np.random.Generator, objects: list[str], uses: list[str], sentences: int) -> str:
    chosen = [_SENTENCES[int(i)] for i in rng.integers(0, len(_SENTENCES), sentences)]
    return " ".join(s.format(obj=objects[0], use=uses[0]) for s in chosen)


def write_synthetic_inputs(data: str, *, proposals: int = 8, images_per_proposal: int = 4, size: int = 512,
                           cycles: Iterable[int] = (20, 21, 22), seed: int = 0, unique_images: int | None = None,
                           summaries: bool = True, abstract_sentences: int = 8,
                           first_proposal: int = 10000) -> SyntheticInputs:
    """Write observations, previews, proposals and (optionally) summaries under `data`.

    unique_images: draw only this many distinct JPEGs and reuse them (fast for large benchmarks);
    observations still get distinct obsids.
    """
    rng = np.random.default_rng(seed)
    layout = DataLayout(data)
    tables, images = TableStore(layout.tables), ImageStore(layout.images)
    cycles = list(cycles)
    pool = [images.put(sky_jpeg(rng, size)) for _ in range(unique_images)] if unique_images else []
    obs, previews, props, sums, keys = [], [], [], [], []
    obsid = 2_000_000_000 + first_proposal * 1000
    for p in range(proposals):
        pid = str(first_proposal + p)
        objects = [CURATED_CLASSES[int(i)] for i in rng.choice(len(CURATED_CLASSES), 3, replace=False)]
        uses = [CURATED_CLASSES[int(i)] for i in rng.choice(len(CURATED_CLASSES), 2, replace=False)]
        abstract = _abstract(rng, objects, uses, abstract_sentences)
        props.append(Proposal(proposal_id=pid, cycle=cycles[p % len(cycles)], category=_CATEGORIES[p % 6],
                              title=f"A survey of {objects[0]}", pi="A. Astronomer", abstract=abstract,
                              source="catalog"))
        if summaries:
            sums.append({"proposal_id": pid, "abstract_sha256": sha256_text(abstract),
                         "caption": f"{', '.join(objects)}; {', '.join(uses)}",
                         "objects_and_phenomena": objects, "science_use_cases": uses})
        for i in range(images_per_proposal):
            obsid += 1
            key = pool[int(rng.integers(len(pool)))] if pool else images.put(sky_jpeg(rng, size))
            keys.append(key)
            obs.append(Observation(obsid=str(obsid), obs_id=f"j{obsid % 10**8:08d}", proposal_id=pid,
                                   instrument_name="ACS/WFC", filters="F814W", target_name=f"TARGET-{p}-{i}",
                                   s_ra=float(rng.uniform(0, 360)), s_dec=float(rng.uniform(-90, 90)),
                                   t_min=50000.0 + p, jpeg_url=f"mast:HST/product/{obsid}_drz.jpg",
                                   obs_title=f"A survey of {objects[0]}"))
            previews.append(PreviewImage(obsid=str(obsid), proposal_id=pid, status="ok", sha256=key,
                                         original_sha256=key, source_url=f"https://example.invalid/{obsid}.jpg",
                                         width=size, height=size))
    tables.write("observations", table_from_records(obs, OBSERVATIONS_SCHEMA))
    tables.write("previews", table_from_records(previews, PREVIEWS_SCHEMA))
    tables.write("proposals", table_from_records(props, PROPOSALS_SCHEMA))
    if summaries:
        tables.write("summaries", pa.Table.from_pylist(sums, schema=SUMMARIES_SCHEMA))
    return SyntheticInputs(observations=len(obs), proposals=[p.proposal_id for p in props], image_keys=keys)
