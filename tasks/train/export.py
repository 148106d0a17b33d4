"""Exported models: what evaluation loads, in open_clip's own formats.

A run writes two model folders (runs/<run>/final/ at the end, runs/<run>/base/ at step 0, so
the base model is always evaluable beside the fine-tuned one, even where its pretrained tag
cannot be downloaded):

    open_clip_pytorch_model.bin   the CLIP state dict (torch.save)
    open_clip_config.json         {"model_cfg": ..., "preprocess_cfg": ...}: the config really built
    head.pt                       MLP head weights (frozen-head variant only)
    model.json                    model name, loss, head, checkpoint sha256, step, dataset version

`open_clip.create_model_and_transforms("local-dir:.../final")` rebuilds the CLIP as trained (config,
weights, preprocessing). By name, `open_clip.create_model_and_transforms(name,
pretrained=".../open_clip_pytorch_model.bin", **model.json["open_clip_kwargs"])` builds the same
network and weights (with open_clip's default preprocessing for the name): the kwargs are what the
named config lacks (SigLIP's `init_logit_bias`, without which the checkpoint's
logit_bias has nowhere to go; `force_image_size` for a run with its own image size, without which
open_clip resizes the position embeddings to the named size and builds another model). They are
null for a `local-dir:`/`hf-hub:` model, where open_clip ignores `pretrained=`. `load_trained`
does all this plus the head and WiSE-FT interpolation.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from fsspec.implementations.local import LocalFileSystem
from torch import nn

from schemas.errors import InputError
from storage.fs import atomic_write_bytes, exists, join, open_fs, read_bytes, read_text
from tasks.train.checkpoint import model_state
from tasks.train.model import HeadedCLIP, register_project_models
from tasks.train.wise_ft import interpolate_state_dicts

log = logging.getLogger(__name__)

WEIGHTS_FILE = "open_clip_pytorch_model.bin"
CONFIG_FILE = "open_clip_config.json"
HEAD_FILE = "head.pt"
META_FILE = "model.json"


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class ExportedModel:
    """What `write_model` wrote, hashed as it was written (so nobody reads the weights back)."""

    checkpoint_sha256: str  # weights + head: what load_trained verifies and reports
    weights_sha256: str  # the weights file alone
    weights_bytes: int


def export_model(directory: str, model: nn.Module, *, model_name: str, model_cfg: dict[str, Any],
                 preprocess_cfg: dict[str, Any], meta: dict[str, Any]) -> str:
    """Write an open_clip-loadable model folder; returns the checkpoint sha256 (weights + head)."""
    return write_model(directory, model, model_name=model_name, model_cfg=model_cfg,
                       preprocess_cfg=preprocess_cfg, meta=meta).checkpoint_sha256


def write_model(directory: str, model: nn.Module, *, model_name: str, model_cfg: dict[str, Any],
                preprocess_cfg: dict[str, Any], meta: dict[str, Any]) -> ExportedModel:
    """`export_model`, returning the weights file's own hash and size beside the checkpoint hash."""
    base, head = model_state(model)
    weights = _torch_bytes(base)
    digest = hashlib.sha256(weights)
    weights_sha = digest.hexdigest()  # a snapshot: the head's bytes are added to `digest` below
    atomic_write_bytes(join(directory, WEIGHTS_FILE), weights)
    if head:
        head_bytes = _torch_bytes(head)
        digest.update(head_bytes)
        atomic_write_bytes(join(directory, HEAD_FILE), head_bytes)
    pp = {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess_cfg.items()}
    config = {"model_cfg": model_cfg, "preprocess_cfg": pp}
    atomic_write_bytes(join(directory, CONFIG_FILE), json.dumps(config, indent=2).encode())
    sha = digest.hexdigest()
    info = {**meta, "model": model_name, "checkpoint_sha256": sha, "head": bool(head),
            "head_hidden": _head_hidden(head), "weights": WEIGHTS_FILE,
            "open_clip_kwargs": open_clip_kwargs(model_name, model_cfg)}
    # Written last: a folder without model.json is an export that did not finish.
    atomic_write_bytes(join(directory, META_FILE), json.dumps(info, indent=2, sort_keys=True).encode())
    return ExportedModel(checkpoint_sha256=sha, weights_sha256=weights_sha, weights_bytes=len(weights))


def open_clip_kwargs(model_name: str, model_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """What `open_clip.create_model_and_transforms(model_name, pretrained=<weights file>, **kwargs)`
    needs to rebuild the model `model_cfg` describes, beyond the named config; None for a
    `local-dir:`/`hf-hub:` name, whose weights open_clip always takes from that source."""
    if model_name.startswith(("local-dir:", "hf-hub:")):
        return None
    kwargs: dict[str, Any] = {}
    if model_cfg.get("init_logit_bias") is not None:
        kwargs["init_logit_bias"] = model_cfg["init_logit_bias"]
    size = model_cfg.get("vision_cfg", {}).get("image_size")
    named = open_clip.get_model_config(model_name) or {}
    if size is not None and size != named.get("vision_cfg", {}).get("image_size"):
        kwargs["force_image_size"] = size
    return kwargs


def _head_hidden(head: dict[str, torch.Tensor]) -> int | None:
    weight = head.get("image_head.fc1.weight")
    return int(weight.shape[0]) if weight is not None else None


@dataclass
class TrainedModel:
    """What evaluation needs: an eval-mode model, its tokenizer and eval transform, and its hash."""

    model: nn.Module
    tokenizer: Any
    preprocess: Any
    checkpoint_sha256: str
    info: dict[str, Any]

    def __iter__(self):  # (model, tokenizer, preprocess, checkpoint_sha256) unpacking
        return iter((self.model, self.tokenizer, self.preprocess, self.checkpoint_sha256))


def _model_dir(run_or_model_dir: str, which: str) -> str:
    if exists(join(run_or_model_dir, META_FILE)):
        return run_or_model_dir
    directory = join(run_or_model_dir, which)
    if not exists(join(directory, META_FILE)):
        raise InputError(f"no finished {which!r} model under {run_or_model_dir} (missing {which}/{META_FILE})")
    return directory


@contextmanager
def _local_dir(directory: str) -> Iterator[Path]:
    """A local folder holding the model files: the folder itself on a local root; on a remote one,
    a temporary copy, removed on leaving (everything is in memory by then)."""
    fs, path = open_fs(directory)
    if isinstance(fs, LocalFileSystem):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="hubbleclip-model-") as temporary:
        local = Path(temporary)
        for name in (WEIGHTS_FILE, CONFIG_FILE, HEAD_FILE, META_FILE):
            url = join(directory, name)
            if exists(url):
                (local / name).write_bytes(read_bytes(url))
        yield local


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _verify_weights(local: Path, info: dict[str, Any], directory: str) -> None:
    """Refuse weights whose bytes are not the ones export_model hashed: never load a swapped file."""
    digest = hashlib.sha256((local / WEIGHTS_FILE).read_bytes())
    if (local / HEAD_FILE).exists():
        digest.update((local / HEAD_FILE).read_bytes())
    if digest.hexdigest() != info.get("checkpoint_sha256"):
        raise InputError(f"model {directory}: weights do not match the hash recorded in {META_FILE}")


def load_trained(run_dir: str, *, which: str = "final", wise_ft_alpha: float | None = None,
                 device: str | torch.device = "cpu") -> TrainedModel:
    """Load a run's model for evaluation: (model, tokenizer, preprocess, checkpoint_sha256).

    `run_dir` is runs/<run>/ (or a model folder itself); `which` is 'final' or 'base'. With
    `wise_ft_alpha`, the weights are (1 - alpha) * base + alpha * final (alpha=1: final).
    """
    register_project_models()
    directory = _model_dir(run_dir, which)
    info = json.loads(read_text(join(directory, META_FILE)))
    with ExitStack() as copies:
        local = copies.enter_context(_local_dir(directory))
        _verify_weights(local, info, directory)
        name = info["model"]
        config = json.loads((local / CONFIG_FILE).read_text())
        model_cfg = config["model_cfg"]
        weights = str(local / WEIGHTS_FILE)
        if name.startswith(("local-dir:", "hf-hub:")):
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{local}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{local}")
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=weights, **open_clip_kwargs(name, model_cfg))
            tokenizer = open_clip.get_tokenizer(name)
        sha = info["checkpoint_sha256"]
        if info.get("head"):
            model = HeadedCLIP(model, int(info["head_hidden"]))
            model.load_state_dict({**{f"base.{k}": v for k, v in model.base.state_dict().items()},
                                   **_read_state(local / HEAD_FILE)})
        if wise_ft_alpha is not None:
            base_dir = _model_dir(run_dir, "base") if directory != run_dir else None
            if base_dir is None:
                raise InputError("WiSE-FT needs the run directory (with base/ and final/), not a model folder")
            base_state = _full_state(copies.enter_context(_local_dir(base_dir)))
            ft_state = model.state_dict()
            model.load_state_dict(interpolate_state_dicts(base_state, ft_state, wise_ft_alpha))
            base_sha = json.loads(read_text(join(base_dir, META_FILE)))["checkpoint_sha256"]
            sha = hashlib.sha256(f"wise-ft:{base_sha}:{sha}:{wise_ft_alpha}".encode()).hexdigest()
            info = {**info, "wise_ft_alpha": wise_ft_alpha, "base_checkpoint_sha256": base_sha}
    model.to(device).eval()
    return TrainedModel(model, tokenizer, preprocess, sha, info)


def _full_state(local: Path) -> dict[str, torch.Tensor]:
    """State dict of an exported folder in the key layout of the loaded model (HeadedCLIP or CLIP)."""
    state = _read_state(local / WEIGHTS_FILE)
    if (local / HEAD_FILE).exists():
        return {**{f"base.{k}": v for k, v in state.items()}, **_read_state(local / HEAD_FILE)}
    return state
