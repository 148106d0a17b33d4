"""The training loop: steps, validation, metrics, checkpoints. No files are named here.

`Trainer` owns the model, optimizer, scheduler and loss for one process (one DDP rank). `fit`
drives it over a `BatchStream` and calls back into a `RunCallbacks` object (written by the
stage) to log metrics and write checkpoints, so the loop can be tested on synthetic tensors.

Speed: bf16 autocast, fused AdamW on CUDA, optional `torch.compile` (mode 'reduce-overhead' puts
forward and backward in CUDA graphs) or `cuda_graphs=True`, which captures the whole step,
AdamW included, in one CUDA graph (tasks/train/cuda_graph.py): at batch 32 the step is
launch-bound, and replaying one graph removes most of the launch cost.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from schemas.train import TrainConfig
from tasks.train.batches import Batch, BatchStream, ImagePrep, batch_size_of, shuffle_captions, unpack
from tasks.train.distributed import DistInfo, all_reduce_mean, wrap_ddp
from tasks.train.loss import clamp_logit_scale, create_loss
from tasks.train.model import base_model, unwrap
from tasks.train.retrieval import in_batch_topk_accuracy
from tasks.train.schedule import create_optimizer, create_scheduler

log = logging.getLogger(__name__)

VAL_BATCH = 100  # the paper's in-batch retrieval batch
VAL_FRACTION = 0.10  # top-10%


class RunCallbacks(Protocol):
    def log_metrics(self, step: int, record: dict[str, Any]) -> None: ...
    def save_checkpoint(self, trainer: Trainer, state: FitState, stream: BatchStream, *,
                        periodic: bool, best: bool) -> None: ...


class Trainer:
    """One process's share of training: model (DDP-wrapped, maybe compiled), optimizer, schedule, loss."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, dist: DistInfo, *,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        self.cfg = cfg
        self.dist = dist
        self.device = dist.device
        self.raw_model = model  # CLIP or HeadedCLIP, unwrapped: checkpoints and validation use it
        on_cuda = self.device.type == "cuda"
        graphs = cfg.cuda_graphs and on_cuda
        self.optimizer = create_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=on_cuda,
                                          capturable=graphs)
        self.scheduler = create_scheduler(self.optimizer, warmup_steps=cfg.warmup_steps,
                                          total_steps=cfg.steps, kind=cfg.schedule)
        self.loss_fn = create_loss(cfg.loss, dist.rank, dist.world_size)
        self.prep = ImagePrep(mean, std, self.device)
        self.autocast_dtype = torch.bfloat16 if cfg.precision == "bf16" else None
        wrapped = wrap_ddp(model, dist)
        if cfg.compile_mode != "none":
            mode = None if cfg.compile_mode == "default" else cfg.compile_mode
            wrapped = torch.compile(wrapped, mode=mode)
        self.model = wrapped
        self._graph = None
        if cfg.cuda_graphs:
            if not on_cuda:
                log.warning("cuda_graphs needs a CUDA device; running eagerly on %s", self.device)
            elif dist.distributed:
                log.warning("cuda_graphs is single-process only; running eagerly under DDP")
            else:
                from tasks.train.cuda_graph import GraphedTrainStep

                self._graph = GraphedTrainStep(self)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def forward_loss(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            outputs = self.model(images, tokens)
            return self.loss_fn(*outputs)

    def train_step(self, batch: Batch, step: int) -> torch.Tensor:
        """One optimizer step on a batch; returns this rank's loss (a detached device tensor)."""
        images_in, tokens_in, _ids = unpack(batch, self.device)
        if self.cfg.shuffled_pairs:
            tokens_in = shuffle_captions(tokens_in, self.cfg.seed + self.dist.rank, step)
        if self._graph is not None:
            return self._graph.step(images_in, tokens_in)
        images = self.prep.images(images_in)
        tokens = self.prep.tokens(tokens_in)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_loss(images, tokens)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        clamp_logit_scale(base_model(self.raw_model))
        return loss.detach()

    @property
    def lr(self) -> float:
        lr = self.optimizer.param_groups[0]["lr"]
        return float(lr.item() if isinstance(lr, torch.Tensor) else lr)

    @property
    def logit_scale(self) -> float:
        return float(base_model(self.raw_model).logit_scale.detach().exp().item())

    @torch.no_grad()
    def encode(self, batches: Iterable[Batch], max_pairs: int) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Image and text features of up to `max_pairs` pairs (eval mode, no augmentation)."""
        model = unwrap(self.raw_model)
        was_training = model.training
        model.eval()
        images_out, texts_out, ids = [], [], []
        count = 0
        try:
            for batch in batches:
                images, tokens, batch_ids = unpack(batch, self.device)
                with self.autocast():
                    images_out.append(model.encode_image(self.prep.images(images), normalize=True).float())
                    texts_out.append(model.encode_text(self.prep.tokens(tokens), normalize=True).float())
                ids.extend(batch_ids)
                count += images.shape[0]
                if count >= max_pairs:
                    break
        finally:
            model.train(was_training)
        if not images_out:
            raise RuntimeError("the validation source yielded no batch")
        return torch.cat(images_out)[:max_pairs], torch.cat(texts_out)[:max_pairs], ids[:max_pairs]

    @torch.no_grad()
    def validate(self, batches: Iterable[Batch], max_pairs: int) -> dict[str, float]:
        """Loss and in-batch-of-100 top-10% retrieval on validation pairs (rank 0 calls this)."""
        # Validation must not move the training RNG: a resumed run validates at other moments.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            images, texts, _ids = self.encode(batches, max_pairs)
        model = base_model(self.raw_model)
        scale = model.logit_scale.exp().float()
        bias = model.logit_bias.float() if model.logit_bias is not None else None
        loss_fn = create_loss(self.cfg.loss)
        size = VAL_BATCH if images.shape[0] >= VAL_BATCH else images.shape[0]
        losses = []
        for start in range(0, images.shape[0] - size + 1, size):
            chunk = (images[start:start + size], texts[start:start + size], scale)
            losses.append(float(loss_fn(*chunk, bias) if bias is not None else loss_fn(*chunk)))
        retrieval = in_batch_topk_accuracy(images, texts, batch_size=VAL_BATCH, fraction=VAL_FRACTION)
        return {
            "loss": sum(losses) / len(losses),
            "top10pct_image_to_text": retrieval["image_to_text"],
            "top10pct_text_to_image": retrieval["text_to_image"],
            "pairs": retrieval["pairs"],
        }


@dataclass
class FitState:
    step: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    last_val: dict[str, float] = field(default_factory=dict)
    last_loss: float = math.nan
    samples: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric if math.isfinite(self.best_metric) else None,
                "best_step": self.best_step}


BEST_METRIC = "top10pct_image_to_text"


def fit(trainer: Trainer, stream: BatchStream, *, state: FitState, callbacks: RunCallbacks,
        val_batches: Callable[[], Iterable[Batch]] | None = None,
        progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> FitState:
    """Train from `state.step` to `cfg.steps`; validate and checkpoint on schedule and at the end."""
    cfg, dist = trainer.cfg, trainer.dist
    window_start, window_samples = time.perf_counter(), 0
    while state.step < cfg.steps:
        batch = next(stream)
        loss = trainer.train_step(batch, state.step)
        state.step += 1
        rows = batch_size_of(batch) * dist.world_size
        window_samples += rows
        state.samples += rows
        done = state.step >= cfg.steps
        if state.step % cfg.log_every == 0 or done:
            mean_loss = float(all_reduce_mean(loss.float(), dist))
            elapsed = time.perf_counter() - window_start
            state.seconds += elapsed
            record = {"split": "train", "loss": mean_loss, "lr": trainer.lr, "logit_scale": trainer.logit_scale,
                      "samples_per_s": window_samples / max(elapsed, 1e-9),
                      "samples_per_s_per_device": window_samples / max(elapsed, 1e-9) / dist.world_size,
                      "epoch": stream.epoch}
            state.last_loss = mean_loss
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"training loss became {mean_loss} at step {state.step}")
            if dist.is_main:
                callbacks.log_metrics(state.step, record)
                log.info("step %d/%d loss %.4f lr %.3g scale %.1f %.0f samples/s", state.step, cfg.steps,
                         mean_loss, record["lr"], record["logit_scale"], record["samples_per_s"])
                if progress is not None:
                    progress(state.step, cfg.steps, record)
            window_start, window_samples = time.perf_counter(), 0
        improved = False
        if val_batches is not None and (state.step % cfg.val_every == 0 or done):
            if dist.is_main:
                metrics = trainer.validate(val_batches(), cfg.val_pairs)
                state.last_val = metrics
                callbacks.log_metrics(state.step, {"split": "val", **metrics})
                log.info("step %d val loss %.4f top-10%% i->t %.3f t->i %.3f", state.step, metrics["loss"],
                         metrics[BEST_METRIC], metrics["top10pct_text_to_image"])
                if metrics[BEST_METRIC] > state.best_metric:
                    state.best_metric, state.best_step = metrics[BEST_METRIC], state.step
                    improved = True
            window_start = time.perf_counter()  # validation time is not training throughput
        periodic = state.step % cfg.checkpoint_every == 0 or done
        if periodic or improved:
            callbacks.save_checkpoint(trainer, state, stream, periodic=periodic, best=improved)
    return state
