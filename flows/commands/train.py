"""`hubbleclip` commands for the train stage: train, train-presets.

Torch and open_clip load inside the commands, so `hubbleclip --help` stays fast. Multi-GPU and
multi-node runs go through torchrun instead (`torchrun ... -m tasks.train`, docs/training.md).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flows.commands.options import DataOption, live_data_root
from schemas.train import (
    CaptionSource,
    CompileMode,
    DecodeDevice,
    DeviceChoice,
    Freeze,
    Head,
    LossKind,
    Precision,
    PresetName,
    Schedule,
    TrainParams,
)

console = Console()


def _train(params: TrainParams, use_flow: bool):
    if use_flow:
        from flows.train import train

        return train(params)
    from tasks.train import run_train

    with Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), console=console, transient=True) as progress:
        bar = progress.add_task("steps", total=None, info="")

        def advance(step: int, total: int, record: dict) -> None:
            progress.update(bar, completed=step, total=total,
                            info=f"loss {record['loss']:.3f}  {record['samples_per_s']:.0f} samples/s")

        return run_train(params, progress=advance)


def train_command(
    data: DataOption = None,
    preset: Annotated[PresetName, typer.Option(help="tiny: small model from scratch; paper: ViT-B-16 openai recipe")]
    = "tiny",
    dataset_version: Annotated[str, typer.Option(help="dataset version id, or 'latest'")] = "latest",
    model: Annotated[str | None, typer.Option(help="open_clip model name (e.g. ViT-B-16, ViT-L-14)")] = None,
    pretrained: Annotated[str | None, typer.Option(help="open_clip pretrained tag or local checkpoint path")] = None,
    from_scratch: Annotated[bool, typer.Option(help="random init (the paper's from-scratch variant)")] = False,
    steps: Annotated[int | None, typer.Option(help="optimizer steps")] = None,
    batch_size: Annotated[int | None, typer.Option(help="global batch size")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="linear warm-up steps")] = None,
    schedule: Annotated[Schedule | None, typer.Option(help="after warm-up: constant or cosine")] = None,
    loss: Annotated[LossKind | None, typer.Option(help="clip (InfoNCE) or siglip")] = None,
    caption_source: Annotated[CaptionSource, typer.Option(help="summary or abstract captions")] = "summary",
    freeze: Annotated[Freeze | None, typer.Option(help="towers to freeze")] = None,
    head: Annotated[Head | None, typer.Option(help="mlp: residual MLP head per tower (frozen-head variant)")] = None,
    head_hidden: Annotated[int, typer.Option(help="hidden width of the MLP head (paper: 1024)")] = 1024,
    shuffled: Annotated[bool, typer.Option("--shuffled", help="shuffled-pairs control (stays at chance)")] = False,
    fixed_temperature: Annotated[float | None, typer.Option(
        help="hold the temperature fixed (logit scale 1/T); 0.217 reproduces the reference's mistake")] = None,
    precision: Annotated[Precision | None, typer.Option(help="fp32 or bf16 autocast")] = None,
    compile_mode: Annotated[CompileMode, typer.Option("--compile", help="torch.compile mode")] = "none",
    cuda_graphs: Annotated[bool, typer.Option(help="whole train step as one CUDA graph (GPU)")] = False,
    fused_attention: Annotated[bool, typer.Option(
        help="batch-first self-attention without nn.MultiheadAttention's copies (same math)")] = True,
    grad_checkpointing: Annotated[bool, typer.Option(help="gradient checkpointing")] = False,
    image_size: Annotated[int | None, typer.Option(help="override the model's input size")] = None,
    resize_to: Annotated[int | None, typer.Option(help="resize stored previews to this side before cropping")]
    = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="checkpoint every N steps")] = None,
    keep_checkpoints: Annotated[int, typer.Option(help="step_N.pt files kept (last.pt and best.pt always)")] = 3,
    val_every: Annotated[int | None, typer.Option(help="validate every N steps")] = None,
    val_pairs: Annotated[int | None, typer.Option(help="validation pairs used (in batches of 100)")] = None,
    log_every: Annotated[int, typer.Option(help="log metrics every N steps")] = 10,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: Annotated[DeviceChoice, typer.Option(help="auto: CUDA when present")] = "auto",
    workers: Annotated[int | None, typer.Option(help="data-loading worker processes")] = None,
    decode_device: Annotated[DecodeDevice, typer.Option(
        help="cuda: JPEGs decoded and augmented on the GPU (nvJPEG) instead of in workers")] = "cpu",
    run_name: Annotated[str | None, typer.Option(help="default: <dataset version>-<preset>-<config hash>")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run from its last checkpoint")] = True,
    overwrite: Annotated[bool, typer.Option(
        help="replace a finished run of another config under this --run-name (deletes its final model)")] = False,
    wandb: Annotated[bool, typer.Option(help="also log to Weights & Biases")] = False,
    use_flow: Annotated[bool, typer.Option("--flow/--no-flow", help="run as the Prefect flow `train`")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the StageResult as JSON")] = False,
) -> None:
    """Fine-tune CLIP on a dataset version; writes runs/<run>/ (checkpoints, metrics, final model)."""
    params = TrainParams(
        data=live_data_root(data), preset=preset, dataset_version=dataset_version, model=model,
        pretrained=pretrained, from_scratch=from_scratch, steps=steps, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, schedule=schedule, loss=loss,
        caption_source=caption_source, freeze=freeze, head=head, head_hidden=head_hidden, shuffled_pairs=shuffled,
        fixed_temperature=fixed_temperature, precision=precision, compile_mode=compile_mode, cuda_graphs=cuda_graphs,
        fused_attention=fused_attention, grad_checkpointing=grad_checkpointing, image_size=image_size,
        resize_to=resize_to, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
        val_every=val_every, val_pairs=val_pairs, log_every=log_every, seed=seed, device=device, workers=workers,
        decode_device=decode_device, run_name=run_name, resume=resume, overwrite=overwrite, wandb=wandb,
    )
    result = _train(params, use_flow)
    if as_json:
        console.print_json(result.model_dump_json())
        return
    stats = result.stats
    state = "unchanged dataset and config: already trained" if result.cached else f"{stats.get('steps')} steps"
    console.print(f"run [bold]{result.outputs['run_dir'].rsplit('/', 1)[-1]}[/bold] ({state})")
    best = stats.get("best_top10pct_image_to_text")
    if best is not None:
        console.print(f"  best validation top-10% (image->text, batches of 100): {best:.3f} "
                      f"at step {stats.get('best_step')}")
    console.print(f"  final model: {result.outputs['final']}  (checkpoint {str(stats.get('checkpoint_sha256'))[:12]})")


def presets_command() -> None:
    """List the training presets and their settings."""
    from tasks.train import get_preset, list_presets

    for name in list_presets():
        preset = get_preset(name)
        console.print(f"[bold]{name}[/bold]: {preset.pop('description', '')}")
        console.print_json(json.dumps(preset))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the CLI."""
    app.command("train")(train_command)
    app.command("train-presets")(presets_command)
