"""`hubbleclip` commands for the summarize stage: summarize, summarize-text."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flows.commands.options import DataOption, live_data_root
from schemas.errors import InputError
from schemas.summary import SummarizeParams

console = Console(stderr=True)
_DEFAULTS = SummarizeParams.model_fields

BackendOption = Annotated[str, typer.Option(
    "--backend", help="extractive (no LLM, CPU default), transformers (Outlines), vllm (offline GPU), "
    "openai (a vLLM OpenAI-compatible server)")]
ModelOption = Annotated[str, typer.Option(
    "--model", help="model id or local path; named: gemma3-270m (needs the gemma extra), tiny-random, random-1b; "
    "'' = the backend's default")]


def _params(**values: Any) -> SummarizeParams:
    """Options -> params, with a one-line error for a bad backend name or value."""
    from tasks.summarize.backends import resolve_backend

    resolve_backend(values["backend"])
    values = {k: v for k, v in values.items() if v is not None}  # None: not given, the params' default
    try:
        return SummarizeParams(**values)
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None


def summarize_command(
    data: DataOption = None,
    backend: BackendOption = "extractive",
    model: ModelOption = "",
    prompt_version: Annotated[str, typer.Option(help="prompt template tasks/summarize/prompts/summary_<v>.txt")] = "v1",
    max_items: Annotated[int, typer.Option(help="items per list (1-10)")] = _DEFAULTS["max_items"].default,
    max_words: Annotated[int, typer.Option(help="word limit of each item")] = _DEFAULTS["max_words"].default,
    temperature: Annotated[float, typer.Option(help="0 = greedy, reproducible")] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(help="output token limit")] = _DEFAULTS["max_new_tokens"].default,
    seed: Annotated[int, typer.Option(help="base seed; retry k uses seed + k")] = 0,
    max_attempts: Annotated[int, typer.Option(help="tries per abstract before quarantine")] = 3,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="try the quarantined abstracts again (e.g. with more --max-attempts)")] = False,
    batch_size: Annotated[int, typer.Option(help="transformers: prompts per batch")] = 16,
    device: Annotated[str, typer.Option(help="transformers: auto, cpu, cuda")] = "auto",
    base_url: Annotated[str | None, typer.Option(
        help="openai: the server's /v1 URL [default: $HUBBLECLIP_VLLM_URL or http://127.0.0.1:8000/v1]")] = None,
    concurrency: Annotated[int, typer.Option(help="openai: requests in flight")] = 32,
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm: GPUs per model")] = 1,
    max_model_len: Annotated[int, typer.Option(help="vllm: context length")] = 4096,
    gpu_memory_utilization: Annotated[float, typer.Option(help="vllm: GPU memory fraction")] = 0.9,
    limit: Annotated[int, typer.Option(help="summarize at most this many proposals (0 = all)")] = 0,
    use_flow: Annotated[bool, typer.Option("--flow/--no-flow", help="run as the Prefect flow summarize")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the StageResult as JSON")] = False,
) -> None:
    """Summarize proposal abstracts into '<objects>; <use cases>' captions (table summaries)."""
    params = _params(
        data=live_data_root(data), backend=backend, model=model, prompt_version=prompt_version,
        max_items=max_items, max_words=max_words, temperature=temperature, max_new_tokens=max_new_tokens,
        seed=seed, max_attempts=max_attempts, retry_failed=retry_failed, batch_size=batch_size, device=device, base_url=base_url,
        concurrency=concurrency, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization, limit=limit,
    )
    if use_flow:
        from flows.summarize import summarize

        result = summarize(params)
    else:
        from tasks.summarize import run_summarize

        with Progress(TextColumn("[bold]summarizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as progress:
            bar = progress.add_task("abstracts", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(bar, completed=done, total=total)

            result = run_summarize(params, progress=advance)
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    s = result.stats
    state = "unchanged inputs: nothing to do" if result.cached else f"{s.get('seconds')} s"
    print(f"summaries {result.digest[:12]} ({state}) at {result.outputs.get('summaries')}")
    print(f"  {s.get('summaries', 0)} summaries: {s.get('reused', 0)} reused, {s.get('generated', 0)} new, "
          f"{s.get('failed', 0)} failed {s.get('failure_reasons', {})}")
    print(f"  {s.get('abstracts_per_s', 0)} abstracts/s, {s.get('tokens_per_s', 0)} tokens/s; invalid JSON "
          f"{s.get('invalid_json_rate', 0):.2%}, cut-offs {s.get('cut_off_rate', 0):.2%}, captions truncated "
          f"{s.get('truncation_rate', 0):.2%} (max {s.get('caption_tokens_max', 0)} of 77 tokens)")


def summarize_text_command(
    backend: BackendOption = "extractive",
    model: ModelOption = "",
    prompt_version: Annotated[str, typer.Option(help="prompt template version")] = "v1",
    max_items: Annotated[int, typer.Option(help="items per list (1-10)")] = _DEFAULTS["max_items"].default,
    max_words: Annotated[int, typer.Option(help="word limit of each item")] = _DEFAULTS["max_words"].default,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
    max_new_tokens: Annotated[int, typer.Option(help="output token limit")] = _DEFAULTS["max_new_tokens"].default,
    seed: Annotated[int, typer.Option(help="base seed")] = 0,
    batch_size: Annotated[int, typer.Option(help="transformers: prompts per batch")] = 16,
    device: Annotated[str, typer.Option(help="transformers: auto, cpu, cuda")] = "auto",
    base_url: Annotated[str | None, typer.Option(
        help="openai: the server's /v1 URL [default: $HUBBLECLIP_VLLM_URL or http://127.0.0.1:8000/v1]")] = None,
) -> None:
    """Read abstracts on stdin, one per line; print one Summary as JSON per line, in the same order.

    A line that cannot be summarized prints {"error": reason, "detail": ...} in its place.
    """
    import json

    from tasks.summarize import summarize_texts

    params = _params(backend=backend, model=model, prompt_version=prompt_version, max_items=max_items,
                     max_words=max_words, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                     batch_size=batch_size, device=device, base_url=base_url)
    abstracts = sys.stdin.read().splitlines()
    for outcome in summarize_texts(abstracts, params):
        if outcome.summary is not None:
            print(outcome.summary.model_dump_json())
        else:
            print(json.dumps({"error": outcome.reason, "detail": outcome.detail}))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the CLI."""
    app.command("summarize")(summarize_command)
    app.command("summarize-text")(summarize_text_command)
