"""The whole train step (normalise, forward, loss, backward, AdamW, clamp) as one CUDA graph.

At small batches (the paper's 32) a ViT-B/16 step is bound by kernel launches, not FLOPs:
hundreds of small kernels for forward, backward and the optimizer. Capturing them once and
replaying the graph each step removes the launch overhead. Requirements, all met here:
static input buffers (each batch is copied into them), a capturable AdamW whose learning rate
is a device tensor (the scheduler updates it in place, so the graph sees the schedule; a resume
loads into that same tensor, checkpoint.load_optimizer_state), autocast
without its weight cache, and no host synchronisation inside the step.

Capture needs a few warm-up steps; they run on the first batch and would change the weights, so
the parameters and optimizer state are snapshotted before and copied back (in place, keeping the
addresses the graph captured) after. The trajectory is therefore the eager one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from tasks.train.loss import clamp_logit_scale
from tasks.train.model import base_model

if TYPE_CHECKING:
    from tasks.train.loop import Trainer

log = logging.getLogger(__name__)

WARMUP_STEPS = 3


class GraphedTrainStep:
    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_images: torch.Tensor | None = None
        self.static_tokens: torch.Tensor | None = None
        self.static_loss: torch.Tensor | None = None

    def _body(self) -> torch.Tensor:
        trainer = self.trainer
        images = trainer.prep.images(self.static_images)
        with torch.autocast("cuda", dtype=trainer.autocast_dtype or torch.float32,
                            enabled=trainer.autocast_dtype is not None, cache_enabled=False):
            outputs = trainer.model(images, self.static_tokens)
            loss = trainer.loss_fn(*outputs)
        loss.backward()
        trainer.optimizer.step()
        clamp_logit_scale(base_model(trainer.raw_model))
        return loss

    def _snapshot(self) -> tuple[list[torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
        params = [p.detach().clone() for p in self.trainer.raw_model.parameters()]
        opt_state = {id(p): {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                     for p, s in self.trainer.optimizer.state.items()}
        return params, opt_state

    @torch.no_grad()
    def _restore(self, params: list[torch.Tensor], opt_state: dict[int, dict[str, torch.Tensor]]) -> None:
        for p, saved in zip(self.trainer.raw_model.parameters(), params, strict=True):
            p.copy_(saved)
        for p, s in self.trainer.optimizer.state.items():
            saved = opt_state.get(id(p))
            for key, value in s.items():
                if isinstance(value, torch.Tensor):
                    # No state before the snapshot means a fresh optimizer: zero moments, step 0.
                    value.copy_(saved[key]) if saved is not None else value.zero_()

    def _capture(self, images: torch.Tensor, tokens: torch.Tensor) -> None:
        device = self.trainer.device
        self.static_images = torch.empty_like(images, device=device)
        self.static_tokens = torch.empty_like(tokens, device=device, dtype=torch.long)
        self.static_images.copy_(images)
        self.static_tokens.copy_(tokens)
        self.trainer.model.train()
        params, opt_state = self._snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.trainer.optimizer.zero_grad(set_to_none=True)
                self._body()
        torch.cuda.current_stream().wait_stream(side)
        # Grads set to None so backward allocates them from the graph's private pool (static).
        self.trainer.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self._body()
        self._restore(params, opt_state)
        log.info("captured the train step in a CUDA graph (batch %s)", tuple(images.shape))

    def step(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            self._capture(images, tokens)
        assert self.static_images is not None and self.static_tokens is not None
        if images.shape != self.static_images.shape or tokens.shape != self.static_tokens.shape:
            raise ValueError(f"a CUDA-graph step needs one batch shape: captured {tuple(self.static_images.shape)},"
                             f" got {tuple(images.shape)} (use a loader that drops the last partial batch)")
        self.static_images.copy_(images, non_blocking=True)
        self.static_tokens.copy_(tokens, non_blocking=True)
        self.graph.replay()
        self.trainer.scheduler.step()
        return self.static_loss.detach().clone()
