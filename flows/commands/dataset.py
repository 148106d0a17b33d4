"""`hubbleclip` commands for the dataset stage: build-dataset, datasets list|show|gc."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from flows.commands.options import DataOption, live_data_root
from schemas.dataset import SPLITS, BuildDatasetParams, SplitMode

console = Console()


def _build(params: BuildDatasetParams, use_flow: bool):
    if use_flow:
        from flows.build_dataset import build_dataset

        return build_dataset(params)
    from tasks.dataset import run_build_dataset

    with Progress(TextColumn("[bold]building dataset"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        bar = progress.add_task("images", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        return run_build_dataset(params, progress=advance)


def build_dataset_command(
    data: DataOption = None,
    split_mode: Annotated[SplitMode, typer.Option(help="hash: by salted proposal hash; cycle: test on later cycles")]
    = "hash",
    cycle_cutoff: Annotated[int | None, typer.Option(help="split-mode cycle: last cycle in train/val")] = None,
    salt: Annotated[str, typer.Option(help="salt of the proposal hash (changing it reshuffles splits)")]
    = BuildDatasetParams.model_fields["split_salt"].default,
    train_fraction: Annotated[float, typer.Option(help="fraction of proposals in train")] = 0.8,
    val_fraction: Annotated[float, typer.Option(help="fraction of proposals in val")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="fraction of proposals in test")] = 0.1,
    shard_mb: Annotated[float, typer.Option(help="target shard size in MB")] = 256,
    row_group_rows: Annotated[int, typer.Option(help="rows per Parquet row group")] = 256,
    category_prefix: Annotated[bool, typer.Option(help="start abstract captions with 'Category: X.'")] = True,
    require_summary: Annotated[bool, typer.Option(help="quarantine examples whose proposal has no summary")]
    = True,
    verify_images: Annotated[bool, typer.Option(help="decode each JPEG once; quarantine unreadable ones")] = True,
    image_size: Annotated[int, typer.Option(help="side of the stored previews; other sizes are quarantined")]
    = 512,
    rebuild: Annotated[bool, typer.Option(help="rebuild even if this version exists")] = False,
    set_latest: Annotated[bool, typer.Option(help="point datasets/latest at the result")] = True,
    use_flow: Annotated[bool, typer.Option("--flow/--no-flow", help="run as the Prefect flow build_dataset")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the StageResult as JSON")] = False,
) -> None:
    """Build the training set: join, split by proposal, write versioned Parquet shards."""
    params = BuildDatasetParams(
        data=live_data_root(data), split_mode=split_mode, cycle_cutoff=cycle_cutoff, split_salt=salt,
        train_fraction=train_fraction, val_fraction=val_fraction, test_fraction=test_fraction,
        shard_target_mb=shard_mb, row_group_rows=row_group_rows, category_prefix=category_prefix,
        require_summary=require_summary, verify_images=verify_images, image_size=image_size, rebuild=rebuild,
        set_latest=set_latest,
    )
    result = _build(params, use_flow)
    if as_json:
        console.print_json(result.model_dump_json())
        return
    examples = result.stats.get("examples", {})
    state = "unchanged inputs: nothing rebuilt" if result.cached else f"built in {result.stats.get('build_seconds')} s"
    console.print(f"dataset [bold]{result.digest}[/bold] ({state}) at {result.outputs.get('dataset')}")
    console.print("  " + ", ".join(f"{s}: {examples.get(s, 0)}" for s in SPLITS)
                  + f"; quarantined: {result.stats.get('quarantined', {}).get('total', 0)}")


def list_command(data: DataOption = None) -> None:
    """List completed dataset versions, newest first."""
    from tasks.dataset import list_versions

    versions = list_versions(live_data_root(data, must_exist=True))
    if not versions:
        console.print("no dataset versions")
        return
    table = Table("created", *SPLITS, "MB", "split", "")
    table.add_column("version", no_wrap=True)
    for v in versions:
        table.add_row(v["created_at"][:19], *(str(v["counts"][s]) for s in SPLITS), f"{v['bytes'] / 1e6:.1f}",
                      str(v["split_mode"]), "latest" if v["latest"] else "", v["version"])
    console.print(table)


def show_command(
    version: Annotated[str, typer.Argument(help="version id, or 'latest'")] = "latest",
    data: DataOption = None,
    verify: Annotated[bool, typer.Option(help="check every shard's sha256 against the manifest")] = False,
) -> None:
    """Show a dataset version's manifest: counts, caption statistics, config, shards."""
    from tasks.dataset import open_dataset

    opened = open_dataset(live_data_root(data, must_exist=True), version, verify=verify)
    manifest = opened.manifest
    stats = {k: v for k, v in manifest.stats.items() if k != "row_groups"}
    console.print(f"dataset [bold]{opened.version}[/bold]  created {manifest.created_at:%Y-%m-%d %H:%M:%S}"
                  + ("  (shards verified)" if verify else ""))
    console.print_json(json.dumps({"stats": stats, "config": manifest.config, "inputs": manifest.inputs},
                                  default=str))
    table = Table("shard", "rows", "MB", "sha256")
    for f in manifest.files:
        table.add_row(f.path, str(f.rows), f"{f.bytes / 1e6:.1f}", f.sha256[:16])
    console.print(table)


def gc_command(
    data: DataOption = None,
    keep: Annotated[int, typer.Option(help="the newest completed versions to keep ('latest' is kept too, "
                                           "counted among them when it is one of them)")] = 3,
    dry_run: Annotated[bool, typer.Option(help="only list what would be removed")] = False,
    min_age: Annotated[float, typer.Option(help="spare a build without a manifest written to in the last "
                                                "SECONDS (it may still be running)")] = 3600.0,
) -> None:
    """Remove interrupted builds and old dataset versions (never the one 'latest' names)."""
    from tasks.dataset import gc_versions

    removed = gc_versions(live_data_root(data, must_exist=True), keep=keep, dry_run=dry_run, min_age_s=min_age)
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {len(removed)} version(s)" + (": " + ", ".join(removed) if removed else ""))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the CLI."""
    app.command("build-dataset")(build_dataset_command)
    datasets = typer.Typer(help="Inspect and clean dataset versions.", no_args_is_help=True)
    datasets.command("list")(list_command)
    datasets.command("show")(show_command)
    datasets.command("gc")(gc_command)
    app.add_typer(datasets, name="datasets")
