"""The synthetic sky: a deterministic HST-like archive on disk that the local archive server serves.

    generate_sky(out_dir, proposals=120, seed=0)  -> SkyInfo     # a new sky (same seed, same bytes)
    extend_sky(sky_dir, proposals=20, seed=1)     -> SkyInfo     # add a new, later cycle

Layout of a sky directory (docs/archive.md):

    sky.json                      what was generated, and the state extend_sky continues from
    caom/observations.json        Mast.Caom.Filtered rows    {"fields": [...], "data": [...]}
    caom/products.json            Mast.Caom.Products rows    {"fields": [...], "data": [...]}
    caom/files.json               dataURI -> file under files/ (or "fits": a generated stub)
    caom/columnsconfig.json       column configs by colConfigId
    files/<proposal_id>/*.jpg     preview images
    stsci/apt/<id>.apt  stsci/pro/<id>.pro  stsci/catalog.txt
    ground_truth.json             class labels and deliberate defects (the pipeline never reads it)
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import InputError, validation_reasons
from storage.fs import atomic_write_bytes
from tasks.archive.columns import COLUMN_CONFIGS, observation_fields, product_fields
from tasks.archive.documents import apt_xml, catalog_record, catalog_text, fits_stub, pro_text
from tasks.archive.plan import (
    OBSERVATION_DEFECTS,
    PROPOSAL_DEFECTS,
    ObservationPlan,
    ProposalPlan,
    SkyPlan,
    plan_sky,
    target_classification,
)
from tasks.archive.render import RenderJob, run_render_job
from tasks.archive.sky_leftovers import (
    CATALOG_CLOSING,
    recorded_catalog_body,
    recorded_tables,
    recorded_truth,
    remove_unrecorded_files,
    settle_aside,
    swap_in,
)

log = logging.getLogger(__name__)

SKY_FORMAT = "hubbleclip-sky"
SKY_VERSION = 1
MAX_CYCLE = 40
Progress = Callable[[int, int], None]


class SkyOptions(BaseModel):
    """What generate_sky accepts; out-of-range values are refused with the option's name."""

    model_config = ConfigDict(extra="forbid")

    proposals: int = Field(120, ge=1, le=100_000, description="number of proposals")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    first_cycle: int = Field(14, ge=1, le=MAX_CYCLE, description="HST cycle of the first proposals")
    cycles: int = Field(6, ge=1, le=30, description="how many consecutive cycles the proposals span")
    max_observations: int = Field(20, ge=1, le=20, description="most image observations of one proposal")
    mean_observations: float = Field(7.0, ge=1.0, le=20.0, description="mean image observations per proposal")
    two_class_fraction: float = Field(0.3, ge=0.0, le=1.0, description="share of proposals with two classes")
    bad_records: bool = Field(True, description="plant the deliberate defects (needs >= 10 proposals)")
    workers: int = Field(2, ge=1, le=64, description="rendering processes")

    @model_validator(mode="after")
    def _consistent(self) -> SkyOptions:
        if self.first_cycle + self.cycles - 1 > MAX_CYCLE:
            raise ValueError(f"first_cycle + cycles - 1 must be <= {MAX_CYCLE}")
        if self.mean_observations > self.max_observations:
            raise ValueError("mean_observations must not exceed max_observations")
        if self.bad_records and self.proposals < 10:
            raise ValueError("bad_records needs at least 10 proposals (pass bad_records=False / --no-bad-records)")
        return self


class SkyInfo(BaseModel):
    """Counts of what a sky holds (sky.json's `info`)."""

    sky_dir: str
    seed: int
    proposals: int
    observations: int = Field(description="CAOM rows, including rows a science-image query filters out")
    science_observations: int
    previews: int = Field(description="observations with a 'total' preview product")
    preview_files: int = Field(description="JPEG files on disk (total, colour and one-filter previews)")
    products: int
    cycles: list[int]
    classes: list[str]
    bad_records: dict[str, list[str]]
    seconds: float
    extensions: list[dict[str, Any]] = Field(default_factory=list)


def _options(**values: Any) -> SkyOptions:
    try:
        return SkyOptions(**values)
    except ValidationError as err:
        raise InputError(f"invalid sky options: {validation_reasons(err)}") from None


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path} is missing: is {path.parent} a sky made by `hubbleclip archive generate`?") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON: {err}") from None


# ---------------------------------------------------------------- rows


def _filter_band(name: str) -> tuple[float, float]:
    digits = re.search(r"(\d{3,4})", name)
    if name.startswith("G"):
        return 290.0, 570.0
    if not digits or name == "50CCD":
        return 200.0, 1030.0
    centre = float(digits.group(1))
    width = 0.3 if name.endswith("LP") else 0.01 if name.endswith("N") else 0.05 if name.endswith("M") else 0.12
    return round(centre * (1 - width), 1), round(centre * (1 + width), 1)


def _observation_row(obs: ObservationPlan, proposal: ProposalPlan) -> dict[str, Any]:
    bands = [_filter_band(f) for f in obs.filters]
    em_min, em_max = min(b[0] for b in bands), max(b[1] for b in bands)
    region = "UV" if em_max < 400 else "INFRARED" if em_min > 900 else "OPTICAL"
    half = 0.014 if obs.instrument in ("ACS/WFC", "WFC3/UVIS", "WFPC2") else 0.006
    corners = [(obs.ra - half, obs.dec - half), (obs.ra + half, obs.dec - half), (obs.ra + half, obs.dec + half),
               (obs.ra - half, obs.dec + half)]
    doc = proposal.doc
    return {
        "intentType": "calibration" if obs.kind == "calibration" else "science",
        "obs_collection": "HST",
        "provenance_name": "HAP-SVM" if obs.calib_level == 3 else "CAL" + obs.instrument.split("/")[0],
        "instrument_name": obs.instrument,
        "project": "HST",
        "filters": ";".join(obs.filters),
        "wavelength_region": region,
        "target_name": obs.target,
        "target_classification": target_classification(proposal.classes[0].category),
        "obs_id": obs.obs_id,
        "s_ra": obs.ra,
        "s_dec": obs.dec,
        "dataproduct_type": "spectrum" if obs.kind == "spectrum" else "image",
        "proposal_pi": f"{doc.pi.last}, {doc.pi.first}",
        "calib_level": obs.calib_level,
        "t_min": obs.t_min,
        "t_max": round(obs.t_max, 6),
        "t_exptime": obs.exptime,
        "em_min": em_min,
        "em_max": em_max,
        "obs_title": doc.title,
        "t_obs_release": round(obs.t_release, 6),
        "proposal_id": obs.proposal_id,
        "proposal_type": doc.prop_type,
        "sequence_number": None,
        "s_region": "POLYGON ICRS " + " ".join(f"{x % 360:.6f} {y:.6f}" for x, y in corners),
        "jpegURL": f"mast:HST/product/{obs.preview}" if obs.preview else None,
        "dataURL": f"mast:HST/product/{obs.fits_names[0]}",
        "dataRights": "EXCLUSIVE_ACCESS" if obs.kind == "exclusive" else "PUBLIC",
        "mtFlag": obs.moving,
        "srcDen": 5885.0 if obs.kind == "science" else None,
        "obsid": obs.obsid,
        "objID": obs.obsid + 1_000_000_000,
    }


def _product_row(obs: ObservationPlan, filename: str, *, product_type: str, description: str, size: int,
                 group: str | None = None) -> dict[str, Any]:
    return {
        "obsID": obs.obsid, "obs_collection": "HST",
        "dataproduct_type": "spectrum" if obs.kind == "spectrum" else "image", "obs_id": obs.obs_id,
        "description": description, "type": "D" if product_type == "PREVIEW" else "S",
        "dataURI": f"mast:HST/product/{filename}", "productType": product_type, "productGroupDescription": group,
        "productSubGroupDescription": filename.rsplit(".", 1)[0].rsplit("_", 1)[-1].upper(),
        "productDocumentationURL": None, "project": "HAP-SVM" if product_type == "PREVIEW" else "CALIBRATED",
        "prvversion": None, "productFilename": filename, "size": size, "parent_obsid": obs.obsid,
        "dataRights": "EXCLUSIVE_ACCESS" if obs.kind == "exclusive" else "PUBLIC", "calib_level": obs.calib_level,
        "proposal_id": obs.proposal_id, "_selected_": None,
    }


def _product_rows(obs: ObservationPlan, sizes: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Product rows of one observation and their dataURI -> file entries."""
    rows, files = [], {}
    pid = obs.proposal_id
    previews = ((obs.preview, "Preview-Full"), (obs.single, f"Preview-Full {obs.filters[0]}"),
                (obs.color, "Preview-Full color composite"))
    for name, description in previews:
        if name:
            rows.append(_product_row(obs, name, product_type="PREVIEW", description=description, size=sizes[name]))
            if not (obs.defect == "preview_404" and name == obs.preview):
                files[f"mast:HST/product/{name}"] = f"files/{pid}/{name}"
    drz, flt = obs.fits_names
    science = [(drz, "DADS DRZ file - Calibrated combined image", "Minimum Recommended Products"),
               (flt, "DADS FLT file - Calibrated exposure", None)]
    for name, description, group in science if obs.kind == "science" else science[1:]:
        rows.append(_product_row(obs, name, product_type="SCIENCE", description=description,
                                 size=len(fits_stub(obs.obs_id, name)), group=group))
        files[f"mast:HST/product/{name}"] = "fits"
    return rows, files


# ---------------------------------------------------------------- rendering


def _render_jobs(plan: SkyPlan, root: Path) -> list[tuple[ObservationPlan, RenderJob]]:
    jobs = []
    for obs in plan.observations:
        if obs.kind == "science" and obs.preview and obs.style:
            jobs.append((obs, RenderJob(obs.style, obs.instrument, obs.image_seed, str(root / "files" / obs.proposal_id),
                                        obs.preview, obs.color, obs.single, obs.defect)))
    return jobs


def _render_all(jobs: list[RenderJob], workers: int, progress: Progress | None) -> list[dict[str, int]]:
    results: list[dict[str, int]] = []
    total = len(jobs)
    if workers <= 1 or total < 24:
        for job in jobs:
            results.append(run_render_job(job))
            if progress:
                progress(len(results), total)
        return results
    # fork is fast and needs no `if __name__ == "__main__"` guard in the caller's script, but forking
    # a process with live threads (a server, a thread pool) can copy a held lock: spawn then.
    method = "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for sizes in pool.map(run_render_job, jobs, chunksize=max(1, min(16, total // (workers * 8) or 1))):
            results.append(sizes)
            if progress:
                progress(len(results), total)
    return results


# ---------------------------------------------------------------- writing


def _write_documents(root: Path, proposals: list[ProposalPlan]) -> None:
    """Plain writes, like the previews (see render.run_render_job): a new sky is staged and renamed
    whole, and an extension writes documents of new ids only, which a rerun rewrites identically.
    (An fsync per document would add minutes to a 5,000-proposal sky.)"""
    (root / "stsci" / "apt").mkdir(parents=True, exist_ok=True)
    (root / "stsci" / "pro").mkdir(parents=True, exist_ok=True)
    for proposal in proposals:
        if proposal.has_apt:
            (root / "stsci" / "apt" / f"{proposal.proposal_id}.apt").write_bytes(apt_xml(proposal.doc))
        if proposal.has_pro:
            (root / "stsci" / "pro" / f"{proposal.proposal_id}.pro").write_bytes(pro_text(proposal.doc))


def _tables(plan: SkyPlan, sizes: dict[int, dict[str, int]]) -> tuple[list, list, dict]:
    obs_rows, product_rows, files = [], [], {}
    for proposal in plan.proposals:
        for obs in proposal.observations:
            obs_rows.append(_observation_row(obs, proposal))
            rows, entries = _product_rows(obs, sizes.get(obs.obsid, {}))
            product_rows += rows
            files.update(entries)
    return obs_rows, product_rows, files


def _ground_truth(plan: SkyPlan) -> dict[str, Any]:
    bad: dict[str, list[str]] = {kind: [] for kind in (*PROPOSAL_DEFECTS, *OBSERVATION_DEFECTS)}
    truth: dict[str, Any] = {"proposals": {}, "observations": {}, "bad_records": bad}
    for proposal in plan.proposals:
        truth["proposals"][proposal.proposal_id] = {"classes": [s.name for s in proposal.classes], "cycle": proposal.cycle}
        for defect in proposal.defects:
            bad[defect].append(proposal.proposal_id)
        for obs in proposal.observations:
            if obs.kind == "science":
                truth["observations"][str(obs.obsid)] = {"proposal_id": obs.proposal_id, "classes": [obs.class_name]}
            if obs.defect:
                bad[obs.defect].append(str(obs.obsid))
    return truth


def _info(root: Path, seed: int, truth: dict, obs_rows: list, product_rows: list, files: dict, seconds: float,
          extensions: list[dict[str, Any]]) -> SkyInfo:
    classes = sorted({c for p in truth["proposals"].values() for c in p["classes"]})
    return SkyInfo(
        sky_dir=str(root), seed=seed, proposals=len(truth["proposals"]), observations=len(obs_rows),
        science_observations=len(truth["observations"]),
        previews=sum(1 for r in obs_rows if r["jpegURL"]),
        preview_files=sum(1 for uri, path in files.items() if path != "fits" and uri.endswith(".jpg")),
        products=len(product_rows), cycles=sorted({p["cycle"] for p in truth["proposals"].values()}),
        classes=classes, bad_records={k: v for k, v in truth["bad_records"].items() if v}, seconds=round(seconds, 2),
        extensions=extensions)


def _write_index(root: Path, obs_rows: list, product_rows: list, files: dict, truth: dict, catalog: bytes,
                 sky_json: dict) -> None:
    """Index files, each atomic; sky.json last: its state records what the sky holds, and extend_sky
    drops whatever a killed run wrote past it."""
    atomic_write_bytes(str(root / "caom" / "observations.json"), _dumps({"fields": observation_fields(), "data": obs_rows}))
    atomic_write_bytes(str(root / "caom" / "products.json"), _dumps({"fields": product_fields(), "data": product_rows}))
    atomic_write_bytes(str(root / "caom" / "files.json"), _dumps(files))
    atomic_write_bytes(str(root / "caom" / "columnsconfig.json"), _dumps(COLUMN_CONFIGS))
    atomic_write_bytes(str(root / "stsci" / "catalog.txt"), catalog)
    atomic_write_bytes(str(root / "ground_truth.json"), json.dumps(truth, indent=1, ensure_ascii=False).encode("utf-8"))
    atomic_write_bytes(str(root / "sky.json"), json.dumps(sky_json, indent=1, ensure_ascii=False).encode("utf-8"))


def _build(root: Path, plan: SkyPlan, workers: int, progress: Progress | None) -> dict[int, dict[str, int]]:
    pairs = _render_jobs(plan, root)
    results = _render_all([job for _, job in pairs], workers, progress)
    _write_documents(root, plan.proposals)
    return {obs.obsid: sizes for (obs, _), sizes in zip(pairs, results, strict=True)}


def generate_sky(out_dir: str | os.PathLike, proposals: int = 120, seed: int = 0, first_cycle: int = 14,
                 cycles: int = 6, *, max_observations: int = 20, mean_observations: float = 7.0,
                 two_class_fraction: float = 0.3, bad_records: bool = True, workers: int = 2,
                 overwrite: bool = False, progress: Progress | None = None) -> SkyInfo:
    """Generate a sky into `out_dir`, built in a temporary sibling and renamed into place at the end."""
    options = _options(proposals=proposals, seed=seed, first_cycle=first_cycle, cycles=cycles,
                       max_observations=max_observations, mean_observations=mean_observations,
                       two_class_fraction=two_class_fraction, bad_records=bad_records, workers=workers)
    out = Path(out_dir).expanduser().resolve()
    settle_aside(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / "sky.json").is_file():
            raise InputError(f"{out} exists and is not an empty directory or a sky; choose another --out")
        if not overwrite:
            raise InputError(f"{out} already holds a sky; pass overwrite=True (--overwrite) or use extend_sky")
    started = time.perf_counter()
    plan = plan_sky(proposals=options.proposals, seed=options.seed,
                    cycles=list(range(options.first_cycle, options.first_cycle + options.cycles)),
                    first_proposal_id=0, first_obsid=2_005_000_000, bad_records=options.bad_records,
                    mean_observations=options.mean_observations, max_observations=options.max_observations,
                    two_class_fraction=options.two_class_fraction)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        sizes = _build(staging, plan, options.workers, progress)
        obs_rows, product_rows, files = _tables(plan, sizes)
        truth = _ground_truth(plan)
        info = _info(out, options.seed, truth, obs_rows, product_rows, files, 0.0, [])
        sky_json = {"format": SKY_FORMAT, "version": SKY_VERSION, "info": info.model_dump(exclude={"sky_dir", "seconds"}),
                    "state": {"next_proposal_id": plan.next_proposal_id, "next_obsid": plan.next_obsid,
                              "options": options.model_dump(exclude={"workers"})}}
        _write_index(staging, obs_rows, product_rows, files, truth, catalog_text([p.doc for p in plan.proposals]), sky_json)
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        settle_aside(out)
        raise
    info.seconds = round(time.perf_counter() - started, 2)
    log.info("generated sky %s: %d proposals, %d observations, %d previews in %.1fs", out, info.proposals,
             info.observations, info.previews, info.seconds)
    return info


def load_sky_info(sky_dir: str | os.PathLike) -> SkyInfo:
    root = Path(sky_dir).expanduser().resolve()
    meta = _read_json(root / "sky.json")
    if not isinstance(meta, dict) or meta.get("format") != SKY_FORMAT:
        raise InputError(f"{root / 'sky.json'} is not a {SKY_FORMAT} file")
    return SkyInfo(sky_dir=str(root), seconds=0.0, **meta["info"])


def extend_sky(sky_dir: str | os.PathLike, proposals: int = 20, seed: int = 1, *, workers: int = 2,
               progress: Progress | None = None) -> SkyInfo:
    """Add `proposals` proposals in a new cycle after the sky's last one (later t_obs_release)."""
    root = Path(sky_dir).expanduser().resolve()
    meta = _read_json(root / "sky.json")
    if not isinstance(meta, dict) or meta.get("format") != SKY_FORMAT:
        raise InputError(f"{root / 'sky.json'} is not a {SKY_FORMAT} file")
    options = _options(**{**meta["state"]["options"], "proposals": proposals, "seed": seed, "workers": workers,
                          "bad_records": False, "first_cycle": 1, "cycles": 1})
    cycle = max(meta["info"]["cycles"]) + 1
    if cycle > MAX_CYCLE:
        raise InputError(f"sky {root} already reaches cycle {cycle - 1}; cannot add beyond cycle {MAX_CYCLE}")
    started = time.perf_counter()
    state = meta["state"]
    next_pid, next_obsid = state["next_proposal_id"], state["next_obsid"]
    plan = plan_sky(proposals=options.proposals, seed=options.seed, cycles=[cycle],
                    first_proposal_id=next_pid, first_obsid=next_obsid, bad_records=False,
                    mean_observations=options.mean_observations, max_observations=options.max_observations,
                    two_class_fraction=options.two_class_fraction, stream=f"extend-{cycle}")
    # The index files are written one by one, sky.json last: what sky.json's state does not record is
    # a killed extension's, and goes before this one appends (sky_leftovers).
    remove_unrecorded_files(root, next_pid)
    sizes = _build(root, plan, options.workers, progress)
    new_obs, new_products, new_files = _tables(plan, sizes)
    obs_rows, product_rows, files = recorded_tables(
        _read_json(root / "caom" / "observations.json")["data"], _read_json(root / "caom" / "products.json")["data"],
        _read_json(root / "caom" / "files.json"), next_obsid)
    truth = recorded_truth(_read_json(root / "ground_truth.json"), next_pid, next_obsid)
    new_truth = _ground_truth(plan)
    truth["proposals"].update(new_truth["proposals"])
    truth["observations"].update(new_truth["observations"])
    catalog = recorded_catalog_body((root / "stsci" / "catalog.txt").read_bytes(), next_pid)
    catalog += ("\n".join(catalog_record(p.doc) for p in plan.proposals) + "\n").encode("utf-8") + CATALOG_CLOSING
    obs_rows += new_obs
    product_rows += new_products
    files.update(new_files)
    extensions = meta["info"].get("extensions", []) + [{"cycle": cycle, "proposals": proposals, "seed": seed}]
    info = _info(root, meta["info"]["seed"], truth, obs_rows, product_rows, files, 0.0, extensions)
    meta["info"] = info.model_dump(exclude={"sky_dir", "seconds"})
    meta["state"].update(next_proposal_id=plan.next_proposal_id, next_obsid=plan.next_obsid)
    _write_index(root, obs_rows, product_rows, files, truth, catalog, meta)
    info.seconds = round(time.perf_counter() - started, 2)
    log.info("extended sky %s with cycle %d: %d proposals, %d new observations", root, cycle, proposals, len(new_obs))
    return info
