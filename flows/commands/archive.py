"""`hubbleclip archive` commands: generate a synthetic sky, serve a local MAST/STScI archive."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

archive_app = typer.Typer(
    name="archive",
    help="A local MAST/STScI-compatible archive: generate a synthetic sky and serve it (or recorded answers).",
    no_args_is_help=True,
)


@archive_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", help="directory to create (must be new or empty)")],
    proposals: Annotated[int, typer.Option("--proposals", help="number of proposals (demo: 120, ~800 images)")] = 120,
    seed: Annotated[int, typer.Option("--seed", help="same seed, same bytes")] = 0,
    first_cycle: Annotated[int, typer.Option("--first-cycle", help="HST cycle of the first proposals")] = 14,
    cycles: Annotated[int, typer.Option("--cycles", help="number of consecutive cycles")] = 6,
    workers: Annotated[int, typer.Option("--workers", help="rendering processes")] = 2,
    mean_observations: Annotated[float, typer.Option(
        "--mean-observations", help="mean image observations per proposal (1 to 20 each; 8 gives 40,000 images "
                                    "for 5,000 proposals)")] = 7.0,
    no_bad_records: Annotated[bool, typer.Option("--no-bad-records", help="skip the deliberate defects")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing sky at --out")] = False,
) -> None:
    """Generate a deterministic synthetic HST sky (metadata, previews, proposal documents, ground truth)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tasks.archive.sky import generate_sky

    with Progress(TextColumn("rendering previews"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task("render", total=None)
        info = generate_sky(out, proposals=proposals, seed=seed, first_cycle=first_cycle, cycles=cycles,
                            workers=workers, mean_observations=mean_observations,
                            bad_records=not no_bad_records, overwrite=overwrite,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(f"sky {info.sky_dir}: {info.proposals} proposals, {info.observations} observations, "
               f"{info.previews} previews ({info.preview_files} JPEG files), cycles {info.cycles[0]}-{info.cycles[-1]}, "
               f"{len(info.classes)} classes, {info.seconds:.1f}s")


@archive_app.command("extend")
def extend(
    sky: Annotated[Path, typer.Option("--sky", help="an existing sky directory")],
    proposals: Annotated[int, typer.Option("--proposals", help="proposals in the new cycle")] = 20,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    workers: Annotated[int, typer.Option("--workers", help="rendering processes")] = 2,
) -> None:
    """Add a new, later cycle to a sky (its observations are released after all existing ones)."""
    from tasks.archive.sky import extend_sky

    info = extend_sky(sky, proposals=proposals, seed=seed, workers=workers)
    typer.echo(f"sky {info.sky_dir}: now {info.proposals} proposals, {info.observations} observations, "
               f"cycles {info.cycles[0]}-{info.cycles[-1]}")


@archive_app.command("serve")
def serve(
    sky: Annotated[Path | None, typer.Option("--sky", help="serve a generated sky directory")] = None,
    replay: Annotated[Path | None, typer.Option("--replay", help="serve recorded MAST answers (advSearch.json ...)")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="0 picks a free port")] = 0,
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="delay before every answer")] = 0.0,
    fail_rate: Annotated[float, typer.Option("--fail-rate", help="share of requests answered HTTP 503")] = 0.0,
    executing_rate: Annotated[float, typer.Option("--executing-rate", help="share of queries first answered EXECUTING")] = 0.0,
    truncate_rate: Annotated[float, typer.Option("--truncate-rate", help="share of bodies cut short")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="fault sequence seed")] = 0,
) -> None:
    """Serve MAST and STScI endpoints; prints the URL on stdout, then serves until interrupted."""
    from pydantic import ValidationError

    from schemas.errors import InputError
    from tasks.archive.server import ArchiveServer, FaultConfig

    if (sky is None) == (replay is None):
        raise InputError("give exactly one of --sky DIR or --replay DIR")
    try:
        faults = FaultConfig(latency_ms=latency_ms, fail_rate=fail_rate, executing_rate=executing_rate,
                             truncate_rate=truncate_rate, seed=seed)
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"invalid fault option {first['loc'][0]}: {first['msg']}") from None
    server = ArchiveServer(sky_dir=sky, replay_dir=replay, faults=faults, host=host, port=port).start()
    print(server.url, flush=True)
    print(f"hubbleclip archive: serving {server.content.label} at {server.url} (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    try:
        server.serve_until_interrupted()
    except KeyboardInterrupt:
        print("hubbleclip archive: stopped", file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the CLI."""
    app.add_typer(archive_app, name="archive")
