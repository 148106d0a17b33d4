"""Training presets: small JSON files addressable by name, like open_clip's model configs.

`tiny.json` and `paper.json` live beside this module; `get_preset` also accepts a path to any
JSON file with the same keys, so a new recipe is a new file, not new code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.errors import InputError, validation_reasons
from schemas.train import TrainConfig, TrainParams

PRESET_DIR = Path(__file__).resolve().parent

# Keys a preset may set; everything else comes from TrainParams' defaults.
PRESET_KEYS = frozenset({
    "description", "model", "pretrained", "steps", "batch_size", "lr", "weight_decay", "warmup_steps",
    "schedule", "loss", "freeze", "head", "precision", "checkpoint_every", "val_every", "val_pairs",
    "workers", "image_size", "resize_to",
})


def list_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def get_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name ('tiny', 'paper') or by path to a JSON file."""
    path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        raise InputError(f"unknown training preset {name_or_path!r}; known: {', '.join(list_presets())}")
    try:
        preset = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"training preset {path} is not valid JSON: {err}") from None
    unknown = set(preset) - PRESET_KEYS
    if unknown:
        raise InputError(f"training preset {path} has unknown keys: {', '.join(sorted(unknown))}")
    return preset


def resolve_config(params: TrainParams) -> TrainConfig:
    """Merge a preset with the user's overrides into a complete, checked TrainConfig."""
    preset = get_preset(params.preset)

    def pick(field: str, default: Any = None) -> Any:
        value = getattr(params, field)
        return value if value is not None else preset.get(field, default)

    head = pick("head", "none")
    # The paper's frozen-head variant: asking for a head alone means "freeze both towers under it".
    freeze = params.freeze if params.freeze is not None else ("both" if head == "mlp" else preset.get("freeze", "none"))
    if params.from_scratch and params.pretrained:
        raise InputError(f"from_scratch (--from-scratch) and pretrained={params.pretrained!r} (--pretrained) "
                         "contradict each other: give one")
    pretrained = "" if params.from_scratch else (pick("pretrained", "") or "")
    if freeze == "both" and head == "none":
        raise InputError("freeze='both' leaves nothing to train: add head='mlp' (the paper's frozen-head variant)")
    if freeze != "none" and not pretrained:
        raise InputError(f"freeze={freeze!r} with random init freezes random weights: give a pretrained tag or checkpoint")
    if params.cuda_graphs and params.compile_mode in ("reduce-overhead", "max-autotune"):
        raise InputError(f"cuda_graphs and compile_mode={params.compile_mode!r} both make CUDA graphs: pick one "
                         "(cuda_graphs with compile_mode='default' captures the compiled step whole)")
    values = dict(
        preset=params.preset,
        model=pick("model"),
        pretrained=pretrained,
        steps=pick("steps"),
        batch_size=pick("batch_size"),
        lr=pick("lr"),
        weight_decay=pick("weight_decay"),
        warmup_steps=pick("warmup_steps", 0),
        schedule=pick("schedule", "constant"),
        loss=pick("loss", "clip"),
        caption_source=params.caption_source,
        freeze=freeze,
        head=head,
        head_hidden=params.head_hidden,
        shuffled_pairs=params.shuffled_pairs,
        fixed_temperature=params.fixed_temperature,
        precision=pick("precision", "fp32"),
        compile_mode=params.compile_mode,
        cuda_graphs=params.cuda_graphs,
        fused_attention=params.fused_attention,
        grad_checkpointing=params.grad_checkpointing,
        image_size=pick("image_size"),
        resize_to=pick("resize_to"),
        checkpoint_every=pick("checkpoint_every"),
        keep_checkpoints=params.keep_checkpoints,
        val_every=pick("val_every"),
        val_pairs=pick("val_pairs", 500),
        log_every=params.log_every,
        seed=params.seed,
        device=params.device,
        workers=pick("workers", 0),
        decode_device=params.decode_device,
    )
    try:
        return TrainConfig(**values)
    except ValidationError as err:  # a preset file's value out of bounds (the form checked the overrides)
        raise InputError(f"training preset {params.preset!r} gives an invalid configuration: "
                         f"{validation_reasons(err)}") from None
