"""Fine-tune CLIP with open_clip on the dataset shards (the paper's recipe, and variants).

Library, not trainer script: no Prefect, no CLI here (flows/train.py and flows/commands/train.py
wrap it; `python -m tasks.train` / `torchrun -m tasks.train` run it without either).

Public API:
    run_train(params: TrainParams, *, progress=None) -> StageResult
    load_trained(run_dir, *, which="final", wise_ft_alpha=None, device="cpu") -> TrainedModel
        (unpacks as model, tokenizer, preprocess, checkpoint_sha256)
    list_presets(), get_preset(name), resolve_config(params) -> TrainConfig
    create_clip(cfg, device) -> CreatedModel; register_project_models(); TINY_MODEL
    interpolate_state_dicts(base, finetuned, alpha)     (WiSE-FT)
    in_batch_topk_accuracy(image_features, text_features, batch_size=100, fraction=0.1)
"""

from tasks.train.export import TrainedModel, load_trained
from tasks.train.model import TINY_MODEL, create_clip, get_tokenizer, register_project_models
from tasks.train.presets import get_preset, list_presets, resolve_config
from tasks.train.retrieval import in_batch_topk_accuracy
from tasks.train.stage import run_train
from tasks.train.wise_ft import interpolate_state_dicts

__all__ = [
    "TINY_MODEL",
    "TrainedModel",
    "create_clip",
    "get_preset",
    "get_tokenizer",
    "in_batch_topk_accuracy",
    "interpolate_state_dicts",
    "list_presets",
    "load_trained",
    "register_project_models",
    "resolve_config",
    "run_train",
]
