"""The end-to-end demo: a synthetic sky, served by the local MAST-compatible archive, through the
whole pipeline on a local Prefect, to a report comparing the fine-tuned model with its controls.

Everything real runs: astroquery talks HTTP to the archive (configured before astroquery.mast is
imported), stages run as Prefect flows with their caches, training runs on this machine. The
second run on the same `--data` is served from the stage caches. Prefect is ephemeral unless
PREFECT_API_URL names a running server (then the runs show in its UI).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from schemas.errors import InputError
from schemas.pipeline import DemoParams, PipelineParams, PipelineResult
from storage.fs import atomic_write_text

logger = logging.getLogger(__name__)

SKY_DIR = "sky"
ARCHIVE_RECORD = "demo-archive.json"


def demo_sizes(params: DemoParams) -> dict[str, int]:
    """How big the demo is: ~120 proposals / ~800 images by default, much smaller with --quick."""
    if params.quick:
        sizes = {"proposals": 16, "observations": 4, "images": 20, "steps": 20, "batch_size": 16}
    else:
        # ~800 previews; training is most of the time: 1,000 steps of 128 (~0.2 s each on 2 cores,
        # decoded images cached after the first epoch), for the fine-tuned model and again for the
        # shuffled control. Measured: held-out i2t top-10% 0.639 vs 0.100 untrained (the bar
        # is +0.5; 700 steps gave +0.504, 160 steps of 32 gave +0.13).
        sizes = {"proposals": 120, "observations": 7, "images": 20, "steps": 1000, "batch_size": 128}
    if params.proposals:
        sizes["proposals"] = params.proposals
    if params.max_images_per_proposal:
        sizes["images"] = params.max_images_per_proposal
    if params.train_steps:
        sizes["steps"] = params.train_steps
    return sizes


def ensure_sky(sky_dir: Path, proposals: int, seed: int, mean_observations: float) -> Path:
    """Generate the synthetic sky unless the same one (proposals, seed) is already there."""
    from tasks.archive.sky import generate_sky, load_sky_info

    if (sky_dir / "sky.json").exists():
        info = load_sky_info(sky_dir)
        if (info.proposals, info.seed) != (proposals, seed):
            raise InputError(f"{sky_dir} holds another synthetic sky ({info.proposals} proposals, seed "
                             f"{info.seed}); use another --data directory for {proposals} proposals, seed {seed}")
        return sky_dir
    generate_sky(sky_dir, proposals=proposals, seed=seed, mean_observations=mean_observations,
                 bad_records=proposals >= 10)
    return sky_dir


def check_demo_root(data: Path) -> None:
    """The demo's --data must be new, empty or an earlier demo's: it ingests a synthetic sky,
    which would otherwise be mixed into real (or other) tables with nothing to tell them apart."""
    if data.exists() and not data.is_dir():
        raise InputError(f"demo --data {data} is a file, not a directory")
    if data.is_dir() and not (data / SKY_DIR / "sky.json").exists() and any(
            entry.name != SKY_DIR for entry in data.iterdir()):
        raise InputError(f"demo --data {data} already holds data that is not a demo's (no {SKY_DIR}/sky.json): "
                         "the synthetic sky would be mixed into it; give a new or empty directory")


def demo_pipeline_params(params: DemoParams, root: str, archive_url: str, ground_truth: str) -> PipelineParams:
    """The pipeline settings the demo runs with (extractive summaries, the tiny CLIP preset)."""
    sizes = demo_sizes(params)
    return PipelineParams.model_validate({
        "data": root,
        "ingest": {"mast_url": archive_url, "stsci_url": archive_url,
                   "max_images_per_proposal": sizes["images"], "seed": params.seed},
        "summarize": {"backend": params.summarizer},
        "dataset": {},
        "train": {"preset": "tiny", "steps": sizes["steps"], "batch_size": sizes["batch_size"],
                  "warmup_steps": max(1, sizes["steps"] // 10), "val_every": sizes["steps"],
                  "checkpoint_every": sizes["steps"], "device": "auto", "seed": params.seed},
        "evaluate": {"ground_truth": ground_truth, "seed": params.seed, "build_index": not params.quick},
        "shuffled_control": True,
    })


@contextlib.contextmanager
def _serve(sky: Path) -> Iterator[Any]:
    """The archive on the port it had last time: the MAST URL is part of the ingest config, so a
    new port would make every stage downstream of ingest a cache miss."""
    from tasks.archive.server import ArchiveServer

    record = sky / ARCHIVE_RECORD
    port = json.loads(record.read_text()).get("port", 0) if record.exists() else 0
    server = ArchiveServer(sky_dir=sky, port=port)
    try:
        server.start()
    except InputError:  # start() reports "cannot listen" as an InputError, for users who named a port
        if not port:
            raise
        logger.warning("port %s is taken; the archive gets a new one and ingest's cache misses", port)
        server = ArchiveServer(sky_dir=sky, port=0)
        server.start()
    try:
        atomic_write_text(str(record), json.dumps({"port": int(server.url.rsplit(":", 1)[1].split("/")[0])}))
        yield server
    finally:
        server.stop()


def run_demo(params: DemoParams, on_step: Callable[[str], Any] | None = None) -> PipelineResult:
    """Generate (once), serve, and run the pipeline; returns its result (report path included)."""
    from flows.pipeline import pipeline
    from tasks.mast_config import configure_astroquery

    step = on_step or (lambda message: logger.info("%s", message))
    data = Path(params.data).expanduser().resolve()
    check_demo_root(data)
    data.mkdir(parents=True, exist_ok=True)
    sizes = demo_sizes(params)
    started = time.perf_counter()
    step(f"synthetic sky: {sizes['proposals']} proposals (seed {params.seed})")
    sky = ensure_sky(data / SKY_DIR, sizes["proposals"], params.seed, sizes["observations"])
    with _serve(sky) as server:
        step(f"local archive at {server.url}")
        # Before anything imports astroquery.mast: it fixes its endpoints at import.
        configure_astroquery(server.url)
        pipe = demo_pipeline_params(params, str(data), server.url, str(sky / "ground_truth.json"))
        step("pipeline: ingest -> summarize -> build_dataset -> train (+ shuffled control) -> evaluate")
        result = pipeline(pipe)
    result.stats["demo_seconds"] = round(time.perf_counter() - started, 3)
    return result
