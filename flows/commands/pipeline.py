"""`hubbleclip` commands for the whole pipeline: pipeline (and --refresh), rebuild, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.commands.options import DataOption, MastUrlOption
from schemas.errors import InputError, validation_reasons
from schemas.pipeline import STAGE_ORDER, DemoParams, PipelineParams, PipelineResult, RebuildParams
from schemas.settings import get_settings

console = Console(stderr=True)

Until = Annotated[str | None, typer.Option(
    help=f"stop after this stage: {', '.join(STAGE_ORDER)} (default: evaluate)")]
ParamsFile = Annotated[
    Path | None,
    typer.Option("--params", exists=True, dir_okay=False,
                 help="JSON file of PipelineParams (the UI form); the options below override it"),
]
StsciUrl = Annotated[str | None, typer.Option("--stsci-url", help="STScI document server")]
MaxImages = Annotated[int | None, typer.Option(help="previews per proposal")]
MaxProposals = Annotated[int | None, typer.Option(help="keep only the first N proposals")]
Summarizer = Annotated[str | None, typer.Option(help="extractive, transformers, vllm or openai")]
SummarizerModel = Annotated[str | None, typer.Option(help="summarizer model id or path")]
SummarizerUrl = Annotated[str | None, typer.Option(help="openai backend: the vLLM server's /v1 URL")]
Preset = Annotated[str | None, typer.Option(help="training preset: tiny or paper")]
Steps = Annotated[int | None, typer.Option(help="training steps")]
BatchSize = Annotated[int | None, typer.Option(help="training batch size")]
Control = Annotated[bool | None, typer.Option(
    "--control/--no-control", help="also train the shuffled-pairs control (default: yes)")]
TrainDeployment = Annotated[
    str | None, typer.Option(help="train as this deployment (e.g. train-stage/gpu) instead of in-process")]
Dask = Annotated[str | None, typer.Option(
    "--dask", help="run ingest/summarize/build tasks on Dask: 'local' or a scheduler address")]
RefreshCache = Annotated[bool, typer.Option(help="ignore Prefect cache records (stage content caches apply)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the PipelineResult as JSON")]


def _absolute(data: str) -> str:
    return data if "://" in data else str(Path(data).expanduser().resolve())


def _params_file(path: Path) -> dict[str, Any]:
    """The --params file as a dict; InputError naming the file when it is not a JSON object."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(f"--params {path} is not valid JSON: {err}") from None
    if not isinstance(loaded, dict):
        raise InputError(f"--params {path} holds a JSON {type(loaded).__name__}; expected an object of "
                         "PipelineParams fields (the UI form)")
    return loaded


def build_params(model: type[PipelineParams], *, data: str | None, params_file: Path | None,
                 until: str | None, mast_url: str | None, stsci_url: str | None, max_images: int | None,
                 max_proposals: int | None, summarizer: str | None, summarizer_model: str | None,
                 summarizer_url: str | None, preset: str | None, steps: int | None, batch_size: int | None,
                 control: bool | None, train_deployment: str | None, dask: str | None, refresh_cache: bool,
                 **extra: Any) -> Any:
    """CLI options over a params file over defaults, validated as `model`.

    Options left out are None, so only what the user typed overrides the file (a file's `until` or
    `shuffled_control` must not be reset by an option's default).
    """
    base: dict[str, Any] = _params_file(params_file) if params_file else {}
    if params_file and data is None and "data" in base:
        data = base["data"]
    base["data"] = _absolute(get_settings(data=data).data)
    if until is not None and until not in STAGE_ORDER:
        raise InputError(f"--until must be one of {', '.join(STAGE_ORDER)}, not {until!r}")

    def section(name: str, **values: Any) -> None:
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            base[name] = {**base.get(name, {}), **given}

    section("ingest", mast_url=mast_url, stsci_url=stsci_url, max_images_per_proposal=max_images,
            max_proposals=max_proposals)
    section("summarize", backend=summarizer, model=summarizer_model, base_url=summarizer_url)
    section("train", preset=preset, steps=steps, batch_size=batch_size)
    if until is not None:
        base["until"] = until
    if control is not None:
        base["shuffled_control"] = control
    base["refresh_cache"] = refresh_cache or base.get("refresh_cache", False)
    if train_deployment is not None:
        base["train_deployment"] = train_deployment
    if dask:
        base.update(task_runner="dask", dask_address="" if dask == "local" else dask)
    base.update({k: v for k, v in extra.items() if v is not None})
    try:
        return model.model_validate(base)
    except ValueError as err:
        raise InputError(f"invalid pipeline parameters: {validation_reasons(err)}") from None


def print_result(result: PipelineResult, as_json: bool) -> None:
    """A stage table on stderr; the report path (or the JSON) last, on stdout."""
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    table = Table(title=f"pipeline over {result.root}", show_lines=False)
    for column in ("stage", "result", "seconds", "digest"):
        table.add_column(column)
    seconds = result.stats.get("stage_seconds", {})
    for name, stage in result.stages.items():
        table.add_row(name, "cache hit" if stage.cached else "ran", f"{seconds.get(name, 0):.1f}", stage.digest[:16])
    console.print(table)
    console.print(f"{len(result.cache_hits)}/{len(result.stages)} stages from cache; "
                  f"{result.elapsed_s:.1f} s" + (f"; data version {result.version}" if result.version else ""))
    if result.report:
        typer.echo(result.report)


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the CLI."""

    @app.command("pipeline")
    def pipeline_command(
        data: DataOption = None,
        params_file: ParamsFile = None,
        until: Until = None,
        refresh: Annotated[bool, typer.Option(
            "--refresh", help="the scheduled refresh: ingest from the watermark, rerun what changed")] = False,
        mast_url: MastUrlOption = None,
        stsci_url: StsciUrl = None,
        max_images: MaxImages = None,
        max_proposals: MaxProposals = None,
        summarizer: Summarizer = None,
        summarizer_model: SummarizerModel = None,
        summarizer_url: SummarizerUrl = None,
        preset: Preset = None,
        steps: Steps = None,
        batch_size: BatchSize = None,
        control: Control = None,
        train_deployment: TrainDeployment = None,
        dask: Dask = None,
        refresh_cache: RefreshCache = False,
        dag: Annotated[bool, typer.Option("--dag", help="print the DAG as a Mermaid diagram and exit")] = False,
        as_json: AsJson = False,
    ) -> None:
        """Run ingest -> summarize -> build_dataset -> train (+ control) -> evaluate; cached stages are skipped."""
        from flows.pipeline import dag_mermaid

        if dag:
            typer.echo(dag_mermaid(), nl=False)
            return
        from flows.pipeline import pipeline
        from flows.pipeline import refresh as refresh_flow
        from schemas.pipeline import RefreshParams

        model = RefreshParams if refresh else PipelineParams
        params = build_params(
            model, data=data, params_file=params_file, until=until, mast_url=mast_url, stsci_url=stsci_url,
            max_images=max_images, max_proposals=max_proposals, summarizer=summarizer,
            summarizer_model=summarizer_model, summarizer_url=summarizer_url, preset=preset, steps=steps,
            batch_size=batch_size, control=control, train_deployment=train_deployment, dask=dask,
            refresh_cache=refresh_cache)
        with console.status("[bold]running the pipeline[/bold] (Prefect logs below)"):
            result = (refresh_flow if refresh else pipeline)(params)
        print_result(result, as_json)

    @app.command("rebuild")
    def rebuild_command(
        data: DataOption = None,
        params_file: ParamsFile = None,
        version: Annotated[str | None, typer.Option(help="id of the new data version (default: UTC time)")] = None,
        keep: Annotated[int | None, typer.Option(help="after the switch keep this many complete versions")] = None,
        mast_url: MastUrlOption = None,
        stsci_url: StsciUrl = None,
        max_images: MaxImages = None,
        max_proposals: MaxProposals = None,
        summarizer: Summarizer = None,
        summarizer_model: SummarizerModel = None,
        summarizer_url: SummarizerUrl = None,
        preset: Preset = None,
        steps: Steps = None,
        batch_size: BatchSize = None,
        control: Control = None,
        train_deployment: TrainDeployment = None,
        dask: Dask = None,
        as_json: AsJson = False,
    ) -> None:
        """Rebuild everything into a new data version; the current one stays readable until it is done.

        Every stage runs (a params file's `until` does not apply): a version becomes current only whole.
        """
        from flows.pipeline import rebuild

        params = build_params(
            RebuildParams, data=data, params_file=params_file, until="evaluate", mast_url=mast_url,
            stsci_url=stsci_url, max_images=max_images, max_proposals=max_proposals, summarizer=summarizer,
            summarizer_model=summarizer_model, summarizer_url=summarizer_url, preset=preset, steps=steps,
            batch_size=batch_size, control=control, train_deployment=train_deployment, dask=dask,
            refresh_cache=True, version=version, keep_versions=keep)
        with console.status("[bold]rebuilding[/bold] into a new data version"):
            result = rebuild(params)
        print_result(result, as_json)

    @app.command("demo")
    def demo_command(
        data: Annotated[str, typer.Option("--data", help="where the sky, data and report go")] = "./demo-data",
        quick: Annotated[bool, typer.Option("--quick", help="a small sky and short training (<= 2 minutes)")]
        = False,
        proposals: Annotated[int | None, typer.Option(help="proposals in the synthetic sky")] = None,
        max_images: MaxImages = None,
        steps: Steps = None,
        seed: Annotated[int, typer.Option(help="seed of the synthetic sky")] = 0,
        summarizer: Annotated[str, typer.Option(help="summarizer backend")] = "extractive",
        as_json: AsJson = False,
    ) -> None:
        """Synthetic sky -> local archive -> the whole pipeline on local Prefect; prints report.json last."""
        import os

        # The demo's temporary Prefect server would try to send usage telemetry, which fails offline
        # and prints an ERROR line; a user's own setting still wins.
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from flows.demo import run_demo

        try:
            params = DemoParams(data=data, quick=quick, proposals=proposals, max_images_per_proposal=max_images,
                                train_steps=steps, seed=seed, summarizer=summarizer)
        except ValueError as err:
            raise InputError(f"invalid demo options: {validation_reasons(err)}") from None
        with console.status("[bold]demo[/bold]") as status:
            result = run_demo(params, on_step=lambda message: status.update(f"[bold]demo[/bold]: {message}"))
        console.print(f"demo finished in {result.stats.get('demo_seconds', result.elapsed_s):.1f} s")
        print_result(result, as_json)
