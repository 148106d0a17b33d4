"""CLIP models for training: open_clip's factory, the project's tiny config, freezing and the MLP head.

Every model comes from `open_clip.create_model_and_transforms(name, pretrained=...)`, where
`pretrained` is an open_clip tag ("openai", needs the weights cache or network) or a local
checkpoint file. The project's tiny config is registered with `open_clip.add_model_config`, so
open_clip treats it like any built-in name (its name must not contain "siglip": open_clip's
`get_tokenizer` would switch to a hub-downloaded tokenizer).

Tower freezing is the project's own (by parameter name), so it behaves the same for open_clip's
native text tower (whose parts sit directly on the CLIP module) and for HF/custom text towers
(under `.text`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn
from torch.nn import functional as F

from schemas.errors import InputError, RemoteError
from schemas.train import TrainConfig
from tasks.train.attention import use_fused_attention

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
TINY_MODEL = "hubbleclip-tiny"
SIGLIP_INIT = {"init_logit_bias": -10.0}  # the SigLIP paper's initial bias; scale set apart (below)
SIGLIP_INIT_SCALE = math.log(10.0)

_registered = False


def register_project_models() -> None:
    """Add the project's model configs (tasks/train/model_configs/*.json) to open_clip's registry."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def check_model_name(name: str) -> None:
    """InputError naming the model unless open_clip knows it (built-in, project config or local-dir:)."""
    register_project_models()
    if name.startswith("local-dir:"):
        if not (Path(name.removeprefix("local-dir:")) / "open_clip_config.json").is_file():
            raise InputError(f"model {name!r}: no open_clip_config.json in that folder")
        return
    if name.startswith("hf-hub:"):
        return
    if open_clip.get_model_config(name) is None:
        close = [m for m in open_clip.list_models() if name.lower().replace("/", "-")[:5] in m.lower()][:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise InputError(f"unknown model name {name!r} (not an open_clip config){hint}")


def check_pretrained(name: str, pretrained: str) -> None:
    """InputError unless `pretrained` is empty, a known open_clip tag for `name`, or an existing file."""
    if not pretrained or name.startswith(("local-dir:", "hf-hub:")):
        return
    if open_clip.get_pretrained_cfg(name, pretrained):
        return
    if os.path.isfile(pretrained):
        return
    if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise InputError(f"checkpoint {pretrained} does not exist")
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise InputError(
        f"pretrained {pretrained!r} is neither a checkpoint file nor an open_clip tag for {name}"
        f" (tags: {', '.join(tags) or 'none'})"
    )


def planned_image_size(cfg: TrainConfig) -> int | None:
    """The crop side the model will take, read from its config without building it.

    None where only building it tells: an `hf-hub:` name (its config may need the network), a
    config without a vision image size, an unreadable local-dir: config.
    """
    if cfg.image_size is not None:
        return cfg.image_size
    if cfg.model.startswith("hf-hub:"):
        return None
    register_project_models()
    try:
        config = open_clip.get_model_config(cfg.model) or {}
    except (OSError, ValueError):
        return None
    size = config.get("vision_cfg", {}).get("image_size")
    if isinstance(size, list | tuple):
        size = size[0]
    return int(size) if size else None


def model_kwargs_for(cfg: TrainConfig) -> dict[str, Any]:
    """Constructor overrides the config implies (SigLIP needs a logit bias)."""
    kwargs: dict[str, Any] = {}
    if cfg.loss == "siglip":
        kwargs.update(SIGLIP_INIT)
        if not cfg.pretrained:
            kwargs["init_logit_scale"] = SIGLIP_INIT_SCALE
    return kwargs


def effective_model_config(name: str, image_size: int | None = None, **model_kwargs: Any) -> dict[str, Any]:
    """The open_clip model config actually built: the named config plus overrides.

    Saved as `open_clip_config.json` beside exported weights so `local-dir:` can rebuild it. For
    `local-dir:` and `hf-hub:` names the base is that source's own open_clip_config.json (open_clip
    reads it; a hub config needs the network or the hub cache, as building the model did).
    """
    register_project_models()
    base = open_clip.get_model_config(name)
    if not base:
        raise InputError(f"unknown model name {name!r}")
    cfg = copy.deepcopy(base)
    if image_size is not None:
        cfg["vision_cfg"]["image_size"] = image_size
    cfg.update(model_kwargs)
    return cfg


# -- the MLP head (paper's frozen-backbone variant) --------------------------------------------

class ResidualMLPHead(nn.Module):
    """x + W2 gelu(W1 x). W2 starts at zero, so the headed model starts as the base model."""

    def __init__(self, dim: int, hidden: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(x)))


class HeadedCLIP(nn.Module):
    """An open_clip CLIP with an MLP head on each tower's embedding; same interface as CLIP."""

    def __init__(self, base: nn.Module, hidden: int = 1024):
        super().__init__()
        self.base = base
        dim = _embed_dim(base)
        self.image_head = ResidualMLPHead(dim, hidden)
        self.text_head = ResidualMLPHead(dim, hidden)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.base.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return self.base.logit_bias

    @property
    def visual(self) -> nn.Module:
        return self.base.visual

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.base.set_grad_checkpointing(enable)

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.image_head(self.base.encode_image(image))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.text_head(self.base.encode_text(text))
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        if self.base.logit_bias is not None:
            return image_features, text_features, self.base.logit_scale.exp(), self.base.logit_bias
        return image_features, text_features, self.base.logit_scale.exp()


def _embed_dim(model: nn.Module) -> int:
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, nn.Linear):
        return proj.out_features
    if isinstance(proj, torch.Tensor):
        return proj.shape[1]
    return model.visual.output_dim


def base_model(model: nn.Module) -> nn.Module:
    """The open_clip CLIP inside DDP / torch.compile / HeadedCLIP wrappers."""
    while True:
        if hasattr(model, "module"):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, HeadedCLIP):
            model = model.base
        else:
            return model


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP and torch.compile wrappers (keeps a HeadedCLIP)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


# -- freezing -----------------------------------------------------------------------------------

def tower_of(param_name: str) -> str:
    """'image', 'text' or 'scale' for a parameter name of an open_clip CLIP / CustomTextCLIP."""
    if param_name.startswith("visual."):
        return "image"
    if param_name in ("logit_scale", "logit_bias"):
        return "scale"
    return "text"  # native tower: token_embedding, positional_embedding, transformer, ln_final, text_projection; or text.*


def freeze_towers(model: nn.Module, which: str) -> int:
    """Stop gradients into the chosen towers ('none', 'image', 'text', 'both'); returns params frozen."""
    if which == "none":
        return 0
    base = base_model(model)
    frozen = 0
    for name, param in base.named_parameters():
        tower = tower_of(name)
        if tower != "scale" and which in ("both", tower):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def fix_temperature(model: nn.Module, temperature: float) -> None:
    """Hold exp(logit_scale) at 1/temperature: the visible, documented temperature setting."""
    scale = base_model(model).logit_scale
    with torch.no_grad():
        scale.fill_(math.log(1.0 / temperature))
    scale.requires_grad_(False)


# -- creation -----------------------------------------------------------------------------------

@dataclass
class CreatedModel:
    model: nn.Module  # CLIP or HeadedCLIP, on the device, not yet DDP-wrapped or compiled
    name: str
    model_cfg: dict[str, Any]  # effective open_clip config (for open_clip_config.json)
    preprocess_cfg: dict[str, Any]  # mean/std/size for the loader and the export
    preprocess_train: Any = None
    preprocess_val: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def create_clip(cfg: TrainConfig, device: torch.device | str = "cpu") -> CreatedModel:
    """Build the model the config asks for, with open_clip's factory; bad names fail as InputError."""
    register_project_models()
    check_model_name(cfg.model)
    check_pretrained(cfg.model, cfg.pretrained)
    kwargs = model_kwargs_for(cfg)
    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            cfg.model, pretrained=cfg.pretrained or None, force_image_size=cfg.image_size, **kwargs
        )
    except RuntimeError as err:
        text = str(err).splitlines()[0]
        if "Failed to download" in text:
            raise RemoteError(f"pretrained weights {cfg.pretrained!r} for {cfg.model} could not be fetched: {text}") from err
        if "Error(s) in loading state_dict" in text or "size mismatch" in str(err) or "Missing key" in str(err):
            raise InputError(
                f"checkpoint {cfg.pretrained!r} does not fit model {cfg.model}: {_first_mismatch(str(err))}") from err
        raise InputError(f"cannot build model {cfg.model!r} with pretrained={cfg.pretrained!r}: {text}") from err
    except (OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as err:
        raise InputError(f"checkpoint {cfg.pretrained!r} cannot be read: {type(err).__name__}: {err}") from err

    info: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
    if cfg.fused_attention:
        info["fused_attention_blocks"] = use_fused_attention(model)
    model_cfg = effective_model_config(cfg.model, cfg.image_size, **kwargs)
    preprocess_cfg = dict(model.visual.preprocess_cfg)
    if cfg.fixed_temperature is not None:
        fix_temperature(model, cfg.fixed_temperature)
    if cfg.head == "mlp":
        model = HeadedCLIP(model, cfg.head_hidden)
    info["frozen_params"] = freeze_towers(model, cfg.freeze)
    info["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device)
    log.info("model %s (%s): %.2fM params, %.2fM trainable", cfg.model, cfg.pretrained or "random init",
             info["params"] / 1e6, info["trainable_params"] / 1e6)
    return CreatedModel(model, cfg.model, model_cfg, preprocess_cfg, preprocess_train, preprocess_val, info)


def _first_mismatch(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("size mismatch", "Missing key", "Unexpected key")):
            return line[:200]
    return text.splitlines()[0][:200]


def get_tokenizer(name: str):
    """open_clip's tokenizer for the model (offline for every built-in and project config)."""
    register_project_models()
    return open_clip.get_tokenizer(name)
