"""Training checkpoints: atomic, exactly resumable, and loadable by open_clip as they are.

A checkpoint file is one `torch.save` dict written through storage.fs (temporary name, then
rename), so a run killed mid-write keeps its previous checkpoint. It holds:

- `state_dict`: the open_clip CLIP weights, without DDP/compile prefixes. open_clip's loader reads
  this key, so `open_clip.create_model_and_transforms(name, pretrained="step_400.pt", **kwargs)`
  works on any training checkpoint (kwargs: the run's model.json `open_clip_kwargs`, see export.py).
- `head_state_dict`: the MLP head's weights (HeadedCLIP only; open_clip ignores it).
- `optimizer`, `scheduler`, `step`, `rng` (python, numpy, torch CPU and this process's GPU generators),
  `loader` (the batch source's position) and `best` (best validation metric so far): everything
  an interrupted run needs to continue as if it had not stopped.

Every value is a tensor or plain Python data, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from schemas.errors import InputError
from storage.fs import atomic_write_bytes, exists, join, open_fs, read_bytes
from tasks.train.model import HeadedCLIP, base_model, unwrap

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


# -- RNG --------------------------------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    """Every generator a training step may draw from, as weights_only-safe values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1]).copy()), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's own GPU only: a list of every visible GPU's state could not be restored on a
        # machine with fewer GPUs, and a process only ever draws from its current device.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        _restore_cuda_rng(state["cuda"])


def _restore_cuda_rng(saved: torch.Tensor | list[torch.Tensor]) -> None:
    """The current GPU's generator from a checkpoint's CUDA state.

    Older checkpoints hold a list with one state per GPU of the saving machine (indexed by device):
    take the current device's entry, and skip it when the saving machine had fewer GPUs.
    """
    if isinstance(saved, torch.Tensor):
        torch.cuda.set_rng_state(saved)
        return
    device = torch.cuda.current_device()
    if device < len(saved):
        torch.cuda.set_rng_state(saved[device])
    else:
        log.warning("checkpoint holds CUDA RNG states of %d GPUs, none for cuda:%d: that generator is not restored",
                    len(saved), device)


def _tuplify(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_tuplify(v) for v in value)
    return value


# -- save / load ------------------------------------------------------------------------------

def model_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(open_clip CLIP weights, head weights) of a possibly wrapped model, as CPU tensors."""
    inner = unwrap(model)
    base = {k: v.detach().cpu() for k, v in base_model(model).state_dict().items()}
    head = {k: v.detach().cpu() for k, v in inner.head_state_dict().items()} if isinstance(inner, HeadedCLIP) else {}
    return base, head


def checkpoint_bytes(*, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                     scheduler: Any | None, step: int, loader_state: dict[str, Any] | None = None,
                     best: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> bytes:
    base, head = model_state(model)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": base,
        "head_state_dict": head,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "rng": capture_rng(),
        "loader": loader_state or {},
        "best": best or {},
        "meta": meta or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_checkpoint(url: str, data: bytes) -> str:
    """Write checkpoint bytes atomically; returns their sha256."""
    atomic_write_bytes(url, data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(url: str) -> dict[str, Any]:
    """Read a training checkpoint; InputError naming the file when it is missing or not one."""
    if not exists(url):
        raise InputError(f"checkpoint {url} does not exist")
    try:
        payload = torch.load(io.BytesIO(read_bytes(url)), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise InputError(f"checkpoint {url} cannot be read: {type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise InputError(f"checkpoint {url} is not a training checkpoint (no state_dict)")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint {url} has format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    return payload


def restore_model(model: nn.Module, payload: dict[str, Any], *, source: str = "checkpoint") -> None:
    """Load weights (and head) into a possibly wrapped model; InputError on any mismatch."""
    try:
        base_model(model).load_state_dict(payload["state_dict"], strict=True)
        inner = unwrap(model)
        head = payload.get("head_state_dict") or {}
        if isinstance(inner, HeadedCLIP):
            if not head:
                raise RuntimeError("the model has an MLP head but the checkpoint has none")
            missing, unexpected = inner.load_state_dict(head, strict=False)
            if unexpected or [m for m in missing if not m.startswith("base.")]:
                raise RuntimeError(f"head keys differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
        elif head:
            raise RuntimeError("the checkpoint has an MLP head but the model has none")
    except RuntimeError as err:
        raise InputError(f"{source} does not fit the model: {str(err).strip().splitlines()[0][:300]}") from None


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict`, keeping every tensor hyperparameter (the lr) the same tensor.

    load_state_dict replaces each group's values with the checkpoint's, which `load_checkpoint`
    reads onto the CPU. With CUDA graphs the lr is a device tensor that the scheduler updates in
    place and the captured graph reads by address; fused AdamW would instead read a CPU lr once, as
    a number, and the graph captured after a resume would train at that frozen rate while the
    logged lr moved on. So each tensor that was there before takes the loaded value in place and
    goes back into its group.
    """
    before = [{key: value for key, value in group.items() if isinstance(value, torch.Tensor)}
              for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, tensors in zip(optimizer.param_groups, before, strict=True):
        for key, original in tensors.items():
            if key not in group:
                continue
            loaded = group[key]
            with torch.no_grad():
                if isinstance(loaded, torch.Tensor):
                    original.copy_(loaded)
                else:  # saved by a run whose lr was a number (no CUDA graphs)
                    original.fill_(loaded)
            group[key] = original


def restore_training_state(payload: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any, source: str = "checkpoint") -> int:
    """Model, optimizer, scheduler and RNG from a checkpoint; returns the step to continue from."""
    restore_model(model, payload, source=source)
    try:
        load_optimizer_state(optimizer, payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise InputError(f"{source}: optimizer/scheduler state does not fit this config: {err}") from None
    restore_rng(payload["rng"])
    return int(payload["step"])


# -- housekeeping -----------------------------------------------------------------------------

def step_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, url) of the step_N.pt files in a checkpoints directory, by step."""
    fs, path = open_fs(directory)
    if not fs.exists(path):
        return []
    found = []
    for entry in fs.ls(path, detail=False):
        leaf = entry.rstrip("/").rsplit("/", 1)[-1]
        match = _STEP_FILE.match(leaf)
        if match:
            found.append((int(match.group(1)), join(directory, leaf)))
    return sorted(found)


def prune_step_checkpoints(directory: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` step_N.pt files (last.pt and best.pt are separate files)."""
    removed = []
    for _step, url in step_checkpoints(directory)[:-keep] if keep > 0 else step_checkpoints(directory):
        fs, path = open_fs(url)
        fs.rm(path)
        removed.append(url)
    return removed
