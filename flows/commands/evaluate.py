"""`hubbleclip` commands for the evaluate stage: evaluate, search, describe, serve-search.

Torch, the models and FastAPI load inside the commands, so `hubbleclip --help` stays fast.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from flows.commands.options import DataOption, live_data_root
from schemas.errors import InputError
from schemas.evaluate import DeviceChoice, EvalSplit, EvaluateParams, SearchParams

console = Console()
err_console = Console(stderr=True)

DeviceOption = Annotated[DeviceChoice, typer.Option(help="auto: CUDA when present, else CPU")]


def _variants(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, run = value.partition("=")
        if not sep or not name or not run:
            raise InputError(f"--variant takes NAME=RUN, got {value!r}")
        out[name.strip()] = run.strip()
    return out


def _run_stage(params: EvaluateParams, use_flow: bool):
    if use_flow:
        from flows.evaluate import evaluate

        return evaluate(params)
    from tasks.evaluate import run_evaluate

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        bars: dict[str, int] = {}

        def advance(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = progress.add_task(what, total=total)
            progress.update(bars[what], completed=done, total=total)

        return run_evaluate(params, progress=advance)


def evaluate_command(
    data: DataOption = None,
    run: Annotated[str | None, typer.Option(help="run under runs/ (default: newest finished, not a control)")]
    = None,
    ground_truth: Annotated[str | None, typer.Option(help="synthetic sky ground_truth.json (zero-shot accuracy)")]
    = None,
    dataset_version: Annotated[str | None, typer.Option(help="default: the version the run trained on")] = None,
    split: Annotated[EvalSplit, typer.Option(help="heldout (val + test), test or val")] = "heldout",
    shuffled_run: Annotated[str | None, typer.Option(help="the shuffled-pairs control run (default: found)")]
    = None,
    variant: Annotated[list[str] | None, typer.Option(help="another model to report, NAME=RUN (repeatable)")]
    = None,
    max_items: Annotated[int | None, typer.Option(help="cap on held-out examples")] = None,
    index: Annotated[bool, typer.Option("--index/--no-index", help="build the search index")] = True,
    device: DeviceOption = "auto",
    refresh: Annotated[bool, typer.Option(help="evaluate again even if an identical report exists")] = False,
    use_flow: Annotated[bool, typer.Option("--flow/--no-flow", help="run as the Prefect flow 'evaluate'")] = False,
) -> None:
    """Evaluate a run (fine-tuned vs base vs controls) on the held-out split; print the report path."""
    params = EvaluateParams(
        data=live_data_root(data), run=run, ground_truth=ground_truth, dataset_version=dataset_version,
        split=split, shuffled_run=shuffled_run, variants=_variants(variant), max_items=max_items,
        build_index=index, device=device, refresh=refresh,
    )
    result = _run_stage(params, use_flow)
    from storage.fs import read_text

    report = json.loads(read_text(result.outputs["report"]))
    table = Table("model", "i2t top-1", "i2t top-10%", "t2i top-10%", "in-batch-100 top-10%", "zero-shot top-5")
    for name, m in report["models"].items():
        zs = (m.get("zeroshot") or {}).get("top5")
        table.add_row(name, f"{m['i2t_top1']:.3f}", f"{m['i2t_top10pct']:.3f}", f"{m['t2i_top10pct']:.3f}",
                      f"{m['inbatch100_top10pct']:.3f}", "-" if zs is None else f"{zs:.3f}")
    console.print(table)
    console.print(report["verdict"] + (" (cached: inputs unchanged)" if result.cached else ""))
    if result.outputs.get("index"):
        console.print(f"search index: {result.outputs['index']}")
    print(result.outputs["report"])  # last line: the report's path, for scripts


def _searcher(data: str, index: str | None, device: str):
    from tasks.evaluate import open_searcher, search_model_loader

    return open_searcher(data, search_model_loader, index=index, device=device)


def search_command(
    query: Annotated[str, typer.Argument(help="what to look for, e.g. 'globular cluster'")],
    data: DataOption = None,
    k: Annotated[int, typer.Option("--k", help="how many images")] = 10,
    index: Annotated[str | None, typer.Option(help="index name under index/ (default: index/latest)")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Search the archive in plain language: the top images, with their proposals."""
    from tasks.evaluate.search import clean_query

    params = SearchParams(data=live_data_root(data), query=clean_query(query), k=k, index=index,
                          device=device)
    searcher = _searcher(params.data, params.index, params.device)
    hits = searcher.search(params.query, params.k)
    if as_json:
        print(json.dumps({"query": params.query, "index": searcher.index.name,
                          "results": [h.to_dict() for h in hits]}, indent=2))
        return
    table = Table("#", "score", "obsid", "proposal", "title", "preview")
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.3f}", h.obsid, h.proposal_id, h.title[:60], h.preview_path)
    console.print(table)


def describe_command(
    image_path: Annotated[str, typer.Argument(help="any image file (JPEG, PNG, ...)")],
    data: DataOption = None,
    k: Annotated[int, typer.Option("--k", help="how many classes")] = 5,
    index: Annotated[str | None, typer.Option(help="use the model of this index (default: index/latest)")] = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Describe an image: the top classes of the paper's 77 curated descriptions."""
    from tasks.evaluate.search import read_image_file

    image = read_image_file(image_path)  # a missing file fails before any model loads
    searcher = _searcher(live_data_root(data), index, device)
    ranking = searcher.describe(image, k=k, name=image_path)
    if as_json:
        print(json.dumps({"image": image_path, "model": searcher.clip.name, **ranking.to_dict()}, indent=2))
        return
    table = Table("#", "class", "score")
    for i, (name, score) in enumerate(zip(ranking.classes, ranking.scores, strict=True), start=1):
        table.add_row(str(i), name, f"{score:.3f}")
    console.print(table)


def serve_search_command(
    data: DataOption = None,
    host: Annotated[str, typer.Option(help="interface to bind (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    index: Annotated[str | None, typer.Option(help="index name under index/ (default: index/latest)")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Serve a small read-only search page (query box, previews, proposal titles, MAST links)."""
    from tasks.evaluate.web import listen_socket, serve

    if not 0 < port < 65536:
        raise InputError(f"port must be 1-65535, got {port}")
    sock = listen_socket(host, port)  # first: a taken port costs no model load
    searcher = _searcher(live_data_root(data), index, device)
    err_console.print(f"search page for index {searcher.index.name} ({len(searcher.index)} images) at "
                      f"http://{host}:{port}/  (Ctrl-C to stop)")
    serve(searcher, sock)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the CLI."""
    app.command("evaluate")(evaluate_command)
    app.command("search")(search_command)
    app.command("describe")(describe_command)
    app.command("serve-search")(serve_search_command)
