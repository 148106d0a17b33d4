"""`hubbleclip` commands for the ingest stage: ingest, refresh, inspect-proposal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.commands.options import DataOption, MastUrlOption, live_data_root
from schemas.errors import InputError
from schemas.ingest import IngestParams, PreviewPolicy
from schemas.settings import get_settings
from schemas.stage import StageResult

console = Console()
err_console = Console(stderr=True)

StsciUrlOption = Annotated[
    str | None,
    typer.Option("--stsci-url", help="STScI document server; default $HUBBLECLIP_STSCI_URL or https://www.stsci.edu"),
]
CatalogUrlOption = Annotated[
    str | None,
    typer.Option("--catalog-url", help="proposal abstracts catalog flat file (preferred text source)"),
]
FlowOption = Annotated[bool, typer.Option("--flow/--no-flow", help="run as the Prefect flow (tasks, artifacts)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the StageResult as JSON")]


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _run(params: IngestParams, use_flow: bool) -> StageResult:
    settings = get_settings(data=params.data, mast_url=params.mast_url, stsci_url=params.stsci_url,
                            catalog_url=params.catalog_url)
    if use_flow:
        from flows.ingest import ingest

        return ingest(params)
    from tasks.mast.stage import run_ingest

    labels = {"query": "querying MAST", "proposals": "fetching proposals", "previews": "downloading previews"}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
        bars: dict[str, Any] = {}

        def advance(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                bars[phase] = progress.add_task(labels.get(phase, phase), total=total)
            progress.update(bars[phase], completed=done, total=total)

        return run_ingest(params, settings, progress=advance)


def _report(result: StageResult, as_json: bool) -> None:
    if as_json:
        console.print_json(result.model_dump_json())
        return
    s = result.stats
    state = "nothing new" if result.cached else "updated"
    console.print(f"ingest [bold]{result.digest[:12]}[/bold] ({state}) in {s.get('seconds')} s")
    console.print(
        f"  queried {s.get('queried', 0)} rows, wrote {s.get('observations_written', 0)} observations; "
        f"proposals fetched {s.get('proposals_fetched', 0)}, refused {s.get('proposals_refused', 0)}; "
        f"previews ok {s.get('previews_ok', 0)}, skipped {s.get('previews_policy_skip', 0)}; "
        f"quarantined {s.get('quarantined', 0)}"
    )


def ingest_command(
    data: DataOption = None,
    mast_url: MastUrlOption = None,
    stsci_url: StsciUrlOption = None,
    catalog_url: CatalogUrlOption = None,
    since: Annotated[float | None, typer.Option("--since", help="t_obs_release lower bound (MJD)")] = None,
    until: Annotated[float | None, typer.Option("--until", help="t_obs_release upper bound (MJD)")] = None,
    cycles: Annotated[str | None, typer.Option("--cycles", help="comma-separated HST cycles (from the proposal "
                                                               "store or catalog), e.g. 20,21")] = None,
    proposals: Annotated[str | None, typer.Option("--proposals", help="comma-separated proposal ids")] = None,
    max_images: Annotated[int, typer.Option("--max-images", help="previews per proposal")] = 20,
    seed: Annotated[int, typer.Option(help="seed of the per-proposal preview sample")] = 0,
    include: Annotated[str, typer.Option("--policy-include", help="a preview counts if its name contains one "
                                                                  "of these (comma-separated; '' = any)")] = "total",
    exclude: Annotated[str, typer.Option("--policy-exclude", help="a preview never counts if its name contains "
                                                                  "one of these")] = "color",
    max_proposals: Annotated[int | None, typer.Option("--max-proposals", help="keep the first N proposals")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="ignore the watermark and stored rows")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="re-attempt exactly the failed previews "
                                                                      "and proposals")] = False,
    use_flow: FlowOption = False,
    as_json: JsonOption = False,
) -> None:
    """Ingest public HST images, previews and proposals from MAST (incremental, resumable, polite)."""
    if sum(bool(x) for x in (since is not None, cycles, proposals)) > 1:
        raise InputError("give at most one of --since, --cycles, --proposals")
    params = IngestParams(
        data=live_data_root(data), mast_url=mast_url, stsci_url=stsci_url, catalog_url=catalog_url,
        since_mjd=since, until_mjd=until, cycles=cycles, proposal_ids=proposals,
        max_images_per_proposal=max_images, seed=seed,
        preview_policy=PreviewPolicy(include=_split(include), exclude=_split(exclude)),
        max_proposals=max_proposals, rebuild=rebuild, retry_failed=retry_failed,
    )
    _report(_run(params, use_flow), as_json)


def refresh_command(
    data: DataOption = None,
    mast_url: MastUrlOption = None,
    stsci_url: StsciUrlOption = None,
    catalog_url: CatalogUrlOption = None,
    max_images: Annotated[int, typer.Option("--max-images", help="previews per proposal")] = 20,
    seed: Annotated[int, typer.Option(help="seed of the per-proposal preview sample")] = 0,
    use_flow: FlowOption = False,
    as_json: JsonOption = False,
) -> None:
    """Ingest what MAST released since the stored watermark (minus an overlap margin).

    Previews are made with the settings the data root's previews were made with (the preview
    policy given to `ingest`, image size...), so a refresh never switches them.
    """
    from storage import DataLayout, TableStore
    from tasks.mast.steps import recorded_image_settings

    root = live_data_root(data)
    recorded = recorded_image_settings(TableStore(DataLayout(root).tables))
    params = IngestParams(data=root, mast_url=mast_url, stsci_url=stsci_url, catalog_url=catalog_url,
                          refresh=True, max_images_per_proposal=max_images, seed=seed, **recorded)
    _report(_run(params, use_flow), as_json)


def inspect_proposal_command(
    source: Annotated[str, typer.Argument(help="a .apt / .pro / catalog file, or its http(s) URL")],
    stsci_url: StsciUrlOption = None,
) -> None:
    """Parse one proposal document and print it as JSON (a JSON list for a catalog file)."""
    from tasks.mast.parsers import parse_apt, parse_catalog, parse_pro, sniff_kind

    if source.startswith(("http://", "https://")):
        from tasks.mast.http import DocumentClient

        data = DocumentClient(get_settings(stsci_url=stsci_url)).get(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise InputError(f"no such file: {source}")
        data = path.read_bytes()
    keys = ("proposal_id", "cycle", "category", "title", "pi", "abstract", "source")
    kind = sniff_kind(data, source)
    if kind == "catalog":
        records, failures = parse_catalog(data)
        for ident, err in failures:
            err_console.print(f"[yellow]skipped catalog record {ident}: {err.reason}: {err}")
        payload: Any = [{k: getattr(r, k) for k in keys} for r in records]
    else:
        record = (parse_apt if kind == "apt" else parse_pro)(data)
        payload = {k: getattr(record, k) for k in keys}
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the CLI."""
    app.command("ingest")(ingest_command)
    app.command("refresh")(refresh_command)
    app.command("inspect-proposal")(inspect_proposal_command)
