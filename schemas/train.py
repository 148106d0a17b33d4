"""Parameters of the train stage: the flow's form (`TrainParams`) and its resolved form (`TrainConfig`).

`TrainParams` is what a user fills in (Prefect UI form, CLI options): a preset name plus optional
overrides, where `None` means "the preset's value". `tasks.train.presets.resolve_config` merges the
two into a `TrainConfig` with every field set; that resolved config is saved beside the run and
hashed into the run name, so an unchanged dataset + config never retrains.

Temperature (paper-method.md section 3): the logits are `exp(logit_scale) * cosine`, the standard
CLIP form. The reference implementation multiplied by `logit_scale` itself (about 4.6, i.e. an
effective temperature of about 0.22) instead of its exponential (100). `fixed_temperature` makes
the temperature a visible setting: leave it unset to learn it, set it (e.g. 0.01 for a scale of
100, or 0.217 to reproduce the reference's mistake) to hold it fixed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.settings import default_data_root

PresetName = Literal["tiny", "paper"]
Schedule = Literal["constant", "cosine"]
LossKind = Literal["clip", "siglip"]
CaptionSource = Literal["summary", "abstract"]
Freeze = Literal["none", "image", "text", "both"]
Head = Literal["none", "mlp"]
Precision = Literal["fp32", "bf16"]
DeviceChoice = Literal["auto", "cpu", "cuda"]
CompileMode = Literal["none", "default", "reduce-overhead", "max-autotune"]
DecodeDevice = Literal["cpu", "cuda"]


class TrainParams(BaseModel):
    """Fine-tune CLIP on a dataset version. Unset (None) fields take the preset's value."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default_factory=default_data_root, description="data root: a local path or fsspec URL")
    dataset_version: str = Field(default="latest", description="datasets/<version>/ to train on; 'latest' follows the pointer")
    preset: PresetName = Field(default="tiny", description="tiny: small model from scratch (CPU); paper: ViT-B-16 openai recipe")
    model: str | None = Field(default=None, description="any open_clip model name, e.g. ViT-B-16, ViT-L-14")
    pretrained: str | None = Field(
        default=None, description="open_clip pretrained tag (e.g. 'openai') or a local checkpoint path; '' for none")
    from_scratch: bool = Field(default=False, description="random init whatever the preset says (the paper's 'from scratch')")
    steps: int | None = Field(default=None, ge=1, description="optimizer steps")
    batch_size: int | None = Field(default=None, ge=2, description="global batch (split across DDP ranks)")
    lr: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)
    warmup_steps: int | None = Field(default=None, ge=0, description="linear warm-up steps")
    schedule: Schedule | None = Field(default=None, description="after warm-up: constant (paper) or cosine decay")
    loss: LossKind | None = Field(default=None, description="clip (InfoNCE) or siglip (sigmoid)")
    caption_source: CaptionSource = Field(default="summary", description="caption from the LLM summary or the raw abstract")
    freeze: Freeze | None = Field(default=None, description="towers to freeze; 'both' needs head='mlp'")
    head: Head | None = Field(default=None, description="'mlp': residual MLP head on each tower's embedding")
    head_hidden: int = Field(default=1024, ge=8, description="hidden width of the MLP head (paper: 1024)")
    shuffled_pairs: bool = Field(default=False, description="control: captions shuffled within each batch (must stay at chance)")
    fixed_temperature: float | None = Field(
        default=None, gt=0, le=10, description="hold the softmax temperature fixed (logit scale 1/T); unset: learned")
    precision: Precision | None = Field(default=None, description="fp32, or bf16 autocast (CUDA)")
    compile_mode: CompileMode = Field(default="none", description="torch.compile mode ('reduce-overhead' uses CUDA graphs)")
    cuda_graphs: bool = Field(default=False, description="capture the whole train step (forward, backward, AdamW) in one CUDA graph")
    fused_attention: bool = Field(
        default=True, description="batch-first self-attention without nn.MultiheadAttention's copies (same math)")
    grad_checkpointing: bool = Field(default=False, description="trade compute for memory (large models/batches)")
    image_size: int | None = Field(default=None, ge=16, description="override the model's input size")
    resize_to: int | None = Field(default=None, ge=16,
                                  description="resize the stored 512 px preview to this side before the crop")
    checkpoint_every: int | None = Field(default=None, ge=1, description="write a resumable checkpoint every N steps")
    keep_checkpoints: int = Field(default=3, ge=1, description="step_N.pt files kept (last.pt and best.pt always kept)")
    val_every: int | None = Field(default=None, ge=1, description="validate every N steps (and at the end)")
    val_pairs: int | None = Field(default=None, ge=100, description="validation pairs used (in batches of 100)")
    log_every: int = Field(default=10, ge=1)
    seed: int = Field(default=0, ge=0)
    device: DeviceChoice = "auto"
    workers: int | None = Field(default=None, ge=0, description="data-loading worker processes")
    decode_device: DecodeDevice = Field(
        default="cpu", description="'cuda': JPEGs decoded and augmented on the GPU (nvJPEG) instead of in workers")
    run_name: str | None = Field(default=None, description="default: <dataset version>-<preset>-<config hash>")
    resume: bool = Field(default=True, description="continue an interrupted run from its last checkpoint")
    overwrite: bool = Field(default=False, description="replace a finished run of another config under this "
                            "run_name (its final model and checkpoints are deleted)")
    wandb: bool = Field(default=False, description="also log to Weights & Biases (needs `wandb` installed)")

    @field_validator("run_name")
    @classmethod
    def _safe_run_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v.startswith(".")):
            raise ValueError(f"run_name must be a plain directory name, got {v!r}")
        return v


class TrainConfig(BaseModel):
    """The resolved training configuration: every field set. Saved as runs/<run>/config.json.

    Its bounds repeat TrainParams' because presets and saved configs reach it without passing
    through the form.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str
    model: str
    pretrained: str = Field(description="tag, local checkpoint path, or '' for random init")
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_steps: int = Field(ge=0)
    schedule: Schedule
    loss: LossKind
    caption_source: CaptionSource
    freeze: Freeze
    head: Head
    head_hidden: int = Field(ge=8)
    shuffled_pairs: bool
    fixed_temperature: float | None = Field(gt=0, le=10)
    precision: Precision
    compile_mode: CompileMode
    cuda_graphs: bool
    fused_attention: bool = True
    grad_checkpointing: bool
    image_size: int | None = Field(ge=16)
    resize_to: int | None = Field(ge=16)
    checkpoint_every: int = Field(ge=1)
    keep_checkpoints: int = Field(ge=1)
    val_every: int = Field(ge=1)
    val_pairs: int = Field(ge=100)
    log_every: int = Field(ge=1)
    seed: int = Field(ge=0)
    device: DeviceChoice
    workers: int = Field(ge=0)
    decode_device: DecodeDevice = "cpu"

    def hashed_fields(self) -> dict:
        """The fields that change the trained weights: the run-name hash and stage cache key.

        Left out: how often to log/validate/checkpoint, the device, where JPEGs are decoded,
        compilation, CUDA graphs and the attention implementation: none changes what is learned
        beyond rounding.

        The worker count is in, as `loader_workers`: the loader lays each epoch out per worker
        (tasks/dataset/loader.py), so it decides which rows share a batch (each worker streams its
        own slice of the rank's rows through its own shuffle buffer, and batches alternate between
        workers) and the random crops, symmetries and abstract caption windows, which are seeded
        per (seed, epoch, rank, worker, batch). workers=0 and workers=1 are the same single layout,
        hence max(1, workers). (The DDP world size splits rows the same way but is not a config
        field: a run resumed on another world size keeps its name, and its loader restarts the
        interrupted epoch.)
        """
        skip = {"checkpoint_every", "keep_checkpoints", "val_every", "log_every", "device", "workers",
                "compile_mode", "cuda_graphs", "fused_attention", "decode_device"}
        fields = {k: v for k, v in self.model_dump(mode="json").items() if k not in skip}
        fields["loader_workers"] = max(1, self.workers)
        return fields
