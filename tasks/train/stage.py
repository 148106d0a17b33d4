"""The train stage: `run_train(params) -> StageResult`, writing runs/<run>/ under the data root.

    runs/<run>/config.json        the resolved TrainConfig, the dataset version, the model info
    runs/<run>/metrics.jsonl      train and validation metrics (plus tensorboard/ on local roots)
    runs/<run>/checkpoints/       step_N.pt (newest few), last.pt, best.pt: resumable, open_clip-loadable
    runs/<run>/base/              the model at step 0 (always evaluated beside the fine-tuned one)
    runs/<run>/final/             the trained model (open_clip formats; see export.py)
    runs/<run>/manifest.json      written last: inputs (dataset digest, local initial weights' sha256),
                                  config, files; the cache key

The run name is `<dataset version>-<preset>-<hash>`, the hash covering the dataset digest, the
config fields that change the weights and the bytes of local initial weights (fingerprint.py).
An unchanged dataset and config find a finished manifest whose final weights are intact and
return at once (cached), without reading the shards; an interrupted run resumes from
checkpoints/last.pt, and a run that starts from step 0 first clears what an earlier attempt under
the same name left (run_dir.py). Every input is checked (model name, pretrained tag or file,
dataset and its train split, the batch and crop against that split, a resumable checkpoint's fit)
before a model is built or the run directory written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from schemas.errors import InputError
from schemas.manifest import FileEntry, Manifest
from schemas.stage import StageResult
from schemas.train import TrainConfig, TrainParams
from storage import DataLayout
from storage.fs import atomic_write_bytes, exists, join, read_bytes
from tasks.train.batches import BatchStream
from tasks.train.checkpoint import (
    checkpoint_bytes,
    load_checkpoint,
    prune_step_checkpoints,
    restore_training_state,
    write_checkpoint,
)
from tasks.train.data import open_training_data
from tasks.train.distributed import DistInfo, barrier, init_distributed, planned_world_size
from tasks.train.export import META_FILE, WEIGHTS_FILE, export_model, write_model
from tasks.train.fingerprint import weights_fingerprint
from tasks.train.loop import FitState, Trainer, fit
from tasks.train.model import (
    check_model_name,
    check_pretrained,
    create_clip,
    get_tokenizer,
    planned_image_size,
)
from tasks.train.presets import resolve_config
from tasks.train.run_dir import clear_stale_attempt, finished_run_problem
from tasks.train.run_log import METRICS_FILE, MetricsLog

log = logging.getLogger(__name__)

STAGE = "train"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
RUN_FORMAT = 1

ProgressFn = Callable[[int, int, dict[str, Any]], None]


def config_hash(cfg: TrainConfig, dataset_digest: str, weights: str | None = None) -> str:
    """The run's identity: dataset, weight-changing config, and the local initial weights' bytes."""
    key: dict[str, Any] = {"format": RUN_FORMAT, "dataset": dataset_digest, "config": cfg.hashed_fields()}
    if weights is not None:  # absent for tags and random init: their runs keep the names they had
        key["weights"] = weights
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def run_name_for(cfg: TrainConfig, dataset_version: str, key: str) -> str:
    """`key` is the run's config_hash."""
    return f"{dataset_version}-{cfg.preset}-{key[:10]}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunWriter:
    """The loop's callbacks: metrics and checkpoints into runs/<run>/ (rank 0 writes; others skip)."""

    def __init__(self, run_dir: str, cfg: TrainConfig, dist: DistInfo, metrics: MetricsLog | None,
                 meta: dict[str, Any]):
        self.run_dir = run_dir
        self.checkpoints = join(run_dir, "checkpoints")
        self.cfg = cfg
        self.dist = dist
        self.metrics = metrics
        self.meta = meta

    def log_metrics(self, step: int, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.log(step, record)

    def save_checkpoint(self, trainer: Trainer, state: FitState, stream: BatchStream, *,
                        periodic: bool, best: bool) -> None:
        if not self.dist.is_main:
            return
        data = checkpoint_bytes(model=trainer.raw_model, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                                step=state.step, loader_state=stream.state_dict(), best=state.as_dict(),
                                meta=self.meta)
        if best:
            write_checkpoint(join(self.checkpoints, "best.pt"), data)
        if periodic:
            write_checkpoint(join(self.checkpoints, f"step_{state.step}.pt"), data)
            prune_step_checkpoints(self.checkpoints, self.cfg.keep_checkpoints)
            # last.pt is written after step_N.pt: whatever it names has a step file beside it.
            write_checkpoint(join(self.checkpoints, "last.pt"), data)
            if self.metrics is not None:
                self.metrics.flush()
        log.info("checkpoint at step %d%s", state.step, " (best so far)" if best else "")


def _finished_manifest(run_dir: str) -> Manifest | None:
    """The manifest a finished run wrote last; None while unfinished (a damaged one: InputError)."""
    url = join(run_dir, MANIFEST_FILE)
    return Manifest.from_json(read_bytes(url), source=url) if exists(url) else None


def _cached_result(run_dir: str, manifest: Manifest) -> StageResult | None:
    """The finished run of this very config, if its final weights are still whole."""
    problem = finished_run_problem(run_dir, manifest)
    if problem is not None:
        log.warning("run %s has a manifest but %s: not cached, training (or exporting) again", run_dir, problem)
        return None
    return _result(run_dir, manifest, cached=True)


def _result(run_dir: str, manifest: Manifest, cached: bool) -> StageResult:
    return StageResult(
        stage=STAGE, digest=manifest.digest, cached=cached,
        outputs={"run_dir": run_dir, "final": join(run_dir, "final"), "base": join(run_dir, "base"),
                 "metrics": join(run_dir, METRICS_FILE), "checkpoints": join(run_dir, "checkpoints")},
        stats=dict(manifest.stats),
    )


def _take_last_logged(state: FitState, records: list[dict[str, Any]]) -> None:
    """The final train loss and validation from the metrics log, for a run that trained no step here
    (resumed at its last step to export final/ again): the stats then describe the run, not this call."""
    train = [r for r in records if r.get("split") == "train" and r.get("step") == state.step]
    val = [r for r in records if r.get("split") == "val" and r.get("step") == state.step]
    if train:
        state.last_loss = float(train[-1]["loss"])
    if val and not state.last_val:
        state.last_val = {k: v for k, v in val[-1].items() if k not in ("step", "split", "time")}


def run_train(params: TrainParams, *, progress: ProgressFn | None = None) -> StageResult:
    """Train (or resume, or find already trained) the run the params describe."""
    cfg = resolve_config(params)
    # Cheap checks first, so a typo costs seconds, not a GPU allocation.
    check_model_name(cfg.model)
    check_pretrained(cfg.model, cfg.pretrained)
    data = open_training_data(params.data, params.dataset_version, verify=False)  # verified below, if it trains
    weights = weights_fingerprint(cfg.model, cfg.pretrained)
    key = config_hash(cfg, data.digest, weights)
    run = params.run_name or run_name_for(cfg, data.version, key)
    run_dir = join(DataLayout(params.data).runs, run)
    inputs = {"dataset": data.digest, **({"pretrained_weights": weights} if weights is not None else {})}
    hashed = {**cfg.hashed_fields(), "dataset_version": data.version}
    finished = _finished_manifest(run_dir)
    same_config = finished is not None and finished.inputs == inputs and finished.config == hashed
    if same_config and (cached := _cached_result(run_dir, finished)) is not None:
        log.info("run %s already finished with this dataset and config: nothing to train", run)
        return cached
    # A finished run of another config: its checkpoints are never resumed, and starting from step 0
    # deletes its final model, so only on an explicit request.
    replacing = finished is not None and not same_config
    if replacing and not params.overwrite:
        raise InputError(f"run {run} under {run_dir} already finished with another config or dataset: choose "
                         "another run_name (--run-name), or set overwrite (--overwrite) to replace it")

    # Before any model, process group or file: can the split serve the batch and crop at all?
    # (An hf-hub: model's crop is known once built: checked again below.)
    data.check_fit(cfg, world_size=planned_world_size(), image_size=planned_image_size(cfg))
    data.verify()
    resume_payload = None
    last = join(run_dir, "checkpoints", "last.pt")
    if params.resume and not replacing and exists(last):
        resume_payload = load_checkpoint(last)
        saved = resume_payload.get("meta", {}).get("config_hash")
        if saved != key:
            raise InputError(f"checkpoint {last} belongs to another config or dataset: use another run_name "
                             "(--run-name), or set resume=False (--no-resume) to discard that unfinished run")

    dist = init_distributed(cfg.device)
    seed_everything(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    created = create_clip(cfg, dist.device)
    tokenizer = get_tokenizer(cfg.model)
    image_size = int(created.preprocess_cfg["size"][0] if isinstance(created.preprocess_cfg["size"], tuple | list)
                     else created.preprocess_cfg["size"])
    data.check_fit(cfg, world_size=dist.world_size, image_size=image_size)  # the sizes really built
    meta = {"config_hash": key, "model": cfg.model, "run": run,
            "dataset_version": data.version, "dataset_digest": data.digest}
    if dist.is_main:
        if resume_payload is None:
            clear_stale_attempt(run_dir, key, MANIFEST_FILE)
        atomic_write_bytes(join(run_dir, CONFIG_FILE), json.dumps(
            {"config": cfg.model_dump(mode="json"), "dataset": {"version": data.version, "digest": data.digest,
                                                                 "counts": data.counts},
             "model_info": created.info, "world_size": dist.world_size, "run": run,
             "config_hash": meta["config_hash"]}, indent=2, sort_keys=True).encode())
        if not exists(join(run_dir, "base", META_FILE)):
            export_model(join(run_dir, "base"), created.model, model_name=cfg.model, model_cfg=created.model_cfg,
                         preprocess_cfg=created.preprocess_cfg, meta={**meta, "step": 0, "which": "base"})

    trainer = Trainer(created.model, cfg, dist, mean=tuple(created.preprocess_cfg["mean"]),
                      std=tuple(created.preprocess_cfg["std"]))
    pin = dist.device.type == "cuda"
    stream = BatchStream(data.train_batches(cfg, tokenizer, image_size, rank=dist.rank,
                                            world_size=dist.world_size, pin_memory=pin))
    state = FitState()
    if resume_payload is not None:
        state.step = restore_training_state(resume_payload, model=created.model, optimizer=trainer.optimizer,
                                            scheduler=trainer.scheduler, source=last)
        best = resume_payload.get("best") or {}
        if best.get("best_metric") is not None:
            state.best_metric, state.best_step = float(best["best_metric"]), int(best["best_step"])
        stream.load_state_dict(resume_payload.get("loader") or {})
        # Each rank drew its own RNG before the save; rank r re-seeds its data order from the loader state.
        log.info("resuming run %s at step %d of %d", run, state.step, cfg.steps)
        resume_payload = None  # its weights and optimizer state (GBs for ViT-B-16) are copied in: free them

    metrics = MetricsLog(run_dir, resume_step=state.step, tensorboard=True, wandb=params.wandb, run_name=run,
                         config=cfg.model_dump(mode="json")) if dist.is_main else None
    writer = RunWriter(run_dir, cfg, dist, metrics, meta)
    val = data.val_batches(cfg, tokenizer, image_size, pin_memory=pin) if dist.is_main else None
    try:
        state = fit(trainer, stream, state=state, callbacks=writer, val_batches=val, progress=progress)
    finally:
        if metrics is not None:
            metrics.close()
    barrier(dist)
    if not dist.is_main:
        return StageResult(stage=STAGE, digest="", outputs={"run_dir": run_dir}, stats={"rank": dist.rank})

    if metrics is not None and not math.isfinite(state.last_loss):
        _take_last_logged(state, metrics.records)
    final = write_model(join(run_dir, "final"), created.model, model_name=cfg.model, model_cfg=created.model_cfg,
                        preprocess_cfg=created.preprocess_cfg, meta={**meta, "step": state.step, "which": "final"})
    stats = {"steps": state.step, "final_train_loss": state.last_loss, "best_step": state.best_step,
             "best_top10pct_image_to_text": state.best_metric if state.best_step >= 0 else None,
             "final_val": state.last_val, "checkpoint_sha256": final.checkpoint_sha256, "run": run,
             "dataset_version": data.version, "world_size": dist.world_size,
             "samples_per_s": state.samples / state.seconds if state.seconds else None}
    manifest = Manifest(name=f"run-{run}", files=[FileEntry(path=f"final/{WEIGHTS_FILE}", rows=0,
                                                            bytes=final.weights_bytes, sha256=final.weights_sha256)],
                        inputs=inputs, config=hashed, stats=stats)
    atomic_write_bytes(join(run_dir, MANIFEST_FILE), manifest.to_json().encode())
    return _result(run_dir, manifest, cached=False)
